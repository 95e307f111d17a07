//! The jail's error: which step failed and why. Every error is fatal for the worker.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::policy::PolicyError;
use crate::root::EmptyRootError;

/// The steps of the jail, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// Checks and look-ups with no side effect: spec, single thread, user, capability range,
    /// seccomp policy compiled.
    Prepare,
    /// Close every inherited descriptor outside the keep-list; clear the environment.
    Descriptors,
    /// The kept descriptors are the only resources (none is a directory); resource limits that
    /// need privilege are set now.
    Resources,
    /// chroot into the empty root-owned directory, chdir("/").
    Chroot,
    /// Bounding, ambient and inheritable sets emptied; effective and permitted reduced to
    /// `CAP_SETUID` + `CAP_SETGID` for the next step.
    Capabilities,
    /// `setgroups([gid])`, `setresgid`, `setresuid`; effective and permitted emptied.
    Ids,
    /// Root cannot come back; ids and capability sets are what they must be.
    Verify,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// Not dumpable, no core file; keyd: memory locked.
    Memory,
    /// The role's seccomp filter on every thread.
    Seccomp,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 10] = [
        Step::Prepare,
        Step::Descriptors,
        Step::Resources,
        Step::Chroot,
        Step::Capabilities,
        Step::Ids,
        Step::Verify,
        Step::NoNewPrivs,
        Step::Memory,
        Step::Seccomp,
    ];

    /// Short name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Step::Prepare => "prepare",
            Step::Descriptors => "descriptors and environment",
            Step::Resources => "resources",
            Step::Chroot => "chroot",
            Step::Capabilities => "capabilities",
            Step::Ids => "user and group ids",
            Step::Verify => "verify",
            Step::NoNewPrivs => "no new privileges",
            Step::Memory => "memory",
            Step::Seccomp => "seccomp",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed jail step. The worker must exit: the process may be half-jailed.
#[derive(Debug, thiserror::Error)]
#[error("jail step `{step}` failed: {cause}")]
pub struct JailError {
    step: Step,
    cause: Cause,
}

impl JailError {
    pub(crate) fn new(step: Step, cause: Cause) -> Self {
        Self { step, cause }
    }

    /// The step that failed.
    pub fn step(&self) -> Step {
        self.step
    }

    /// Why it failed.
    pub fn cause(&self) -> &Cause {
        &self.cause
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// The account the workers run as does not exist.
    #[error(
        "user {user:?} does not exist. The workers run as this unprivileged system user; \
         create it with\n    useradd --system --no-create-home --home-dir /nonexistent \
         --shell /usr/sbin/nologin {user}\nor install packaging/sysusers.d/yavipin.conf as \
         /usr/lib/sysusers.d/yavipin.conf and run `systemd-sysusers`"
    )]
    NoSuchUser {
        /// The user name looked up.
        user: String,
    },
    /// The user database could not be read.
    #[error("looking up user {user:?}: {errno}")]
    UserLookup {
        /// The user name looked up.
        user: String,
        /// Error from `getpwnam_r`.
        errno: Errno,
    },
    /// The account is root or in group root.
    #[error("user {user:?} has uid {uid} and gid {gid}; the workers need an unprivileged account")]
    PrivilegedUser {
        /// The user name.
        user: String,
        /// Its uid.
        uid: u32,
        /// Its primary gid.
        gid: u32,
    },
    /// The spec is unusable.
    #[error("invalid jail spec: {0}")]
    Spec(String),
    /// More than one thread exists: capabilities and the bounding set are per thread and can
    /// only be dropped by the thread itself.
    #[error(
        "{threads} threads exist; the jail must run while the process is single-threaded \
         (capability sets are per thread)"
    )]
    MultiThreaded {
        /// Threads counted in /proc/self/status.
        threads: u64,
    },
    /// Reading /proc failed (the jail needs /proc before the chroot).
    #[error("reading {path}: {source}")]
    Proc {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// The kernel knows capabilities this build cannot name, so it could not drop them.
    #[error(
        "the kernel's last capability is {kernel}, this build knows up to {known}; \
         the bounding set cannot be emptied"
    )]
    UnknownCapabilities {
        /// `/proc/sys/kernel/cap_last_cap`.
        kernel: u8,
        /// Highest capability index this build knows.
        known: u8,
    },
    /// The seccomp policy is unusable.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A system call failed.
    #[error("{call}: {errno}")]
    Sys {
        /// The call.
        call: &'static str,
        /// Its error.
        errno: Errno,
    },
    /// A capability operation failed.
    #[error("{call}: {message}")]
    Caps {
        /// The operation.
        call: &'static str,
        /// The caps crate's message.
        message: String,
    },
    /// A descriptor outside the keep-list is still open after closing.
    #[error("descriptor {0} is still open after closing inherited descriptors")]
    FdStillOpen(RawFd),
    /// A descriptor the process does not account for is open.
    #[error("descriptor {fd} ({what}) is open but not accounted for")]
    UnexpectedFd {
        /// The descriptor.
        fd: RawFd,
        /// What it refers to.
        what: String,
    },
    /// A descriptor of the keep-list is not open.
    #[error("kept descriptor {0} is not open")]
    KeptFdNotOpen(RawFd),
    /// A kept descriptor is a directory: a way out of the chroot.
    #[error("kept descriptor {0} is a directory, which would lead out of the chroot")]
    KeptFdIsDirectory(RawFd),
    /// The environment is not empty after clearing it.
    #[error("the environment is not empty after clearenv()")]
    EnvNotCleared,
    /// The empty root directory is unusable.
    #[error(transparent)]
    EmptyRoot(#[from] EmptyRootError),
    /// After chroot, `/` is not the directory that was checked.
    #[error("after chroot, / is not {0}")]
    RootMismatch(PathBuf),
    /// A call that regains root succeeded.
    #[error("{call} succeeded: root privileges came back")]
    RootRegained {
        /// The call that succeeded.
        call: &'static str,
    },
    /// A call that must fail with EPERM failed differently.
    #[error("{call} failed with {errno}, expected EPERM")]
    RegainUnexpected {
        /// The call.
        call: &'static str,
        /// Its error.
        errno: Errno,
    },
    /// Ids are not the target's.
    #[error("{what} are {got}, expected {expected}")]
    IdsMismatch {
        /// uids, gids or groups.
        what: &'static str,
        /// Found.
        got: String,
        /// Expected.
        expected: String,
    },
    /// A capability set is not empty after the drop.
    #[error("capability set {set} is not empty: {caps}")]
    CapsNotEmpty {
        /// The set.
        set: &'static str,
        /// What is left.
        caps: String,
    },
    /// A capability set is not exactly what the process keeps.
    #[error("capability set {set} holds {caps}, expected {expected}")]
    CapsMismatch {
        /// The set.
        set: &'static str,
        /// What it holds.
        caps: String,
        /// What it must hold.
        expected: String,
    },
    /// The process that started this one is gone, so its death cannot end this one.
    #[error("the parent process is gone (parent is now pid {0})")]
    ParentGone(i32),
    /// A directory to confine into is not safe.
    #[error("{path}: {problem}")]
    UnsafeRoot {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A prctl state did not stick.
    #[error("{0} did not take effect")]
    NotApplied(&'static str),
    /// `RLIMIT_MEMLOCK` could not be set for keyd.
    #[error(
        "setting RLIMIT_MEMLOCK to {bytes} bytes: {errno}; raising it above the hard limit needs \
         CAP_SYS_RESOURCE (or start the daemon with a higher limit, e.g. systemd LimitMEMLOCK=)"
    )]
    MemlockLimit {
        /// Requested limit.
        bytes: u64,
        /// Error from setrlimit.
        errno: Errno,
    },
    /// mlockall failed.
    #[error(
        "mlockall(MCL_CURRENT | MCL_FUTURE): {errno}; the address space must fit in \
         RLIMIT_MEMLOCK ({bytes} bytes)"
    )]
    Mlockall {
        /// The limit in force.
        bytes: u64,
        /// Error from mlockall.
        errno: Errno,
    },
    /// Installing the seccomp filter failed.
    #[error("installing the filter: {0}")]
    Seccomp(seccompiler::Error),
}
