//! A compromised netd against the parent: the parent's real code (setup, confinement,
//! monitor, netlink, control socket, script runner), with a hostile netd in netd's place.
//!
//! This binary plays every part (`harness = false`): run without arguments it is the test
//! driver; started with `--parent CONFIG` it is the parent (it calls the library's
//! `daemon::run_with`, which starts the workers from this same binary); as `--role netd` it
//! is the hostile netd, as `--role keyd` a keyd that only answers `Ready` and `Status`, and
//! as `--role scripts` the real script runner. Each scenario runs in a network namespace of
//! its own and in a PID namespace of its own, whose parent is PID 1, so that counting the
//! PIDs it has handed out tells how many processes were ever started: the three workers and
//! one per script run, and nothing else.
//!
//! What holds, for every scenario: the parent refuses what the monitor does not permit by
//! exiting with status 1 and one error line naming the reason (never by a signal, never a
//! panic); during floods of permitted messages it applies at most the rate limit's changes,
//! runs at most one script at a time, forks nothing but the configured scripts, keeps its
//! seccomp filter, and its resident memory stays flat.
//!
//! Without root, or without the `yavipin` account, everything is skipped loudly.

// Taking over the descriptors the parent passed by number needs it.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use nix::sys::socket::MsgFlags;
use yavipin_ipc::control::{KeydStatus, KeydToParent, NetdStatus, NetdToParent, ParentToKeyd, ParentToNetd};
use yavipin_ipc::frame::{Ancillary, Channel};
use yavipin_ipc::reasons::DownReason;
use yavipin_parent::logging::{self, Sink};
use yavipin_parent::monitor::{BURST, REFILL};
use yavipin_parent::spawn::Launcher;
use yavipin_tests::netns::{Netns, Scratch, eventually, hex, random_key, require_root, stream_lines};
use yavipin_tests::sim::SimRng;

/// Messages in a flood of permitted ones.
const FLOOD: usize = 20_000;
/// Resident memory the parent may gain during a flood: allocator noise.
const RSS_SLACK_KIB: u64 = 256;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--parent") => parent(Path::new(&args[2]), &args[3], &args[4]),
        Some("--role") => worker(&args),
        _ => driver(),
    }
}

// The parent -----------------------------------------------------------------------------

fn parent(config: &Path, scenario: &str, dir: &str) -> ExitCode {
    logging::init("parent", Sink::Foreground, true);
    let launcher =
        Launcher::new(std::env::current_exe().expect("own path"), [scenario, dir].iter().map(OsString::from).collect());
    match yavipin_parent::daemon::run_with(config, &launcher, (Sink::Foreground, true)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

// The workers ---------------------------------------------------------------------------

/// `--role ROLE --user USER (--channel N)+ SCENARIO DIR`, as the parent starts them.
fn worker(args: &[String]) -> ExitCode {
    let role = args[2].clone();
    let channels: Vec<OwnedFd> = args
        .windows(2)
        .filter(|w| w[0] == "--channel")
        // SAFETY: the parent passed these descriptors to this fresh process by number.
        .map(|w| unsafe { OwnedFd::from_raw_fd(w[1].parse().expect("descriptor")) })
        .collect();
    let scenario = args[args.len() - 2].clone();
    let dir = PathBuf::from(&args[args.len() - 1]);
    match role.as_str() {
        "netd" => hostile_netd(channels, &scenario, &dir),
        "keyd" => plain_keyd(channels),
        "scripts" => {
            logging::init("scripts", Sink::Foreground, true);
            match yavipin_parent::scripts::run(channels.into_iter().next().expect("a channel")) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// keyd as far as the parent sees it: `Ready`, and a `Status` for each query.
fn plain_keyd(channels: Vec<OwnedFd>) -> ExitCode {
    let mut parent = Channel::new(channels.into_iter().next().expect("channel"), Ancillary::None);
    loop {
        match parent.recv::<ParentToKeyd>().map(|r| r.message) {
            Ok(ParentToKeyd::Init(_)) => parent.send(&KeydToParent::Ready).expect("ready"),
            Ok(ParentToKeyd::Status) => parent.send(&KeydToParent::Status(KeydStatus::default())).expect("status"),
            Ok(ParentToKeyd::Shutdown) | Err(_) => return ExitCode::SUCCESS,
        }
    }
}

/// Tells the driver where the hostile netd is (one line on stderr, which the parent shares).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "hostile: {line}");
}

/// Waits for the driver's word on the scenario's FIFO.
fn wait_for_driver(dir: &Path) {
    let mut word = String::new();
    let _ = BufReader::new(std::fs::File::open(dir.join("go")).expect("fifo")).read_line(&mut word);
}

fn raw_send(channel: &Channel, bytes: &[u8]) {
    let _ = nix::sys::socket::send(channel.as_fd().as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL);
}

fn encode(message: &NetdToParent) -> Vec<u8> {
    postcard::to_allocvec(message).expect("encodes")
}

fn peer(n: u64) -> SocketAddr {
    let octets = (n % 250 + 1).to_be_bytes();
    SocketAddr::from(([198, 18, 7, octets[7]], 5555))
}

fn hostile_netd(channels: Vec<OwnedFd>, scenario: &str, dir: &Path) -> ExitCode {
    let mut channels = channels.into_iter();
    let mut parent = Channel::new(channels.next().expect("channel"), Ancillary::Descriptors);
    let received = parent.recv::<ParentToNetd>().expect("Init");
    assert!(matches!(received.message, ParentToNetd::Init(_)) && received.fds.len() == 2);
    let ready = |parent: &mut Channel| parent.send(&NetdToParent::Ready).expect("ready");
    let mut ready_bytes = encode(&NetdToParent::Ready);
    match scenario {
        "garbage" => raw_send(&parent, &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]),
        "oversize" => raw_send(&parent, &[0; 4097]),
        "empty-frame" => raw_send(&parent, &[]),
        "trailing-bytes" => {
            ready_bytes.push(0);
            raw_send(&parent, &ready_bytes);
        }
        "huge-length" => raw_send(&parent, &[0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        "descriptor" => {
            let file = std::fs::File::open("/dev/null").expect("open");
            let fds = [file.as_raw_fd()];
            nix::sys::socket::sendmsg::<()>(
                parent.as_fd().as_raw_fd(),
                &[std::io::IoSlice::new(&ready_bytes)],
                &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .expect("sendmsg");
        }
        "up-before-ready" => parent.send(&NetdToParent::TunnelUp { peer: peer(1) }).expect("send"),
        "ready-twice" => {
            ready(&mut parent);
            ready(&mut parent);
        }
        "down-while-down" => {
            ready(&mut parent);
            parent.send(&NetdToParent::TunnelDown { reason: DownReason::PeerShutdown }).expect("send");
        }
        "up-while-up" => {
            ready(&mut parent);
            parent.send(&NetdToParent::TunnelUp { peer: peer(1) }).expect("send");
            parent.send(&NetdToParent::TunnelUp { peer: peer(2) }).expect("send");
        }
        "impossible-peer" => {
            ready(&mut parent);
            parent.send(&NetdToParent::TunnelUp { peer: "0.0.0.0:0".parse().expect("addr") }).expect("send");
        }
        "mtu-too-large" => {
            ready(&mut parent);
            parent.send(&NetdToParent::Mtu { path_mtu: 9045, inner_mtu: 9000 }).expect("send");
        }
        "mtu-inconsistent" => {
            ready(&mut parent);
            parent.send(&NetdToParent::Mtu { path_mtu: 1400, inner_mtu: 1300 }).expect("send");
        }
        "unasked-status" => {
            ready(&mut parent);
            parent.send(&NetdToParent::Status(NetdStatus::default())).expect("send");
        }
        "random" => random_messages(&mut parent, dir),
        "flood" => return flood_messages(&mut parent, dir),
        other => panic!("unknown scenario {other}"),
    }
    // As a real netd would: go when the parent says so, or when it is gone.
    while let Ok(received) = parent.recv::<ParentToNetd>() {
        if received.message == ParentToNetd::Shutdown {
            break;
        }
    }
    drop(channels);
    ExitCode::SUCCESS
}

/// Seeded random orders of link, MTU and status messages until the parent stops taking
/// them.
fn random_messages(parent: &mut Channel, dir: &Path) {
    let seed: u64 = dir.file_name().and_then(|n| n.to_str()).map_or(1, |n| n.bytes().map(u64::from).sum());
    let mut rng = SimRng::new(seed);
    parent.send(&NetdToParent::Ready).expect("ready");
    for i in 0..FLOOD {
        let message = match rng.next_u64() % 6 {
            0 | 1 => NetdToParent::TunnelUp { peer: peer(rng.next_u64() % 300) },
            2 | 3 => NetdToParent::TunnelDown { reason: DownReason::PeerUnreachable },
            4 => {
                let inner = u16::try_from(400 + rng.next_u64() % 1200).expect("small");
                NetdToParent::Mtu { path_mtu: inner + 45, inner_mtu: inner }
            }
            _ => NetdToParent::Status(NetdStatus::default()),
        };
        if parent.send(&message).is_err() {
            say(&format!("refused after {i} messages"));
            break;
        }
    }
}

/// Permitted messages only, as fast as they go: the link flaps, the MTU wanders within
/// bounds. Then netd "dies" when the driver has looked.
fn flood_messages(parent: &mut Channel, dir: &Path) -> ExitCode {
    parent.send(&NetdToParent::Ready).expect("ready");
    say("ready");
    wait_for_driver(dir);
    // A first tenth warms the parent up (allocator arenas, buffers, the first scripts'
    // bookkeeping); the driver measures its memory then, and the rest must leave it flat.
    let warm = u16::try_from(FLOOD / 10).expect("small");
    for i in 0..u16::try_from(FLOOD).expect("small") {
        if i == warm {
            say("warm");
            wait_for_driver(dir);
        }
        let message = match i % 3 {
            0 => NetdToParent::TunnelUp { peer: peer(u64::from(i)) },
            1 => NetdToParent::Mtu { path_mtu: 1300 + 45 + i % 100, inner_mtu: 1300 + i % 100 },
            _ => NetdToParent::TunnelDown { reason: DownReason::PeerUnreachable },
        };
        parent.send(&message).expect("a permitted message");
    }
    say("flood done");
    wait_for_driver(dir);
    ExitCode::SUCCESS
}

// The driver ------------------------------------------------------------------------------

/// One scenario's parent, running in its namespaces, with its log lines streamed here.
struct Run {
    child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
    dir: PathBuf,
    _ns: Netns,
    _scratch: Scratch,
}

impl Run {
    /// Starts the parent of `scenario`, its files in a directory named `dir_name` (which
    /// seeds the random scenario).
    fn start(scenario: &str, dir_name: &str) -> Self {
        let ns = Netns::new("yvh");
        let scratch = Scratch::new();
        let dir = scratch.dir_path().join(dir_name);
        std::fs::create_dir(&dir).expect("mkdir");
        nix::unistd::mkfifo(&dir.join("go"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        let key = scratch.write("key", &format!("{}\n", hex(&random_key())), 0o600);
        // Scripts that record their runs with shell builtins only (no process of their
        // own), taking a moment so that overlapping runs would show.
        let body = format!(
            "#!/bin/sh\necho \"start $YAVIPIN_EVENT\" >> {runs}\ni=0\nwhile [ $i -lt 3000 ]; do i=$((i+1)); done\necho \"end $YAVIPIN_EVENT\" >> {runs}\n",
            runs = dir.join("runs").display()
        );
        let up = scratch.write("up", &body, 0o755);
        let down = scratch.write("down", &body, 0o755);
        let config = scratch.write(
            "c.toml",
            &format!(
                "key_file = \"{}\"\n[interface]\nname = \"{}\"\naddresses = [\"10.98.0.1/30\", \"fd98::1/64\"]\n[transport]\nlisten = \"127.0.0.1:0\"\n[scripts]\nup = \"{}\"\ndown = \"{}\"\n",
                key.display(),
                ns.name(),
                up.display(),
                down.display()
            ),
            0o600,
        );
        let mut child = ns
            .command("unshare")
            .args(["--pid", "--fork", "--kill-child"])
            .arg(std::env::current_exe().expect("own path"))
            .arg("--parent")
            .arg(&config)
            .arg(scenario)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the parent");
        let lines = stream_lines(&mut child);
        Self { child, lines, log: Vec::new(), dir, _ns: ns, _scratch: scratch }
    }

    fn wait_for(&mut self, pattern: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no line with {pattern:?}: {:#?}", self.log));
            self.log.push(line.clone());
            if line.contains(pattern) {
                return line;
            }
        }
    }

    /// Lets the hostile netd go on.
    fn go(&self) {
        let mut fifo = std::fs::OpenOptions::new().write(true).open(self.dir.join("go")).expect("fifo");
        let _ = fifo.write_all(b"go\n");
    }

    /// The parent process (PID 1 of the scenario's PID namespace), once it runs.
    fn parent_pid(&self) -> u32 {
        // `unshare --fork` waits for its child, the parent.
        let children = std::fs::read_to_string(format!("/proc/{}/task/{}/children", self.child.id(), self.child.id()));
        children.ok().and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok())).expect("the parent")
    }

    fn finish(mut self) -> (ExitStatus, Vec<String>) {
        // A refusing parent already ended; a surviving one ends when netd goes.
        self.go_if_alive();
        let status = self.child.wait().expect("wait");
        // Every line, up to the end of the output (all the scenario's processes are gone:
        // they ended with its PID 1).
        self.log.extend(self.lines.iter());
        (status, std::mem::take(&mut self.log))
    }

    fn go_if_alive(&self) {
        let fifo = self.dir.join("go");
        // Non-blocking open fails when no reader waits: nobody is left to tell.
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo) {
            let _ = f.write_all(b"go\n");
        }
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number")
}

fn field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim_start_matches(':').trim().to_owned())).expect(name)
}

/// The next PID the scenario's namespace hands out, minus one: how many processes it ever
/// started. Starting the one that tells adds one, which is subtracted.
fn processes_started(parent: u32) -> u64 {
    let out = Command::new("nsenter")
        .args(["--target", &parent.to_string(), "--pid", "--", "/bin/sh", "-c", "echo $$"])
        .output()
        .expect("nsenter (util-linux)");
    let own: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("a pid");
    own - 1
}

/// A scenario in which the parent must refuse: exit status 1, exactly one error line,
/// naming `reason`.
fn refused(name: &str, reason: &str) {
    let run = Run::start(name, name);
    let (status, log) = run.finish();
    assert_eq!(status.code(), Some(1), "{name}: the parent ended with {status:?}: {log:#?}");
    let errors: Vec<&String> = log.iter().filter(|l| l.contains("error: ")).collect();
    assert_eq!(errors.len(), 1, "{name}: {log:#?}");
    assert!(errors[0].contains("parent: error: ") && errors[0].contains(reason), "{name}: {errors:?}");
    assert!(!log.iter().any(|l| l.contains("panicked")), "{name}: {log:#?}");
}

/// A scenario's name and its test.
type Scenario = (&'static str, Box<dyn Fn()>);

fn scenarios() -> Vec<Scenario> {
    let refusal =
        |name: &'static str, reason: &'static str| -> Scenario { (name, Box::new(move || refused(name, reason))) };
    vec![
        refusal("garbage", "netd channel: undecodable frame"),
        refusal("oversize", "netd channel: frame longer than 4096 bytes"),
        refusal("empty-frame", "netd channel: channel closed by peer"),
        refusal("trailing-bytes", "netd channel: 1 trailing bytes"),
        refusal("huge-length", "netd channel: undecodable frame"),
        refusal("descriptor", "netd channel: unexpected ancillary data"),
        refusal("up-before-ready", "netd sent TunnelUp before Ready"),
        refusal("ready-twice", "netd sent Ready twice"),
        refusal("down-while-down", "netd sent TunnelDown while the tunnel is down"),
        refusal("up-while-up", "netd sent TunnelUp while the tunnel is up"),
        refusal("impossible-peer", "netd sent TunnelUp with the impossible peer 0.0.0.0:0"),
        refusal("mtu-too-large", "netd sent an impossible MTU: path 9045, inner 9000"),
        refusal("mtu-inconsistent", "netd sent an impossible MTU: path 1400, inner 1300"),
        refusal("unasked-status", "netd sent a Status nobody asked for"),
        ("random", Box::new(random_orders)),
        ("flood", Box::new(flood)),
    ]
}

/// Random orders: the parent either takes each message or refuses with one line.
fn random_orders() {
    for round in 0..5 {
        let name = format!("random{round}");
        // The directory's name seeds the order.
        let run = Run::start("random", &name);
        let (status, log) = run.finish();
        assert_eq!(status.code(), Some(1), "{name}: {status:?} {log:#?}");
        let errors: Vec<&String> = log.iter().filter(|l| l.contains("error: ")).collect();
        assert_eq!(errors.len(), 1, "{name}: {log:#?}");
        assert!(errors[0].contains("parent: error: netd "), "{name}: {errors:?}");
    }
}

/// A flood of permitted messages: rate-limited link changes, one script at a time, no
/// process but the scripts, the filter kept, memory flat.
fn flood() {
    let mut run = Run::start("flood", "flood");
    run.wait_for("hostile: ready");
    let parent = run.parent_pid();
    let started = Instant::now();
    run.go();
    run.wait_for("hostile: warm");
    let before = vm_rss_kib(parent);
    run.go();
    run.wait_for("hostile: flood done");
    let elapsed = started.elapsed();
    // The last rate-limited change comes within a refill and may start a script: wait
    // until no script runs and none started for longer than a refill.
    let runs_file = run.dir.join("runs");
    let read_runs = || std::fs::read_to_string(&runs_file).unwrap_or_default();
    let mut last = (String::new(), Instant::now());
    let settled = eventually(Duration::from_secs(30), || {
        let runs = read_runs();
        if runs != last.0 {
            last = (runs, Instant::now());
            return false;
        }
        let starts = last.0.matches("start").count();
        starts == last.0.matches("end").count() && last.1.elapsed() > REFILL * 2
    });
    assert!(settled, "scripts never settled: {}", read_runs());
    let after = vm_rss_kib(parent);
    assert_eq!(field(parent, "Seccomp"), "2");
    let runs = read_runs();
    let started_processes = processes_started(parent);
    let (status, log) = run.finish();
    let links = log.iter().filter(|l| l.contains(": tunnel up") || l.contains(": tunnel down")).count();
    let allowed = u64::from(BURST) + (elapsed + REFILL * 2).as_secs() / REFILL.as_secs() + 1;
    eprintln!(
        "flood: {FLOOD} messages in {elapsed:?}; {links} link changes applied (at most {allowed}); {} script runs; {started_processes} processes started; parent RSS {before} -> {after} KiB",
        runs.lines().count() / 2
    );
    assert!(links as u64 <= allowed, "{links} link changes: {log:#?}");
    // Scripts: one at a time (each start followed by its end), alternating up and down.
    let mut entries = runs.lines();
    let mut expected = "up";
    let mut count = 0;
    while let Some(start) = entries.next() {
        assert_eq!(start, format!("start {expected}"), "{runs}");
        assert_eq!(entries.next(), Some(format!("end {expected}").as_str()), "overlapping scripts: {runs}");
        expected = if expected == "up" { "down" } else { "up" };
        count += 1;
    }
    assert!(count >= 1, "no script ran: {log:#?}");
    // PID 1 the parent, then netd, keyd, the runner, and one process per script run.
    assert_eq!(started_processes, 4 + count, "processes other than the scripts were started: {log:#?}");
    assert!(after <= before + RSS_SLACK_KIB, "the parent grew from {before} to {after} KiB");
    assert_eq!(status.code(), Some(1), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("panicked")), "{log:#?}");
}

fn driver() -> ExitCode {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let mut tests = scenarios();
    tests.retain(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())));
    println!("\nrunning {} tests", tests.len());
    let skip = if !require_root("hostile_netd") {
        Some("needs root")
    } else if nix::unistd::User::from_name("yavipin").ok().flatten().is_none() {
        Some("needs the yavipin user")
    } else {
        None
    };
    let (mut passed, mut failed, mut skipped) = (0, Vec::new(), 0);
    for (name, test) in tests {
        if let Some(why) = skip {
            eprintln!("SKIPPED: a_hostile_netd_{name}: {why}");
            println!("test a_hostile_netd_{name} ... SKIPPED");
            skipped += 1;
            continue;
        }
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(test)).is_ok() {
            println!("test a_hostile_netd_{name} ... ok");
            passed += 1;
        } else {
            println!("test a_hostile_netd_{name} ... FAILED");
            failed.push(name);
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; {skipped} ignored; 0 measured; 0 filtered out\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
