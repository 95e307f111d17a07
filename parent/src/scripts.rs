//! The script runner: the process that runs the up and down scripts, started by the parent
//! (`--role scripts`) only when a script is configured.
//!
//! The parent confines itself after setup with a seccomp filter that has no `fork` or
//! `execve`, and a filter is inherited by every child: scripts, which may run any program,
//! cannot be started under it. So the parent starts this runner first, while it may still
//! execute programs, and later only asks it, over their channel, to run the up or the down
//! script ([`ParentToScripts::Run`]); no message names a path or a command. The runner
//! reduces its own privileges before it reads anything (uid 0 with only `CAP_NET_ADMIN`,
//! no-new-privs: see `sandbox/src/confine.rs`), which its scripts inherit.
//!
//! It runs one script at a time, with a fixed environment (`PATH`, `YAVIPIN_EVENT`,
//! `YAVIPIN_DEVICE`, `YAVIPIN_ADDRESSES`, `YAVIPIN_PEER`) built from typed values, in a
//! process group of its own, which is killed whole at the deadline. Before each run the
//! script's ownership and modes are checked again ([`crate::files`]); a script that fails
//! the check is not run. A request the runner cannot take (a second script while one runs,
//! a script that is not configured, an up without a peer) ends it, and with it the daemon.
//! When the parent's channel closes, a running script is killed and the runner exits.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use yavipin_ipc::frame::{Ancillary, Channel, FrameError};
use yavipin_ipc::scripts::{ParentToScripts, ScriptEvent, ScriptOutcome, ScriptsInit, ScriptsToParent};

use crate::files::{self, Kind};

/// Why the runner stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The privilege reduction failed.
    #[error(transparent)]
    Restrict(#[from] yavipin_sandbox::JailError),
    /// The channel failed or carried a bad frame.
    #[error("parent channel: {0}")]
    Channel(#[from] FrameError),
    /// The parent asked for something the runner does not do.
    #[error("refused request from the parent: {0}")]
    Request(&'static str),
    /// Signal handling or polling failed.
    #[error("{0}")]
    System(#[from] nix::Error),
}

struct Running {
    event: ScriptEvent,
    child: Child,
    deadline: Instant,
}

/// The scripts and the one running, if any.
pub struct Runner {
    init: ScriptsInit,
    running: Option<Running>,
}

impl core::fmt::Debug for Runner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Runner").field("running", &self.running.as_ref().map(|r| r.event)).finish_non_exhaustive()
    }
}

/// `peer` can be the endpoint of a tunnel: a unicast address and a port.
fn valid_peer(peer: SocketAddr) -> bool {
    let ip = peer.ip();
    peer.port() != 0 && !ip.is_unspecified() && !ip.is_multicast()
}

impl Runner {
    /// A runner of the scripts `init` names.
    pub fn new(init: ScriptsInit) -> Self {
        Self { init, running: None }
    }

    fn path(&self, event: ScriptEvent) -> Option<&PathBuf> {
        match event {
            ScriptEvent::Up => self.init.up.as_ref(),
            ScriptEvent::Down => self.init.down.as_ref(),
        }
    }

    /// Starts the script for `event`. Returns its outcome at once if it was not started.
    pub fn start(
        &mut self,
        now: Instant,
        event: ScriptEvent,
        peer: Option<SocketAddr>,
    ) -> Result<Option<ScriptOutcome>, RunnerError> {
        if self.running.is_some() {
            return Err(RunnerError::Request("a script while another runs"));
        }
        let Some(path) = self.path(event).cloned() else {
            return Err(RunnerError::Request("a script that is not configured"));
        };
        match (event, peer) {
            (ScriptEvent::Up, Some(peer)) if valid_peer(peer) => {}
            (ScriptEvent::Down, None) => {}
            (ScriptEvent::Up, Some(_) | None) | (ScriptEvent::Down, Some(_)) => {
                return Err(RunnerError::Request("an up script without a valid peer, or a down script with one"));
            }
        }
        let kind = if event == ScriptEvent::Up { Kind::UpScript } else { Kind::DownScript };
        if let Err(e) = files::check(kind, &path) {
            log::warn!("{e}: not run");
            return Ok(Some(ScriptOutcome::Refused));
        }
        let addresses = self.init.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
        let spawned = Command::new(&path)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("YAVIPIN_EVENT", event.name())
            .env("YAVIPIN_DEVICE", &self.init.device)
            .env("YAVIPIN_ADDRESSES", addresses)
            .env("YAVIPIN_PEER", peer.map(|p| p.to_string()).unwrap_or_default())
            .stdin(Stdio::null())
            // A group of its own, so that its children die with it at the deadline.
            .process_group(0)
            .spawn();
        match spawned {
            Ok(child) => {
                let deadline = now + Duration::from_secs(u64::from(self.init.timeout_seconds));
                self.running = Some(Running { event, child, deadline });
                Ok(None)
            }
            Err(e) => {
                log::warn!("{event} script {}: {e}", path.display());
                Ok(Some(ScriptOutcome::NotStarted { errno: e.raw_os_error().unwrap_or(0) }))
            }
        }
    }

    /// When [`Self::reap`] must run at the latest: the running script's deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.running.as_ref().map(|r| r.deadline)
    }

    /// The running script's outcome, if it ended or its deadline passed (then it is killed
    /// with its process group). Call on `SIGCHLD` and at [`Self::poll_timeout`].
    pub fn reap(&mut self, now: Instant) -> Option<(ScriptEvent, ScriptOutcome)> {
        let running = self.running.as_mut()?;
        let outcome = match running.child.try_wait() {
            Ok(Some(status)) => match (status.code(), status.signal()) {
                (Some(0), _) => ScriptOutcome::Succeeded,
                (Some(code), _) => ScriptOutcome::Failed { code: u8::try_from(code).unwrap_or(u8::MAX) },
                (None, signal) => ScriptOutcome::Signaled { signal: signal.unwrap_or(0) },
            },
            Ok(None) if now >= running.deadline => {
                Self::kill(&mut running.child);
                ScriptOutcome::TimedOut
            }
            Ok(None) => return None,
            Err(e) => ScriptOutcome::NotStarted { errno: e.raw_os_error().unwrap_or(0) },
        };
        let event = running.event;
        self.running = None;
        Some((event, outcome))
    }

    fn kill(child: &mut Child) {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = child.wait();
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // The daemon is stopping: a script still running is not waited for.
        if let Some(running) = &mut self.running {
            Self::kill(&mut running.child);
        }
    }
}

/// The runner process: reduces its privileges, takes its `Init`, then runs what the
/// parent asks until the parent's channel closes.
pub fn run(channel: OwnedFd) -> Result<(), RunnerError> {
    yavipin_sandbox::restrict_script_runner(&[0, 1, 2, channel.as_raw_fd()])?;
    let mut channel = Channel::new(channel, Ancillary::None);
    let init = match channel.recv::<ParentToScripts>()?.message {
        ParentToScripts::Init(init) => init,
        ParentToScripts::Run { .. } => return Err(RunnerError::Request("Run before Init")),
    };
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGCHLD);
    signals.thread_block()?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC)?;
    let mut runner = Runner::new(init);
    channel.send(&ScriptsToParent::Ready)?;
    loop {
        let timeout = runner.poll_timeout().map_or(PollTimeout::NONE, |at| {
            PollTimeout::try_from(at.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
                .unwrap_or(PollTimeout::MAX)
        });
        let [from_parent, child_ended] = {
            let mut fds =
                [PollFd::new(channel.as_fd(), PollFlags::POLLIN), PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            fds.map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
        };
        let now = Instant::now();
        if child_ended {
            let _ = signal_fd.read_signal();
        }
        if let Some((event, outcome)) = runner.reap(now) {
            channel.send(&ScriptsToParent::Finished { event, outcome })?;
        }
        if from_parent {
            match channel.recv::<ParentToScripts>() {
                // The daemon stopped (a reset: with the runner's messages unread): dropping
                // the runner kills a running script.
                Err(FrameError::Closed | FrameError::Io(nix::Error::ECONNRESET)) => return Ok(()),
                Err(e) => return Err(e.into()),
                Ok(received) => match received.message {
                    ParentToScripts::Init(_) => return Err(RunnerError::Request("a second Init")),
                    ParentToScripts::Run { event, peer } => {
                        if let Some(outcome) = runner.start(now, event, peer)? {
                            channel.send(&ScriptsToParent::Finished { event, outcome })?;
                        }
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn init(up: &Path, down: &Path, timeout_seconds: u32) -> ScriptsInit {
        ScriptsInit {
            up: Some(up.to_owned()),
            down: Some(down.to_owned()),
            timeout_seconds,
            device: "yvs0".into(),
            addresses: vec!["10.1.0.1/30".parse().expect("net"), "fd01::1/64".parse().expect("net")],
        }
    }

    /// Waits for the running script to exit (where the runner would be woken by SIGCHLD).
    fn settle(runner: &mut Runner) -> Option<(ScriptEvent, ScriptOutcome)> {
        if let Some(running) = &mut runner.running {
            let status = running.child.wait().expect("wait");
            let event = running.event;
            runner.running = None;
            return Some((event, if status.success() { ScriptOutcome::Succeeded } else { ScriptOutcome::TimedOut }));
        }
        None
    }

    /// One test for all script behaviour: tests running in parallel threads that write
    /// executables while others fork can make exec fail with ETXTBSY.
    #[test]
    fn scripts_get_their_environment_one_at_a_time_and_a_deadline() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "SKIPPED: scripts_get_their_environment_one_at_a_time_and_a_deadline needs root (scripts must be root's)"
            );
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let body = format!(
            "echo \"$YAVIPIN_EVENT $YAVIPIN_DEVICE [$YAVIPIN_ADDRESSES] $YAVIPIN_PEER $HOME\" >> {}",
            out.display()
        );
        let up = script(dir.path(), "up", &body);
        let down = script(dir.path(), "down", &body);
        let mut runner = Runner::new(init(&up, &down, 10));
        let peer = "198.18.0.2:5555".parse().ok();
        let now = Instant::now();
        assert_eq!(runner.start(now, ScriptEvent::Up, peer).expect("start"), None);
        assert!(matches!(runner.start(now, ScriptEvent::Down, None), Err(RunnerError::Request(_))), "one at a time");
        assert_eq!(settle(&mut runner), Some((ScriptEvent::Up, ScriptOutcome::Succeeded)));
        assert_eq!(runner.start(now, ScriptEvent::Down, None).expect("start"), None);
        settle(&mut runner);
        let text = std::fs::read_to_string(&out).expect("scripts ran");
        assert_eq!(text, "up yvs0 [10.1.0.1/30 fd01::1/64] 198.18.0.2:5555 \ndown yvs0 [10.1.0.1/30 fd01::1/64]  \n");
        // Requests the runner refuses.
        for (event, peer) in
            [(ScriptEvent::Up, None), (ScriptEvent::Down, peer), (ScriptEvent::Up, "0.0.0.0:1".parse().ok())]
        {
            assert!(matches!(runner.start(now, event, peer), Err(RunnerError::Request(_))), "{event} {peer:?}");
        }

        // A hanging script is killed at its deadline, with what it started.
        let hang = script(dir.path(), "hang", &format!("sleep 30 & echo $! > {}/child; wait", dir.path().display()));
        let fail = script(dir.path(), "fail", "exit 3");
        let mut runner = Runner::new(init(&hang, &fail, 1));
        let start = Instant::now();
        runner.start(start, ScriptEvent::Up, peer).expect("start");
        assert_eq!(runner.poll_timeout(), Some(start + Duration::from_secs(1)));
        assert_eq!(runner.reap(start), None, "still running before its deadline");
        let child_file = dir.path().join("child");
        while std::fs::read_to_string(&child_file).map_or(true, |t| t.trim().is_empty()) {
            std::thread::yield_now();
        }
        let sleeper: i32 = std::fs::read_to_string(&child_file).expect("pid").trim().parse().expect("pid");
        assert_eq!(runner.reap(start + Duration::from_secs(1)), Some((ScriptEvent::Up, ScriptOutcome::TimedOut)));
        // The group was killed: the sleep goes, or becomes a zombie waiting for init.
        let gone = || {
            let state = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap_or_default();
            state.is_empty() || state.contains(") Z")
        };
        let until = Instant::now() + Duration::from_secs(10);
        while !gone() && Instant::now() < until {
            std::thread::yield_now();
        }
        assert!(gone(), "the script's child survived its group's SIGKILL");
        runner.start(start, ScriptEvent::Down, None).expect("start");
        let outcome = loop {
            if let Some(done) = runner.reap(Instant::now()) {
                break done;
            }
            std::thread::yield_now();
        };
        assert_eq!(outcome, (ScriptEvent::Down, ScriptOutcome::Failed { code: 3 }));

        // A script that became writable by others is not run.
        std::fs::set_permissions(&fail, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
        assert_eq!(runner.start(start, ScriptEvent::Down, None).expect("refused"), Some(ScriptOutcome::Refused));
    }
}
