//! Starting the workers: the parent re-executes its own binary with a role argument, so
//! each worker starts from a fresh address space holding none of the parent's memory (no
//! configuration, no key file contents), with an empty environment and only its channel
//! sockets inherited.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

use crate::logging::Sink;

/// What a re-executed yavipind runs as: the value of its `--role` argument, which only the
/// parent passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerRole {
    /// The network worker.
    Netd,
    /// The key worker.
    Keyd,
    /// The script runner (only with up or down scripts).
    Scripts,
}

impl WorkerRole {
    /// The name on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Netd => "netd",
            Self::Keyd => "keyd",
            Self::Scripts => "scripts",
        }
    }
}

/// The program the workers are started from. The daemon uses [`Launcher::this_program`];
/// a test harness may start its own program in their place.
#[derive(Debug, Clone)]
pub struct Launcher {
    program: PathBuf,
    extra: Vec<OsString>,
}

impl Launcher {
    /// The running binary, re-executed.
    pub fn this_program() -> Result<Self, SpawnError> {
        Ok(Self { program: std::env::current_exe().map_err(SpawnError::SelfExe)?, extra: Vec::new() })
    }

    /// `program`, with `extra` arguments after the ones the parent passes.
    pub fn new(program: PathBuf, extra: Vec<OsString>) -> Self {
        Self { program, extra }
    }
}

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// Could not find our own executable.
    #[error("cannot find our own executable: {0}")]
    SelfExe(std::io::Error),
    /// fcntl on a channel failed.
    #[error("cannot prepare channel for {role}: {source}")]
    Channel {
        /// The worker.
        role: &'static str,
        /// What failed.
        source: nix::Error,
    },
    /// exec failed.
    #[error("cannot start {role}: {source}")]
    Exec {
        /// The worker.
        role: &'static str,
        /// What failed.
        source: std::io::Error,
    },
}

/// Starts `role` as `user` with `channels` inherited (their descriptor numbers are passed
/// as arguments, in order). The channels are closed in the parent afterwards.
pub fn spawn(
    launcher: &Launcher,
    role: WorkerRole,
    user: &str,
    channels: Vec<OwnedFd>,
    (sink, verbose): (Sink, bool),
) -> Result<Child, SpawnError> {
    let mut command = Command::new(&launcher.program);
    command.arg("--role").arg(role.name()).arg("--user").arg(user);
    if verbose {
        command.arg("--verbose");
    }
    // The environment is cleared, so the worker cannot see JOURNAL_STREAM itself.
    if sink == Sink::Journal {
        command.arg("--journal");
    }
    for fd in &channels {
        // Inherited across exec: clear close-on-exec on exactly these descriptors. The
        // parent is single-threaded here, so no other exec can race with this.
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(|source| SpawnError::Channel { role: role.name(), source })?;
        command.arg("--channel").arg(fd.as_raw_fd().to_string());
    }
    let child = command
        .args(&launcher.extra)
        .env_clear()
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| SpawnError::Exec { role: role.name(), source })?;
    // Our copies are no longer needed: each channel end now belongs to the child.
    drop(channels);
    Ok(child)
}
