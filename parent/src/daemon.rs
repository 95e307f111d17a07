//! The parent process: sets the tunnel up, starts the workers, confines itself, and
//! supervises them.
//!
//! Setup, as root with every capability: the control socket, the tun device with its
//! addresses (over netlink), the UDP socket, the workers (netd, keyd, and the script runner
//! when scripts are configured) and their `Init` messages. Then the parent confines itself
//! (`sandbox::confine_parent`: chroot into `/run/yavipin`, only `CAP_NET_ADMIN`,
//! no-new-privs, its own seccomp filter without `fork`, `execve`, `open` or `socket`) and
//! runs its event loop: one `poll` over the signalfd, the workers' channels, the control
//! socket and its clients. What the workers' messages may cause is the
//! [`Monitor`]'s decision; this file only moves messages and applies its actions.
//!
//! Supervision policy: the parent never restarts a worker. A worker that dies is logged
//! with its exit status or signal, the others are stopped, and the daemon exits with
//! a non-zero status so the service manager restarts the whole tunnel (systemd's
//! `Restart=on-failure`). Restarting one half alone would leave the other half holding
//! state (keys, handshakes in flight) that no longer matches, and a crash-looping worker is
//! better seen by the service manager's rate limits than hidden by ours.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::de::DeserializeOwned;
use yavipin_ipc::control::{
    KeydInit, KeydToParent, LivenessSettings, NetdInit, NetdToParent, ParentToKeyd, ParentToNetd,
};
use yavipin_ipc::frame::{Ancillary, Channel, FrameError, pair};
use yavipin_ipc::scripts::{ParentToScripts, ScriptOutcome, ScriptsInit, ScriptsToParent};
use yavipin_proto::keys::Psk;
use yavipin_sandbox::Confined;

use crate::config::{Config, ConfigError};
use crate::control::{Client, ControlError, ControlSocket, MAX_CLIENTS, Progress, RUN_DIR, RequestError, TunnelStatus};
use crate::files::{self, FileError, Kind};
use crate::keyfile::{KeyFileError, load_psk};
use crate::logging::Sink;
use crate::monitor::{Action, Link, Monitor, MonitorConfig, Violation, Worker};
use crate::netlink::{Device, LinkError};
use crate::spawn::{Launcher, SpawnError, WorkerRole, kill, pidfd, spawn};
use crate::tundev::{self, TunError};

/// How long each worker gets to finish after being told to stop.
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
    /// A file owned or writable by someone other than root.
    #[error(transparent)]
    File(#[from] FileError),
    /// The worker account is missing.
    #[error("{0}")]
    User(String),
    /// The tun device.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// The tun device's link configuration.
    #[error(transparent)]
    Link(#[from] LinkError),
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
    /// The parent's own confinement failed.
    #[error("confining the parent: {0}")]
    Confine(#[from] yavipin_sandbox::JailError),
    /// A channel to a worker failed or carried a bad frame.
    #[error("{} channel: {source}", worker.name())]
    Channel {
        /// The worker.
        worker: Worker,
        /// What went wrong.
        source: FrameError,
    },
    /// A worker sent a message the monitor does not permit.
    #[error(transparent)]
    Violation(#[from] Violation),
    /// A worker died.
    #[error("{} (pid {pid}) {status}", worker.name())]
    WorkerDied {
        /// The worker.
        worker: Worker,
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

/// Validates the configuration, the key file, the scripts and the worker account, as
/// `--check` does. The key file comes before the configuration's own ownership, so that
/// an unprivileged `yavipin check` still reports the configuration's content errors first.
pub fn check(config_path: &Path) -> Result<Config, DaemonError> {
    let config = Config::load(config_path)?;
    load_psk(&config.key_file)?;
    files::check(Kind::KeyFile, &config.key_file)?;
    files::check(Kind::Config, config_path)?;
    for (kind, script) in [(Kind::UpScript, &config.scripts.up), (Kind::DownScript, &config.scripts.down)] {
        if let Some(script) = script {
            files::check(kind, script)?;
        }
    }
    yavipin_sandbox::lookup_user(&config.user)
        .map_err(|e| DaemonError::User(format!("{}: {e}", config_path.display())))?;
    Ok(config)
}

/// A started worker, its pidfd (the only way the confined parent can signal it) and its
/// channel.
struct Started {
    worker: Worker,
    child: Child,
    pidfd: OwnedFd,
    channel: Channel,
}

impl Started {
    fn channel_error(&self, source: FrameError) -> DaemonError {
        DaemonError::Channel { worker: self.worker, source }
    }

    fn send<T: serde::Serialize>(&mut self, message: &T) -> Result<(), DaemonError> {
        self.channel.send(message).map_err(|e| self.channel_error(e))
    }

    fn recv<T: DeserializeOwned>(&mut self) -> Result<T, DaemonError> {
        self.channel.recv::<T>().map(|r| r.message).map_err(|e| self.channel_error(e))
    }
}

/// The processes the parent supervises.
struct Workers {
    netd: Started,
    keyd: Started,
    scripts: Option<Started>,
}

impl Workers {
    fn all(&mut self) -> impl Iterator<Item = &mut Started> {
        [Some(&mut self.netd), Some(&mut self.keyd), self.scripts.as_mut()].into_iter().flatten()
    }
}

/// Runs the tunnel described by `config_path` until a signal or a failure.
pub fn run(config_path: &Path, sink: Sink, verbose: bool) -> Result<(), DaemonError> {
    run_with(config_path, &Launcher::this_program()?, (sink, verbose))
}

/// [`run`], starting the workers from `launcher`.
pub fn run_with(config_path: &Path, launcher: &Launcher, logging: (Sink, bool)) -> Result<(), DaemonError> {
    // Nothing inherited by accident may survive into the confined parent or its workers.
    yavipin_sandbox::close_stray_descriptors()?;
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
    let mut control = ControlSocket::bind(&config.interface.name, gid.as_raw())?;

    let tun = tundev::create(&config.interface.name, config.tun_mtu())?;
    let mut device = Device::open(&config.interface.name, &config.interface.addresses)?;
    device.assign_addresses()?;
    let socket = UdpSocket::bind(config.transport.listen)
        .map_err(|source| DaemonError::Bind { addr: config.transport.listen, source })?;
    let local = socket.local_addr().map_err(|source| DaemonError::Bind { addr: config.transport.listen, source })?;
    tundev::probe_path_mtu(&socket).map_err(|source| DaemonError::Bind { addr: config.transport.listen, source })?;
    log::info!("{}: listening on {local}", config.interface.name);

    // The workers inherit the signal mask through exec: give them the default one back.
    signals.thread_unblock()?;
    let workers = start_workers(&config, launcher, logging);
    signals.thread_block()?;
    let mut workers = workers?;

    let result = send_inits(&config, &mut workers, psk, tun, (socket.into(), local)).and_then(|()| {
        let mut keep: Vec<RawFd> = vec![0, 1, 2, signal_fd.as_raw_fd(), control.as_fd().as_raw_fd(), device.fd()];
        keep.extend(workers.all().flat_map(|w| [w.channel.as_fd().as_raw_fd(), w.pidfd.as_raw_fd()]));
        let confined = yavipin_sandbox::confine_parent(&keep, Path::new(RUN_DIR))?;
        control.entered_run_dir();
        let monitor = Monitor::new(MonitorConfig {
            max_inner_mtu: config.tun_mtu(),
            mtu_floor: config.mtu_floor(),
            up_script: config.scripts.up.is_some(),
            down_script: config.scripts.down.is_some(),
        });
        let supervisor =
            Supervisor { config: &config, local, monitor, device, workers: &mut workers, clients: Vec::new() };
        supervisor.run(&confined, &signal_fd, &control)
    });
    stop(workers, &signal_fd);
    result
}

fn start_workers(config: &Config, launcher: &Launcher, logging: (Sink, bool)) -> Result<Workers, DaemonError> {
    let channel_error = |worker| move |source| DaemonError::Channel { worker, source };
    let (netd_parent, parent_netd) = pair(Ancillary::Descriptors).map_err(channel_error(Worker::Netd))?;
    let (keyd_parent, parent_keyd) = pair(Ancillary::None).map_err(channel_error(Worker::Keyd))?;
    let (netd_keyd, keyd_netd) = pair(Ancillary::None).map_err(channel_error(Worker::Netd))?;
    let user = &config.user;
    let start = |role, worker, channels, channel| -> Result<Started, DaemonError> {
        let child = spawn(launcher, role, user, channels, logging)?;
        let pidfd = pidfd(role, &child)?;
        Ok(Started { worker, child, pidfd, channel })
    };
    let netd = start(WorkerRole::Netd, Worker::Netd, vec![netd_parent.into_fd(), netd_keyd.into_fd()], parent_netd)?;
    let keyd = start(WorkerRole::Keyd, Worker::Keyd, vec![keyd_parent.into_fd(), keyd_netd.into_fd()], parent_keyd)?;
    let scripts = if config.scripts.up.is_some() || config.scripts.down.is_some() {
        let (runner_parent, parent_runner) = pair(Ancillary::None).map_err(channel_error(Worker::Scripts))?;
        Some(start(WorkerRole::Scripts, Worker::Scripts, vec![runner_parent.into_fd()], parent_runner)?)
    } else {
        None
    };
    Ok(Workers { netd, keyd, scripts })
}

fn send_inits(
    config: &Config,
    workers: &mut Workers,
    psk: Psk,
    tun: OwnedFd,
    (socket, local): (OwnedFd, SocketAddr),
) -> Result<(), DaemonError> {
    let keyd_init = KeydInit {
        key_id: config.key_id,
        psk,
        group: config.session.group,
        dh_renewal_seconds: config.session.dh_renewal_seconds,
    };
    workers.keyd.send(&ParentToKeyd::Init(keyd_init))?;
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
    let netd = &mut workers.netd;
    netd.channel
        .send_with_fds(&ParentToNetd::Init(netd_init), &[tun.as_fd(), socket.as_fd()])
        .map_err(|e| netd.channel_error(e))?;
    // netd holds its own copies now; the parent keeps neither.
    drop(tun);
    drop(socket);
    if let Some(scripts) = &mut workers.scripts {
        scripts.send(&ParentToScripts::Init(ScriptsInit {
            up: config.scripts.up.clone(),
            down: config.scripts.down.clone(),
            timeout_seconds: config.scripts.timeout_seconds,
            device: config.interface.name.clone(),
            addresses: config.interface.addresses.clone(),
        }))?;
    }
    Ok(())
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

/// The parent's event loop: signals, the workers' messages, the control socket.
struct Supervisor<'a> {
    config: &'a Config,
    local: SocketAddr,
    monitor: Monitor,
    device: Device,
    workers: &'a mut Workers,
    clients: Vec<Client>,
}

/// Poll set positions of the fixed descriptors; clients follow.
const SIGNALS: usize = 0;
const NETD: usize = 1;
const KEYD: usize = 2;
const SCRIPTS: usize = 3;
const LISTENER: usize = 4;
const CLIENTS: usize = 5;

impl Supervisor<'_> {
    /// The event loop; only for a confined parent.
    fn run(mut self, _: &Confined, signal_fd: &SignalFd, control: &ControlSocket) -> Result<(), DaemonError> {
        loop {
            let deadline =
                self.monitor.poll_timeout().into_iter().chain(self.clients.iter().map(Client::deadline)).min();
            let timeout = deadline.map_or(PollTimeout::NONE, |at| {
                PollTimeout::try_from(at.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
                    .unwrap_or(PollTimeout::MAX)
            });
            let ready: Vec<bool> = {
                let scripts = self.workers.scripts.as_ref().map(|s| s.channel.as_fd());
                let mut fds = vec![
                    PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.workers.netd.channel.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.workers.keyd.channel.as_fd(), PollFlags::POLLIN),
                    // Without a runner, the signalfd stands in at this position, never asked for.
                    PollFd::new(scripts.unwrap_or(signal_fd.as_fd()), poll_if(scripts.is_some(), PollFlags::POLLIN)),
                    PollFd::new(control.as_fd(), PollFlags::POLLIN),
                ];
                for client in &self.clients {
                    let (read, write) = client.wants();
                    let flags = poll_if(read, PollFlags::POLLIN) | poll_if(write, PollFlags::POLLOUT);
                    fds.push(PollFd::new(client.as_fd(), flags));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::Error::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                fds.iter().map(|fd| fd.revents().is_some_and(|r| !r.is_empty())).collect()
            };
            let now = Instant::now();
            if ready[SIGNALS]
                && let Some(info) = signal_fd.read_signal()?
            {
                match Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)) {
                    Ok(Signal::SIGTERM | Signal::SIGINT) => {
                        log::info!("shutting down on signal");
                        return Ok(());
                    }
                    Ok(Signal::SIGCHLD) => self.check_workers()?,
                    // SIGHUP: nothing to reload, a new configuration needs a restart. The
                    // signalfd reads no other signal than the four blocked above.
                    Ok(_) | Err(_) => {}
                }
            }
            let was_ready = self.monitor.ready();
            if ready[NETD] {
                let message = self.workers.netd.recv::<NetdToParent>()?;
                self.monitor.handle_netd(now, message)?;
            }
            if ready[KEYD] {
                let message = self.workers.keyd.recv::<KeydToParent>()?;
                self.monitor.handle_keyd(message)?;
            }
            let is_ready = self.monitor.ready();
            for (worker, started, before, after) in [
                (Worker::Netd, &self.workers.netd, was_ready.0, is_ready.0),
                (Worker::Keyd, &self.workers.keyd, was_ready.1, is_ready.1),
            ] {
                if after && !before {
                    log::info!("{} running as pid {}", worker.name(), started.child.id());
                }
            }
            if ready[SCRIPTS]
                && let Some(scripts) = &mut self.workers.scripts
            {
                let message = scripts.recv::<ScriptsToParent>()?;
                self.monitor.handle_scripts(message)?;
            }
            self.serve_clients(now, &ready[CLIENTS..]);
            if ready[LISTENER] {
                self.accept(now, control);
            }
            if self.clients.iter().any(Client::is_waiting) {
                // Also retries a query that had to wait for a late answer.
                self.monitor.handle_status_wanted(now);
            }
            if self.monitor.poll_timeout().is_some_and(|at| at <= now) {
                self.monitor.handle_timeout(now);
            }
            self.apply()?;
        }
    }

    fn check_workers(&mut self) -> Result<(), DaemonError> {
        for started in self.workers.all() {
            if let Ok(Some(status)) = started.child.try_wait() {
                return Err(DaemonError::WorkerDied { worker: started.worker, pid: started.child.id(), status });
            }
        }
        Ok(())
    }

    /// Serves the clients whose sockets are ready, and closes those past their deadline.
    fn serve_clients(&mut self, now: Instant, ready: &[bool]) {
        let mut index = 0;
        self.clients.retain_mut(|client| {
            let progress = if ready.get(index).copied().unwrap_or(false) { client.serve() } else { Progress::Pending };
            index += 1;
            progress != Progress::Done && client.deadline() > now
        });
    }

    fn accept(&mut self, now: Instant, control: &ControlSocket) {
        while let Some(mut client) = control.accept(now) {
            if self.clients.len() >= MAX_CLIENTS {
                // One attempt to say so; the connection closes either way.
                client.refuse(RequestError::Busy);
                continue;
            }
            if client.serve() != Progress::Done {
                self.clients.push(client);
            }
        }
    }

    /// Carries out what the monitor decided.
    fn apply(&mut self) -> Result<(), DaemonError> {
        let device = self.config.interface.name.as_str();
        while let Some(action) = self.monitor.poll_action() {
            match action {
                Action::SetLink { link, coalesced } => {
                    self.device.set_up(matches!(link, Link::Up { .. }))?;
                    if coalesced > 0 {
                        log::info!("{device}: {link} ({coalesced} changes in between coalesced)");
                    } else {
                        log::info!("{device}: {link}");
                    }
                }
                Action::SetMtu { mtu, path_mtu } => {
                    self.device.set_mtu(mtu)?;
                    log::info!("{device}: path MTU {path_mtu}, tunnel MTU {mtu}");
                }
                Action::RunScript { event, peer } => {
                    if let Some(scripts) = &mut self.workers.scripts {
                        scripts.send(&ParentToScripts::Run { event, peer })?;
                    }
                }
                Action::ScriptFinished { event, outcome } => match outcome {
                    ScriptOutcome::Succeeded => log::info!("{event} script finished"),
                    ScriptOutcome::Failed { code } => log::warn!("{event} script failed: exit status {code}"),
                    ScriptOutcome::Signaled { signal } => log::warn!("{event} script killed by signal {signal}"),
                    ScriptOutcome::TimedOut => {
                        log::warn!("{event} script killed after {} s", self.config.scripts.timeout_seconds);
                    }
                    ScriptOutcome::NotStarted { errno } => {
                        log::warn!("{event} script not started: {}", nix::errno::Errno::from_raw(errno));
                    }
                    ScriptOutcome::Refused => log::warn!("{event} script refused"),
                },
                Action::AskStatus => {
                    self.workers.netd.send(&ParentToNetd::Status)?;
                    self.workers.keyd.send(&ParentToKeyd::Status)?;
                }
                Action::StatusAnswer(answer) => {
                    let status = answer.map(|both| {
                        let (netd, keyd) = *both;
                        TunnelStatus { device: self.config.interface.name.clone(), listen: self.local, netd, keyd }
                    });
                    self.clients.retain_mut(|client| {
                        if !client.is_waiting() {
                            return true;
                        }
                        let progress = match &status {
                            Some(status) => client.reply(status),
                            None => client.refuse(RequestError::WorkersSilent),
                        };
                        progress != Progress::Done
                    });
                }
            }
        }
        Ok(())
    }
}

fn poll_if(wanted: bool, flags: PollFlags) -> PollFlags {
    if wanted { flags } else { PollFlags::empty() }
}

/// Stops the workers one after the other: netd first (it sends the shutdown notice to the
/// peer and may still need keyd until then), then keyd, then the script runner (which kills
/// a running script when its channel closes). Each gets [`STOP_GRACE`] to exit (its exit
/// wakes the signalfd with SIGCHLD) before it is killed through its pidfd.
fn stop(workers: Workers, signal_fd: &SignalFd) {
    let Workers { mut netd, mut keyd, scripts } = workers;
    let _ = netd.channel.send(&ParentToNetd::Shutdown);
    wait_or_kill(netd.worker, &mut netd.child, &netd.pidfd, signal_fd);
    let _ = keyd.channel.send(&ParentToKeyd::Shutdown);
    wait_or_kill(keyd.worker, &mut keyd.child, &keyd.pidfd, signal_fd);
    if let Some(Started { worker, mut child, pidfd, channel }) = scripts {
        // Closing the channel is the runner's signal to stop.
        drop(channel);
        wait_or_kill(worker, &mut child, &pidfd, signal_fd);
    }
}

fn wait_or_kill(worker: Worker, child: &mut Child, pidfd: &OwnedFd, signal_fd: &SignalFd) {
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    log::warn!("{} (pid {}) {status}", worker.name(), child.id());
                }
                return;
            }
            Ok(None) => {}
            Err(_) => return,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log::warn!("{} did not stop in time, killing it", worker.name());
            let _ = kill(pidfd);
            let _ = child.wait();
            return;
        }
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
        if matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
            let _ = signal_fd.read_signal();
        }
    }
}
