//! Sandbox tests: each scenario runs in a fresh child process and is judged from outside.
//!
//! Why a custom `main` (`harness = false`) and re-execution: libtest runs tests on a thread
//! pool, and a process with several threads can neither be forked safely nor jailed (the jail
//! requires a single thread). So this binary is both the runner and the child: the runner
//! (single-threaded, tests run one after another) starts `current_exe()` again with
//! `YAVIPIN_SANDBOX_SCENARIO=<scenario>` and an empty environment; that child runs the scenario
//! (`child.rs`) from the top of `main`, and the runner checks how it ended
//! (`WaitStatus::Signaled(_, SIGSYS, _)`, `SIGABRT`, exit code) and, while a jailed child waits
//! on its stdin, what /proc says about it.
//!
//! Tests that need root (the full jail, the empty-root checks, ptrace) print
//! `SKIPPED: <test>: needs root` and pass when not root; the full jail also needs the `yavipin`
//! user and is skipped loudly without it. Filter tests need no privilege (`no_new_privs` lets any
//! process install a filter), so they always run.
//!
//! Arguments: substrings select tests (like libtest's filter); `--list` lists them.

mod child;
mod filter;
mod full;
mod procfs;
mod root_dir;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::panic::{self, AssertUnwindSafe};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid, User};

/// How long any child may take before it is killed and the test fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// How a test ended, if it did not panic.
pub(crate) enum Outcome {
    Passed,
    Skipped(String),
}

pub(crate) struct Test {
    pub(crate) name: String,
    pub(crate) run: Box<dyn Fn() -> Outcome>,
}

pub(crate) fn test(name: impl Into<String>, run: impl Fn() -> Outcome + 'static) -> Test {
    Test { name: name.into(), run: Box::new(run) }
}

fn main() {
    if let Some(scenario) = std::env::var_os(child::SCENARIO) {
        child::run(&scenario.to_string_lossy());
        return;
    }

    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let mut tests = Vec::new();
    tests.extend(filter::tests());
    tests.extend(full::tests());
    tests.extend(root_dir::tests());

    if args.iter().any(|a| a == "--list") {
        for t in &tests {
            println!("{}: test", t.name);
        }
        return;
    }

    let started = Instant::now();
    let total = tests.len();
    let selected: Vec<&Test> =
        tests.iter().filter(|t| filters.is_empty() || filters.iter().any(|f| t.name.contains(f.as_str()))).collect();
    println!("\nrunning {} tests", selected.len());
    let (mut passed, mut failed, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for t in &selected {
        match panic::catch_unwind(AssertUnwindSafe(|| (t.run)())) {
            Ok(Outcome::Passed) => {
                println!("test {} ... ok", t.name);
                passed.push(&t.name);
            }
            Ok(Outcome::Skipped(why)) => {
                eprintln!("SKIPPED: {}: {why}", t.name);
                println!("test {} ... SKIPPED", t.name);
                skipped.push(&t.name);
            }
            Err(_) => {
                println!("test {} ... FAILED", t.name);
                failed.push(&t.name);
            }
        }
    }
    if !skipped.is_empty() {
        eprintln!("\nSKIPPED {} sandbox tests:", skipped.len());
        for name in &skipped {
            eprintln!("    SKIPPED: {name}");
        }
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; {} ignored; 0 measured; {} filtered out; \
         finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        passed.len(),
        failed.len(),
        skipped.len(),
        total - selected.len(),
        started.elapsed().as_secs_f64(),
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

// ---- requirements ---------------------------------------------------------------------------

pub(crate) fn is_root() -> bool {
    Uid::effective().is_root()
}

/// `Err(skip)` unless running as root.
pub(crate) fn need_root() -> Result<(), Outcome> {
    if is_root() { Ok(()) } else { Err(Outcome::Skipped("needs root (CI runs the tests as root)".to_owned())) }
}

/// The `yavipin` account, or a loud skip.
pub(crate) fn need_user() -> Result<(Uid, Gid), Outcome> {
    need_root()?;
    match User::from_name(yavipin_sandbox::DEFAULT_USER) {
        Ok(Some(u)) => Ok((u.uid, u.gid)),
        _ => Err(Outcome::Skipped(format!(
            "needs the `{}` user; create it with: {}",
            yavipin_sandbox::DEFAULT_USER,
            yavipin_sandbox::USERADD_COMMAND
        ))),
    }
}

/// Runs `body` unless a requirement is missing.
pub(crate) fn with<T>(req: Result<T, Outcome>, body: impl FnOnce(T)) -> Outcome {
    match req {
        Ok(t) => {
            body(t);
            Outcome::Passed
        }
        Err(skip) => skip,
    }
}

// ---- child processes -------------------------------------------------------------------------

/// A child running one scenario, with its stdin, stdout and stderr piped to the runner.
pub(crate) struct Scenario {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    name: String,
}

impl Scenario {
    /// Starts `current_exe()` as a child running `scenario`, with only `env` in its environment.
    pub(crate) fn start(scenario: &str, env: &[(&str, String)]) -> Scenario {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.env_clear()
            .env(child::SCENARIO, scenario)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the scenario child");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Scenario { child, stdin, stdout, name: scenario.to_owned() }
    }

    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"))
    }

    /// The next line the child prints, or `None` at end of output. Fails after the timeout.
    pub(crate) fn line(&mut self) -> Option<String> {
        if self.stdout.buffer().is_empty() {
            let fd = self.stdout.get_ref().as_fd();
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            let ms = u16::try_from(CHILD_TIMEOUT.as_millis()).unwrap_or(u16::MAX);
            let n = poll(&mut fds, PollTimeout::from(ms)).expect("poll child stdout");
            assert!(n > 0, "{}: no output within {ms} ms", self.name);
        }
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("read child stdout");
        (n > 0).then(|| line.trim_end().to_owned())
    }

    /// The next line, which must start with `prefix`; returns the rest.
    pub(crate) fn expect_line(&mut self, prefix: &str) -> String {
        match self.line() {
            Some(line) if line.starts_with(prefix) => line[prefix.len()..].trim().to_owned(),
            other => {
                let status = self.wait();
                let stderr = self.stderr();
                panic!(
                    "{}: expected a line starting with {prefix:?}, got {other:?}; child ended \
                     with {status:?}; stderr:\n{stderr}",
                    self.name,
                );
            }
        }
    }

    /// Sends a command line to the child.
    pub(crate) fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to child");
        stdin.flush().expect("flush");
    }

    /// Waits for the child to end (killing it after the timeout) and returns how it ended.
    pub(crate) fn wait(&mut self) -> WaitStatus {
        self.stdin = None;
        wait_pid(self.pid(), &self.name)
    }

    /// Everything the child wrote to stderr (call after `wait`).
    pub(crate) fn stderr(&mut self) -> String {
        let mut out = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut out);
        }
        out
    }

    /// Waits and asserts the child was killed by `signal`.
    pub(crate) fn expect_signal(&mut self, signal: Signal) {
        let status = self.wait();
        let stderr = self.stderr();
        match status {
            WaitStatus::Signaled(_, sig, _) if sig == signal => {}
            other => panic!("{}: expected death by {signal:?}, got {other:?}; stderr:\n{stderr}", self.name),
        }
    }

    /// Waits and asserts the child exited with `code`; returns its stderr.
    pub(crate) fn expect_exit(&mut self, code: i32) -> String {
        let status = self.wait();
        let stderr = self.stderr();
        match status {
            WaitStatus::Exited(_, c) if c == code => stderr,
            other => panic!("{}: expected exit code {code}, got {other:?}; stderr:\n{stderr}", self.name),
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // A failed assertion must not leave a jailed child behind.
        if matches!(waitpid(self.pid(), Some(WaitPidFlag::WNOHANG)), Ok(WaitStatus::StillAlive)) {
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = waitpid(self.pid(), None);
        }
    }
}

/// Waits for `pid`, killing it after the timeout.
pub(crate) fn wait_pid(pid: Pid, name: &str) -> WaitStatus {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Ok(WaitStatus::StillAlive) => {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                panic!("{name}: still running after {CHILD_TIMEOUT:?}");
            }
            Ok(status) => return status,
            Err(Errno::EINTR) => {}
            Err(e) => panic!("{name}: waitpid: {e}"),
        }
    }
}
