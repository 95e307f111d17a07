//! The whole jail, as root, judged from /proc while the jailed child waits on its stdin.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork, pipe, setgroups, setresgid, setresuid};

use crate::child::{ENV_ROOT, ENV_USER};
use crate::procfs::{self, Status};
use crate::{Outcome, Scenario, Test, need_user, test, wait_pid, with};

const USER: &str = yavipin_sandbox::DEFAULT_USER;
const NO_CAPS: &str = "0000000000000000";

pub(crate) fn tests() -> Vec<Test> {
    let mut tests = Vec::new();
    for role in ["netd", "keyd"] {
        tests.push(test(format!("jail_{role}_state_in_proc"), move || {
            with(need_user(), |ids| state_in_proc(role, ids))
        }));
        for (command, signal) in [
            ("socket-inet", Signal::SIGSYS),
            ("socket-unix", Signal::SIGSYS),
            ("openat", Signal::SIGSYS),
            ("execve", Signal::SIGSYS),
            ("ptrace", Signal::SIGSYS),
            ("setuid-root", Signal::SIGSYS),
            ("mprotect-exec", Signal::SIGSYS),
            ("thread", Signal::SIGSYS),
            ("abort", Signal::SIGABRT),
            ("panic", Signal::SIGABRT),
        ] {
            let name = format!("jail_{role}_then_{command}_ends_in_{}", signal.as_str().to_lowercase());
            tests.push(test(name, move || {
                with(need_user(), |_| {
                    let dir = TestDir::new();
                    let mut child = start_jailed(role, USER, &dir.path.join("empty"));
                    child.send(command);
                    child.expect_signal(signal);
                })
            }));
        }
        tests.push(test(format!("jail_{role}_then_return_from_main_exits_0"), move || {
            with(need_user(), |_| {
                let dir = TestDir::new();
                let mut child = start_jailed(role, USER, &dir.path.join("empty"));
                child.send("return");
                child.expect_line("returning");
                child.expect_exit(0);
            })
        }));
        tests.push(test(format!("jail_{role}_cannot_be_ptraced_by_its_uid"), move || {
            with(need_user(), |ids| not_traceable(role, ids))
        }));
    }
    tests.push(test("jail_refuses_a_bad_empty_root", || {
        with(need_user(), |_| {
            let dir = TestDir::new();
            let empty = dir.path.join("empty");
            std::fs::create_dir(&empty).expect("mkdir");
            std::fs::write(empty.join("stray"), b"x").expect("write");
            let mut child = start(&format!("jail:{}", "netd"), USER, &empty);
            child.expect_line("pre");
            assert_eq!(child.expect_line("error"), "chroot");
            let stderr = child.expect_exit(3);
            assert!(stderr.contains("not empty"), "{stderr}");
        })
    }));
    // Neither needs root: both fail in the first step, before anything changes.
    tests.push(test("jail_missing_user_says_how_to_create_it", || {
        let user = "yavipin-test-no-such-user";
        let mut child = start("jail:keyd", user, Path::new("/nonexistent-empty-root"));
        child.expect_line("pre");
        assert_eq!(child.expect_line("error"), "prepare");
        let stderr = child.expect_exit(3);
        let useradd =
            format!("useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin {user}");
        assert!(stderr.contains(&useradd), "{stderr}");
        assert!(stderr.contains("systemd-sysusers"), "{stderr}");
        Outcome::Passed
    }));
    tests.push(test("jail_refuses_a_second_thread", || {
        let mut child = start("jail-threaded:netd", USER, Path::new("/nonexistent-empty-root"));
        child.expect_line("pre");
        assert_eq!(child.expect_line("error"), "prepare");
        let stderr = child.expect_exit(3);
        assert!(stderr.contains("2 threads"), "{stderr}");
        Outcome::Passed
    }));
    tests
}

/// A directory under /run (root-owned, not writable by others, as the jail demands of every
/// ancestor of the empty root), removed at the end of the test.
pub(crate) struct TestDir {
    pub(crate) path: PathBuf,
}

impl TestDir {
    pub(crate) fn new() -> TestDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!("/run/yavipin-sandbox-test-{}-{n}", std::process::id()));
        std::fs::create_dir(&path).expect("create test dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        TestDir { path }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn start(scenario: &str, user: &str, root: &Path) -> Scenario {
    Scenario::start(scenario, &[(ENV_USER, user.to_owned()), (ENV_ROOT, root.display().to_string())])
}

/// A child that ran the whole jail and now waits for one command.
fn start_jailed(role: &str, user: &str, root: &Path) -> Scenario {
    let mut child = start(&format!("jail:{role}"), user, root);
    child.expect_line("pre");
    assert_eq!(child.expect_line("ready"), "env=0", "the environment is empty");
    child
}

fn state_in_proc(role: &str, (uid, gid): (Uid, Gid)) {
    let dir = TestDir::new();
    // Missing: the jail creates it.
    let empty = dir.path.join("empty");
    // A descriptor leaked into the child (no close-on-exec), which the jail must close.
    let leaked = pipe().expect("pipe");
    let mut child = start(&format!("jail:{role}"), USER, &empty);
    let pre: Vec<i32> = child.expect_line("pre").split(',').map(|fd| fd.parse().expect("fd number")).collect();
    for fd in [leaked.0.as_raw_fd(), leaked.1.as_raw_fd()] {
        assert!(pre.contains(&fd), "the child inherited descriptor {fd}: {pre:?}");
    }
    drop(leaked);
    assert_eq!(child.expect_line("ready"), "env=0", "the environment is empty");
    let pid = child.pid();

    // Credentials, capabilities, no_new_privs and seccomp, on every thread.
    let (u, g) = (uid.to_string(), gid.to_string());
    let tasks = procfs::tasks(pid);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let mut statuses = vec![Status::of(pid)];
    statuses.extend(tasks.iter().map(|tid| Status::of_task(pid, *tid)));
    for st in &statuses {
        assert_eq!(st.get("Uid"), [u.as_str(); 4].join(" "));
        assert_eq!(st.get("Gid"), [g.as_str(); 4].join(" "));
        assert_eq!(st.get("Groups"), g);
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(st.get(set), NO_CAPS, "{set}");
        }
        assert_eq!(st.get("NoNewPrivs"), "1");
        assert_eq!(st.get("Seccomp"), "2");
        assert_eq!(st.get("Seccomp_filters"), "1");
    }

    // Locked in the empty directory, which the jail created 0755 root:root.
    let canonical = std::fs::canonicalize(&empty).expect("empty root exists");
    assert_eq!(procfs::link(pid, "root"), canonical);
    assert_eq!(procfs::link(pid, "cwd"), canonical);
    let meta = std::fs::metadata(&canonical).expect("stat");
    assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o755, 0, 0));

    // Only the keep-list is open.
    assert_eq!(procfs::fds(pid), vec![0, 1, 2]);

    // No core file; not dumpable, so /proc/<pid> belongs to root, not to the worker's uid.
    assert_eq!(procfs::limit(pid, "Max core file size"), ("0".to_owned(), "0".to_owned()));
    let owner = std::fs::metadata(format!("/proc/{pid}/status")).expect("stat").uid();
    assert_eq!(owner, 0, "/proc/{pid}/status of a non-dumpable process is root's");

    // keyd: all memory locked, within a limit fixed for soft and hard.
    let locked_kb: u64 = statuses[0].get("VmLck").trim_end_matches(" kB").parse().expect("VmLck");
    let (soft, hard) = procfs::limit(pid, "Max locked memory");
    if role == "keyd" {
        assert!(locked_kb > 0, "keyd's memory is locked");
        assert_eq!(soft, hard, "keyd's memlock limit is fixed");
    } else {
        assert_eq!(locked_kb, 0, "netd does not lock memory");
    }

    child.send("exit");
    child.expect_exit(0);
}

/// What an attacker running as the workers' uid gets from `PTRACE_SEIZE`.
#[derive(Debug, PartialEq, Eq)]
enum Attach {
    Allowed,
    Denied(Errno),
}

fn not_traceable(role: &str, (uid, gid): (Uid, Gid)) {
    let dir = TestDir::new();
    let mut jailed = start_jailed(role, USER, &dir.path.join("empty"));

    // Control: a dumpable process of the same uid can be traced by the attacker, so a refusal
    // below is due to the jail, not to the machine (Yama, missing ptrace support).
    // The control says when it is dumpable again (changing uid cleared that): attacking
    // before would race its set-up.
    let (ready_read, ready_write) = pipe().expect("pipe");
    let control = fork_as(uid, gid, || {
        nix::sys::prctl::set_dumpable(true).expect("dumpable");
        nix::unistd::write(&ready_write, b"r").expect("ready");
        loop {
            nix::unistd::pause();
        }
    });
    let mut ready = [0u8; 1];
    assert_eq!(nix::unistd::read(&ready_read, &mut ready), Ok(1), "the control never got ready");
    let traced = attack(control, uid, gid);
    let owner = std::fs::metadata(format!("/proc/{control}/status")).expect("stat").uid();
    kill(control, Signal::SIGKILL).expect("kill the control");
    assert!(matches!(wait_pid(control, "control"), WaitStatus::Signaled(_, Signal::SIGKILL, _)));
    assert_eq!(traced, Attach::Allowed, "control: a dumpable process of the same uid");
    assert_eq!(owner, uid.as_raw(), "the control's /proc files belong to its uid");

    assert_eq!(attack(jailed.pid(), uid, gid), Attach::Denied(Errno::EPERM));
    jailed.send("exit");
    jailed.expect_exit(0);
}

/// Forks an attacker with the given ids that tries `PTRACE_SEIZE` on `target`.
fn attack(target: Pid, uid: Uid, gid: Gid) -> Attach {
    let attacker = fork_as(uid, gid, move || match ptrace::seize(target, ptrace::Options::empty()) {
        Ok(()) => 10,
        Err(Errno::EPERM) => 11,
        Err(_) => 12,
    });
    match wait_pid(attacker, "attacker") {
        WaitStatus::Exited(_, 10) => Attach::Allowed,
        WaitStatus::Exited(_, 11) => Attach::Denied(Errno::EPERM),
        other => panic!("attacker ended with {other:?}"),
    }
}

/// Forks a child that switches to `uid`/`gid` and exits with what `body` returns.
fn fork_as(uid: Uid, gid: Gid, body: impl FnOnce() -> i32) -> Pid {
    assert_eq!(procfs::own_threads(), 1, "the runner must be single-threaded to fork");
    // SAFETY: the runner has a single thread (checked above), so no lock in the child's copy
    // of the address space is held by a thread that does not exist there; the child never
    // returns into the runner: it ends with _exit.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Parent { child } => child,
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                setrlimit(Resource::RLIMIT_CORE, 0, 0).expect("RLIMIT_CORE");
                setgroups(&[gid]).expect("setgroups");
                setresgid(gid, gid, gid).expect("setresgid");
                setresuid(uid, uid, uid).expect("setresuid");
                body()
            }))
            .unwrap_or(90);
            // SAFETY: ends the forked child at once, without running the runner's exit
            // handlers or flushing its copied stdio buffers a second time.
            unsafe { libc::_exit(code) }
        }
    }
}
