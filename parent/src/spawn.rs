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
    /// The pidfd of a started worker could not be opened.
    #[error("cannot open a pidfd for {role}: {source}")]
    Pidfd {
        /// The worker.
        role: &'static str,
        /// What failed.
        source: std::io::Error,
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

/// A pidfd for `child` (Linux 5.3): after its confinement the parent can signal only the
/// processes it holds one for, which are its workers.
pub fn pidfd(role: WorkerRole, child: &Child) -> Result<OwnedFd, SpawnError> {
    let error = |source| SpawnError::Pidfd { role: role.name(), source };
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| error(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no
    // memory is passed.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = std::os::fd::RawFd::try_from(fd).map_err(|_| error(std::io::Error::last_os_error()))?;
    if fd < 0 {
        return Err(error(std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor, owned by nothing else.
    #[allow(unsafe_code)]
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Sends SIGKILL to the process behind `pidfd`.
pub fn kill(pidfd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal reads no memory when its siginfo pointer is null; the
    // descriptor is open for the call's duration.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, std::ptr::null::<u8>(), 0)
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}
