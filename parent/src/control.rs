//! The control socket: `/run/yavipin/DEVICE.sock`, owned by root, group `yavipin`, mode
//! 0660, served by the parent. It answers one request, `status`, with the tunnel's state as
//! one JSON object gathered from netd and keyd, whose status messages carry counters and
//! names only: no reply can hold key material because no status type has a field for it.
//!
//! Clients are served one at a time, each with a short deadline, so a client that connects
//! and says nothing delays only other status queries (packets flow through netd, not here).
//! Anything but a well-formed request gets an error object and the connection is closed.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use yavipin_ipc::control::{KeydStatus, NetdStatus};

/// Directory of the control sockets (and of the workers' empty root).
pub const RUN_DIR: &str = "/run/yavipin";
/// The only request.
pub const STATUS_REQUEST: &[u8] = b"status\n";
/// Longest request read; anything longer is refused.
const MAX_REQUEST: usize = 64;
/// How long a client has to send its request and take the answer.
const CLIENT_DEADLINE: Duration = Duration::from_secs(1);

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
    /// What was wrong with the request.
    pub error: String,
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

    /// Takes the next waiting client, if any, and reads its request. `None` when nobody
    /// was waiting or the client went away.
    pub fn accept(&self) -> Option<Client> {
        let (stream, _) = self.listener.accept().ok()?;
        // The listener is non-blocking; the client gets blocking I/O bounded by deadlines.
        stream.set_nonblocking(false).ok()?;
        stream.set_read_timeout(Some(CLIENT_DEADLINE)).ok()?;
        stream.set_write_timeout(Some(CLIENT_DEADLINE)).ok()?;
        Some(Client { stream })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A connected client.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Reads the request: true for a well-formed `status`, otherwise answers with an error
    /// and returns false.
    pub fn wants_status(&mut self) -> bool {
        let mut request = [0u8; MAX_REQUEST + 1];
        let mut len = 0;
        // Read until the newline, the size limit, end of stream or the deadline.
        while len < request.len() && !request[..len].contains(&b'\n') {
            match self.stream.read(&mut request[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if &request[..len] == STATUS_REQUEST {
            return true;
        }
        let error =
            if len > MAX_REQUEST { "request too long" } else { "unknown request; the only request is `status`" };
        self.reply(&ErrorReply { error: error.to_owned() });
        false
    }

    /// Sends `reply` as one JSON line; the connection closes when the client is dropped.
    pub fn reply<T: Serialize>(&mut self, reply: &T) {
        if let Ok(mut json) = serde_json::to_vec(reply) {
            json.push(b'\n');
            let _ = self.stream.write_all(&json);
        }
    }
}
