//! The parent ↔ script runner channel: one enum per direction, [`ParentToScripts`] and
//! [`ScriptsToParent`].
//!
//! The script runner exists only when up or down scripts are configured. The parent starts
//! it before it confines itself and sends it one `Init` naming the scripts, their deadline
//! and the environment that does not change (device, addresses); from then on the parent
//! can only ask it to run the up or the down script, one at a time, with the one value that
//! comes from netd, the peer's endpoint, typed. The runner cannot be told to run anything
//! else: no message carries a path or a command.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Which script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScriptEvent {
    /// The tunnel came up.
    Up,
    /// The tunnel went down.
    Down,
}

impl ScriptEvent {
    /// The name in logs and in the script's `YAVIPIN_EVENT`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

impl core::fmt::Display for ScriptEvent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a script ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScriptOutcome {
    /// Exit status 0.
    Succeeded,
    /// Another exit status.
    Failed {
        /// The exit status.
        code: u8,
    },
    /// Ended by a signal it was not sent by the runner.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// Still running at its deadline: killed.
    TimedOut,
    /// Could not be started (the error number of `fork` or `execve`).
    NotStarted {
        /// `errno`.
        errno: i32,
    },
    /// Not run: the file no longer passes the ownership and mode checks (the runner logged
    /// why).
    Refused,
}

/// What the runner needs, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptsInit {
    /// The up script.
    pub up: Option<PathBuf>,
    /// The down script.
    pub down: Option<PathBuf>,
    /// Seconds a script may run before it is killed.
    pub timeout_seconds: u32,
    /// The tun device (`YAVIPIN_DEVICE`).
    pub device: String,
    /// Its inner addresses (`YAVIPIN_ADDRESSES`).
    pub addresses: Vec<IpNet>,
}

/// Parent to script runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentToScripts {
    /// The first message.
    Init(ScriptsInit),
    /// Run one script; only when none runs. The up script gets the peer, the down script
    /// none.
    Run {
        /// Which.
        event: ScriptEvent,
        /// The peer's endpoint (`YAVIPIN_PEER`), for the up script.
        peer: Option<SocketAddr>,
    },
}

/// Script runner to parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScriptsToParent {
    /// Started, with its privileges reduced.
    Ready,
    /// The script the parent asked for ended.
    Finished {
        /// Which.
        event: ScriptEvent,
        /// How.
        outcome: ScriptOutcome,
    },
}
