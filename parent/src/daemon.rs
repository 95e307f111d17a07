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
use yavipin_ipc::control::{
    KeydInit, KeydStatus, KeydToParent, LivenessSettings, NetdInit, NetdStatus, NetdToParent, ParentToKeyd,
    ParentToNetd,
};
use yavipin_ipc::frame::{Ancillary, Channel, FrameError, pair};
use yavipin_proto::keys::Psk;

use crate::config::{Config, ConfigError};
use crate::control::{Client, ControlError, ControlSocket, ErrorReply, TunnelStatus};
use crate::keyfile::{KeyFileError, load_psk};
use crate::logging::Sink;
use crate::scripts::{self, Scripts};
use crate::spawn::{SpawnError, WorkerRole, spawn};
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
    /// The control socket.
    #[error(transparent)]
    Control(#[from] ControlError),
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
    role: WorkerRole,
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
pub fn run(config_path: &Path, sink: Sink, verbose: bool) -> Result<(), DaemonError> {
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

    // First the control socket: it also proves no other daemon serves this device.
    let gid = yavipin_sandbox::lookup_user(&config.user).map_err(|e| DaemonError::User(e.to_string()))?.1;
    let control = ControlSocket::bind(&config.interface.name, gid.as_raw())?;

    let tun = tundev::create(&config.interface.name, config.tun_mtu())?;
    tundev::add_addresses(&config.interface.name, &config.interface.addresses)?;
    let socket = UdpSocket::bind(config.transport.listen)
        .map_err(|source| DaemonError::Bind { addr: config.transport.listen, source })?;
    let local = socket.local_addr().map_err(|source| DaemonError::Bind { addr: config.transport.listen, source })?;
    tundev::probe_path_mtu(&socket).map_err(|source| DaemonError::Bind { addr: config.transport.listen, source })?;
    log::info!("{}: listening on {local}", config.interface.name);

    let (netd_parent, parent_netd) =
        pair(Ancillary::Descriptors).map_err(|source| DaemonError::Channel { role: "netd", source })?;
    let (keyd_parent, parent_keyd) =
        pair(Ancillary::None).map_err(|source| DaemonError::Channel { role: "keyd", source })?;
    let (netd_keyd, keyd_netd) =
        pair(Ancillary::None).map_err(|source| DaemonError::Channel { role: "netd", source })?;

    // The workers inherit the signal mask through exec: give them the default one back.
    signals.thread_unblock()?;
    let netd_child = spawn(WorkerRole::Netd, &config.user, vec![netd_parent.into_fd(), netd_keyd.into_fd()], sink, verbose);
    let keyd_child = spawn(WorkerRole::Keyd, &config.user, vec![keyd_parent.into_fd(), keyd_netd.into_fd()], sink, verbose);
    signals.thread_block()?;
    let mut netd = Worker { role: WorkerRole::Netd, child: netd_child?, channel: parent_netd };
    let mut keyd = Worker { role: WorkerRole::Keyd, child: keyd_child?, channel: parent_keyd };

    let result =
        start_and_supervise(&config, psk, tun, (socket.into(), local), (&signal_fd, &control), &mut netd, &mut keyd);
    // The tun device disappears with the last descriptor to it, netd's.
    stop(&mut netd, &mut keyd, &signal_fd);
    result
}

fn start_and_supervise(
    config: &Config,
    psk: Psk,
    tun: OwnedFd,
    (socket, local): (OwnedFd, SocketAddr),
    (signal_fd, control): (&SignalFd, &ControlSocket),
    netd: &mut Worker,
    keyd: &mut Worker,
) -> Result<(), DaemonError> {
    let keyd_init = KeydInit {
        key_id: config.key_id,
        psk,
        group: config.session.group,
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
        liveness: liveness_settings(config),
    };
    netd.channel
        .send_with_fds(&ParentToNetd::Init(netd_init), &[tun.as_fd(), socket.as_fd()])
        .map_err(|e| netd.channel_error(e))?;
    // netd holds its own copies now; the parent keeps neither.
    drop(tun);
    drop(socket);

    let scripts = Scripts::new(config);
    let mut supervisor = Supervisor { config, local, netd, keyd, ready: [false, false], query: None, scripts };
    supervisor.run(signal_fd, control)
}

/// Seconds (the configuration allows fractions) as whole milliseconds.
fn millis(seconds: f64) -> u32 {
    // The configuration bounds every value to at most 3600 s: far inside u32 milliseconds.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms = (seconds * 1000.0).round() as u32;
    ms
}

fn liveness_settings(config: &Config) -> LivenessSettings {
    let liveness = &config.liveness;
    LivenessSettings {
        reachable_time_ms: millis(liveness.reachable_time),
        retrans_timer_ms: millis(liveness.retrans_timer),
        delay_first_probe_ms: millis(liveness.delay_first_probe_time),
        max_unicast_solicit: liveness.max_unicast_solicit,
        keepalive_seconds: liveness.keepalive_seconds,
    }
}

/// A status query waiting for the workers' answers.
struct Query {
    client: Client,
    deadline: Instant,
    netd: Option<NetdStatus>,
    keyd: Option<KeydStatus>,
}

/// How long the workers have to answer a status query.
const QUERY_DEADLINE: Duration = Duration::from_secs(2);

/// The parent's event loop: signals, the workers' messages, the control socket.
struct Supervisor<'a> {
    config: &'a Config,
    local: SocketAddr,
    netd: &'a mut Worker,
    keyd: &'a mut Worker,
    ready: [bool; 2],
    query: Option<Query>,
    scripts: Scripts,
}

impl Supervisor<'_> {
    fn run(&mut self, signal_fd: &SignalFd, control: &ControlSocket) -> Result<(), DaemonError> {
        loop {
            let deadline =
                [self.query.as_ref().map(|q| q.deadline), self.scripts.poll_timeout()].into_iter().flatten().min();
            let timeout = deadline.map_or(PollTimeout::NONE, |at| {
                PollTimeout::try_from(at.saturating_duration_since(Instant::now())).unwrap_or(PollTimeout::MAX)
            });
            // While a query waits for its answers, new clients wait in the backlog.
            let control_events = if self.query.is_some() { PollFlags::empty() } else { PollFlags::POLLIN };
            let ready = {
                let mut fds = [
                    PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.netd.channel.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.keyd.channel.as_fd(), PollFlags::POLLIN),
                    PollFd::new(control.as_fd(), control_events),
                ];
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::Error::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                fds.map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            };
            if ready[0]
                && let Some(info) = signal_fd.read_signal()?
            {
                match Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)) {
                    Ok(Signal::SIGTERM | Signal::SIGINT) => {
                        log::info!("shutting down on signal");
                        return Ok(());
                    }
                    Ok(Signal::SIGCHLD) => self.check_workers()?,
                    _ => {} // SIGHUP: nothing to reload; a new configuration needs a restart.
                }
            }
            if ready[1] {
                let message = self.netd.channel.recv::<NetdToParent>().map_err(|e| self.netd.channel_error(e))?;
                self.dispatch_netd(message.message)?;
            }
            if ready[2] {
                let message = self.keyd.channel.recv::<KeydToParent>().map_err(|e| self.keyd.channel_error(e))?;
                self.dispatch_keyd(message.message)?;
            }
            if ready[3]
                && let Some(mut client) = control.accept()
                && client.wants_status()
            {
                self.netd.channel.send(&ParentToNetd::Status).map_err(|e| self.netd.channel_error(e))?;
                self.keyd.channel.send(&ParentToKeyd::Status).map_err(|e| self.keyd.channel_error(e))?;
                self.query = Some(Query { client, deadline: Instant::now() + QUERY_DEADLINE, netd: None, keyd: None });
            }
            self.answer_query();
            // A script's exit (SIGCHLD) or deadline.
            self.scripts.progress(Instant::now());
        }
    }

    fn check_workers(&mut self) -> Result<(), DaemonError> {
        for worker in [&mut *self.netd, &mut *self.keyd] {
            if let Ok(Some(status)) = worker.child.try_wait() {
                return Err(DaemonError::WorkerDied { role: worker.name(), pid: worker.child.id(), status });
            }
        }
        Ok(())
    }

    fn dispatch_netd(&mut self, message: NetdToParent) -> Result<(), DaemonError> {
        let device = &self.config.interface.name;
        match message {
            NetdToParent::Ready if !self.ready[0] => {
                self.ready[0] = true;
                log::info!("netd running as pid {}", self.netd.child.id());
            }
            NetdToParent::TunnelUp { peer } if self.ready[0] => {
                log::info!("{device}: tunnel up with {peer}");
                tundev::set_link(device, true)?;
                self.scripts.trigger(Instant::now(), scripts::Event::Up, Some(peer));
            }
            NetdToParent::TunnelDown { reason } if self.ready[0] => {
                log::info!("{device}: tunnel down: {reason}");
                tundev::set_link(device, false)?;
                self.scripts.trigger(Instant::now(), scripts::Event::Down, None);
            }
            NetdToParent::Mtu { path_mtu, inner_mtu } if self.ready[0] => {
                let mtu = self.config.clamp_tun_mtu(inner_mtu);
                log::info!("{device}: path MTU {path_mtu}, tunnel MTU {mtu}");
                tundev::set_mtu(device, mtu)?;
            }
            NetdToParent::Status(status) if self.query.as_ref().is_some_and(|q| q.netd.is_none()) => {
                if let Some(query) = &mut self.query {
                    query.netd = Some(status);
                }
            }
            other => return Err(DaemonError::OutOfOrder { role: "netd", message: format!("{other:?}") }),
        }
        Ok(())
    }

    fn dispatch_keyd(&mut self, message: KeydToParent) -> Result<(), DaemonError> {
        match message {
            KeydToParent::Ready if !self.ready[1] => {
                self.ready[1] = true;
                log::info!("keyd running as pid {}", self.keyd.child.id());
            }
            KeydToParent::Status(status) if self.query.as_ref().is_some_and(|q| q.keyd.is_none()) => {
                if let Some(query) = &mut self.query {
                    query.keyd = Some(status);
                }
            }
            other => return Err(DaemonError::OutOfOrder { role: "keyd", message: format!("{other:?}") }),
        }
        Ok(())
    }

    /// Answers the pending query once both workers did, or with an error at its deadline.
    fn answer_query(&mut self) {
        let Some(query) = &self.query else { return };
        let complete = query.netd.is_some() && query.keyd.is_some();
        if !complete && Instant::now() < query.deadline {
            return;
        }
        let Some(Query { mut client, netd, keyd, .. }) = self.query.take() else { return };
        match (netd, keyd) {
            (Some(netd), Some(keyd)) => client.reply(&TunnelStatus {
                device: self.config.interface.name.clone(),
                listen: self.local,
                netd,
                keyd,
            }),
            _ => client.reply(&ErrorReply { error: "the workers did not answer in time".into() }),
        }
    }
}

/// Stops the workers one after the other: netd first (it sends the shutdown notice to the
/// peer and may still need keyd until then), then keyd. Each gets [`STOP_GRACE`] to exit
/// (its exit wakes the signalfd with SIGCHLD) before it is killed.
fn stop(netd: &mut Worker, keyd: &mut Worker, signal_fd: &SignalFd) {
    let _ = netd.channel.send(&ParentToNetd::Shutdown);
    wait_or_kill(netd, signal_fd);
    let _ = keyd.channel.send(&ParentToKeyd::Shutdown);
    wait_or_kill(keyd, signal_fd);
}

fn wait_or_kill(worker: &mut Worker, signal_fd: &SignalFd) {
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        match worker.child.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    log::warn!("{} (pid {}) {status}", worker.name(), worker.child.id());
                }
                return;
            }
            Ok(None) => {}
            Err(_) => return,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log::warn!("{} did not stop in time, killing it", worker.name());
            let _ = worker.child.kill();
            let _ = worker.child.wait();
            return;
        }
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
        if matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
            let _ = signal_fd.read_signal();
        }
    }
}
