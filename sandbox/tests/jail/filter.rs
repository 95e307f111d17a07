//! The seccomp filters alone, as `jail` (and `confine_parent` for the parent) installs them
//! last: forbidden calls die with SIGSYS, the event loop's calls work, abort and panic still
//! end in SIGABRT, and TSYNC puts the filter on every thread. No privilege needed.

use nix::sys::signal::Signal;

use crate::child::{FORBIDDEN, FORBIDDEN_WITH_RESOURCES, KEYD_FORBIDDEN, PARENT_FORBIDDEN};
use crate::procfs::Status;
use crate::{Outcome, Scenario, Test, test};

pub(crate) fn tests() -> Vec<Test> {
    let mut tests = Vec::new();
    for role in ["netd", "keyd", "parent"] {
        tests.push(test(format!("filter_{role}_permitted_calls_work"), move || {
            let mut child = Scenario::start(&format!("filter:{role}:permitted"), &[]);
            child.expect_line("ok");
            child.expect_exit(0);
            Outcome::Passed
        }));
        let mut forbidden: Vec<&str> = FORBIDDEN.iter().chain(FORBIDDEN_WITH_RESOURCES).copied().collect();
        if role != "netd" {
            forbidden.extend(KEYD_FORBIDDEN);
        }
        if role == "parent" {
            forbidden.extend(PARENT_FORBIDDEN);
        }
        for call in forbidden {
            tests.push(test(format!("filter_{role}_{call}_dies_with_sigsys"), move || {
                let mut child = Scenario::start(&format!("filter:{role}:{call}"), &[]);
                child.expect_signal(Signal::SIGSYS);
                Outcome::Passed
            }));
        }
        tests.push(test(format!("filter_{role}_abort_ends_in_sigabrt"), move || {
            let mut child = Scenario::start(&format!("filter:{role}:abort"), &[]);
            child.expect_signal(Signal::SIGABRT);
            Outcome::Passed
        }));
        tests.push(test(format!("filter_{role}_panic_ends_in_sigabrt"), move || {
            let mut child = Scenario::start(&format!("filter:{role}:panic"), &[]);
            let status = child.wait();
            let stderr = child.stderr();
            assert!(
                matches!(status, nix::sys::wait::WaitStatus::Signaled(_, Signal::SIGABRT, _)),
                "expected SIGABRT, got {status:?}; stderr:\n{stderr}"
            );
            assert!(stderr.contains("deliberate panic"), "the panic message reached stderr: {stderr}");
            Outcome::Passed
        }));
        tests.push(test(format!("filter_{role}_tsync_reaches_every_thread"), move || {
            let mut child = Scenario::start(&format!("filter:{role}:tsync"), &[]);
            let other_tid = child.expect_line("ready");
            let tasks = crate::procfs::tasks(child.pid());
            assert_eq!(tasks.len(), 2, "two threads: {tasks:?}");
            assert!(tasks.iter().any(|t| t.to_string() == other_tid));
            for tid in tasks {
                let st = Status::of_task(child.pid(), tid);
                assert_eq!(st.get("Seccomp"), "2", "thread {tid}");
                assert_eq!(st.get("Seccomp_filters"), "1", "thread {tid}");
                assert_eq!(st.get("NoNewPrivs"), "1", "thread {tid}");
            }
            // The thread that did not install the filter makes the forbidden call.
            child.send("go");
            child.expect_signal(Signal::SIGSYS);
            Outcome::Passed
        }));
    }
    tests
}
