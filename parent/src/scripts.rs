//! The up and down scripts: run by the parent as root, one at a time and in order, with a
//! small fixed environment and a deadline. A script that fails, or runs past its deadline
//! and is killed, is logged; the tunnel carries on regardless.
//!
//! Scripts run asynchronously: the parent's loop keeps serving the workers while one runs,
//! learns of its exit through SIGCHLD, and kills it at its deadline.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Config;

/// Why a script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The tunnel came up.
    Up,
    /// The tunnel went down.
    Down,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

struct Running {
    event: Event,
    child: Child,
    deadline: Instant,
}

/// The scripts of one tunnel and the one running, if any.
pub struct Scripts {
    up: Option<PathBuf>,
    down: Option<PathBuf>,
    timeout: Duration,
    device: String,
    addresses: String,
    running: Option<Running>,
    queue: VecDeque<(Event, Option<SocketAddr>)>,
}

impl core::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scripts")
            .field("running", &self.running.as_ref().map(|r| r.event))
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Scripts {
    /// The scripts `config` names.
    pub fn new(config: &Config) -> Self {
        Self {
            up: config.scripts.up.clone(),
            down: config.scripts.down.clone(),
            timeout: Duration::from_secs(u64::from(config.scripts.timeout_seconds)),
            device: config.interface.name.clone(),
            addresses: config.interface.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
            running: None,
            queue: VecDeque::new(),
        }
    }

    /// Runs the script for `event` once those before it have finished.
    pub fn trigger(&mut self, now: Instant, event: Event, peer: Option<SocketAddr>) {
        let configured = match event {
            Event::Up => self.up.is_some(),
            Event::Down => self.down.is_some(),
        };
        if configured {
            self.queue.push_back((event, peer));
            self.progress(now);
        }
    }

    /// When [`Self::progress`] must run at the latest (the running script's deadline).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.running.as_ref().map(|r| r.deadline)
    }

    /// Reaps a finished script, kills an overdue one, starts the next. Call on SIGCHLD
    /// and at [`Self::poll_timeout`].
    pub fn progress(&mut self, now: Instant) {
        loop {
            if let Some(running) = &mut self.running {
                let event = running.event.name();
                match running.child.try_wait() {
                    Ok(Some(status)) if status.success() => log::info!("{event} script finished"),
                    Ok(Some(status)) => log::warn!("{event} script failed: {status}"),
                    Ok(None) if now >= running.deadline => {
                        let _ = running.child.kill();
                        let _ = running.child.wait();
                        log::warn!("{event} script killed after {} s", self.timeout.as_secs());
                    }
                    Ok(None) => return,
                    Err(e) => log::warn!("{event} script: {e}"),
                }
                self.running = None;
            }
            let Some((event, peer)) = self.queue.pop_front() else { return };
            let path = match event {
                Event::Up => self.up.as_ref(),
                Event::Down => self.down.as_ref(),
            };
            let Some(path) = path else { continue };
            let spawned = Command::new(path)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("YAVIPIN_EVENT", event.name())
                .env("YAVIPIN_DEVICE", &self.device)
                .env("YAVIPIN_ADDRESSES", &self.addresses)
                .env("YAVIPIN_PEER", peer.map(|p| p.to_string()).unwrap_or_default())
                .stdin(Stdio::null())
                .spawn();
            match spawned {
                Ok(child) => self.running = Some(Running { event, child, deadline: now + self.timeout }),
                Err(e) => log::warn!("{} script {}: {e}", event.name(), path.display()),
            }
        }
    }
}

impl Drop for Scripts {
    fn drop(&mut self) {
        // The daemon is stopping: a script still running is not waited for.
        if let Some(running) = &mut self.running {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(up: &Path, down: &Path, timeout: u32) -> Config {
        let text = format!(
            "key_file = \"/k\"\n[interface]\nname = \"yvs0\"\naddresses = [\"10.1.0.1/30\", \"fd01::1/64\"]\n\
             [scripts]\nup = \"{}\"\ndown = \"{}\"\ntimeout_seconds = {timeout}\n",
            up.display(),
            down.display()
        );
        Config::parse(Path::new("t.toml"), &text).expect("valid")
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// Waits for the running script to exit (where the daemon would be woken by SIGCHLD),
    /// then lets the scripts progress.
    fn settle(scripts: &mut Scripts) {
        if let Some(running) = &mut scripts.running {
            let _ = running.child.wait();
        }
        scripts.progress(Instant::now());
    }

    /// One test for all script behaviour: tests running in parallel threads that write
    /// executables while others fork can make exec fail with ETXTBSY.
    #[test]
    fn scripts_run_in_order_with_their_environment_and_a_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let body = format!(
            "echo \"$YAVIPIN_EVENT $YAVIPIN_DEVICE [$YAVIPIN_ADDRESSES] $YAVIPIN_PEER $HOME\" >> {}",
            out.display()
        );
        let up = script(dir.path(), "up", &body);
        let down = script(dir.path(), "down", &body);
        let mut scripts = Scripts::new(&config(&up, &down, 10));
        let peer = "198.18.0.2:5555".parse().ok();
        scripts.trigger(Instant::now(), Event::Up, peer);
        scripts.trigger(Instant::now(), Event::Down, peer);
        settle(&mut scripts);
        settle(&mut scripts);
        let text = std::fs::read_to_string(&out).expect("scripts ran");
        assert_eq!(
            text,
            "up yvs0 [10.1.0.1/30 fd01::1/64] 198.18.0.2:5555 \ndown yvs0 [10.1.0.1/30 fd01::1/64] 198.18.0.2:5555 \n"
        );

        // A hanging script is killed at its deadline, a failing one only logged.
        let up = script(dir.path(), "hang", "exec sleep 30");
        let down = script(dir.path(), "fail", "exit 3");
        let mut scripts = Scripts::new(&config(&up, &down, 1));
        let start = Instant::now();
        scripts.trigger(start, Event::Up, None);
        assert_eq!(scripts.poll_timeout(), Some(start + Duration::from_secs(1)));
        let hanging = scripts.running.as_ref().map(|r| r.child.id()).expect("up script runs");
        // At the deadline the script is killed (and reaped) and the next one started.
        scripts.trigger(start, Event::Down, None);
        scripts.progress(start + Duration::from_secs(1));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(hanging).expect("pid"));
        assert_eq!(nix::sys::signal::kill(pid, None), Err(nix::errno::Errno::ESRCH), "hanging script still there");
        assert!(scripts.queue.is_empty(), "the down script was started");
        settle(&mut scripts);
        assert!(scripts.running.is_none() && scripts.queue.is_empty());
    }
}
