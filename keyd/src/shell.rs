//! keyd's I/O shell: the process around the sans-IO [`KeyDaemon`].
//!
//! Started by the parent with two channels (to the parent, to netd). It jails itself
//! first — locked memory, not dumpable, no core file — and only then receives the
//! pre-shared key, so the key never exists in a process that could be swapped out, dumped
//! or traced. Then one poll loop: netd's requests in, answers out, timers. A request keyd's
//! state does not allow ends the process: netd is broken or compromised.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use yavipin_ipc::FailReason;
use yavipin_ipc::NetdToKeyd;
use yavipin_ipc::control::{KeydStatus, KeydToParent, ParentToKeyd};
use yavipin_ipc::frame::{Ancillary, Channel, FrameError};
use yavipin_proto::OsRandom;
use yavipin_sandbox::{Role, StartError};

use crate::daemon::{KeyDaemon, KeydConfig, KeydError};

/// Why keyd stopped.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The channels were wrong or the jail failed: the process must not go on.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A channel failed or carried a bad frame.
    #[error("{peer} channel: {source}")]
    Channel {
        /// "parent" or "netd".
        peer: &'static str,
        /// What went wrong.
        source: FrameError,
    },
    /// The parent's first message was not a valid `Init`.
    #[error("bad Init from parent: {0}")]
    BadInit(String),
    /// netd asked for something keyd's state does not allow.
    #[error("refused request from netd: {0}")]
    Request(#[from] KeydError),
    /// polling failed.
    #[error("poll: {0}")]
    Poll(nix::Error),
}

/// Runs keyd on `channels` = [to parent, to netd] as `user`.
pub fn run(channels: Vec<OwnedFd>, user: &str) -> Result<(), ShellError> {
    let (jailed, [parent, netd]) = yavipin_sandbox::jail_worker(Role::Keyd, channels, user)?;

    let mut parent = Channel::new(parent, Ancillary::None);
    let mut netd = Channel::new(netd, Ancillary::None);
    let init =
        match parent.recv::<ParentToKeyd>().map_err(|source| ShellError::Channel { peer: "parent", source })?.message {
            ParentToKeyd::Init(init) => init,
            ParentToKeyd::Shutdown => return Ok(()),
            ParentToKeyd::Status => return Err(ShellError::BadInit("Status before Init".into())),
        };
    let config = KeydConfig {
        group: init.group,
        dh_interval: Duration::from_secs(u64::from(init.dh_renewal_seconds)),
        ..KeydConfig::default()
    };
    let mut daemon = KeyDaemon::new(config, init.key_id, init.psk, OsRandom);
    parent.send(&KeydToParent::Ready).map_err(|source| ShellError::Channel { peer: "parent", source })?;
    log::debug!("running ({:?}, jailed, memory locked)", jailed.role());

    loop {
        while let Some(answer) = daemon.poll_output() {
            netd.send(&answer).map_err(|source| ShellError::Channel { peer: "netd", source })?;
        }
        let timeout = match daemon.poll_timeout() {
            Some(at) => PollTimeout::try_from(at.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
                .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let [from_netd, from_parent] = {
            let mut fds =
                [PollFd::new(netd.as_fd(), PollFlags::POLLIN), PollFd::new(parent.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(ShellError::Poll(e)),
            }
            fds.map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
        };
        let now = Instant::now();
        if daemon.poll_timeout().is_some_and(|at| at <= now) {
            daemon.handle_timeout(now);
        }
        if from_netd {
            let request = netd.recv::<NetdToKeyd>().map_err(|source| ShellError::Channel { peer: "netd", source })?;
            daemon.handle_netd(now, request.message)?;
        }
        if from_parent {
            match parent
                .recv::<ParentToKeyd>()
                .map_err(|source| ShellError::Channel { peer: "parent", source })?
                .message
            {
                // Dropping the daemon erases every secret it holds.
                ParentToKeyd::Shutdown => return Ok(()),
                ParentToKeyd::Status => {
                    let status = status(&daemon);
                    parent
                        .send(&KeydToParent::Status(status))
                        .map_err(|source| ShellError::Channel { peer: "parent", source })?;
                }
                ParentToKeyd::Init(_) => return Err(ShellError::BadInit("a second Init".into())),
            }
        }
    }
}

/// keyd's counters for the status query: numbers only.
fn status<R: yavipin_proto::Random>(daemon: &KeyDaemon<R>) -> KeydStatus {
    let counters = daemon.counters();
    KeydStatus {
        sessions: counters.sessions,
        modexps: daemon.modexps(),
        keys_handed_out: counters.send_keys + counters.recv_keys,
        failures: FailReason::ALL.iter().map(|&r| (r, counters.failed(r))).filter(|(_, n)| *n > 0).collect(),
    }
}
