//! End to end: real daemons in network namespaces joined by a veth pair.
//!
//! These tests run the release build of yavipind — what users run, with `panic = "abort"`,
//! and small enough for keyd to lock all its memory under the default 8 MiB
//! `RLIMIT_MEMLOCK`. `./test.sh` builds it first. Without root they are skipped, loudly.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use yavipin_parent::control::RequestError;
use yavipin_tests::attacker::memory_contains;
use yavipin_tests::netns::{Daemon, Netns, Scratch, hex, k_auth, random_key, release_binary, require_root, veth};

const UP_TIMEOUT: Duration = Duration::from_secs(20);

/// Two hosts, each running yavipind; `b` initiates towards `a`.
struct Pair {
    a: Netns,
    b: Netns,
    daemon_a: Daemon,
    daemon_b: Daemon,
    key: [u8; 32],
    _scratch: Scratch,
}

const INNER_A: &str = "198.19.0.1";
const INNER_B: &str = "198.19.0.2";
const INNER6_A: &str = "fd19::1";
const INNER6_B: &str = "fd19::2";

/// A configuration. The device is named after the namespace: the control socket
/// (`/run/yavipin/DEVICE.sock`) is shared by all namespaces of the machine.
fn config(device: &str, key_file: &Path, inner: (&str, &str), listen: &str, peer: Option<&str>) -> String {
    let mut text = format!(
        "key_file = \"{}\"\n[interface]\nname = \"{device}\"\naddresses = [\"{}/30\", \"{}/64\"]\n[transport]\nlisten = \"{listen}\"\n",
        key_file.display(),
        inner.0,
        inner.1
    );
    if let Some(peer) = peer {
        text += "peer = \"";
        text += peer;
        text += "\"\n";
    }
    text
}

impl Pair {
    fn start(ipv6_underlay: bool) -> Self {
        Self::start_with(ipv6_underlay, |_| String::new())
    }

    /// [`Self::start`], with `extra` (given the scratch directory) appended to `a`'s
    /// configuration.
    fn start_with(ipv6_underlay: bool, extra: impl FnOnce(&Scratch) -> String) -> Self {
        let binary = release_binary("yavipind");
        let (a, b) = (Netns::new("yva"), Netns::new("yvb"));
        let (peer_a, listen) = if ipv6_underlay {
            veth(&a, &["fd18::1/64"], &b, &["fd18::2/64"]);
            ("[fd18::1]:5555", "[::]:5555")
        } else {
            veth(&a, &["198.18.0.1/24"], &b, &["198.18.0.2/24"]);
            ("198.18.0.1:5555", "0.0.0.0:5555")
        };
        let scratch = Scratch::new();
        let key = random_key();
        let key_file = scratch.write("tunnel.key", &format!("{}\n", hex(&key)), 0o600);
        let text_a = config(a.name(), &key_file, (INNER_A, INNER6_A), listen, None) + &extra(&scratch);
        let config_a = scratch.write("a.toml", &text_a, 0o600);
        let config_b =
            scratch.write("b.toml", &config(b.name(), &key_file, (INNER_B, INNER6_B), listen, Some(peer_a)), 0o600);
        let mut daemon_a = Daemon::start(&a, &binary, &config_a);
        let mut daemon_b = Daemon::start(&b, &binary, &config_b);
        for (name, daemon) in [("a", &mut daemon_a), ("b", &mut daemon_b)] {
            assert!(daemon.wait_for("tunnel up", UP_TIMEOUT).is_some(), "{name} never came up: {:#?}", daemon.log());
        }
        Self { a, b, daemon_a, daemon_b, key, _scratch: scratch }
    }

    fn pings_both_ways(&self) {
        for (from, to) in [(&self.b, INNER_A), (&self.a, INNER_B), (&self.b, INNER6_A), (&self.a, INNER6_B)] {
            // The link just came up: allow a few tries for neighbour and route setup.
            let ok = (0..5).any(|_| from.ping(to, 56));
            assert!(ok, "no answer from {to} through the tunnel");
            assert!(from.ping(to, 1200), "no answer from {to} to a 1200-byte ping");
        }
    }
}

fn iperf(server: &Netns, client: &Netns, target: &str, reverse: bool) -> u64 {
    let mut srv = server
        .command("iperf3")
        .args(["-s", "-1", "-p", "5201", "--forceflush"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    let mut lines = BufReader::new(srv.stdout.take().expect("piped")).lines();
    assert!(lines.any(|l| l.is_ok_and(|l| l.contains("Server listening"))), "iperf3 server did not start");
    let mut args = vec!["-c", target, "-p", "5201", "-t", "2", "-J"];
    if reverse {
        args.push("-R");
    }
    let out = client.run("iperf3", &args);
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(out.status.success(), "iperf3 failed: {}", String::from_utf8_lossy(&out.stdout));
    let json = String::from_utf8_lossy(&out.stdout);
    // "sum_received": { ... "bytes": N ... }
    let received = json.split("\"sum_received\"").nth(1).expect("iperf3 JSON has sum_received");
    let bytes = received.split("\"bytes\":").nth(1).expect("bytes field");
    bytes.trim_start().split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).expect("a number")
}

#[test]
fn ipv4_and_ipv6_cross_the_tunnel_over_an_ipv4_underlay() {
    if !require_root("ipv4_and_ipv6_cross_the_tunnel_over_an_ipv4_underlay") {
        return;
    }
    let pair = Pair::start(false);
    pair.pings_both_ways();
    let forward = iperf(&pair.a, &pair.b, INNER_A, false);
    let reverse = iperf(&pair.a, &pair.b, INNER_A, true);
    assert!(forward > 1_000_000 && reverse > 1_000_000, "iperf3 carried {forward} and {reverse} bytes");
}

#[test]
fn ipv4_and_ipv6_cross_the_tunnel_over_an_ipv6_underlay() {
    if !require_root("ipv4_and_ipv6_cross_the_tunnel_over_an_ipv6_underlay") {
        return;
    }
    let pair = Pair::start(true);
    pair.pings_both_ways();
}

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status.lines().find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':'))).map_or("", str::trim)
}

fn yavipin_ids() -> (u32, u32) {
    let user =
        nix::unistd::User::from_name("yavipin").expect("passwd").expect("the yavipin user exists (.ci/run creates it)");
    (user.uid.as_raw(), user.gid.as_raw())
}

#[test]
fn workers_run_jailed() {
    if !require_root("workers_run_jailed") {
        return;
    }
    let pair = Pair::start(false);
    let (uid, gid) = yavipin_ids();
    let workers = pair.daemon_a.workers();
    assert_eq!(workers.len(), 2, "parent has netd and keyd as children");
    for pid in workers {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline");
        let role = if cmdline.contains("netd") { "netd" } else { "keyd" };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let ids = |field| {
            status_field(&status, field).split_whitespace().map(|n| n.parse().expect("id")).collect::<Vec<u32>>()
        };
        assert_eq!(ids("Uid"), vec![uid; 4], "{role}");
        assert_eq!(ids("Gid"), vec![gid; 4], "{role}");
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(status_field(&status, cap), "0000000000000000", "{role} {cap}");
        }
        assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{role}");
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
            let task_status = std::fs::read_to_string(task.expect("task").path().join("status")).expect("status");
            assert_eq!(status_field(&task_status, "Seccomp"), "2", "{role} thread");
        }
        assert_eq!(std::fs::read_link(format!("/proc/{pid}/root")).expect("root"), Path::new("/run/yavipin/empty"));
        // Not dumpable: the kernel gives its /proc files to root, and no core is written.
        assert_eq!(std::fs::metadata(format!("/proc/{pid}/status")).expect("meta").uid(), 0, "{role} dumpable");
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
        let core = limits.lines().find(|l| l.starts_with("Max core file size")).expect("core limit");
        assert_eq!(core.split_whitespace().nth(4), Some("0"), "{role}: {core}");

        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fds")
            .map(|e| std::fs::read_link(e.expect("fd").path()).expect("link").display().to_string())
            .collect();
        let sockets = fds.iter().filter(|f| f.starts_with("socket:")).count();
        let tun = fds.iter().filter(|f| f.as_str() == "/dev/net/tun").count();
        if role == "netd" {
            // stdin/out/err, two channels, the UDP socket, the tun device.
            assert_eq!((fds.len(), sockets, tun), (7, 3, 1), "netd descriptors: {fds:?}");
        } else {
            // stdin/out/err, two channels: no network socket, no tun.
            assert_eq!((fds.len(), sockets, tun), (5, 2, 0), "keyd descriptors: {fds:?}");
            assert!(status_field(&status, "VmLck").trim_end_matches(" kB").parse::<u64>().expect("VmLck") > 0);
            assert_cannot_trace(pid, uid, gid);
        }
    }
}

/// An unprivileged process — even one running as the worker's own user — cannot attach to
/// keyd with ptrace; the same attempt on an ordinary process of that user succeeds, which
/// shows the check can fail.
fn assert_cannot_trace(pid: u32, uid: u32, gid: u32) {
    use std::os::unix::process::CommandExt;
    let trace = |target: u32| {
        Command::new("strace")
            .args(["-qq", "-e", "trace=none", "-p", &target.to_string()])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("strace (apt-get install strace)")
    };
    let mut victim = Command::new("sleep").arg("30").uid(uid).gid(gid).spawn().expect("sleep");
    let mut control = trace(victim.id());
    let attacker = trace(pid);
    let attack = attacker.wait_with_output().expect("strace");
    let stderr = String::from_utf8_lossy(&attack.stderr);
    assert!(!attack.status.success() && stderr.contains("Operation not permitted"), "keyd traceable: {stderr}");
    // The control attach is still running (tracing sleep): it succeeded.
    assert!(control.try_wait().expect("wait").is_none(), "control strace could not attach: test would prove nothing");
    let _ = control.kill();
    let _ = victim.kill();
    let _ = control.wait();
    let _ = victim.wait();
}

#[test]
fn only_keyd_holds_the_key() {
    if !require_root("only_keyd_holds_the_key") {
        return;
    }
    let pair = Pair::start(false);
    pair.pings_both_ways();
    let auth = k_auth(&pair.key);
    for pid in pair.daemon_a.workers() {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline");
        if cmdline.contains("netd") {
            assert!(!memory_contains(pid, &[&pair.key])[0], "the PSK is in netd's memory");
            assert!(!memory_contains(pid, &[&auth])[0], "K_auth is in netd's memory");
        } else {
            // The positive control: the scan finds keyd's authentication key.
            assert!(memory_contains(pid, &[&auth])[0], "K_auth not found in keyd: the scan cannot be trusted");
        }
    }
    // The parent handed the PSK to keyd and erased its own copies.
    assert!(!memory_contains(pair.daemon_a.pid(), &[&pair.key])[0], "the PSK stayed in the parent's memory");
}

fn check(config: &Path) -> (i32, String) {
    let out =
        Command::new(release_binary("yavipind")).arg("--check").arg("-c").arg(config).output().expect("run yavipind");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn bad_configurations_and_key_files_are_refused_clearly() {
    if !require_root("bad_configurations_and_key_files_are_refused_clearly") {
        return;
    }
    let scratch = Scratch::new();
    let good_key = scratch.write("good.key", &format!("{}\n", hex(&random_key())), 0o600);
    let open_key = scratch.write("open.key", &format!("{}\n", hex(&random_key())), 0o644);
    let short_key = scratch.write("short.key", "abcd\n", 0o600);
    let garbage_key = scratch.write("garbage.key", &"zz".repeat(32), 0o600);
    let with_key = |name: &str, key: &Path| {
        scratch.write(name, &config("yvcheck0", key, (INNER_A, INNER6_A), "0.0.0.0:5555", None), 0o600)
    };
    let cases = [
        (with_key("ok.toml", &good_key), 0, "valid"),
        (with_key("missing.toml", Path::new("/nonexistent/key")), 2, "No such file"),
        (with_key("open.toml", &open_key), 2, "mode 0644"),
        (with_key("short.toml", &short_key), 2, "64 hexadecimal digits"),
        (with_key("garbage.toml", &garbage_key), 2, "64 hexadecimal digits"),
        (scratch.write("unknown.toml", "key_file = \"k\"\ncolour = 1\n", 0o600), 2, "unknown field `colour`"),
        (scratch.write("syntax.toml", "[interface\n", 0o600), 2, "syntax.toml:1:"),
        (scratch.write("binary.toml", "\u{0}\u{1}\u{2}", 0o600), 2, "binary.toml:1:"),
        (scratch.dir_path().join("absent.toml"), 2, "No such file"),
    ];
    for (file, code, expected) in cases {
        let (got, text) = check(&file);
        assert_eq!(got, code, "{}: {text}", file.display());
        assert!(text.contains(expected), "{}: expected {expected:?} in {text}", file.display());
    }

    // The configuration and the scripts, like the key file: root's, along the whole path.
    let with_scripts = |name: &str, up: &Path, down: &Path| {
        let text = config("yvcheck0", &good_key, (INNER_A, INNER6_A), "0.0.0.0:5555", None)
            + &format!("[scripts]\nup = \"{}\"\ndown = \"{}\"\n", up.display(), down.display());
        scratch.write(name, &text, 0o600)
    };
    let script = scratch.write("up", "#!/bin/sh\n", 0o755);
    let plain = scratch.write("plain", "#!/bin/sh\n", 0o644);
    let writable = scratch.write("writable", "#!/bin/sh\n", 0o775);
    let foreign = scratch.write("foreign", "#!/bin/sh\n", 0o755);
    nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    let open_config = with_key("open-config.toml", &good_key);
    std::fs::set_permissions(&open_config, std::os::unix::fs::PermissionsExt::from_mode(0o666)).expect("chmod");
    let open_dir = scratch.dir_path().join("open");
    std::fs::create_dir(&open_dir).expect("mkdir");
    let in_open_dir = open_dir.join("c.toml");
    std::fs::copy(with_key("copy.toml", &good_key), &in_open_dir).expect("copy");
    std::fs::set_permissions(&open_dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let missing = scratch.dir_path().join("missing-down");
    let refusals = [
        (with_scripts("scripts.toml", &script, &script), "valid".to_owned()),
        (
            open_config.clone(),
            format!(
                "configuration file {}: {} has mode 0666, writable by group or others (chmod go-w {})",
                open_config.display(),
                open_config.display(),
                open_config.display()
            ),
        ),
        (
            in_open_dir.clone(),
            format!(
                "configuration file {}: {} has mode 0777, writable by group or others (chmod go-w {})",
                in_open_dir.display(),
                open_dir.display(),
                open_dir.display()
            ),
        ),
        (
            with_scripts("plain.toml", &plain, &script),
            format!("up script {}: not executable (chmod 755 {})", plain.display(), plain.display()),
        ),
        (
            with_scripts("writable.toml", &script, &writable),
            format!("down script {}: {} has mode 0775", writable.display(), writable.display()),
        ),
        (
            with_scripts("foreign.toml", &foreign, &script),
            format!(
                "up script {}: {} is owned by uid 65534, must be owned by root (chown root {})",
                foreign.display(),
                foreign.display(),
                foreign.display()
            ),
        ),
        (with_scripts("missing.toml", &script, &missing), format!("down script {}: No such file", missing.display())),
    ];
    for (file, expected) in refusals {
        let (got, text) = check(&file);
        assert_eq!(got, if expected == "valid" { 0 } else { 2 }, "{}: {text}", file.display());
        assert!(text.contains(&expected), "{}: expected {expected:?} in {text}", file.display());
    }
    // Starting (not just checking) with a bad key fails the same way, before any device exists.
    let out = Command::new(release_binary("yavipind"))
        .arg("-c")
        .arg(with_key("again.toml", &open_key))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mode 0644"));
}

fn show(device: &str, json: bool) -> std::process::Output {
    let mut command = Command::new(release_binary("yavipin"));
    command.arg("show").arg(device);
    if json {
        command.arg("--json");
    }
    command.output().expect("run yavipin show")
}

/// Sends raw bytes to a control socket and returns the answer.
fn control_exchange(device: &str, request: &[u8]) -> String {
    use std::io::Write;
    let mut stream = std::os::unix::net::UnixStream::connect(format!("/run/yavipin/{device}.sock")).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = stream.write_all(request);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn show_reports_the_running_tunnel() {
    if !require_root("show_reports_the_running_tunnel") {
        return;
    }
    let pair = Pair::start(false);
    pair.pings_both_ways();
    let device = pair.a.name();
    let text = show(device, false);
    assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
    let text = String::from_utf8_lossy(&text.stdout);
    for field in
        ["interface: ", "peer", "tunnel          up", "last handshake", "key epoch", "path mtu", "transfer", "drops"]
    {
        assert!(text.contains(field), "missing {field:?} in:\n{text}");
    }
    assert!(text.contains("198.18.0.2:5555"), "peer endpoint not shown:\n{text}");

    let json = show(device, true);
    assert!(json.status.success());
    let status: yavipin_parent::control::TunnelStatus =
        serde_json::from_slice(&json.stdout).expect("--json prints the status object");
    assert!(status.netd.up);
    assert!(status.netd.received.packets >= 8 && status.netd.sent.packets >= 8, "{status:?}");
    assert_eq!(status.keyd.sessions, 1);
    assert!(status.keyd.modexps >= 2);
}

/// `yavipin show ARGS...` without a device: every tunnel running on this machine.
fn show_all(args: &[&str]) -> String {
    let out = Command::new(release_binary("yavipin")).arg("show").args(args).output().expect("run yavipin show");
    assert!(out.status.success(), "show {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn show_without_a_device_lists_every_running_tunnel_in_each_format() {
    use yavipin_tests::exposition::{parse, promtool, promtool_check, value};
    if !require_root("show_without_a_device_lists_every_running_tunnel_in_each_format") {
        return;
    }
    let pair = Pair::start(false);
    pair.pings_both_ways();
    // Two tunnels, each with the other's underlay address as its peer. Other tests' tunnels
    // may come and go on this machine meanwhile: only these two are looked for.
    let tunnels = [(pair.a.name(), "198.18.0.2:5555"), (pair.b.name(), "198.18.0.1:5555")];

    // A block each, `interface: DEVICE` first, separated by blank lines, in device order.
    let text = show_all(&[]);
    let blocks: Vec<&str> = text.split("\n\n").collect();
    let headers: Vec<&str> = blocks.iter().map(|b| b.lines().next().unwrap_or_default()).collect();
    assert!(headers.iter().all(|h| h.starts_with("interface: ")), "{text}");
    assert!(headers.is_sorted(), "not in device order: {headers:?}");
    for (device, peer) in tunnels {
        let block = blocks.iter().find(|b| b.starts_with(&format!("interface: {device}\n"))).expect("a block");
        assert!(block.contains("  tunnel          up\n"), "{block}");
        assert!(block.contains(&format!("  peer            {peer}\n")), "{block}");
    }

    // One line each.
    let short = show_all(&["--short"]);
    for (device, peer) in tunnels {
        let line = short.lines().find(|l| l.starts_with(&format!("{device} "))).unwrap_or_else(|| panic!("{short}"));
        assert!(line.starts_with(&format!("{device:<15} up   peer {peer}, ")), "{line}");
    }
    assert!(short.lines().all(|l| !l.starts_with(' ') && l.contains(" peer ")), "one line per tunnel:\n{short}");

    // An array of the objects `show DEVICE --json` prints.
    let json = show_all(&["--json"]);
    let statuses: Vec<yavipin_parent::control::TunnelStatus> = serde_json::from_str(&json).expect("a JSON array");
    assert!(statuses.windows(2).all(|w| w[0].device < w[1].device), "not in device order");
    for (device, peer) in tunnels {
        let status = statuses.iter().find(|s| s.device == device).expect("listed");
        assert!(status.netd.up && status.netd.peer.map(|p| p.to_string()).as_deref() == Some(peer), "{status:?}");
        assert!(status.netd.sent.packets >= 8 && status.keyd.sessions == 1, "{status:?}");
    }

    // The counters as metrics, labelled by device, growing since the JSON was taken.
    let metrics = show_all(&["--metrics"]);
    let scrape = parse(&metrics);
    for (device, _) in tunnels {
        let status = statuses.iter().find(|s| s.device == device).expect("listed");
        let d = [("device", device)];
        assert_eq!(value(&scrape, "yavipin_tunnel_up", &d), Some(1.0), "{metrics}");
        assert_eq!(value(&scrape, "yavipin_keyd_sessions_total", &d), Some(1.0), "{metrics}");
        #[allow(clippy::cast_precision_loss)]
        let sent_before = status.netd.sent.packets as f64;
        let sent = value(&scrape, "yavipin_sent_packets_total", &d).expect("sent packets");
        assert!(sent >= sent_before, "{sent} < {sent_before}");
    }
    // `--metrics DEVICE`: that tunnel's samples alone.
    let one = Command::new(release_binary("yavipin")).args(["show", "--metrics", pair.a.name()]).output().expect("run");
    let one = parse(&String::from_utf8_lossy(&one.stdout));
    assert!(one.samples.iter().all(|s| s.labels.get("device") == Some(pair.a.name())) && !one.samples.is_empty());
    match promtool() {
        Some(promtool) => promtool_check(&promtool, &metrics).unwrap_or_else(|e| panic!("promtool: {e}\n{metrics}")),
        None => eprintln!("SKIPPED: promtool not found (set PROMTOOL; .ci/run shows how CI gets it)"),
    }
}

#[test]
fn the_control_socket_is_private_and_robust() {
    use std::os::unix::process::CommandExt;
    if !require_root("the_control_socket_is_private_and_robust") {
        return;
    }
    let pair = Pair::start(false);
    let device = pair.a.name();
    let path = format!("/run/yavipin/{device}.sock");
    let meta = std::fs::metadata(&path).expect("socket");
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (0, yavipin_ids().1, 0o660));

    // Another user, not in the group, cannot connect.
    let out =
        Command::new(release_binary("yavipin")).args(["show", device]).uid(65534).gid(65534).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");

    // Garbage, oversize and empty requests get an error object, nothing else.
    let oversize = vec![0xff; 100_000];
    for (request, expected) in [
        (&b"garbage\n"[..], RequestError::Unknown),
        (&oversize, RequestError::TooLong),
        (b"", RequestError::Unknown),
        (b"status", RequestError::Unknown),
        (b"status\nstatus\n", RequestError::Unknown),
    ] {
        let answer = control_exchange(device, request);
        let error: yavipin_parent::control::ErrorReply =
            serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
        assert_eq!(error.error, expected, "{answer}");
    }
    // And the daemon still answers, with no key material in the answer.
    let answer = control_exchange(device, b"status\n");
    let _: yavipin_parent::control::TunnelStatus = serde_json::from_str(&answer).expect("status");
    for secret in [hex(&pair.key), hex(&k_auth(&pair.key))] {
        assert!(!answer.contains(&secret));
    }
}

#[test]
fn logs_never_contain_key_material() {
    if !require_root("logs_never_contain_key_material") {
        return;
    }
    let mut pair = Pair::start(false);
    pair.pings_both_ways();
    let _ = show(pair.a.name(), false);
    let _ = pair.daemon_a.stop();
    let key = pair.key;
    let secrets = [hex(&key), hex(&k_auth(&key)), hex(&key).to_uppercase()];
    let log = pair.daemon_a.log().join("\n");
    assert!(log.contains("tunnel up"), "the log was captured: {log}");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "key material in the log");
    }
}

#[test]
fn sigterm_stops_everything_cleanly() {
    if !require_root("sigterm_stops_everything_cleanly") {
        return;
    }
    let mut pair = Pair::start(false);
    let workers = pair.daemon_a.workers();
    assert_eq!(workers.len(), 2);
    let status = pair.daemon_a.stop();
    assert!(status.success(), "exit status {status}");
    for pid in workers {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "worker {pid} outlived the parent");
    }
    // The tun device went with netd's descriptor, the control socket with the parent.
    let links = pair.a.ip(&["-o", "link", "show"]);
    assert!(!String::from_utf8_lossy(&links.stdout).contains(pair.a.name()), "tun device left behind");
    assert!(!Path::new(&format!("/run/yavipin/{}.sock", pair.a.name())).exists(), "control socket left behind");
    assert!(pair.daemon_a.log().iter().any(|l| l.contains("shutting down on signal")));
}

#[test]
fn a_dead_worker_stops_the_daemon_with_an_error() {
    if !require_root("a_dead_worker_stops_the_daemon_with_an_error") {
        return;
    }
    for role in ["netd", "keyd"] {
        let mut pair = Pair::start(false);
        let (victim, other): (Vec<u32>, Vec<u32>) =
            pair.daemon_a.workers().into_iter().partition(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains(role))
            });
        let (victim, other) = (victim[0], other[0]);
        let pid = nix::unistd::Pid::from_raw(i32::try_from(victim).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill");
        let line = pair.daemon_a.wait_for(&format!("{role} (pid {victim})"), UP_TIMEOUT).expect("the death is logged");
        assert!(line.contains("signal: 9"), "{line}");
        let status = pair.daemon_a.wait();
        assert_eq!(status.code(), Some(1), "{role}: the daemon exits with an error");
        // Nothing is left running: the other worker was stopped too.
        assert!(!Path::new(&format!("/proc/{other}")).exists(), "{role} died but the other worker still runs");
    }
}

#[test]
fn the_peer_learns_of_a_shutdown_at_once() {
    if !require_root("the_peer_learns_of_a_shutdown_at_once") {
        return;
    }
    let mut pair = Pair::start(false);
    pair.pings_both_ways();
    let stopped = std::time::Instant::now();
    assert!(pair.daemon_b.stop().success());
    let line = pair.daemon_a.wait_for("tunnel down", Duration::from_secs(5)).expect("a noticed");
    let elapsed = stopped.elapsed();
    assert!(line.contains("peer shut down"), "{line}");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    // The link went down with it: routes through the tunnel fail at once.
    assert!(!pair.a.link_is_up(pair.a.name()), "the link stayed up");
}

fn status_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status")
}

/// `CAP_NET_ADMIN` (bit 12) alone, as /proc prints a capability set.
const NET_ADMIN_ONLY: &str = "0000000000001000";
/// `CAP_NET_ADMIN` and `CAP_KILL` (bit 5): what the parent keeps.
const NET_ADMIN_AND_KILL: &str = "0000000000001020";

#[test]
fn after_setup_the_parent_keeps_two_capabilities_and_scripts_run_through_the_runner() {
    if !require_root("after_setup_the_parent_keeps_two_capabilities_and_scripts_run_through_the_runner") {
        return;
    }
    let mut record = std::path::PathBuf::new();
    let mut pair = Pair::start_with(false, |scratch| {
        record = scratch.dir_path().join("record");
        let body = format!(
            "#!/bin/sh\n{{ echo \"$YAVIPIN_EVENT $YAVIPIN_DEVICE $YAVIPIN_PEER\"; grep -E '^(CapEff|CapPrm|CapBnd|CapInh|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; }} >> {}\n",
            record.display()
        );
        let up = scratch.write("up", &body, 0o755);
        format!("[scripts]\nup = \"{}\"\n", up.display())
    });
    assert!(pair.daemon_a.wait_for("up script finished", UP_TIMEOUT).is_some(), "{:#?}", pair.daemon_a.log());

    // The parent: root, but CAP_NET_ADMIN and CAP_KILL alone (bounding set included),
    // no-new-privs, its seccomp filter on every thread, chrooted into the run directory.
    let parent = pair.daemon_a.pid();
    let status = status_of(parent);
    assert_eq!(status_field(&status, "Uid").split_whitespace().next(), Some("0"));
    for cap in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status_field(&status, cap), NET_ADMIN_AND_KILL, "parent {cap}");
    }
    for cap in ["CapInh", "CapAmb"] {
        assert_eq!(status_field(&status, cap), "0000000000000000", "parent {cap}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    for task in std::fs::read_dir(format!("/proc/{parent}/task")).expect("tasks") {
        let task_status = std::fs::read_to_string(task.expect("task").path().join("status")).expect("status");
        assert_eq!(status_field(&task_status, "Seccomp"), "2", "parent thread");
    }
    assert_eq!(std::fs::read_link(format!("/proc/{parent}/root")).expect("root"), Path::new("/run/yavipin"));

    // Its children: netd, keyd and the script runner, which has CAP_NET_ADMIN alone and
    // no-new-privs, and no filter (scripts inherit it).
    let workers = pair.daemon_a.workers();
    assert_eq!(workers.len(), 3, "netd, keyd, the script runner");
    let runner = worker_of(&pair, "scripts");
    let status = status_of(runner);
    for cap in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status_field(&status, cap), NET_ADMIN_ONLY, "runner {cap}");
    }
    assert_eq!((status_field(&status, "NoNewPrivs"), status_field(&status, "Seccomp")), ("1", "0"));

    // The up script ran once, with its environment, as the runner's child with what it has.
    let text = std::fs::read_to_string(&record).expect("the up script ran");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("up {} 198.18.0.2:5555", pair.a.name()), "{text}");
    for (field, value) in [
        ("CapEff", NET_ADMIN_ONLY),
        ("CapPrm", NET_ADMIN_ONLY),
        ("CapBnd", NET_ADMIN_ONLY),
        ("CapInh", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "0"),
    ] {
        assert_eq!(status_field(&text, field), value, "script {field}: {text}");
    }
    assert_eq!(text.matches("up ").count(), 1, "{text}");
    assert!(pair.daemon_a.stop().success());
    assert!(!Path::new(&format!("/run/yavipin/{}.sock", pair.a.name())).exists(), "control socket left behind");
}

/// Bytes of the slow client's request.
const REQUEST: usize = 60;

#[test]
fn a_slow_control_client_does_not_delay_detecting_a_dead_worker() {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    if !require_root("a_slow_control_client_does_not_delay_detecting_a_dead_worker") {
        return;
    }
    let mut pair = Pair::start(false);
    let path = format!("/run/yavipin/{}.sock", pair.a.name());
    // A client that sends a request one byte per second, 60 bytes without a newline: a
    // parent that served it to the end before anything else would be held for a minute.
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let (started, began) = std::sync::mpsc::channel();
    let client = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            let mut stream = std::os::unix::net::UnixStream::connect(&path).expect("connect");
            for i in 0..REQUEST {
                if stream.write_all(b"s").is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                if i == 1 {
                    let _ = started.send(());
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    began.recv().expect("the client sent two bytes");
    let netd = worker_of(&pair, "netd");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(netd).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let line =
        pair.daemon_a.wait_for(&format!("netd (pid {netd})"), Duration::from_secs(90)).expect("the death is logged");
    let at_detection = sent.load(Ordering::SeqCst);
    assert!(line.contains("signal: 9"), "{line}");
    assert!(at_detection < REQUEST / 2, "the death was noticed only after the slow client sent {at_detection} bytes");
    assert_eq!(pair.daemon_a.wait().code(), Some(1));
    let _ = client.join();
}

/// The pid of `pair.daemon_a`'s worker whose command line names `role`.
fn worker_of(pair: &Pair, role: &str) -> u32 {
    pair.daemon_a
        .workers()
        .into_iter()
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains(role)))
        .unwrap_or_else(|| panic!("no {role}"))
}

fn stopped_netd(pair: &Pair) -> (u32, nix::unistd::Pid) {
    let netd = worker_of(pair, "netd");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(netd).expect("pid"));
    // Stopped, netd cannot obey a Shutdown.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("stop netd");
    (netd, pid)
}

fn ended(pid: u32) -> bool {
    yavipin_tests::netns::eventually(Duration::from_secs(10), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.is_empty() || stat.contains(") Z ")
    })
}

#[test]
fn a_worker_that_does_not_stop_is_killed_through_its_pidfd() {
    if !require_root("a_worker_that_does_not_stop_is_killed_through_its_pidfd") {
        return;
    }
    let mut pair = Pair::start(false);
    let (netd, _) = stopped_netd(&pair);
    let _ = pair.daemon_a.stop();
    assert!(pair.daemon_a.log().iter().any(|l| l.contains("netd did not stop in time, killing it")));
    assert!(ended(netd), "netd outlived the parent's grace period");
}

#[test]
fn a_worker_dies_with_its_parent() {
    if !require_root("a_worker_dies_with_its_parent") {
        return;
    }
    let mut pair = Pair::start(false);
    let (netd, _) = stopped_netd(&pair);
    let parent = nix::unistd::Pid::from_raw(i32::try_from(pair.daemon_a.pid()).expect("pid"));
    // The parent gets no chance to stop anything: the kernel delivers netd's
    // parent-death signal, SIGKILL, which a stopped process takes too.
    nix::sys::signal::kill(parent, nix::sys::signal::Signal::SIGKILL).expect("kill the parent");
    let _ = pair.daemon_a.wait();
    // Killed, the parent could not remove its control socket.
    let _ = std::fs::remove_file(format!("/run/yavipin/{}.sock", pair.a.name()));
    assert!(ended(netd), "netd outlived its parent");
}
