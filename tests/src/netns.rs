//! Real hosts for end-to-end tests: network namespaces joined by veth pairs, and yavipind
//! daemons running inside them.
//!
//! Everything here needs root. Tests call [`require_root`] first: without root they print a
//! loud `SKIPPED` line and return, so a developer without root sees what did not run; CI
//! runs as root and runs them all. Namespaces and processes are removed when their handles
//! drop, also when a test fails.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// The workspace's target directory (`CARGO_TARGET_DIR`, or `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from)
}

/// A release binary, `yavipind` or `yavipin`: the end-to-end tests run what users run
/// (`panic = "abort"`, and small enough for keyd to lock all its memory under the default
/// 8 MiB `RLIMIT_MEMLOCK`). `./test.sh` builds them first.
pub fn release_binary(name: &str) -> PathBuf {
    let path = target_dir().join("release").join(name);
    assert!(
        path.exists(),
        "{} is missing: the end-to-end tests run the release build; `cargo build --release -p yavipin-parent -p yavipin-cli` (./test.sh does it)",
        path.display()
    );
    path
}

/// A fresh pre-shared key.
pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("random key");
    key
}

/// Lowercase hexadecimal, as key files hold keys.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut text, b| {
        let _ = write!(text, "{b:02x}");
        text
    })
}

/// `K_auth` as docs/PROTOCOL.md section 3 defines it: what keyd keeps of the PSK.
pub fn k_auth(psk: &[u8; 32]) -> [u8; 32] {
    let kdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"yavipin v1 psk"), psk);
    let mut key = [0u8; 32];
    kdf.expand(b"auth", &mut key).expect("valid length");
    key
}

/// True when running as root; otherwise prints why the calling test is skipped.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED: {test} needs root (network namespaces, tun devices); run the tests as root to include it");
    false
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call, usable for namespaces and interfaces
/// (interface names are limited to 15 bytes).
pub fn unique(tag: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}x{n}", std::process::id() % 100_000)
}

fn ip_path() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("ip")
}

/// Runs `ip args...` and returns its output, failing the test on error.
pub fn ip(args: &[&str]) -> Output {
    let out = Command::new(ip_path()).args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    out
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with its loopback up.
    pub fn new(tag: &str) -> Self {
        let name = unique(tag);
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip args...` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(ip_path());
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs a command inside the namespace and returns its output (never fails the test).
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program).args(args).output().expect("run in namespace")
    }

    /// Whether `ping` (or `ping -6`) from this namespace to `target` gets an answer within a
    /// second, with a payload of `size` bytes and fragmentation forbidden.
    pub fn ping(&self, target: &str, size: usize) -> bool {
        let size = size.to_string();
        self.run("ping", &["-c", "1", "-W", "1", "-M", "do", "-s", &size, target]).status.success()
    }

    /// Whether `device`'s link is administratively up (the `UP` flag of `ip link`), which is
    /// what the daemon sets and clears as the tunnel comes and goes.
    pub fn link_is_up(&self, device: &str) -> bool {
        let link = self.ip(&["-o", "link", "show", "dev", device]);
        let text = String::from_utf8_lossy(&link.stdout);
        assert!(link.status.success(), "ip link show dev {device}: {link:?}");
        let flags = text.split('<').nth(1).and_then(|f| f.split('>').next()).unwrap_or_default();
        flags.split(',').any(|flag| flag == "UP")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(ip_path()).args(["netns", "del", &self.name]).output();
    }
}

/// Joins two namespaces with a veth pair and gives each end an address (with prefix).
pub fn veth(a: &Netns, addr_a: &[&str], b: &Netns, addr_b: &[&str]) -> (String, String) {
    let (name_a, name_b) = (unique("va"), unique("vb"));
    ip(&["link", "add", &name_a, "netns", a.name(), "type", "veth", "peer", "name", &name_b, "netns", b.name()]);
    for (ns, name, addrs) in [(a, &name_a, addr_a), (b, &name_b, addr_b)] {
        for addr in addrs {
            ns.ip(&["address", "add", addr, "dev", name, "nodad"]);
        }
        ns.ip(&["link", "set", name, "up"]);
    }
    (name_a, name_b)
}

/// Polls `probe` until it holds or `timeout` passes. For conditions that are only
/// observable by probing from outside (a ping, a file); each probe is itself bounded.
pub fn eventually(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running yavipind, its log lines streamed to the test. Killed on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
}

impl Daemon {
    /// Starts `binary --verbose -c config` inside `ns`.
    pub fn start(ns: &Netns, binary: &Path, config: &Path) -> Self {
        let mut child = ns
            .command(binary)
            .arg("--verbose")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start yavipind");
        let lines = stream_lines(&mut child);
        Self { child, lines, log: Vec::new() }
    }

    /// Waits for a log line containing `pattern`; returns it, or `None` after `timeout`.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Option<String> {
        if let Some(line) = self.log.iter().find(|l| l.contains(pattern)) {
            return Some(line.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(pattern) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Waits for a line containing `pattern` among those not yet seen by [`Self::log`] or
    /// an earlier wait (call `log()` to mark the point after which lines count).
    pub fn wait_for_next(&mut self, pattern: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(pattern) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Every line logged so far.
    pub fn log(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        &self.log
    }

    /// The daemon's pid (the `ip netns exec` wrapper execs it, so the pid is the daemon's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().expect("wait")
    }

    /// Waits for the daemon to exit by itself.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }

    /// The pids of the daemon's worker processes (its children started with `--role`; the
    /// parent may also be running `ip` at any moment), by reading /proc.
    pub fn workers(&self) -> Vec<u32> {
        let children = format!("/proc/{}/task/{}/children", self.pid(), self.pid());
        std::fs::read_to_string(children)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == b"--role"))
            })
            .collect()
    }
}

/// The lines `child` writes to its piped standard error, as they come, read by a thread of
/// their own; the receiver ends when the output does.
pub fn stream_lines(child: &mut Child) -> Receiver<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// How long a daemon has to stop on SIGTERM when its test ends before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Drop for Daemon {
    /// Stops the daemon as an operator would, so that it removes its control socket and
    /// tun device; kills it if it does not exit within [`STOP_GRACE`].
    fn drop(&mut self) {
        // Not yet reaped, so the pid is still this child's (a zombie keeps it too).
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory for configurations and keys, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh directory.
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir") }
    }

    /// The directory.
    pub fn dir_path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `content` to `name` with `mode`, returning the path.
    pub fn write(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Sets `key` to `value` with sysctl(8) inside `ns`.
pub fn sysctl(ns: &Netns, key: &str, value: &str) {
    let out = ns.run("sysctl", &["-qw", &format!("{key}={value}")]);
    assert!(out.status.success(), "sysctl {key}={value}: {}", String::from_utf8_lossy(&out.stderr));
}

// Topology ----------------------------------------------------------------------------

/// `A`'s underlay address.
pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// `B`'s underlay address.
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// The router's address on `A`'s link.
pub const R_A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 254);
/// The router's address on `B`'s link.
pub const R_B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);

/// Three hosts in a row, `A — R — B`: `R` routes between `198.18.1.0/24` (A's link) and
/// `198.18.2.0/24` (B's link) and is where the on-path attacker sits. More hosts can hang
/// off `R` ([`Routed::attach`]). IPv6 is off in `A` and `B`, so their tun devices carry
/// nothing the tests did not send. `R`'s link to `A` has an MTU of 1600, so that the
/// attacker can send `A` datagrams of every length up to 1500 bytes without fragments.
#[derive(Debug)]
pub struct Routed {
    /// One end.
    pub a: Netns,
    /// The router, the attacker's place.
    pub r: Netns,
    /// The other end.
    pub b: Netns,
    /// `R`'s interface towards `A`.
    pub r_to_a: String,
    /// `R`'s interface towards `B`.
    pub r_to_b: String,
    /// `A`'s interface towards `R`.
    pub a_if: String,
    /// `B`'s interface towards `R`.
    pub b_if: String,
}

impl Routed {
    /// Creates the three namespaces, their links and routes.
    pub fn new() -> Self {
        let (a, r, b) = (Netns::new("yaa"), Netns::new("yar"), Netns::new("yab"));
        for ns in [&a, &b] {
            sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1");
            sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1");
        }
        sysctl(&r, "net.ipv4.ip_forward", "1");
        for ns in [&a, &r, &b] {
            sysctl(ns, "net.ipv4.conf.all.rp_filter", "0");
            sysctl(ns, "net.ipv4.conf.default.rp_filter", "0");
        }
        let (r_to_a, a_if) = veth(&r, &[&format!("{R_A_ADDR}/24")], &a, &[&format!("{A_ADDR}/24")]);
        let (r_to_b, b_if) = veth(&r, &[&format!("{R_B_ADDR}/24")], &b, &[&format!("{B_ADDR}/24")]);
        r.ip(&["link", "set", &r_to_a, "mtu", "1600"]);
        a.ip(&["link", "set", &a_if, "mtu", "1600"]);
        a.ip(&["route", "add", "default", "via", &R_A_ADDR.to_string()]);
        b.ip(&["route", "add", "default", "via", &R_B_ADDR.to_string()]);
        Self { a, r, b, r_to_a, r_to_b, a_if, b_if }
    }

    /// Attaches a new host to `R` on `198.18.<subnet>.0/24` (host `.1`, router `.254`,
    /// default route via the router); returns it with its interface and `R`'s.
    pub fn attach(&self, tag: &str, subnet: u8) -> (Netns, String, String) {
        let host = Netns::new(tag);
        sysctl(&host, "net.ipv6.conf.all.disable_ipv6", "1");
        sysctl(&host, "net.ipv4.conf.all.rp_filter", "0");
        sysctl(&host, "net.ipv4.conf.default.rp_filter", "0");
        let (r_if, host_if) =
            veth(&self.r, &[&format!("198.18.{subnet}.254/24")], &host, &[&format!("198.18.{subnet}.1/24")]);
        host.ip(&["route", "add", "default", "via", &format!("198.18.{subnet}.254")]);
        (host, host_if, r_if)
    }
}

impl Default for Routed {
    fn default() -> Self {
        Self::new()
    }
}
