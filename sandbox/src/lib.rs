//! The jail of yavipin's workers: privilege drop and seccomp for netd and keyd; and the
//! parent's own confinement after setup ([`confine_parent`], see `confine.rs`).
//!
//! The root parent opens the tun device and the UDP socket, then re-executes itself as the two
//! workers. Each worker calls [`jail`] first thing in `main`, while it is still root and
//! single-threaded, and exits if it fails. There is no switch that skips it.
//!
//! # The order, and why
//!
//! [`jail`] runs these steps in this order (the [`Step`] enum lists them the same way); any
//! failure is returned as a [`JailError`] naming the step, and the caller exits.
//!
//! 0. **Prepare** ([`Step::Prepare`]), no side effect yet: the spec keeps descriptors 0, 1 and 2
//!    (so that no descriptor received later can take a standard number and receive log lines);
//!    the process has exactly one thread (capability sets and the bounding set are per thread:
//!    only the calling thread can drop its own, so a thread started earlier would keep them);
//!    the user exists and is not root (a missing user gets the command that creates it);
//!    the kernel has no capability this build cannot name; the role's seccomp policy compiles
//!    (a bad policy fails before anything irreversible happens). /etc and /proc are read in
//!    this and the next two steps, before the chroot makes them unreachable.
//! 1. **Close inherited descriptors, clear the environment** ([`Step::Descriptors`]): every
//!    descriptor outside the keep-list is closed and the result is re-read from /proc, so
//!    nothing inherited by accident (a jobserver pipe, a log file, a directory) survives;
//!    the environment is cleared so nothing downstream (`RUST_BACKTRACE`, `MALLOC_*`, locale) reacts
//!    to the caller's settings.
//! 2. **Resources** ([`Step::Resources`]): the kept descriptors, opened by the parent, are the
//!    worker's only resources; none may be a directory (an open directory leads out of a
//!    chroot). keyd's `RLIMIT_MEMLOCK` is fixed now, soft = hard (the hard limit the daemon was
//!    started with, or [`JailSpec::keyd_memlock_bytes`]; above the hard limit that needs
//!    `CAP_SYS_RESOURCE`, which goes in step 4): after the uid change `mlockall` counts the
//!    whole address space against it and every later allocation too.
//! 3. **chroot** ([`Step::Chroot`]) into an empty, root-owned, not group/world-writable directory
//!    (created 0755 root:root if missing, refused if non-empty or badly owned), then
//!    `chdir("/")`: nothing on the file system is reachable any more. It needs
//!    `CAP_SYS_CHROOT`, so it comes before the capabilities go.
//! 4. **Capabilities** ([`Step::Capabilities`]): the bounding set (needs `CAP_SETPCAP`, so
//!    first), ambient and inheritable sets are emptied; effective and permitted are cut down to
//!    `CAP_SETUID` and `CAP_SETGID`, the two the next step needs.
//! 5. **Ids** ([`Step::Ids`]): `setgroups([gid])`, `setresgid(gid, gid, gid)`,
//!    `setresuid(uid, uid, uid)` to the `yavipin` user (groups first: they need
//!    `CAP_SETGID`, which the uid change removes). The kernel empties effective and permitted
//!    when the last uid leaves 0; they are emptied explicitly too, for a caller that held
//!    capabilities without being uid 0. The uid change clears the parent-death signal: it
//!    is set again (`SIGKILL`), so a worker dies with the parent however the parent ends;
//!    a parent already gone is an error.
//! 6. **Verify** ([`Step::Verify`]): `setuid(0)`, `setresuid(0, 0, 0)`, `setgid(0)`,
//!    `setresgid(0, 0, 0)` and `setgroups([0])` must all fail with `EPERM`; real, effective and
//!    saved uid and gid and the group list are exactly the target's; all five capability sets
//!    are empty. Trust, but verify (OpenSSH's `permanently_set_uid`).
//! 7. **No new privileges** ([`Step::NoNewPrivs`]): `PR_SET_NO_NEW_PRIVS`, so no execve could
//!    ever gain privileges (set-uid bits, file capabilities), and an unprivileged process may
//!    install a seccomp filter.
//! 8. **Memory** ([`Step::Memory`]): `PR_SET_DUMPABLE 0` and `RLIMIT_CORE 0`: no core file, no
//!    ptrace or `/proc/<pid>/mem` access by other processes of the same uid (netd and keyd
//!    share it). keyd also calls `mlockall(MCL_CURRENT | MCL_FUTURE)`: the PSK and DH secrets
//!    never reach swap. netd is made non-dumpable as well: it holds the session keys; the
//!    kernel already does it at the uid change when `fs.suid_dumpable` is 0, this does not
//!    depend on that sysctl.
//! 9. **seccomp** ([`Step::Seccomp`]): the role's allow-list (see [`policy`]), default action
//!    kill-process, installed with TSYNC so it covers every thread of the process (step 0
//!    already made sure there is one; TSYNC does not depend on that). Last, because every step
//!    above needs syscalls the workers must not have afterwards (chroot, setresuid, prctl,
//!    mlockall, ...).
//!
//! Then the worker enters its event loop with the [`Jailed`] token [`jail`] returns. Everything
//! the loop needs (tun descriptor, UDP socket, socketpairs, an epoll instance) exists before the
//! jail: the filters allow no `open`, `socket` or `epoll_create1`. Threads, if ever needed,
//! would be spawned after the jail (they inherit all of it) with `clone` allowed by flags.
//!
//! # The caller's side
//!
//! - Call [`jail`] before starting any thread, and while no live object owns a descriptor
//!   outside the keep-list (the jail closes every such descriptor).
//! - Keep 0, 1 and 2 open (on /dev/null if nothing else); pass every other descriptor the
//!   worker needs (its channels, the tun device, the UDP socket, an epoll instance) in
//!   [`JailSpec::keep_fds`].
//! - On error, log the error (it names the step) and exit non-zero; never continue.
//! - The `yavipin` account must exist: [`USERADD_COMMAND`], or `systemd-sysusers` with
//!   `packaging/sysusers.d/yavipin.conf`.
//!
//! # Seccomp policies
//!
//! One JSON file per role in `sandbox/seccomp/`, embedded with `include_str!`, with a comment
//! on every syscall saying why it is needed; see [`policy`].
//!
//! # Tests
//!
//! `sandbox/tests/jail/` runs each scenario in a fresh child process: under each role's filter
//! forbidden calls die with SIGSYS, the event loop's calls work, abort and panic end in SIGABRT,
//! the filter reaches every thread; after the whole jail (as root), /proc shows the ids, empty
//! capability sets, `NoNewPrivs`, `Seccomp: 2`, the empty root, only the kept descriptors, no
//! core limit, locked memory for keyd, and a process of the same uid cannot ptrace the worker.

#![deny(unsafe_code)]

mod confine;
mod error;
pub mod policy;
mod root;

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::prctl;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::stat::Mode;
use nix::unistd::{self, Gid, Pid, Uid, User};
use seccompiler::BpfProgram;

pub use confine::{
    Confined, PARENT_KEEPS, RUNNER_KEEPS, close_stray_descriptors, confine_parent, restrict_script_runner,
};
pub use error::{Cause, JailError, Step};
pub use policy::{Policy, PolicyError};
pub use root::{EmptyRoot, EmptyRootError, ensure_empty_root};

/// The account the workers run as.
pub const DEFAULT_USER: &str = "yavipin";

/// Where the workers are chrooted unless the spec says otherwise.
pub const DEFAULT_EMPTY_ROOT: &str = "/run/yavipin/empty";

/// The command that creates [`DEFAULT_USER`] (what CI and the packaging docs run).
pub const USERADD_COMMAND: &str =
    "useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin yavipin";

/// The unprivileged worker roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The network worker: tun, UDP socket, per-packet crypto.
    Netd,
    /// The key daemon: PSK and Diffie-Hellman secrets, talks only over its socketpairs.
    Keyd,
}

impl Role {
    /// The role's name, also the name of its seccomp filter.
    pub fn name(self) -> &'static str {
        match self {
            Role::Netd => "netd",
            Role::Keyd => "keyd",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the jail needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailSpec {
    /// The account to become ([`DEFAULT_USER`]).
    pub user: String,
    /// The empty directory to chroot into ([`DEFAULT_EMPTY_ROOT`]).
    pub empty_root: PathBuf,
    /// Descriptors that stay open: 0, 1, 2 and those the parent handed over. All others close.
    pub keep_fds: Vec<RawFd>,
    /// `RLIMIT_MEMLOCK` for keyd, soft and hard; `None` raises the soft limit to the hard
    /// limit the daemon was started with (systemd's `LimitMEMLOCK=`), which needs no privilege.
    /// A value above the hard limit needs `CAP_SYS_RESOURCE`. Ignored for netd.
    pub keyd_memlock_bytes: Option<u64>,
}

impl JailSpec {
    /// The default spec keeping 0, 1, 2 and `extra_fds`.
    pub fn new(extra_fds: &[RawFd]) -> Self {
        Self {
            user: DEFAULT_USER.to_owned(),
            empty_root: PathBuf::from(DEFAULT_EMPTY_ROOT),
            keep_fds: [0, 1, 2].iter().chain(extra_fds).copied().collect(),
            keyd_memlock_bytes: None,
        }
    }
}

/// Proof that the calling process is jailed: only [`jail`] makes one. The event loop takes it.
#[derive(Debug)]
#[must_use = "the event loop must only start with the proof that the jail succeeded"]
pub struct Jailed {
    role: Role,
}

impl Jailed {
    /// The role the process was jailed as.
    pub fn role(&self) -> Role {
        self.role
    }
}

/// Looks up the account the workers run as. A missing account gives the command that creates it.
pub fn lookup_user(name: &str) -> Result<(Uid, Gid), Cause> {
    let user = match User::from_name(name) {
        Ok(Some(user)) => user,
        Ok(None) => {
            return Err(Cause::NoSuchUser { user: name.to_owned() });
        }
        Err(errno) => {
            return Err(Cause::UserLookup { user: name.to_owned(), errno });
        }
    };
    if user.uid.is_root() || user.gid.as_raw() == 0 {
        return Err(Cause::PrivilegedUser { user: name.to_owned(), uid: user.uid.as_raw(), gid: user.gid.as_raw() });
    }
    Ok((user.uid, user.gid))
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The parent handed over another number of channels than two.
    #[error("{0} channels, expected 2")]
    Channels(usize),
    /// The jail failed: the process must not go on.
    #[error(transparent)]
    Jail(#[from] JailError),
}

/// Starts a worker: checks that it was given exactly its two channels, [to the parent, to
/// the other worker], jails it as `role` running as `user` with them as its only
/// descriptors besides 0, 1 and 2 (see [`jail`]), and returns them with the proof.
pub fn jail_worker(role: Role, channels: Vec<OwnedFd>, user: &str) -> Result<(Jailed, [OwnedFd; 2]), StartError> {
    let channels: [OwnedFd; 2] = channels.try_into().map_err(|c: Vec<_>| StartError::Channels(c.len()))?;
    let mut spec = JailSpec::new(&[channels[0].as_raw_fd(), channels[1].as_raw_fd()]);
    user.clone_into(&mut spec.user);
    let jailed = jail(role, &spec)?;
    Ok((jailed, channels))
}

/// Jails the calling worker process as `role`, in the order documented at the crate root.
///
/// Call it first thing in the worker's `main`, while the process is root and single-threaded
/// and while no descriptor outside `spec.keep_fds` is owned by a live object (they are closed
/// from under it). On error the process may be half-jailed: the caller must exit.
pub fn jail(role: Role, spec: &JailSpec) -> Result<Jailed, JailError> {
    let at = |step| move |cause| JailError::new(step, cause);

    // 0. Checks and look-ups, no side effect.
    let prep = prepare(role, spec).map_err(at(Step::Prepare))?;
    // 1. Nothing inherited survives.
    close_inherited_fds(&prep.keep).map_err(at(Step::Descriptors))?;
    clear_environment().map_err(at(Step::Descriptors))?;
    // 2. The parent's descriptors are the only resources; limits that need privilege.
    check_kept_fds(&prep.keep).map_err(at(Step::Resources))?;
    let memlock = match role {
        Role::Keyd => set_memlock(spec.keyd_memlock_bytes).map_err(at(Step::Resources))?,
        Role::Netd => 0,
    };
    // 3. No file system.
    enter_empty_root(&spec.empty_root).map_err(at(Step::Chroot))?;
    // 4. No capabilities but the two the next step uses.
    drop_capabilities().map_err(at(Step::Capabilities))?;
    // 5. The unprivileged user.
    change_ids(prep.uid, prep.gid).and_then(|()| die_with(prep.parent)).map_err(at(Step::Ids))?;
    // 6. Root cannot come back.
    verify_no_way_back(prep.uid, prep.gid).map_err(at(Step::Verify))?;
    // 7. No execve could gain privileges.
    prctl::set_no_new_privs()
        .map_err(sys("prctl(PR_SET_NO_NEW_PRIVS)"))
        .and_then(|()| applied(prctl::get_no_new_privs(), "PR_SET_NO_NEW_PRIVS"))
        .map_err(at(Step::NoNewPrivs))?;
    // 8. No dump, no core; keyd's memory never swapped.
    protect_memory(role, memlock).map_err(at(Step::Memory))?;
    // 9. The role's allow-list, on every thread.
    seccompiler::apply_filter_all_threads(&prep.filter).map_err(Cause::Seccomp).map_err(at(Step::Seccomp))?;

    Ok(Jailed { role })
}

/// What [`prepare`] found.
struct Prepared {
    uid: Uid,
    gid: Gid,
    parent: Pid,
    keep: BTreeSet<RawFd>,
    filter: BpfProgram,
}

fn prepare(role: Role, spec: &JailSpec) -> Result<Prepared, Cause> {
    let keep: BTreeSet<RawFd> = spec.keep_fds.iter().copied().collect();
    if let Some(fd) = keep.iter().find(|fd| **fd < 0) {
        return Err(Cause::Spec(format!("negative descriptor {fd} in the keep-list")));
    }
    if ![0, 1, 2].iter().all(|fd| keep.contains(fd)) {
        return Err(Cause::Spec(
            "descriptors 0, 1 and 2 must be kept (point them at /dev/null if unused), so that \
             no later descriptor takes their numbers"
                .to_owned(),
        ));
    }
    let threads = thread_count()?;
    if threads != 1 {
        return Err(Cause::MultiThreaded { threads });
    }
    let (uid, gid) = lookup_user(&spec.user)?;
    let kernel = read_proc("/proc/sys/kernel/cap_last_cap")?;
    let kernel: u8 = kernel.trim().parse().map_err(|_| Cause::Proc {
        path: "/proc/sys/kernel/cap_last_cap".to_owned(),
        source: std::io::Error::other(format!("unexpected content {kernel:?}")),
    })?;
    let known = caps::all().iter().map(Capability::index).max().unwrap_or(0);
    if kernel > known {
        return Err(Cause::UnknownCapabilities { kernel, known });
    }
    let filter = policy::compile(role)?;
    Ok(Prepared { uid, gid, parent: unistd::getppid(), keep, filter })
}

pub(crate) fn read_proc(path: &str) -> Result<String, Cause> {
    fs::read_to_string(path).map_err(|source| Cause::Proc { path: path.to_owned(), source })
}

pub(crate) fn thread_count() -> Result<u64, Cause> {
    let status = read_proc("/proc/self/status")?;
    status.lines().find_map(|line| line.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).ok_or_else(|| {
        Cause::Proc { path: "/proc/self/status".to_owned(), source: std::io::Error::other("no Threads: line") }
    })
}

pub(crate) fn sys(call: &'static str) -> impl Fn(Errno) -> Cause {
    move |errno| Cause::Sys { call, errno }
}

pub(crate) fn applied(state: nix::Result<bool>, what: &'static str) -> Result<(), Cause> {
    match state {
        Ok(true) => Ok(()),
        Ok(false) => Err(Cause::NotApplied(what)),
        Err(errno) => Err(Cause::Sys { call: what, errno }),
    }
}

/// Descriptors open in this process, read from /proc/self/fd (without the listing's own).
pub(crate) fn open_fds() -> Result<BTreeSet<RawFd>, Cause> {
    let mut dir = Dir::open("/proc/self/fd", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(sys("open /proc/self/fd"))?;
    let own = dir.as_raw_fd();
    let mut fds = BTreeSet::new();
    for entry in dir.iter() {
        let entry = entry.map_err(sys("read /proc/self/fd"))?;
        if let Some(fd) = entry.file_name().to_str().ok().and_then(|n| n.parse::<RawFd>().ok())
            && fd != own
        {
            fds.insert(fd);
        }
    }
    Ok(fds)
}

pub(crate) fn close_inherited_fds(keep: &BTreeSet<RawFd>) -> Result<(), Cause> {
    for fd in open_fds()?.difference(keep) {
        match unistd::close(*fd) {
            // Linux releases the descriptor even when close() is interrupted.
            Ok(()) | Err(Errno::EINTR) => {}
            Err(errno) => return Err(Cause::Sys { call: "close", errno }),
        }
    }
    let open = open_fds()?;
    if let Some(fd) = open.difference(keep).next() {
        return Err(Cause::FdStillOpen(*fd));
    }
    if let Some(fd) = keep.difference(&open).next() {
        return Err(Cause::KeptFdNotOpen(*fd));
    }
    Ok(())
}

#[allow(unsafe_code)]
pub(crate) fn clear_environment() -> Result<(), Cause> {
    // SAFETY: `prepare` checked that this process has a single thread, so no other thread can
    // read or write the environment while it is cleared; std keeps no pointer into `environ`
    // between its own calls.
    if unsafe { libc::clearenv() } != 0 {
        return Err(Cause::Sys { call: "clearenv", errno: Errno::last() });
    }
    if std::env::vars_os().next().is_some() {
        return Err(Cause::EnvNotCleared);
    }
    Ok(())
}

fn check_kept_fds(keep: &BTreeSet<RawFd>) -> Result<(), Cause> {
    for fd in keep {
        let path = format!("/proc/self/fd/{fd}");
        let meta = fs::metadata(&path).map_err(|source| Cause::Proc { path, source })?;
        if meta.is_dir() {
            return Err(Cause::KeptFdIsDirectory(*fd));
        }
    }
    Ok(())
}

/// Sets keyd's `RLIMIT_MEMLOCK` (soft and hard) and returns it.
fn set_memlock(want: Option<u64>) -> Result<u64, Cause> {
    let (_, hard) = getrlimit(Resource::RLIMIT_MEMLOCK).map_err(sys("getrlimit(RLIMIT_MEMLOCK)"))?;
    let bytes = want.unwrap_or(hard);
    setrlimit(Resource::RLIMIT_MEMLOCK, bytes, bytes).map_err(|errno| Cause::MemlockLimit { bytes, errno })?;
    Ok(bytes)
}

fn enter_empty_root(path: &Path) -> Result<(), Cause> {
    let root = ensure_empty_root(path)?;
    unistd::fchdir(root.fd()).map_err(sys("fchdir(empty root)"))?;
    unistd::chroot(".").map_err(sys("chroot(\".\")"))?;
    unistd::chdir("/").map_err(sys("chdir(\"/\")"))?;
    let now = fs::metadata("/").map_err(|source| Cause::Proc { path: "/ after chroot".to_owned(), source })?;
    if (now.dev(), now.ino()) != root.id() {
        return Err(Cause::RootMismatch(root.path().to_owned()));
    }
    // Dropping `root` closes the directory descriptor: none outside the root stays open.
    Ok(())
}

pub(crate) fn caps_err(call: &'static str) -> impl Fn(caps::errors::CapsError) -> Cause {
    move |e| Cause::Caps { call, message: e.to_string() }
}

fn drop_capabilities() -> Result<(), Cause> {
    caps::clear(None, CapSet::Bounding).map_err(caps_err("drop the bounding set"))?;
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("clear the inheritable set"))?;
    let for_ids: CapsHashSet = [Capability::CAP_SETUID, Capability::CAP_SETGID].into();
    // The effective set must stay a subset of the permitted one: cut it first.
    for (set, call) in
        [(CapSet::Effective, "reduce the effective set"), (CapSet::Permitted, "reduce the permitted set")]
    {
        let now = caps::read(None, set).map_err(caps_err(call))?;
        let kept: CapsHashSet = now.intersection(&for_ids).copied().collect();
        caps::set(None, set, &kept).map_err(caps_err(call))?;
    }
    Ok(())
}

fn change_ids(uid: Uid, gid: Gid) -> Result<(), Cause> {
    unistd::setgroups(&[gid]).map_err(sys("setgroups"))?;
    unistd::setresgid(gid, gid, gid).map_err(sys("setresgid"))?;
    unistd::setresuid(uid, uid, uid).map_err(sys("setresuid"))?;
    caps::clear(None, CapSet::Effective).map_err(caps_err("clear the effective set"))?;
    caps::clear(None, CapSet::Permitted).map_err(caps_err("clear the permitted set"))?;
    Ok(())
}

/// Dies with the parent: the uid change cleared the parent-death signal, so it is set
/// again, and a worker outlives no parent, however the parent ends. If the parent is
/// already gone, nothing would deliver it: an error.
fn die_with(parent: Pid) -> Result<(), Cause> {
    prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(sys("prctl(PR_SET_PDEATHSIG)"))?;
    let now = unistd::getppid();
    if now != parent {
        return Err(Cause::ParentGone(now.as_raw()));
    }
    Ok(())
}

fn must_fail(call: &'static str, result: nix::Result<()>) -> Result<(), Cause> {
    match result {
        Ok(()) => Err(Cause::RootRegained { call }),
        Err(Errno::EPERM) => Ok(()),
        Err(errno) => Err(Cause::RegainUnexpected { call, errno }),
    }
}

fn verify_no_way_back(uid: Uid, gid: Gid) -> Result<(), Cause> {
    let (uid0, gid0) = (Uid::from_raw(0), Gid::from_raw(0));
    must_fail("setuid(0)", unistd::setuid(uid0))?;
    must_fail("setresuid(0, 0, 0)", unistd::setresuid(uid0, uid0, uid0))?;
    must_fail("setgid(0)", unistd::setgid(gid0))?;
    must_fail("setresgid(0, 0, 0)", unistd::setresgid(gid0, gid0, gid0))?;
    must_fail("setgroups([0])", unistd::setgroups(&[gid0]))?;

    let ids = unistd::getresuid().map_err(sys("getresuid"))?;
    let got = [ids.real, ids.effective, ids.saved];
    if got != [uid; 3] {
        return Err(Cause::IdsMismatch {
            what: "real/effective/saved uids",
            got: format!("{got:?}"),
            expected: format!("{:?}", [uid; 3]),
        });
    }
    let ids = unistd::getresgid().map_err(sys("getresgid"))?;
    let got = [ids.real, ids.effective, ids.saved];
    if got != [gid; 3] {
        return Err(Cause::IdsMismatch {
            what: "real/effective/saved gids",
            got: format!("{got:?}"),
            expected: format!("{:?}", [gid; 3]),
        });
    }
    let groups = unistd::getgroups().map_err(sys("getgroups"))?;
    if groups != [gid] {
        return Err(Cause::IdsMismatch {
            what: "supplementary groups",
            got: format!("{groups:?}"),
            expected: format!("{:?}", [gid]),
        });
    }
    for (set, name) in [
        (CapSet::Effective, "effective"),
        (CapSet::Permitted, "permitted"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Ambient, "ambient"),
        (CapSet::Bounding, "bounding"),
    ] {
        let left = caps::read(None, set).map_err(caps_err("read capabilities"))?;
        if !left.is_empty() {
            let mut names: Vec<String> = left.iter().map(ToString::to_string).collect();
            names.sort();
            return Err(Cause::CapsNotEmpty { set: name, caps: names.join(", ") });
        }
    }
    Ok(())
}

fn protect_memory(role: Role, memlock_bytes: u64) -> Result<(), Cause> {
    prctl::set_dumpable(false).map_err(sys("prctl(PR_SET_DUMPABLE, 0)"))?;
    match prctl::get_dumpable() {
        Ok(false) => {}
        Ok(true) => return Err(Cause::NotApplied("PR_SET_DUMPABLE 0")),
        Err(errno) => return Err(Cause::Sys { call: "prctl(PR_GET_DUMPABLE)", errno }),
    }
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(sys("setrlimit(RLIMIT_CORE, 0)"))?;
    if role == Role::Keyd {
        mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE)
            .map_err(|errno| Cause::Mlockall { bytes: memlock_bytes, errno })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_refuses_to_start_without_exactly_two_channels() {
        // Refused before the jail begins: nothing in this process changes.
        let one = vec![OwnedFd::from(fs::File::open("/dev/null").expect("/dev/null"))];
        for (channels, count) in [(Vec::new(), 0), (one, 1)] {
            let error = jail_worker(Role::Netd, channels, DEFAULT_USER).expect_err("refused");
            assert!(matches!(error, StartError::Channels(n) if n == count), "{error}");
            assert_eq!(error.to_string(), format!("{count} channels, expected 2"));
        }
    }

    /// The steps in the order `names` first mentions them.
    fn order(names: impl Iterator<Item = String>) -> Vec<String> {
        let mut seen = Vec::new();
        for name in names {
            if !seen.contains(&name) {
                seen.push(name);
            }
        }
        seen
    }

    fn step_names(text: &str, prefix: &str) -> Vec<String> {
        order(
            text.split(prefix)
                .skip(1)
                .map(|rest| rest.chars().take_while(char::is_ascii_alphanumeric).collect::<String>()),
        )
    }

    #[test]
    fn code_and_docs_follow_the_same_order() {
        let expected: Vec<String> = Step::ALL.iter().map(|s| format!("{s:?}")).collect();
        let source = include_str!("lib.rs");
        let docs: String = source.lines().filter(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n");
        let docs = docs.split("# The caller's side").next().unwrap_or_default();
        assert_eq!(step_names(docs, "[`Step::"), expected, "crate docs");
        let start = source.find("pub fn jail(").expect("jail");
        let body = &source[start..];
        let body = &body[..body.find("Ok(Jailed").expect("end of jail")];
        assert_eq!(step_names(body, "at(Step::"), expected, "jail()");
    }

    #[test]
    fn a_missing_user_is_told_how_to_create_it() {
        let err = lookup_user("yavipin-unit-test-no-such-user").expect_err("missing");
        let text = err.to_string();
        assert!(
            text.contains(
                "useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
                 yavipin-unit-test-no-such-user"
            ),
            "{text}"
        );
        assert!(text.contains("systemd-sysusers"), "{text}");
        assert!(USERADD_COMMAND.ends_with(DEFAULT_USER));
    }

    #[test]
    fn root_is_not_a_worker_account() {
        let err = lookup_user("root").expect_err("root");
        assert!(matches!(err, Cause::PrivilegedUser { uid: 0, .. }), "{err}");
    }

    #[test]
    fn standard_descriptors_must_be_kept() {
        assert_eq!(JailSpec::new(&[5, 7]).keep_fds, vec![0, 1, 2, 5, 7]);
        // The spec is checked first, before anything else happens.
        let spec = JailSpec { keep_fds: vec![1, 2, 3], ..JailSpec::new(&[]) };
        let err = jail(Role::Netd, &spec).expect_err("stdin not kept");
        assert_eq!(err.step(), Step::Prepare);
        assert!(matches!(err.cause(), Cause::Spec(_)), "{err}");
    }
}
