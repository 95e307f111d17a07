//! The parent process: sets the tunnel up, starts the two workers, and supervises them.
//!
//! Supervision policy: the parent never restarts a worker. A worker that dies is logged
//! with its exit status or signal, the other worker is stopped, and the daemon exits with
//! a non-zero status so the service manager restarts the whole tunnel (systemd's
//! `Restart=on-failure`). Restarting one half alone would leave the other half holding
//! state (keys, handshakes in flight) that no longer matches, and a crash-looping worker is
//! better seen by the service manager's rate limits than hidden by ours.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use yavipin_ipc::control::{KeydInit, KeydToParent, NetdInit, NetdToParent, ParentToKeyd, ParentToNetd};
use yavipin_ipc::frame::{Ancillary, Channel, FrameError, pair};
use yavipin_proto::keys::Psk;
use yavipin_sandbox::Role;

use crate::config::{Config, ConfigError};
use crate::keyfile::{KeyFileError, load_psk};
use crate::spawn::{SpawnError, spawn};
use crate::tundev::{self, TunError};

/// How long workers get to finish after being told to stop.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad key file.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The worker account is missing.
    #[error("{0}")]
    User(String),
    /// The tun device.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// The UDP socket.
    #[error("cannot bind UDP socket on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Starting a worker.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A channel to a worker failed or carried a bad message.
    #[error("{role} channel: {source}")]
    Channel {
        /// The worker.
        role: &'static str,
        /// What went wrong.
        source: FrameError,
    },
    /// A worker sent a message that is not valid now.
    #[error("{role} sent {message} out of order")]
    OutOfOrder {
        /// The worker.
        role: &'static str,
        /// The message.
        message: String,
    },
    /// A worker died.
    #[error("{role} (pid {pid}) {status}")]
    WorkerDied {
        /// The worker.
        role: &'static str,
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// Signal handling or polling failed.
    #[error("supervision: {0}")]
    System(#[from] nix::Error),
}

/// Validates the configuration and the key file, as `--check` does.
pub fn check(config_path: &Path) -> Result<Config, DaemonError> {
    let config = Config::load(config_path)?;
    load_psk(&config.key_file)?;
    yavipin_sandbox::lookup_user(&config.user)
        .map_err(|e| DaemonError::User(format!("{}: {e}", config_path.display())))?;
    Ok(config)
}

struct Worker {
    role: Role,
    child: Child,
    channel: Channel,
}

impl Worker {
    fn name(&self) -> &'static str {
        self.role.name()
    }

    fn channel_error(&self, source: FrameError) -> DaemonError {
        DaemonError::Channel { role: self.name(), source }
    }
}

/// Runs the tunnel described by `config_path` until a signal or a failure.
pub fn run(config_path: &Path, verbose: bool) -> Result<(), DaemonError> {
    let config = check(config_path)?;
    let mut psk_bytes = load_psk(&config.key_file)?;
    let psk = Psk::new(&mut psk_bytes);

    // Signals are handled synchronously through a signalfd, blocked before any child
    // exists so none is missed.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals.thread_block()?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC)?;

    let tun = tundev::create(&config.interface.name, config.tun_mtu())?;
    tundev::add_addresses(&config.interface.name, &config.interface.addresses)?;
    let socket = UdpSocket::bind(config.transport.listen)
        .map_err(|source| DaemonError::Bind { addr: config.transport.listen, source })?;
    let local = socket.local_addr().map_err(|source| DaemonError::Bind { addr: config.transport.listen, source })?;
    log(&format!("{}: listening on {local}", config.interface.name));

    let (netd_parent, parent_netd) =
        pair(Ancillary::Descriptors).map_err(|source| DaemonError::Channel { role: "netd", source })?;
    let (keyd_parent, parent_keyd) =
        pair(Ancillary::None).map_err(|source| DaemonError::Channel { role: "keyd", source })?;
    let (netd_keyd, keyd_netd) =
        pair(Ancillary::None).map_err(|source| DaemonError::Channel { role: "netd", source })?;

    // The workers inherit the signal mask through exec: give them the default one back.
    signals.thread_unblock()?;
    let netd_child = spawn(Role::Netd, &config.user, vec![netd_parent.into_fd(), netd_keyd.into_fd()], verbose);
    let keyd_child = spawn(Role::Keyd, &config.user, vec![keyd_parent.into_fd(), keyd_netd.into_fd()], verbose);
    signals.thread_block()?;
    let mut netd = Worker { role: Role::Netd, child: netd_child?, channel: parent_netd };
    let mut keyd = Worker { role: Role::Keyd, child: keyd_child?, channel: parent_keyd };

    let result = start_and_supervise(&config, psk, tun, (socket.into(), local), &signal_fd, &mut netd, &mut keyd);
    // The tun device disappears with the last descriptor to it, netd's.
    stop(&mut netd, &mut keyd, &signal_fd);
    result
}

fn start_and_supervise(
    config: &Config,
    psk: Psk,
    tun: OwnedFd,
    (socket, local): (OwnedFd, SocketAddr),
    signal_fd: &SignalFd,
    netd: &mut Worker,
    keyd: &mut Worker,
) -> Result<(), DaemonError> {
    let keyd_init = KeydInit {
        key_id: config.key_id,
        psk,
        group: config.session.group,
        rekey_seconds: config.session.rekey_seconds,
        dh_renewal_seconds: config.session.dh_renewal_seconds,
    };
    keyd.channel.send(&ParentToKeyd::Init(keyd_init)).map_err(|e| keyd.channel_error(e))?;
    let netd_init = NetdInit {
        device: config.interface.name.clone(),
        local,
        peer: config.transport.peer,
        key_id: config.key_id,
        group: config.session.group,
        max_inner_len: config.tun_mtu(),
        compression: config.session.compression,
        rekey_seconds: config.session.rekey_seconds,
        dh_renewal_seconds: config.session.dh_renewal_seconds,
    };
    netd.channel
        .send_with_fds(&ParentToNetd::Init(netd_init), &[tun.as_fd(), socket.as_fd()])
        .map_err(|e| netd.channel_error(e))?;
    // netd holds its own copies now; the parent keeps neither.
    drop(tun);
    drop(socket);

    let mut ready = [false, false];
    loop {
        let mut fds = [
            PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(netd.channel.as_fd(), PollFlags::POLLIN),
            PollFd::new(keyd.channel.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let readable = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        let (sig, from_netd, from_keyd) = (readable(&fds[0]), readable(&fds[1]), readable(&fds[2]));

        if sig && let Some(info) = signal_fd.read_signal()? {
            match Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)) {
                Ok(Signal::SIGTERM | Signal::SIGINT) => {
                    log("shutting down on signal");
                    return Ok(());
                }
                Ok(Signal::SIGCHLD) => {
                    for worker in [&mut *netd, &mut *keyd] {
                        if let Ok(Some(status)) = worker.child.try_wait() {
                            return Err(DaemonError::WorkerDied {
                                role: worker.name(),
                                pid: worker.child.id(),
                                status,
                            });
                        }
                    }
                }
                _ => {} // SIGHUP: nothing to reload; a new configuration needs a restart.
            }
        }
        if from_netd {
            match netd.channel.recv::<NetdToParent>().map_err(|e| netd.channel_error(e))?.message {
                NetdToParent::Ready if !ready[0] => {
                    ready[0] = true;
                    log(&format!("netd running as pid {}", netd.child.id()));
                }
                NetdToParent::TunnelUp { peer } if ready[0] => {
                    log(&format!("{}: tunnel up with {peer}", config.interface.name));
                    tundev::set_link(&config.interface.name, true)?;
                }
                NetdToParent::TunnelDown if ready[0] => {
                    log(&format!("{}: tunnel down", config.interface.name));
                    tundev::set_link(&config.interface.name, false)?;
                }
                other => return Err(DaemonError::OutOfOrder { role: "netd", message: format!("{other:?}") }),
            }
        }
        if from_keyd {
            match keyd.channel.recv::<KeydToParent>().map_err(|e| keyd.channel_error(e))?.message {
                KeydToParent::Ready if !ready[1] => {
                    ready[1] = true;
                    log(&format!("keyd running as pid {}", keyd.child.id()));
                }
                other @ KeydToParent::Ready => {
                    return Err(DaemonError::OutOfOrder { role: "keyd", message: format!("{other:?}") });
                }
            }
        }
    }
}

/// Tells both workers to stop and waits for them to exit (each exit wakes the signalfd
/// with SIGCHLD); whatever is still running after the grace period is killed.
fn stop(netd: &mut Worker, keyd: &mut Worker, signal_fd: &SignalFd) {
    // netd first: it sends the shutdown notice to the peer while keyd still runs.
    let _ = netd.channel.send(&ParentToNetd::Shutdown);
    let _ = keyd.channel.send(&ParentToKeyd::Shutdown);
    let deadline = Instant::now() + STOP_GRACE;
    let mut running = vec![netd, keyd];
    while !running.is_empty() {
        running.retain_mut(|worker| match worker.child.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    log(&format!("{} (pid {}) {status}", worker.name(), worker.child.id()));
                }
                false
            }
            Ok(None) => true,
            Err(_) => false,
        });
        let left = deadline.saturating_duration_since(Instant::now());
        if running.is_empty() {
            break;
        }
        if left.is_zero() {
            for worker in running {
                log(&format!("{} did not stop in time, killing it", worker.name()));
                let _ = worker.child.kill();
                let _ = worker.child.wait();
            }
            break;
        }
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
        if matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
            let _ = signal_fd.read_signal();
        }
    }
}

/// One line on standard error, where the service manager collects it.
pub fn log(line: &str) {
    eprintln!("yavipind[{}]: {line}", std::process::id());
}
