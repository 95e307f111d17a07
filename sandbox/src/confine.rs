//! The parent's confinement once it has set everything up, and the script runner's reduced
//! privileges. Both stay uid 0 (the parent removes its root-owned control socket at exit;
//! scripts are root's own commands), so what limits them is what they keep of root's
//! capabilities, no-new-privs, and for the parent a chroot and a seccomp filter.
//!
//! The parent, by [`confine_parent`], in this order:
//!
//! 0. **Prepare** ([`Step::Prepare`]): one thread; the spec keeps 0, 1 and 2; the parent's
//!    policy compiles.
//! 1. **Descriptors** ([`Step::Descriptors`]): exactly the kept descriptors are open (the
//!    parent owns each of them, so none is closed from under it: one more is an error), and
//!    the environment is cleared.
//! 2. **chroot** ([`Step::Chroot`]) into the run directory (`/run/yavipin`: root-owned, not
//!    group or world-writable), then `chdir("/")`: of the file system only the control
//!    sockets and the workers' empty root remain nameable, and the filter lets the parent
//!    remove files there and nothing else.
//! 3. **Capabilities** ([`Step::Capabilities`]): the bounding set, permitted and effective
//!    sets are cut to `CAP_NET_ADMIN` (link state, MTU and addresses of the tun device) and
//!    `CAP_KILL` (to stop a worker that hangs, which runs under another uid; the kernel also
//!    checks it when it delivers the workers' parent-death signal), see [`PARENT_KEEPS`];
//!    inheritable and ambient are emptied.
//! 4. **Verify** ([`Step::Verify`]): the five sets read back as exactly that.
//! 5. **No new privileges** ([`Step::NoNewPrivs`]).
//! 6. **Memory** ([`Step::Memory`]): not dumpable, no core file.
//! 7. **seccomp** ([`Step::Seccomp`]): `sandbox/seccomp/parent.json`, kill by default, on
//!    every thread. It has no `execve`, `fork` or `clone`, no `open` or `socket`, and no
//!    `kill`: a signal goes only through `pidfd_send_signal`, and only `SIGKILL`, so only to
//!    the workers whose pidfds the parent opened before it confined itself.
//!
//! The script runner, by [`restrict_script_runner`]: close every descriptor but its channel
//! and 0, 1, 2 and clear the environment; cut the capability sets to `CAP_NET_ADMIN`
//! ([`RUNNER_KEEPS`]) and verify them; no new privileges. Scripts it starts run as uid 0 with exactly
//! that capability (for uid 0, `execve` gives the bounding set, and no-new-privs keeps it
//! within what the runner holds): they may configure the network (routes, firewall rules,
//! addresses) and write files root owns, nothing that needs another capability. The runner
//! has no seccomp filter and no chroot, because its children inherit both and scripts
//! need the file system and whatever programs they run.

use std::collections::BTreeSet;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::prctl;
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd;

use crate::error::{Cause, JailError, Step};
use crate::policy::{self, Policy};
use crate::{applied, caps_err, clear_environment, close_inherited_fds, open_fds, sys, thread_count};

/// Proof that the parent is confined: only [`confine_parent`] makes one.
#[derive(Debug)]
#[must_use = "the parent's event loop must only start with the proof that it is confined"]
pub struct Confined(());

/// What the parent keeps: the tun device's link state, MTU and addresses; stopping a
/// worker that hangs (and the kernel's delivery of the workers' parent-death signal, which
/// is checked against the parent's credentials), through its workers' pidfds only.
pub const PARENT_KEEPS: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_KILL];
/// What the script runner, and so its scripts, keep: network configuration.
pub const RUNNER_KEEPS: [Capability; 1] = [Capability::CAP_NET_ADMIN];

/// Confines the parent, in the order documented above. `keep_fds` must name every open
/// descriptor (0, 1 and 2 included); `root` is the run directory.
pub fn confine_parent(keep_fds: &[RawFd], root: &Path) -> Result<Confined, JailError> {
    let at = |step| move |cause| JailError::new(step, cause);
    let keep: BTreeSet<RawFd> = keep_fds.iter().copied().collect();
    let filter = prepare(&keep).and_then(|()| Ok(policy::compile(Policy::Parent)?)).map_err(at(Step::Prepare))?;
    exactly_open(&keep).and_then(|()| clear_environment()).map_err(at(Step::Descriptors))?;
    enter(root).map_err(at(Step::Chroot))?;
    keep_only(&PARENT_KEEPS).map_err(at(Step::Capabilities))?;
    verify_only(&PARENT_KEEPS).map_err(at(Step::Verify))?;
    no_new_privs().map_err(at(Step::NoNewPrivs))?;
    not_dumpable().map_err(at(Step::Memory))?;
    seccompiler::apply_filter_all_threads(&filter).map_err(Cause::Seccomp).map_err(at(Step::Seccomp))?;
    Ok(Confined(()))
}

/// Reduces the script runner's privileges, as documented above; every descriptor outside
/// `keep_fds` is closed.
pub fn restrict_script_runner(keep_fds: &[RawFd]) -> Result<(), JailError> {
    let at = |step| move |cause| JailError::new(step, cause);
    let keep: BTreeSet<RawFd> = keep_fds.iter().copied().collect();
    prepare(&keep).map_err(at(Step::Prepare))?;
    close_inherited_fds(&keep).and_then(|()| clear_environment()).map_err(at(Step::Descriptors))?;
    keep_only(&RUNNER_KEEPS).map_err(at(Step::Capabilities))?;
    verify_only(&RUNNER_KEEPS).map_err(at(Step::Verify))?;
    no_new_privs().map_err(at(Step::NoNewPrivs))
}

/// Closes every descriptor but 0, 1 and 2: what the daemon inherited by accident (from a
/// shell, a wrapper, a test harness). Call first thing, before anything owns a descriptor.
pub fn close_stray_descriptors() -> Result<(), JailError> {
    close_inherited_fds(&[0, 1, 2].into()).map_err(|cause| JailError::new(Step::Descriptors, cause))
}

fn prepare(keep: &BTreeSet<RawFd>) -> Result<(), Cause> {
    if ![0, 1, 2].iter().all(|fd| keep.contains(fd)) {
        return Err(Cause::Spec("descriptors 0, 1 and 2 must be kept".to_owned()));
    }
    let threads = thread_count()?;
    if threads != 1 {
        return Err(Cause::MultiThreaded { threads });
    }
    Ok(())
}

fn exactly_open(keep: &BTreeSet<RawFd>) -> Result<(), Cause> {
    let open = open_fds()?;
    if let Some(&fd) = open.difference(keep).next() {
        let what = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map_or_else(|e| e.to_string(), |p| p.display().to_string());
        return Err(Cause::UnexpectedFd { fd, what });
    }
    if let Some(fd) = keep.difference(&open).next() {
        return Err(Cause::KeptFdNotOpen(*fd));
    }
    Ok(())
}

fn enter(root: &Path) -> Result<(), Cause> {
    let unsafe_root = |problem: String| Cause::UnsafeRoot { path: root.to_owned(), problem };
    let meta = std::fs::metadata(root).map_err(|e| unsafe_root(e.to_string()))?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(unsafe_root(format!(
            "must be a directory owned by root and writable by nobody else (uid {}, mode {:04o})",
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    unistd::chdir(root).map_err(sys("chdir(run directory)"))?;
    unistd::chroot(".").map_err(sys("chroot(\".\")"))?;
    unistd::chdir("/").map_err(sys("chdir(\"/\")"))
}

fn keep_only(caps: &[Capability]) -> Result<(), Cause> {
    let kept: CapsHashSet = caps.iter().copied().collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
    for other in caps::read(None, CapSet::Bounding).map_err(caps_err("read the bounding set"))? {
        if !kept.contains(&other) {
            caps::drop(None, CapSet::Bounding, other).map_err(caps_err("drop from the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear the ambient set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("clear the inheritable set"))?;
    // The effective set must stay a subset of the permitted one: cut it first.
    caps::set(None, CapSet::Effective, &kept).map_err(caps_err("reduce the effective set"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(caps_err("reduce the permitted set"))
}

fn verify_only(caps: &[Capability]) -> Result<(), Cause> {
    for (set, name, expected) in [
        (CapSet::Effective, "effective", caps),
        (CapSet::Permitted, "permitted", caps),
        (CapSet::Bounding, "bounding", caps),
        (CapSet::Inheritable, "inheritable", &[][..]),
        (CapSet::Ambient, "ambient", &[][..]),
    ] {
        let held = caps::read(None, set).map_err(caps_err("read capabilities"))?;
        let expected: CapsHashSet = expected.iter().copied().collect();
        if held != expected {
            let names = |s: &CapsHashSet| {
                let mut names: Vec<String> = s.iter().map(ToString::to_string).collect();
                names.sort();
                if names.is_empty() { "nothing".to_owned() } else { names.join(", ") }
            };
            return Err(Cause::CapsMismatch { set: name, caps: names(&held), expected: names(&expected) });
        }
    }
    Ok(())
}

fn no_new_privs() -> Result<(), Cause> {
    prctl::set_no_new_privs()
        .map_err(sys("prctl(PR_SET_NO_NEW_PRIVS)"))
        .and_then(|()| applied(prctl::get_no_new_privs(), "PR_SET_NO_NEW_PRIVS"))
}

fn not_dumpable() -> Result<(), Cause> {
    prctl::set_dumpable(false).map_err(sys("prctl(PR_SET_DUMPABLE, 0)"))?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(sys("setrlimit(RLIMIT_CORE, 0)"))
}
