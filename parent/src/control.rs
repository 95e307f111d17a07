//! The control socket: `/run/yavipin/DEVICE.sock`, owned by root, group `yavipin`, mode
//! 0660, served by the parent. It answers one request, `status`, with the tunnel's state as
//! one JSON object gathered from netd and keyd, whose status messages carry counters and
//! typed reasons only: no reply can hold key material because no status type has a field
//! for it.
//!
//! A client cannot hold up the parent's supervision: every client socket is non-blocking
//! and served from the parent's poll set like the workers' channels; each connection has
//! one absolute deadline ([`CLIENT_DEADLINE`]) for its request, the workers' answer and the
//! reply, after which it is closed whatever state it is in; at most [`MAX_CLIENTS`] are
//! served at once, and one more is told [`RequestError::Busy`] and closed. Anything but a
//! well-formed request gets an error object and the connection is closed.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{SockFlag, accept4};
use serde::{Deserialize, Serialize};
use yavipin_ipc::control::{KeydStatus, NetdStatus};

/// Directory of the control sockets (and of the workers' empty root).
pub const RUN_DIR: &str = "/run/yavipin";
/// The only request.
pub const STATUS_REQUEST: &[u8] = b"status\n";
/// Longest request read; anything longer is refused.
const MAX_REQUEST: usize = 64;
/// How long a connection lives, from accept to close: the request, the workers' answer
/// (at most two seconds) and the reply.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// Clients served at once.
pub const MAX_CLIENTS: usize = 8;

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelStatus {
    /// The tun device.
    pub device: String,
    /// The local UDP address.
    pub listen: SocketAddr,
    /// What netd reports.
    pub netd: NetdStatus,
    /// What keyd reports.
    pub keyd: KeydStatus,
}

/// The answer to anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What was wrong.
    pub error: RequestError,
}

/// What was wrong with a request, or why it got no status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
pub enum RequestError {
    /// Longer than any request.
    #[error("request too long")]
    TooLong,
    /// Not `status`.
    #[error("unknown request; the only request is `status`")]
    Unknown,
    /// A worker missed the status deadline.
    #[error("the workers did not answer in time")]
    WorkersSilent,
    /// [`MAX_CLIENTS`] are being served.
    #[error("too many clients at once; try again")]
    Busy,
}

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another daemon serves this device.
    #[error("{0} is in use: is yavipind already running for this device?")]
    InUse(PathBuf),
    /// A file that is not a socket is in the way.
    #[error("{0} exists and is not a socket")]
    NotSocket(PathBuf),
    /// Creating, binding or setting permissions failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// The listening control socket; its file is removed when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

/// Path of `device`'s control socket.
pub fn socket_path(device: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{device}.sock"))
}

impl ControlSocket {
    /// Listens on `device`'s socket, readable and writable by root and group `gid` only.
    pub fn bind(device: &str, gid: u32) -> Result<Self, ControlError> {
        let path = socket_path(device);
        let io = |source| ControlError::Io { path: path.clone(), source };
        std::fs::create_dir_all(RUN_DIR).map_err(io)?;
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_socket() => return Err(ControlError::NotSocket(path)),
            // A socket someone answers on belongs to a running daemon; a dead one is left
            // over from a crash and replaced.
            Ok(_) if UnixStream::connect(&path).is_ok() => return Err(ControlError::InUse(path)),
            Ok(_) => std::fs::remove_file(&path).map_err(io)?,
            Err(_) => {}
        }
        // Bind with no access at all, then open it to the group: no window in which anyone
        // else could connect.
        let listener = {
            let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o777));
            let bound = UnixListener::bind(&path);
            nix::sys::stat::umask(old);
            bound.map_err(io)?
        };
        nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(0)), Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| io(e.into()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        Ok(Self { listener, path })
    }

    /// The listening socket, for polling.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// The parent chrooted into [`RUN_DIR`]: the socket's file is now named from there.
    pub fn entered_run_dir(&mut self) {
        if let Some(name) = self.path.file_name() {
            self.path = Path::new("/").join(name);
        }
    }

    /// Takes the next waiting client, if any, non-blocking, with its deadline from `now`.
    pub fn accept(&self, now: Instant) -> Option<Client> {
        let fd = accept4(&self.listener, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC).ok()?;
        let stream = UnixStream::from(fd);
        Some(Client { stream, deadline: now + CLIENT_DEADLINE, state: State::Reading { request: Vec::new() } })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where a client is.
#[derive(Debug)]
enum State {
    /// Reading its request.
    Reading {
        /// What came so far.
        request: Vec<u8>,
    },
    /// Waiting for the workers' answers.
    Waiting,
    /// Sending the reply.
    Writing {
        /// The reply.
        reply: Vec<u8>,
        /// Bytes sent.
        sent: usize,
    },
    /// Done: to be dropped.
    Done,
}

/// What became of a client after it was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More to do later.
    Pending,
    /// Asked for the status: call [`Client::reply`] with it.
    WantsStatus,
    /// Finished: drop it.
    Done,
}

/// A connected client, non-blocking.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    deadline: Instant,
    state: State,
}

impl Client {
    /// The socket, for polling.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Whether the client waits to be readable (its request) or writable (its reply);
    /// neither while it waits for the workers.
    pub fn wants(&self) -> (bool, bool) {
        match self.state {
            State::Reading { .. } => (true, false),
            State::Writing { .. } => (false, true),
            State::Waiting | State::Done => (false, false),
        }
    }

    /// When the connection is closed at the latest.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Reads or writes what the socket takes now.
    pub fn serve(&mut self) -> Progress {
        match &mut self.state {
            State::Reading { request } => {
                let mut chunk = [0u8; MAX_REQUEST + 1];
                loop {
                    match self.stream.read(&mut chunk[..=MAX_REQUEST - request.len().min(MAX_REQUEST)]) {
                        Ok(0) => return self.refuse(RequestError::Unknown),
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::Pending,
                        Err(_) => return self.finish(),
                    }
                    if request.len() > MAX_REQUEST {
                        return self.refuse(RequestError::TooLong);
                    }
                    if request.contains(&b'\n') {
                        if request.as_slice() == STATUS_REQUEST {
                            self.state = State::Waiting;
                            return Progress::WantsStatus;
                        }
                        return self.refuse(RequestError::Unknown);
                    }
                }
            }
            State::Writing { reply, sent } => loop {
                match self.stream.write(&reply[*sent..]) {
                    Ok(n) if n > 0 && *sent + n < reply.len() => *sent += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Progress::Pending,
                    // All sent, or the client went away.
                    Ok(_) | Err(_) => return self.finish(),
                }
            },
            State::Waiting => Progress::Pending,
            State::Done => Progress::Done,
        }
    }

    /// Whether it waits for the workers' answers.
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, State::Waiting)
    }

    /// Sends `reply` as one JSON line, then the connection closes.
    pub fn reply<T: Serialize>(&mut self, reply: &T) -> Progress {
        match serde_json::to_vec(reply) {
            Ok(mut json) => {
                json.push(b'\n');
                self.state = State::Writing { reply: json, sent: 0 };
                self.serve()
            }
            Err(_) => self.finish(),
        }
    }

    /// Answers with an error.
    pub fn refuse(&mut self, error: RequestError) -> Progress {
        self.reply(&ErrorReply { error })
    }

    fn finish(&mut self) -> Progress {
        self.state = State::Done;
        Progress::Done
    }
}
