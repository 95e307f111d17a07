//! The adversary's suite: each network and compromised-worker claim of SECURITY.md, proven
//! from outside against real daemons.
//!
//! The daemons are the release build of yavipind (as in `e2e.rs`), in network namespaces
//! laid out `A — R — B` ([`Routed`]): `A` responds on 198.18.1.1:5555, `B` initiates, and
//! `R`, the router between them, is where the on-path attacker captures and injects. Off-path
//! attackers and strangers live in further namespaces hanging off `R`. Observation is from
//! outside only: packet captures, the tun devices' counters, `yavipin show --json`,
//! `/proc`. Without root every test prints `SKIPPED` and passes.
//!
//! Timers: the tests that need key renewals use the shortest the configuration allows for
//! Diffie-Hellman renewal (60 s) and a chain step that does not coincide with it, so the
//! longest tests take 75 to 100 s; they run in parallel with the others.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::socket::MsgFlags;
use yavipin_ipc::control::{KeydInit, KeydToParent, ParentToKeyd};
use yavipin_ipc::frame::{Ancillary, Channel, decode, pair};
use yavipin_ipc::{KeydToNetd, NetdToKeyd};
use yavipin_parent::control::TunnelStatus;
use yavipin_proto::Epoch;
use yavipin_proto::handshake::{
    COOKIE_REPLY_LEN, Group, INITIATOR_AUTH_FIXED_LEN, Params, REQUEST_LEN, RESPONDER_AUTH_FIXED_LEN, Request,
};
use yavipin_proto::keys::Psk;
use yavipin_tests::attacker::{
    Capture, Captured, Injector, build_udp, is_icmp, memory_contains, memory_find, noise, parse_udp, rx_packets,
    set_udp_checksum, udp_counter, udp_socket, vm_rss_kib, worker,
};
use yavipin_tests::netns::{
    A_ADDR, B_ADDR, Daemon, Netns, R_A_ADDR, Routed, Scratch, eventually, hex, k_auth, random_key, release_binary,
    require_root, target_dir,
};
use yavipin_tests::sim::SimRng;

const UP_TIMEOUT: Duration = Duration::from_secs(20);
const PORT: u16 = 5555;
const A_SOCK: SocketAddrV4 = SocketAddrV4::new(A_ADDR, PORT);
const B_SOCK: SocketAddrV4 = SocketAddrV4::new(B_ADDR, PORT);
const INNER_A: &str = "198.19.0.1";
const INNER_B: &str = "198.19.0.2";
/// The tunnel's pre-shared key id (the configuration's default).
const KEY_ID: u32 = 1;
/// Bytes a data packet adds: flags, sequence number, tag.
const OVERHEAD: usize = 17;
/// A `ping -s 56` packet: IPv4 header, ICMP header, 56 bytes.
const PING_LEN: usize = 84;
/// Resident memory a worker may gain during an attack: allocator and page-touch noise,
/// far below what keeping per-datagram state would cost.
const RSS_SLACK_KIB: u64 = 256;
/// How long injected packets may take to be counted by the daemon they were sent to.
const SETTLE: Duration = Duration::from_secs(5);

// Binaries and keys -------------------------------------------------------------------

/// The release build with netd's test-only key log, in its own target directory so that
/// it never replaces the normal binary. Built on first use (cargo does nothing when it is
/// up to date).
fn keylog_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let dir = target_dir().join("keylog");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--release", "--locked", "-p", "yavipin-parent", "--features", "test-keylog"])
            .arg("--target-dir")
            .arg(&dir)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .output()
            .expect("run cargo");
        assert!(out.status.success(), "building the key-log binary: {}", String::from_utf8_lossy(&out.stderr));
        dir.join("release/yavipind")
    })
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

/// Events per second, for reports.
#[allow(clippy::cast_precision_loss)] // Counts far below 2^52.
fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// Daemons -----------------------------------------------------------------------------

/// Session timers of a test's configuration; `None` keeps the default.
#[derive(Debug, Clone, Copy, Default)]
struct Timers {
    rekey: Option<u32>,
    dh: Option<u32>,
}

fn config_text(device: &str, key_file: &Path, inner: &str, listen: &str, peer: Option<&str>, timers: Timers) -> String {
    use std::fmt::Write;
    let mut text = format!(
        "key_file = \"{}\"\n[interface]\nname = \"{device}\"\naddresses = [\"{inner}/30\"]\n[transport]\nlisten = \"{listen}\"\n",
        key_file.display()
    );
    if let Some(peer) = peer {
        let _ = writeln!(text, "peer = \"{peer}\"");
    }
    text += "[session]\n";
    if let Some(rekey) = timers.rekey {
        let _ = writeln!(text, "rekey_seconds = {rekey}");
    }
    if let Some(dh) = timers.dh {
        let _ = writeln!(text, "dh_renewal_seconds = {dh}");
    }
    text
}

/// Two daemons across [`Routed`]: `A` listens on 198.18.1.1:5555 and only responds, `B`
/// initiates towards it. Tun devices are named after their namespaces (the control socket
/// `/run/yavipin/DEVICE.sock` is shared by all namespaces).
struct Pair {
    net: Routed,
    a: Daemon,
    b: Daemon,
    key: [u8; 32],
    binary: PathBuf,
    config_b: PathBuf,
    /// When both sides reported the tunnel up.
    up_at: Instant,
    _scratch: Scratch,
}

impl Pair {
    fn start(timers: Timers) -> Self {
        Self::start_with(&release_binary("yavipind"), timers)
    }

    fn start_with(binary: &Path, timers: Timers) -> Self {
        let net = Routed::new();
        let scratch = Scratch::new();
        let key = random_key();
        let key_file = scratch.write("tunnel.key", &format!("{}\n", hex(&key)), 0o600);
        let listen = format!("0.0.0.0:{PORT}");
        let config_a =
            scratch.write("a.toml", &config_text(net.a.name(), &key_file, INNER_A, &listen, None, timers), 0o600);
        let config_b = scratch.write(
            "b.toml",
            &config_text(net.b.name(), &key_file, INNER_B, &listen, Some(&A_SOCK.to_string()), timers),
            0o600,
        );
        let mut a = Daemon::start(&net.a, binary, &config_a);
        let mut b = Daemon::start(&net.b, binary, &config_b);
        for (name, daemon) in [("a", &mut a), ("b", &mut b)] {
            assert!(daemon.wait_for("tunnel up", UP_TIMEOUT).is_some(), "{name} never came up: {:#?}", daemon.log());
        }
        Self { net, a, b, key, binary: binary.to_owned(), config_b, up_at: Instant::now(), _scratch: scratch }
    }

    fn dev_a(&self) -> &str {
        self.net.a.name()
    }

    fn dev_b(&self) -> &str {
        self.net.b.name()
    }

    fn status_a(&self) -> TunnelStatus {
        status(self.dev_a())
    }

    fn status_b(&self) -> TunnelStatus {
        status(self.dev_b())
    }

    /// Starts `B` again after its daemon ended, and waits for the tunnel.
    fn restart_b(&mut self) {
        self.b = Daemon::start(&self.net.b, &self.binary, &self.config_b);
        assert!(
            self.b.wait_for("tunnel up", Duration::from_secs(45)).is_some(),
            "the restarted daemon never came up: {:#?}",
            self.b.log()
        );
    }

    fn pings_both_ways(&self) {
        assert!(ping_retry(&self.net.b, INNER_A), "no answer from A through the tunnel");
        assert!(ping_retry(&self.net.a, INNER_B), "no answer from B through the tunnel");
    }
}

/// `yavipin show DEVICE --json`, retried briefly (a query under a flood may time out).
fn status(device: &str) -> TunnelStatus {
    let mut last = None;
    for _ in 0..10 {
        let out = Command::new(release_binary("yavipin"))
            .args(["show", device, "--json"])
            .output()
            .expect("run yavipin show");
        if out.status.success()
            && let Ok(status) = serde_json::from_slice(&out.stdout)
        {
            return status;
        }
        last = Some(out);
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("yavipin show {device}: {last:?}");
}

/// The count of the reason `yavipin show` names `name`.
fn count<R: Copy>(list: &[(R, u64)], name: &str, shown: impl Fn(R) -> String) -> u64 {
    list.iter().find(|(r, _)| shown(*r) == name).map_or(0, |(_, c)| *c)
}

/// Datagrams `status` counts as dropped for `reason` (`data/replayed`, `handshake/bad-cookie`, ...).
fn drops(status: &TunnelStatus, reason: &str) -> u64 {
    count(&status.netd.drops, reason, |r| r.to_string())
}

fn all_drops(status: &TunnelStatus) -> u64 {
    status.netd.drops.iter().map(|(_, c)| c).sum()
}

fn keyd_failures(status: &TunnelStatus, reason: &str) -> u64 {
    count(&status.keyd.failures, reason, |r| r.name().to_owned())
}

/// One ping with `pattern` (hexadecimal, up to 16 bytes) filling its payload.
fn ping_with(ns: &Netns, target: &str, pattern: &str) -> bool {
    ns.run("ping", &["-c", "1", "-W", "1", "-p", pattern, "-s", "56", target]).status.success()
}

fn ping_retry(ns: &Netns, target: &str) -> bool {
    (0..6).any(|_| ping_with(ns, target, LEGIT))
}

/// Ping payload patterns: what the attacker replays, and legitimate traffic.
const REPLAY: &str = "5265706c61796564"; // "Replayed"
const FORGE: &str = "466f72676564"; // "Forged"
const LEGIT: &str = "4c656769742121"; // "Legit!!"

fn pattern_bytes(pattern: &str) -> Vec<u8> {
    let bytes = unhex(pattern);
    bytes.iter().chain(&bytes).copied().collect()
}

/// Whether `ip` (an IPv4 packet) is one of `B`'s data packets to `A` carrying a ping.
fn is_b_ping_to_a(ip: &[u8]) -> bool {
    parse_udp(ip).is_some_and(|u| {
        u.src == B_SOCK && u.dst == A_SOCK && u.payload.len() == OVERHEAD + PING_LEN && u.payload[0] & 0x80 == 0
    })
}

/// Captures, on `R`, the data packets of `count` pings from `B` to `A` carrying `pattern`.
fn capture_pings(pair: &Pair, count: usize, pattern: &str) -> Vec<Vec<u8>> {
    let capture = Capture::start(&pair.net.r, &[&pair.net.r_to_b], |p| !p.outgoing && is_b_ping_to_a(&p.bytes));
    let out =
        pair.net.b.run("ping", &["-c", &count.to_string(), "-i", "0.2", "-W", "1", "-p", pattern, "-s", "56", INNER_A]);
    assert!(out.status.success(), "pings through the tunnel failed: {out:?}");
    // Each ping crossed R before its answer came back: its packet is queued in the capture.
    capture.finish().into_iter().map(|p| on_the_wire(p.bytes)).collect()
}

/// A captured packet as a real wire would carry it: veth devices offload the UDP checksum,
/// so a packet read on one holds only its partial sum until the receiver checks nothing.
fn on_the_wire(mut packet: Vec<u8>) -> Vec<u8> {
    set_udp_checksum(&mut packet);
    packet
}

/// The phase (epoch modulo 4) in a data packet's header.
fn phase(ip: &[u8]) -> u32 {
    u32::from(parse_udp(ip).expect("UDP").payload[0] & 0x03)
}

/// Watches a tun device for packets delivered out of the tunnel (the kernel's incoming
/// packets on it) that contain `needle` (every packet if `needle` is empty).
fn watch_tun(ns: &Netns, device: &str, needle: Vec<u8>) -> Capture {
    Capture::start(ns, &[device], move |p| !p.outgoing && (needle.is_empty() || contains(&p.bytes, &needle)))
}

fn yavipin_ids() -> (u32, u32) {
    let user =
        nix::unistd::User::from_name("yavipin").expect("passwd").expect("the yavipin user exists (.ci/run creates it)");
    (user.uid.as_raw(), user.gid.as_raw())
}

/// Waits until process `pid` (a child of this process, not yet reaped) has exited.
fn wait_exited(pid: u32, timeout: Duration) -> bool {
    eventually(timeout, || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
    })
}

// Replay ------------------------------------------------------------------------------

/// Replays `packets` (captured IPv4 packets, sent as they were) from `R`, then checks that
/// `A` dropped each under `reason`, delivered nothing to its tun device, and kept its peer.
fn replay_expect(pair: &Pair, packets: &[Vec<u8>], reason: &str) {
    let injector = Injector::new(&pair.net.r);
    let before = pair.status_a();
    let rx = rx_packets(&pair.net.a, pair.dev_a());
    let watch = watch_tun(&pair.net.a, pair.dev_a(), Vec::new());
    for packet in packets {
        assert!(injector.send_ip(packet));
    }
    // Every replay is counted once netd has seen it; then the tun and the peer are checked.
    let expected = packets.len() as u64;
    eventually(SETTLE, || drops(&pair.status_a(), reason) - drops(&before, reason) >= expected);
    let after = pair.status_a();
    let delivered = watch.finish();
    let dropped = drops(&after, reason) - drops(&before, reason);
    assert_eq!(
        dropped,
        packets.len() as u64,
        "replays counted under {reason}: {dropped} of {}; before {:?} {:?}, after {:?} {:?}",
        packets.len(),
        before.netd.recv_epochs,
        before.netd.drops,
        after.netd.recv_epochs,
        after.netd.drops
    );
    assert!(delivered.is_empty(), "{} packets reached A's tun device during the replay", delivered.len());
    assert_eq!(rx_packets(&pair.net.a, pair.dev_a()), rx, "A's tun device received packets during the replay");
    assert_eq!(after.netd.peer, Some(SocketAddr::V4(B_SOCK)), "the replay moved A's peer");
}

/// Pings from `B` to `A` (so `A` hears `B`'s newest epoch) until `A` holds no receive key
/// for `epoch` nor for any epoch sharing its phase: a packet of `epoch` then finds no key.
fn wait_until_phase_free(pair: &Pair, epoch: u32, timeout: Duration) {
    let free = eventually(timeout, || {
        let _ = ping_with(&pair.net.b, INNER_A, LEGIT);
        let status = pair.status_a();
        status.netd.recv_epochs.iter().all(|e| e % 4 != epoch % 4)
    });
    assert!(free, "A kept a key in the phase of epoch {epoch}: {:?}", pair.status_a().netd.recv_epochs);
}

#[test]
fn replayed_packets_never_reach_the_tun() {
    if !require_root("replayed_packets_never_reach_the_tun") {
        return;
    }
    let pair = Pair::start(Timers::default());
    pair.pings_both_ways();
    let epoch = pair.status_b().netd.send_epoch;
    let captured = capture_pings(&pair, 5, REPLAY);
    assert_eq!(captured.len(), 5, "captured {} of B's 5 pings on the router", captured.len());

    // Sent again at once, three times each, from B's address: the window has them.
    let tripled: Vec<Vec<u8>> = captured.iter().flat_map(|p| [p.clone(), p.clone(), p.clone()]).collect();
    replay_expect(&pair, &tripled, "data/replayed");

    // From the attacker's own address: still a replay, and A does not follow it there.
    let attacker = udp_socket(&pair.net.r, SocketAddr::V4(SocketAddrV4::new(R_A_ADDR, 40_000)));
    let before = pair.status_a();
    let watch = watch_tun(&pair.net.a, pair.dev_a(), pattern_bytes(REPLAY));
    for packet in &captured {
        attacker.send_to(parse_udp(packet).expect("UDP").payload, A_SOCK).expect("send");
    }
    eventually(SETTLE, || drops(&pair.status_a(), "data/replayed") - drops(&before, "data/replayed") >= 5);
    let after = pair.status_a();
    assert_eq!(drops(&after, "data/replayed") - drops(&before, "data/replayed"), 5);
    assert_eq!(after.netd.peer, Some(SocketAddr::V4(B_SOCK)), "a replay from elsewhere moved the peer");
    assert!(watch.finish().is_empty());

    // Once more than 8192 newer packets of the same epoch arrived, the old ones are behind
    // the window: too old.
    let sent_before = pair.status_b().netd.sent.packets;
    let received_before = pair.status_a().netd.received.packets;
    let blaster = udp_socket(&pair.net.b, "0.0.0.0:0".parse().expect("addr"));
    for i in 0..10_000u32 {
        let _ = blaster.send_to(&i.to_be_bytes(), (INNER_A, 9));
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (status_b, status_a) = (pair.status_b(), pair.status_a());
    assert_eq!(status_b.netd.send_epoch, epoch, "B changed epochs during the test: the expectations do not apply");
    let (sent, received) = (status_b.netd.sent.packets - sent_before, status_a.netd.received.packets - received_before);
    assert!(sent > 8_200 && received > 8_200, "B sent {sent} and A received {received} newer packets: too few");
    replay_expect(&pair, &captured, "data/too-old");
    eprintln!("replay: 20 replays dropped as replayed, 5 as too old after {received} newer packets; nothing delivered");
    pair.pings_both_ways();
}

#[test]
fn replays_across_key_renewals_are_refused() {
    if !require_root("replays_across_key_renewals_are_refused") {
        return;
    }
    // Chain steps every 25 s, a Diffie-Hellman renewal at 60 s: they never coincide, so each
    // epoch carries traffic, and every old epoch's phase is free for 15 s at a time.
    let pair = Pair::start(Timers { rekey: Some(25), dh: Some(60) });
    pair.pings_both_ways();
    let epoch = pair.status_b().netd.send_epoch.expect("B sends");
    let first = capture_pings(&pair, 5, REPLAY);
    assert_eq!(first.len(), 5);
    assert_eq!(pair.status_b().netd.send_epoch, Some(epoch), "B stepped during the capture");
    assert!(first.iter().all(|p| phase(p) == epoch % 4));
    replay_expect(&pair, &first, "data/replayed");

    // After the hash-chain step and the old key's 10 s grace period: no key for that epoch.
    wait_until_phase_free(&pair, epoch, Duration::from_secs(60));
    replay_expect(&pair, &first, "data/unknown-epoch");
    eprintln!("replay across a chain step: epoch {epoch}'s packets refused as unknown-epoch");

    // Across the Diffie-Hellman renewal: capture B's pings until the new session replaces
    // the old one, then replay those of the old session's last epoch.
    let sessions = pair.status_b().keyd.sessions;
    let capture = Capture::start(&pair.net.r, &[&pair.net.r_to_b], |p| !p.outgoing && is_b_ping_to_a(&p.bytes));
    let renewed = eventually(Duration::from_secs(90), || {
        let _ = ping_with(&pair.net.b, INNER_A, REPLAY);
        std::thread::sleep(Duration::from_millis(300));
        pair.status_b().keyd.sessions > sessions
    });
    assert!(renewed, "no Diffie-Hellman renewal within the expected time");
    let renewal_seen = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let new_epoch = pair.status_b().netd.send_epoch.expect("B sends");
    let old_epoch = new_epoch - 1;
    let last_old: Vec<Vec<u8>> = capture
        .finish()
        .into_iter()
        .filter(|p| p.at + Duration::from_millis(500) < renewal_seen && phase(&p.bytes) == old_epoch % 4)
        .map(|p| on_the_wire(p.bytes))
        .collect();
    assert!(!last_old.is_empty(), "no packet of the old session's last epoch {old_epoch} was captured");
    wait_until_phase_free(&pair, old_epoch, Duration::from_secs(30));
    replay_expect(&pair, &last_old, "data/unknown-epoch");
    eprintln!(
        "replay across a Diffie-Hellman renewal: {} packets of epoch {old_epoch} refused as unknown-epoch (new session from epoch {new_epoch})",
        last_old.len()
    );

    // The first capture, several epochs and a session old, whatever key holds its phase now.
    let before = pair.status_a();
    let watch = watch_tun(&pair.net.a, pair.dev_a(), Vec::new());
    let injector = Injector::new(&pair.net.r);
    for packet in &first {
        injector.send_ip(packet);
    }
    let refused = |after: &TunnelStatus| -> u64 {
        ["data/unknown-epoch", "data/bad-mac", "data/replayed", "data/too-old"]
            .iter()
            .map(|r| drops(after, r) - drops(&before, r))
            .sum()
    };
    eventually(SETTLE, || refused(&pair.status_a()) >= first.len() as u64);
    let after = pair.status_a();
    assert!(watch.finish().is_empty());
    let refused = refused(&after);
    assert_eq!(refused, first.len() as u64, "{:?} -> {:?}", before.netd.drops, after.netd.drops);
    pair.pings_both_ways();
}

// Liveness under attack ---------------------------------------------------------------

/// Whether `ip` is one of `B`'s data-plane datagrams to `A` (data or tunnel control).
fn is_b_data_to_a(ip: &[u8]) -> bool {
    parse_udp(ip)
        .is_some_and(|u| u.src == B_SOCK && u.dst == A_SOCK && u.payload.first().is_some_and(|b| b & 0x80 == 0))
}

#[test]
fn a_replayed_shutdown_notice_and_spoofed_packets_change_nothing() {
    if !require_root("a_replayed_shutdown_notice_and_spoofed_packets_change_nothing") {
        return;
    }
    let mut pair = Pair::start(Timers::default());
    pair.pings_both_ways();
    // B stops; R records what B sends on its way out, the shutdown notice last.
    let capture = Capture::start(&pair.net.r, &[&pair.net.r_to_b], |p| !p.outgoing && is_b_data_to_a(&p.bytes));
    assert!(pair.b.stop().success(), "B did not stop cleanly");
    let line = pair.a.wait_for("tunnel down", UP_TIMEOUT).expect("A noticed B's shutdown");
    assert!(line.contains("peer shut down"), "{line}");
    let notice = capture.finish().pop().map(|p| on_the_wire(p.bytes)).expect("B's shutdown notice crossed R");
    let notice_payload = parse_udp(&notice).expect("UDP").payload.to_vec();
    // Type byte only: a control message with a one-byte plaintext.
    assert_eq!(notice_payload.len(), OVERHEAD + 1, "the last datagram of B is not a control message");

    // B comes back: a new session. The attacker now replays the notice and spoofs.
    pair.restart_b();
    pair.pings_both_ways();
    let fresh = capture_pings(&pair, 3, LEGIT);
    assert_eq!(fresh.len(), 3, "captured {} of B's 3 pings on the router", fresh.len());
    let mark = pair.a.log().len();
    let before = pair.status_a();
    let rx = rx_packets(&pair.net.a, pair.dev_a());
    assert!(before.netd.up && pair.net.a.link_is_up(pair.dev_a()), "A is not up before the attack: {before:?}");

    let injector = Injector::new(&pair.net.r);
    let attacker = udp_socket(&pair.net.r, SocketAddr::V4(SocketAddrV4::new(R_A_ADDR, 40_003)));
    let elsewhere = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), PORT);
    let mut sent = 0u64;
    let mut send_from_everywhere = |payload: &[u8]| {
        assert!(injector.send_udp(B_SOCK, A_SOCK, payload));
        assert!(injector.send_udp(elsewhere, A_SOCK, payload));
        attacker.send_to(payload, A_SOCK).expect("send");
        sent += 3;
    };
    // The notice, replayed as B, from a spoofed third address and from the attacker's own.
    for _ in 0..3 {
        send_from_everywhere(&notice_payload);
    }
    // The new session's packets, replayed from elsewhere; and forged ones with a sequence
    // number ahead of the window (fresh, so only the tag refuses them).
    for packet in &fresh {
        let payload = parse_udp(packet).expect("UDP").payload;
        send_from_everywhere(payload);
        let mut ahead = payload.to_vec();
        let seq = u32::from_be_bytes(ahead[1..5].try_into().expect("4 bytes"));
        ahead[1..5].copy_from_slice(&(seq + 1000).to_be_bytes());
        send_from_everywhere(&ahead);
    }
    let reasons = ["data/unknown-epoch", "data/bad-mac", "data/replayed", "data/too-old"];
    let refused = |after: &TunnelStatus| -> u64 { reasons.iter().map(|r| drops(after, r) - drops(&before, r)).sum() };
    eventually(SETTLE, || refused(&pair.status_a()) >= sent);
    let after = pair.status_a();
    eprintln!(
        "liveness under attack: {sent} replayed and spoofed datagrams; drops {:?} -> {:?}",
        before.netd.drops, after.netd.drops
    );
    assert_eq!(refused(&after), sent, "not every spoofed datagram was refused: {:?}", after.netd.drops);
    assert!(drops(&after, "data/bad-mac") - drops(&before, "data/bad-mac") >= 9, "the forgeries did not meet the tag");

    // Nothing changed: the tunnel, its link, its peer, its session; nothing reached the tun.
    let logged = &pair.a.log()[mark..];
    assert!(!logged.iter().any(|l| l.contains("tunnel down")), "A took the tunnel down: {logged:?}");
    assert!(after.netd.up, "A's tunnel is down: {after:?}");
    assert!(pair.net.a.link_is_up(pair.dev_a()), "A's link went down");
    assert_eq!(after.netd.peer, Some(SocketAddr::V4(B_SOCK)), "a spoofed datagram moved A's peer");
    assert_eq!(after.keyd.sessions, before.keyd.sessions, "a new handshake happened");
    assert_eq!(rx_packets(&pair.net.a, pair.dev_a()), rx, "A's tun device received a packet");
    pair.pings_both_ways();
    assert_eq!(pair.status_a().netd.peer, Some(SocketAddr::V4(B_SOCK)));
}

// Forgery -----------------------------------------------------------------------------

/// Every alteration of captured data packets (UDP payloads): each single bit flipped,
/// every truncation, extensions, splices of header, body and tag across packets, changed
/// phase, kind, flags and sequence numbers.
fn forgeries(packets: &[Vec<u8>], noise: &mut SimRng) -> Vec<Vec<u8>> {
    let payloads: Vec<&[u8]> = packets.iter().map(|p| parse_udp(p).expect("UDP").payload).collect();
    let mut out = Vec::new();
    for payload in payloads.iter().take(2) {
        for bit in 0..payload.len() * 8 {
            let mut forged = payload.to_vec();
            forged[bit / 8] ^= 1 << (bit % 8);
            out.push(forged);
        }
    }
    for payload in &payloads {
        out.extend((0..payload.len()).map(|len| payload[..len].to_vec()));
        for extra in 1..=64 {
            let mut longer = payload.to_vec();
            longer.extend(noise.bytes(extra));
            out.push(longer);
        }
        let mut padded = payload.to_vec();
        padded.extend([0u8; 8]);
        out.push(padded);
        for flags in 0..=0x7f_u8 {
            let mut forged = payload.to_vec();
            forged[0] = flags;
            if forged != *payload {
                out.push(forged);
            }
        }
        for seq in [0u32, 1, 8191, 8192, 1 << 31, u32::MAX] {
            let mut forged = payload.to_vec();
            forged[1..5].copy_from_slice(&seq.to_be_bytes());
            out.push(forged);
        }
    }
    for (i, a) in payloads.iter().enumerate() {
        for (j, b) in payloads.iter().enumerate() {
            if i == j {
                continue;
            }
            let (header, body_a, tag_a) = (&a[..5], &a[5..a.len() - 12], &a[a.len() - 12..]);
            let (body_b, tag_b) = (&b[5..b.len() - 12], &b[b.len() - 12..]);
            out.push([header, body_b, tag_b].concat());
            out.push([header, body_b, tag_a].concat());
            out.push([header, body_a, tag_b].concat());
        }
    }
    out
}

#[test]
fn forged_and_random_datagrams_reach_nothing_and_get_no_answer() {
    if !require_root("forged_and_random_datagrams_reach_nothing_and_get_no_answer") {
        return;
    }
    let pair = Pair::start(Timers::default());
    pair.pings_both_ways();
    // The on-path attacker keeps B's next four packets from A: altered copies of packets A
    // never saw meet the MAC, not the replay window.
    let captured = {
        let _withheld = Withhold::from_b(&pair.net);
        capture_pings_lost(&pair, 4, FORGE)
    };
    assert_eq!(captured.len(), 4);
    let mut noise = noise();
    let forged = forgeries(&captured, &mut noise);
    let random: Vec<Vec<u8>> = (0..=1500).map(|len| noise.bytes(len)).collect();

    let injector = Injector::new(&pair.net.r);
    let attacker_addr = SocketAddrV4::new(R_A_ADDR, 40_001);
    let attacker = udp_socket(&pair.net.r, SocketAddr::V4(attacker_addr));
    attacker.set_nonblocking(true).expect("nonblocking");
    // One round: every forgery and every random length, spoofed as B and from the
    // attacker's own address.
    let round = |noise: &mut SimRng| -> u64 {
        let mut sent = 0;
        for payload in forged.iter().chain(&random) {
            sent += u64::from(injector.send_udp(B_SOCK, A_SOCK, payload));
            sent += u64::from(attacker.send_to(payload, A_SOCK).is_ok());
        }
        // Fresh random bytes each round, first byte included.
        for len in 0..=1500 {
            sent += u64::from(injector.send_udp(B_SOCK, A_SOCK, &noise.bytes(len)));
        }
        sent
    };

    let workers = pair.a.workers();
    let (netd, keyd) = (worker(&workers, "netd"), worker(&workers, "keyd"));
    // A warm-up round first: buffers touched once are not growth.
    round(&mut noise);
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = (vm_rss_kib(netd), vm_rss_kib(keyd));
    let before = pair.status_a();
    let (in_before, overflow_before) =
        (udp_counter(&pair.net.a, "InDatagrams"), udp_counter(&pair.net.a, "RcvbufErrors"));
    let rx = rx_packets(&pair.net.a, pair.dev_a());
    let tun = watch_tun(&pair.net.a, pair.dev_a(), Vec::new());
    // Everything A sends towards R's side during the attack: answers would be here.
    let answers = Capture::start(&pair.net.r, &[&pair.net.r_to_a], |p| {
        !p.outgoing && (is_icmp(&p.bytes) || parse_udp(&p.bytes).is_some_and(|u| u.src == A_SOCK))
    });
    let started = Instant::now();
    let mut sent = 0;
    for _ in 0..5 {
        sent += round(&mut noise);
    }
    let elapsed = started.elapsed();
    // netd has read everything once its drops match what reached its socket (bar the odd
    // keepalive of B's, which is received, not dropped).
    eventually(SETTLE, || {
        all_drops(&pair.status_a()) - all_drops(&before) + 2 >= udp_counter(&pair.net.a, "InDatagrams") - in_before
    });
    let after = pair.status_a();
    let rss_after = (vm_rss_kib(netd), vm_rss_kib(keyd));
    let answers = answers.finish();
    let mut buf = [0u8; 2048];
    let answered_to_attacker = attacker.recv_from(&mut buf).is_ok();

    let processed = all_drops(&after) - all_drops(&before);
    let (in_delta, overflow) = (
        udp_counter(&pair.net.a, "InDatagrams") - in_before,
        udp_counter(&pair.net.a, "RcvbufErrors") - overflow_before,
    );
    eprintln!(
        "forgery: {sent} datagrams in {elapsed:?} ({:.0}/s): {in_delta} reached A's socket, {overflow} overflowed it, netd dropped {processed} ({:?}); netd RSS {} -> {} KiB, keyd {} -> {} KiB; {} datagrams from A meanwhile",
        rate(sent, elapsed),
        after.netd.drops,
        rss_before.0,
        rss_after.0,
        rss_before.1,
        rss_after.1,
        answers.len()
    );
    assert!(tun.finish().is_empty(), "a forged datagram reached A's tun device");
    assert_eq!(rx_packets(&pair.net.a, pair.dev_a()), rx);
    assert_eq!(after.netd.received.packets, before.netd.received.packets, "something authenticated");
    assert!(!answered_to_attacker, "A answered the attacker");
    for packet in &answers {
        let udp = parse_udp(&packet.bytes);
        assert!(
            udp.is_some_and(|u| u.dst == B_SOCK && u.payload.first().is_some_and(|b| b & 0x80 == 0)),
            "A answered: {udp:?} {:?}",
            packet.bytes
        );
    }
    // A datagram from A to B meanwhile can only be its own timers' (keepalive); answers to
    // the attack would number in the thousands.
    assert!(answers.len() <= 2, "A sent {} datagrams during the attack", answers.len());
    assert!(processed >= in_delta.saturating_sub(2), "netd dropped {processed} of {in_delta} datagrams");
    // At full speed the kernel drops what overflows netd's socket buffer (counted above);
    // most datagrams must still have reached netd, or the test proves little.
    assert!(processed * 2 >= sent, "only {processed} of {sent} attack datagrams were processed: the test is too weak");
    assert!(rss_after.0 <= rss_before.0 + RSS_SLACK_KIB, "netd grew from {} to {} KiB", rss_before.0, rss_after.0);
    assert!(rss_after.1 <= rss_before.1 + RSS_SLACK_KIB, "keyd grew from {} to {} KiB", rss_before.1, rss_after.1);
    assert_eq!(after.keyd.modexps, before.keyd.modexps);
    let mac_checked = drops(&after, "data/bad-mac") - drops(&before, "data/bad-mac");
    assert!(mac_checked >= 5 * 2 * 8 * 96, "only {mac_checked} forgeries reached the MAC check");

    // The control: the untouched packets, withheld until now, are genuine. A takes each
    // once, which shows that the forgeries were one bit away from being accepted and
    // that none of them moved the replay window.
    let delivered = watch_tun(&pair.net.a, pair.dev_a(), pattern_bytes(FORGE));
    let rx = rx_packets(&pair.net.a, pair.dev_a());
    for packet in &captured {
        assert!(injector.send_ip(packet));
    }
    eventually(SETTLE, || rx_packets(&pair.net.a, pair.dev_a()) >= rx + captured.len() as u64);
    assert_eq!(delivered.finish().len(), captured.len(), "the withheld genuine packets did not reach A's tun");
    replay_expect(&pair, &captured, "data/replayed");
    pair.pings_both_ways();
}

/// While it lives, `R` silently drops what `B` sends (its own packets still go out).
struct Withhold<'a> {
    r: &'a Netns,
    iif: String,
}

impl<'a> Withhold<'a> {
    fn from_b(net: &'a Routed) -> Self {
        net.r.ip(&["route", "add", "blackhole", "default", "table", "200"]);
        net.r.ip(&["rule", "add", "iif", &net.r_to_b, "lookup", "200", "pref", "100"]);
        Self { r: &net.r, iif: net.r_to_b.clone() }
    }
}

impl Drop for Withhold<'_> {
    fn drop(&mut self) {
        self.r.ip(&["rule", "del", "iif", &self.iif, "lookup", "200", "pref", "100"]);
    }
}

/// Like [`capture_pings`], while the packets are kept from `A` (the pings fail).
fn capture_pings_lost(pair: &Pair, count: usize, pattern: &str) -> Vec<Vec<u8>> {
    let capture = Capture::start(&pair.net.r, &[&pair.net.r_to_b], |p| !p.outgoing && is_b_ping_to_a(&p.bytes));
    let _ =
        pair.net.b.run("ping", &["-c", &count.to_string(), "-i", "0.2", "-W", "1", "-p", pattern, "-s", "56", INNER_A]);
    capture.finish().into_iter().map(|p| on_the_wire(p.bytes)).collect()
}

// Handshake flood ---------------------------------------------------------------------

/// Sends well-formed Requests to `A` from random addresses in 10.0.0.0/8 and random ports,
/// with random nonces, until `until`; returns how many the kernel took.
fn flood_requests(injector: &Injector, until: Instant) -> u64 {
    let mut noise = noise();
    let request = Request::encode(&Params::new(Group::Modp2048, KEY_ID), &[0; 16]);
    let mut packet = build_udp(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1024), A_SOCK, &request);
    let mut sent = 0;
    while Instant::now() < until {
        for _ in 0..256 {
            let (a, b) = (noise.next_u64().to_ne_bytes(), noise.next_u64().to_ne_bytes());
            packet[13..16].copy_from_slice(&a[..3]);
            packet[20..22].copy_from_slice(&(u16::from_ne_bytes([a[3], a[4]]) | 1024).to_be_bytes());
            // Ni: bytes 8..24 of the Request, after the IP and UDP headers.
            packet[28 + 8..28 + 16].copy_from_slice(&b);
            packet[28 + 16..28 + 24].copy_from_slice(&a);
            set_udp_checksum(&mut packet);
            sent += u64::from(injector.send_ip(&packet));
        }
    }
    sent
}

/// Whether `ip` is a UDP datagram whose payload starts with handshake message `kind`.
fn is_handshake(ip: &[u8], kind: u8) -> bool {
    parse_udp(ip).is_some_and(|u| u.payload.first() == Some(&kind))
}

#[test]
fn a_spoofed_request_flood_costs_nothing_and_the_renewal_succeeds() {
    if !require_root("a_spoofed_request_flood_costs_nothing_and_the_renewal_succeeds") {
        return;
    }
    // B renews the session 60 s after it started (a chain step at 50 s, the shortest DH
    // interval allows no less than the chain step); the flood runs from 54 s to 64 s.
    let pair = Pair::start(Timers { rekey: Some(50), dh: Some(60) });
    pair.pings_both_ways();
    // Cookie Replies to the spoofed sources are routed to a sink where they are counted.
    let (sink, sink_if, _) = pair.net.attach("yvz", 4);
    pair.net.r.ip(&["route", "add", "10.0.0.0/8", "via", "198.18.4.1"]);
    // The genuine handshake messages, seen at B where no flood passes.
    let genuine = Capture::start(&pair.net.b, &[&pair.net.b_if], |p| is_handshake(&p.bytes, 0x83));

    let flood_at = pair.up_at + Duration::from_secs(54);
    std::thread::sleep(flood_at.saturating_duration_since(Instant::now()));
    let workers = pair.a.workers();
    let (netd, keyd) = (worker(&workers, "netd"), worker(&workers, "keyd"));
    let before = pair.status_a();
    let sessions_b = pair.status_b().keyd.sessions;
    let rss_before = (vm_rss_kib(netd), vm_rss_kib(keyd));
    let replies = Capture::start(&sink, &[&sink_if], |p| !p.outgoing && parse_udp(&p.bytes).is_some());
    let started = Instant::now();
    let until = started + Duration::from_secs(10);
    let (sent, during) = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..2)
            .map(|_| {
                let injector = Injector::new(&pair.net.r);
                scope.spawn(move || flood_requests(&injector, until))
            })
            .collect();
        // Four seconds in, before B's renewal begins: the flood alone.
        std::thread::sleep(Duration::from_secs(4));
        let during = pair.status_a();
        (senders.into_iter().map(|s| s.join().expect("sender")).sum::<u64>(), during)
    });
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let flood_over = pair.status_a();
    let rss_after = (vm_rss_kib(netd), vm_rss_kib(keyd));
    let replies = replies.finish();

    // The genuine renewal completes (during the flood or at B's next retransmission).
    let renewed = eventually(Duration::from_secs(60), || {
        pair.status_a().keyd.sessions > before.keyd.sessions && pair.status_b().keyd.sessions > sessions_b
    });
    let renewed_after = started.elapsed();
    let after = pair.status_a();
    let genuine = genuine.finish();
    let genuine_auths = genuine.len() as u64;
    let cookie_replies = flood_over.netd.cookie_replies - before.netd.cookie_replies;
    eprintln!(
        "request flood: {sent} Requests in {elapsed:?} ({:.0}/s); A answered {cookie_replies} ({:.0}/s), {} seen at the sink, all {} bytes; modexps at A: {} before, {} four seconds in, {} after the renewal ({genuine_auths} genuine Initiator Auths on the wire); renewal done {renewed_after:?} after the flood began; netd RSS {} -> {} KiB, keyd {} -> {} KiB",
        rate(sent, elapsed),
        rate(cookie_replies, elapsed),
        replies.len(),
        COOKIE_REPLY_LEN,
        before.keyd.modexps,
        during.keyd.modexps,
        after.keyd.modexps,
        rss_before.0,
        rss_after.0,
        rss_before.1,
        rss_after.1,
    );
    assert!(renewed, "the genuine renewal did not succeed: A {:?}, B {:?}", after, pair.status_b());
    assert!(sent > 100_000, "only {sent} Requests sent: the flood proves nothing");
    assert!(cookie_replies > 10_000, "netd answered only {cookie_replies} Requests: the flood did not reach it");
    assert_eq!(during.keyd.modexps, before.keyd.modexps, "spoofed Requests cost modular exponentiations");
    assert!(during.netd.up && flood_over.netd.up, "the tunnel went down under the flood");
    let modexps = after.keyd.modexps - before.keyd.modexps;
    assert!(
        (2..=2 * genuine_auths).contains(&modexps),
        "{modexps} exponentiations for {genuine_auths} genuine Initiator Auths"
    );
    for reply in &replies {
        let udp = parse_udp(&reply.bytes).expect("UDP");
        assert_eq!(udp.src, A_SOCK, "something else answered: {udp:?}");
        assert_eq!((udp.payload.len(), udp.payload[0]), (COOKIE_REPLY_LEN, 0x82), "a reply other than a Cookie Reply");
        assert!(udp.payload.len() < REQUEST_LEN, "a reply larger than the Request it answers");
    }
    assert!(replies.len() as u64 <= sent);
    assert!(rss_after.0 <= rss_before.0 + RSS_SLACK_KIB, "netd grew from {} to {} KiB", rss_before.0, rss_after.0);
    assert!(rss_after.1 <= rss_before.1 + RSS_SLACK_KIB, "keyd grew from {} to {} KiB", rss_before.1, rss_after.1);
    pair.pings_both_ways();
}

// Man in the middle -------------------------------------------------------------------

#[test]
fn a_daemon_with_another_key_in_the_middle_establishes_nothing() {
    if !require_root("a_daemon_with_another_key_in_the_middle_establishes_nothing") {
        return;
    }
    let binary = release_binary("yavipind");
    let net = Routed::new();
    let scratch = Scratch::new();
    let key_file = scratch.write("tunnel.key", &format!("{}\n", hex(&random_key())), 0o600);
    let rogue_file = scratch.write("rogue.key", &format!("{}\n", hex(&random_key())), 0o600);
    // Two hosts of the attacker's, each wearing one victim's address: M is A to B, N is B
    // to A. R sends B's traffic for A to M and A's traffic for B to N.
    let (m, _, _) = net.attach("yvm", 5);
    m.ip(&["address", "add", &format!("{A_ADDR}/32"), "dev", "lo"]);
    let (n, _, _) = net.attach("yvn", 6);
    n.ip(&["address", "add", &format!("{B_ADDR}/32"), "dev", "lo"]);
    net.r.ip(&["route", "add", &format!("{A_ADDR}/32"), "via", "198.18.5.1", "table", "100"]);
    net.r.ip(&["rule", "add", "iif", &net.r_to_b, "lookup", "100", "pref", "100"]);
    net.r.ip(&["route", "add", &format!("{B_ADDR}/32"), "via", "198.18.6.1", "table", "101"]);
    net.r.ip(&["rule", "add", "iif", &net.r_to_a, "lookup", "101", "pref", "101"]);

    let any = format!("0.0.0.0:{PORT}");
    let timers = Timers::default();
    let configs = [
        (&net.a, config_text(net.a.name(), &key_file, INNER_A, &any, None, timers)),
        (&net.b, config_text(net.b.name(), &key_file, INNER_B, &any, Some(&A_SOCK.to_string()), timers)),
        (&m, config_text(m.name(), &rogue_file, INNER_A, &A_SOCK.to_string(), None, timers)),
        (&n, config_text(n.name(), &rogue_file, INNER_B, &B_SOCK.to_string(), Some(&A_SOCK.to_string()), timers)),
    ];
    let mut daemons: Vec<(&Netns, Daemon)> = configs
        .iter()
        .enumerate()
        .map(|(i, (ns, text))| (*ns, Daemon::start(ns, &binary, &scratch.write(&format!("{i}.toml"), text, 0o600))))
        .collect();
    // Long enough for several retransmitted handshakes (1, 2, 4, 8 s apart).
    assert!(daemons[1].1.wait_for("tunnel up", Duration::from_secs(16)).is_none(), "B came up through the attacker");
    let statuses: Vec<TunnelStatus> = daemons.iter().map(|(ns, _)| status(ns.name())).collect();
    for ((ns, daemon), status) in daemons.iter_mut().zip(&statuses) {
        assert!(!daemon.log().iter().any(|l| l.contains("tunnel up")), "{} came up", ns.name());
        assert!(!status.netd.up && status.keyd.sessions == 0, "{}: {status:?}", ns.name());
        assert_eq!(status.netd.received.packets, 0, "{} opened a data packet", ns.name());
        assert_eq!(rx_packets(ns, ns.name()), 0, "{}'s tun device received packets", ns.name());
    }
    let (a, m) = (&statuses[0], &statuses[2]);
    eprintln!(
        "man in the middle: bad-auth at A's keyd {} (the attacker initiating), at the attacker's keyd {} (B initiating); A {:?}, B {:?}",
        keyd_failures(a, "bad-auth"),
        keyd_failures(m, "bad-auth"),
        a.netd.drops,
        statuses[1].netd.drops
    );
    assert!(keyd_failures(a, "bad-auth") > 0, "A's keyd never refused the attacker's Initiator Auth: {a:?}");
    assert!(keyd_failures(m, "bad-auth") > 0, "the attacker's keyd never refused B's Initiator Auth: {m:?}");
}

// Strangers ---------------------------------------------------------------------------

/// The UDP destination port of the datagram an ICMP error quotes.
fn icmp_quoted_port(ip: &[u8]) -> Option<u16> {
    let quoted = ip.get(28..)?;
    let header = usize::from(quoted.first()? & 0x0f) * 4;
    Some(u16::from_be_bytes([*quoted.get(header + 2)?, *quoted.get(header + 3)?]))
}

#[test]
fn strangers_get_no_answer_but_a_cookie_for_a_well_formed_request() {
    if !require_root("strangers_get_no_answer_but_a_cookie_for_a_well_formed_request") {
        return;
    }
    let pair = Pair::start(Timers::default());
    let (stranger, stranger_if, _) = pair.net.attach("yvs", 3);
    let me = SocketAddrV4::new(Ipv4Addr::new(198, 18, 3, 1), 40_002);
    let socket = udp_socket(&stranger, SocketAddr::V4(me));
    let incoming =
        |p: &Captured| !p.outgoing && (is_icmp(&p.bytes) || parse_udp(&p.bytes).is_some_and(|u| u.dst.port() != 53));
    let targets = [A_ADDR, B_ADDR];

    // A port scan of both hosts: the kernel reports closed ports; the daemon's port says nothing.
    let capture = Capture::start(&stranger, &[&stranger_if], incoming);
    for target in targets {
        for port in (1..=1024).chain([PORT - 1, PORT, PORT + 1]) {
            socket.send_to(b"?", (target, port)).expect("send");
            if port % 64 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let scan = capture.finish();
    assert!(scan.iter().all(|p| is_icmp(&p.bytes)), "a UDP answer to the port scan");
    assert!(
        scan.iter().all(|p| icmp_quoted_port(&p.bytes) != Some(PORT)),
        "the daemon's port answered the scan with an ICMP error"
    );
    eprintln!(
        "strangers: the port scan got {} ICMP port-unreachable errors from the kernel, none for port {PORT}, no UDP",
        scan.len()
    );

    // Every first byte, the lengths that matter to each message type, and every length up
    // to 1500 with random content; then Requests that are almost right.
    let before = (pair.status_a(), pair.status_b());
    let mut noise = noise();
    let capture = Capture::start(&stranger, &[&stranger_if], incoming);
    let mut sent = 0u64;
    let mut probe = |target: Ipv4Addr, bytes: &[u8]| {
        socket.send_to(bytes, (target, PORT)).expect("send");
        sent += 1;
        if sent.is_multiple_of(64) {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let lengths = [1, 2, 5, 16, 17, 18, 39, 40, 41, 63, 64, 65, 331, 332, 333, 363, 364, 365, 459, 460, 1500];
    for target in targets {
        for first in 0..=255u8 {
            for len in lengths {
                let mut bytes = noise.bytes(len);
                bytes[0] = first;
                probe(target, &bytes);
            }
        }
        for len in 0..=1500 {
            probe(target, &noise.bytes(len));
        }
    }
    let params = Params::new(Group::Modp2048, KEY_ID);
    let good = Request::encode(&params, &[7; 16]);
    let mut almost: Vec<Vec<u8>> = vec![good[..REQUEST_LEN - 1].to_vec(), [&good[..], &[0]].concat()];
    for (offset, value) in [(1, 2), (2, 2), (3, 15), (7, 2), (REQUEST_LEN - 1, 1), (30, 0x80), (0, 0x80), (0, 0x85)] {
        let mut request = good.to_vec();
        request[offset] = value;
        almost.push(request);
    }
    almost.push(Request::encode(&Params::new(Group::Modp3072, KEY_ID), &[7; 16]).to_vec());
    for target in targets {
        for request in &almost {
            probe(target, request);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let probes = capture.finish();
    let after = (pair.status_a(), pair.status_b());
    assert!(probes.is_empty(), "answers to probes: {:?}", probes.iter().map(|p| &p.bytes).collect::<Vec<_>>());
    for (side, (b, a)) in [("A", (&before.0, &after.0)), ("B", (&before.1, &after.1))] {
        assert_eq!(a.netd.cookie_replies, b.netd.cookie_replies, "{side} answered a probe");
        assert_eq!(a.keyd.modexps, b.keyd.modexps, "{side}'s keyd worked for a stranger");
    }
    let counted = all_drops(&after.0) + all_drops(&after.1) - all_drops(&before.0) - all_drops(&before.1);
    eprintln!("strangers: {sent} probes to the daemons' port, {counted} counted as dropped, no answer");

    // A well-formed Request gets one Cookie Reply, smaller than the Request, from each.
    let capture = Capture::start(&stranger, &[&stranger_if], incoming);
    for target in targets {
        socket.send_to(&good, (target, PORT)).expect("send");
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut replies = capture.finish();
    assert_eq!(replies.len(), 2, "expected one Cookie Reply from each side: {replies:?}");
    replies.sort_by_key(|r| parse_udp(&r.bytes).map(|u| u.src));
    for (reply, target) in replies.iter().zip(targets) {
        let udp = parse_udp(&reply.bytes).expect("UDP");
        assert_eq!((udp.src, udp.dst), (SocketAddrV4::new(target, PORT), me));
        assert_eq!(udp.payload.len(), COOKIE_REPLY_LEN);
        assert_eq!(udp.payload[0], 0x82);
        assert_eq!(&udp.payload[8..24], &[7; 16], "the Cookie Reply echoes the nonce");
    }
}

// Local users -------------------------------------------------------------------------

/// Runs `program args` as `uid`:`gid` with the supplementary groups `groups` (none if
/// empty), through setpriv(1).
fn as_user(uid: u32, gid: u32, groups: &[u32], program: &str, args: &[&str]) -> Output {
    let mut command = Command::new("setpriv");
    command.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}"));
    if groups.is_empty() {
        command.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        command.arg(format!("--groups={}", list.join(",")));
    }
    command.arg("--").arg(program).args(args).output().expect("setpriv (util-linux)")
}

/// The unprivileged user of the tests that are not the workers' account.
const NOBODY: u32 = 65_534;

fn denied(out: &Output) -> bool {
    let stderr = String::from_utf8_lossy(&out.stderr);
    !out.status.success() && (stderr.contains("Permission denied") || stderr.contains("Operation not permitted"))
}

#[test]
fn local_users_can_neither_read_the_key_nor_trace_the_workers_and_only_the_group_asks_status() {
    use std::os::unix::fs::PermissionsExt;
    if !require_root("local_users_can_neither_read_the_key_nor_trace_the_workers_and_only_the_group_asks_status") {
        return;
    }
    let (uid, gid) = yavipin_ids();
    let pair = Pair::start(Timers::default());

    // The key file as the daemon requires it (root, 0600) in a directory anyone may enter;
    // a 0644 file beside it is the control that the users can read what they may.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let key = dir.path().join("tunnel.key");
    std::fs::write(&key, format!("{}\n", hex(&pair.key))).expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let open = dir.path().join("public");
    std::fs::write(&open, "public\n").expect("write");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    for (who, id, group) in [("nobody", NOBODY, NOBODY), ("yavipin", uid, gid)] {
        let read = as_user(id, group, &[], "cat", &[key.to_str().expect("utf-8")]);
        assert!(denied(&read), "{who} read the key file: {read:?}");
        assert!(!String::from_utf8_lossy(&read.stdout).contains(&hex(&pair.key)));
        assert!(as_user(id, group, &[], "cat", &[open.to_str().expect("utf-8")]).status.success(), "control");
    }

    // The control socket: refused outside the group, served inside it.
    let tool = release_binary("yavipin");
    let tool = tool.to_str().expect("utf-8");
    let outside = as_user(NOBODY, NOBODY, &[], tool, &["show", pair.dev_a()]);
    assert!(denied(&outside), "a user outside the group asked for status: {outside:?}");
    let inside = as_user(NOBODY, NOBODY, &[gid], tool, &["show", pair.dev_a(), "--json"]);
    assert!(inside.status.success(), "a member of the group was refused: {inside:?}");
    let _: TunnelStatus = serde_json::from_slice(&inside.stdout).expect("the status object");

    // Tracing, or reading the memory or environment of, either worker: refused to another
    // user and to the workers' own account; the same strace attaches to an ordinary
    // process of that account, which shows the refusal is the worker's doing.
    let workers = pair.a.workers();
    for role in ["netd", "keyd"] {
        let pid = worker(&workers, role).to_string();
        for (who, id, group) in [("nobody", NOBODY, NOBODY), ("yavipin", uid, gid)] {
            let trace = as_user(id, group, &[], "timeout", &["5", "strace", "-qq", "-e", "trace=none", "-p", &pid]);
            assert!(denied(&trace), "{who} traced {role}: {trace:?}");
            for file in ["mem", "environ"] {
                let read = as_user(id, group, &[], "cat", &[&format!("/proc/{pid}/{file}")]);
                assert!(denied(&read), "{who} read {role}'s {file}: {read:?}");
            }
        }
    }
    let mut victim = Command::new("setpriv")
        .args([&format!("--reuid={uid}"), &format!("--regid={gid}"), "--clear-groups", "sleep", "30"])
        .spawn()
        .expect("sleep");
    let control =
        as_user(uid, gid, &[], "timeout", &["2", "strace", "-qq", "-e", "trace=none", "-p", &victim.id().to_string()]);
    let _ = victim.kill();
    let _ = victim.wait();
    assert_eq!(
        control.status.code(),
        Some(124),
        "control strace did not attach (it should run until timeout): {control:?}"
    );
}

// A compromised netd against keyd -----------------------------------------------------

/// keyd, the real binary's worker role, started by the test playing both its parent and a
/// hostile netd on the other channel. Every frame keyd sends is kept, to be searched for
/// secrets.
struct HostileNetd {
    child: Child,
    parent: Channel,
    parent_raw: OwnedFd,
    netd: Channel,
    netd_raw: OwnedFd,
    psk: [u8; 32],
    frames: Vec<Vec<u8>>,
    stderr: Option<std::thread::JoinHandle<Vec<String>>>,
}

/// A channel end as the test's and a raw duplicate of it (to send bytes no encoder would
/// produce, and to read keyd's frames as they are).
fn split_end(end: Channel) -> (Channel, OwnedFd) {
    let raw = end.into_fd();
    let typed = Channel::new(nix::unistd::dup(&raw).expect("dup"), Ancillary::None);
    (typed, raw)
}

impl HostileNetd {
    /// Starts keyd and sends it `Init` with `psk`, as the parent would; waits for `Ready`.
    fn start(psk: [u8; 32]) -> Self {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        let (parent_ours, parent_theirs) = pair(Ancillary::None).expect("socketpair");
        let (netd_ours, netd_theirs) = pair(Ancillary::None).expect("socketpair");
        let theirs = [parent_theirs.into_fd(), netd_theirs.into_fd()];
        // Inherited across exec, as the parent passes them (parent/src/spawn.rs): cleared
        // close-on-exec on exactly these, closed here right after the spawn.
        for fd in &theirs {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).expect("fcntl");
        }
        let mut child = Command::new(release_binary("yavipind"))
            .args(["--role", "keyd", "--user", "yavipin"])
            .args(theirs.iter().flat_map(|fd| ["--channel".to_owned(), fd.as_raw_fd().to_string()]))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keyd");
        drop(theirs);
        let stderr = child.stderr.take().expect("piped");
        let stderr = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect());
        let (parent, parent_raw) = split_end(parent_ours);
        let (netd, netd_raw) = split_end(netd_ours);
        let mut keyd =
            Self { child, parent, parent_raw, netd, netd_raw, psk, frames: Vec::new(), stderr: Some(stderr) };
        let init = KeydInit {
            key_id: KEY_ID,
            psk: Psk::new(&mut psk.clone()),
            group: Group::Modp2048,
            dh_renewal_seconds: 600,
        };
        keyd.parent.send(&ParentToKeyd::Init(init)).expect("send Init");
        let ready = keyd.parent_message(Duration::from_secs(5)).expect("keyd answers Init");
        assert!(matches!(ready, KeydToParent::Ready));
        keyd
    }

    fn receive(fd: &OwnedFd, frames: &mut Vec<Vec<u8>>, timeout: Duration) -> Option<Vec<u8>> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::try_from(timeout).expect("timeout")).unwrap_or(0);
        if ready == 0 {
            return None;
        }
        let mut buf = vec![0u8; 8192];
        let len = nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).ok()?;
        if len == 0 {
            return None;
        }
        buf.truncate(len);
        frames.push(buf.clone());
        Some(buf)
    }

    fn parent_message(&mut self, timeout: Duration) -> Option<KeydToParent> {
        Self::receive(&self.parent_raw, &mut self.frames, timeout).map(|f| decode(&f).expect("keyd's frame decodes"))
    }

    /// keyd's next message to netd, if one comes within a second.
    fn answer(&mut self) -> Option<KeydToNetd> {
        Self::receive(&self.netd_raw, &mut self.frames, Duration::from_secs(1))
            .map(|f| decode(&f).expect("keyd's frame decodes"))
    }

    fn ask(&mut self, request: &NetdToKeyd) {
        self.netd.send(request).expect("send to keyd");
    }

    fn ask_raw(&self, bytes: &[u8]) {
        let _ = nix::sys::socket::send(self.netd_raw.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL);
    }

    /// Waits for keyd to exit (asking it to, if `shutdown`) and checks what it ever sent.
    fn finish(mut self, shutdown: bool) -> (ExitStatus, Vec<String>) {
        if shutdown {
            let _ = self.parent.send(&ParentToKeyd::Shutdown);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            // Drain whatever keyd still sends, so it is searched too.
            while Self::receive(&self.netd_raw, &mut self.frames, Duration::ZERO).is_some() {}
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "keyd did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let auth = k_auth(&self.psk);
        for frame in &self.frames {
            assert!(!contains(frame, &self.psk), "keyd sent the PSK");
            assert!(!contains(frame, &auth), "keyd sent K_auth");
        }
        let lines = self.stderr.take().map(|t| t.join().expect("stderr")).unwrap_or_default();
        assert!(!lines.iter().any(|l| l.contains("panicked")), "keyd panicked: {lines:?}");
        (status, lines)
    }
}

impl Drop for HostileNetd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The frame postcard makes of `message`, as the channel would send it.
fn encode(message: &NetdToKeyd) -> Vec<u8> {
    let (mut a, b) = pair(Ancillary::None).expect("socketpair");
    a.send(message).expect("send");
    let raw = b.into_fd();
    let mut buf = vec![0u8; 8192];
    let len = nix::sys::socket::recv(raw.as_raw_fd(), &mut buf, MsgFlags::empty()).expect("recv");
    buf.truncate(len);
    buf
}

/// keyd ended on its own, with status 1 and exactly one line naming `reason`.
fn assert_refused(name: &str, (status, lines): (ExitStatus, Vec<String>), reason: &str) {
    assert_eq!(status.code(), Some(1), "{name}: keyd ended with {status:?} (a signal means a crash): {lines:?}");
    assert!(status.signal().is_none() && !status.core_dumped());
    assert_eq!(lines.len(), 1, "{name}: expected one log line: {lines:?}");
    assert!(lines[0].contains("keyd: error: ") && lines[0].contains(reason), "{name}: {lines:?}");
}

/// A hostile netd's move against keyd.
type Attack = Box<dyn FnOnce(&mut HostileNetd)>;

/// What a hostile netd sends keyd, each with the reason keyd must give when it refuses:
/// frames no encoder makes, and requests its state does not allow.
fn hostile_inputs() -> Vec<(&'static str, Attack, &'static str)> {
    let ask = |request: NetdToKeyd| move |keyd: &mut HostileNetd| keyd.ask(&request);
    let raw = |bytes: Vec<u8>| move |keyd: &mut HostileNetd| keyd.ask_raw(&bytes);
    let responder_auth = vec![0x84; RESPONDER_AUTH_FIXED_LEN + 256];
    let mut trailing = encode(&NetdToKeyd::SendKeyWanted { current: Epoch(0) });
    trailing.push(0);
    vec![
        ("garbage", Box::new(raw(vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3])), "netd channel: undecodable frame"),
        ("oversize frame", Box::new(raw(vec![0; 4097])), "netd channel: frame longer than 4096 bytes"),
        ("trailing bytes", Box::new(raw(trailing)), "netd channel: 1 trailing bytes"),
        ("huge length claim", Box::new(raw(vec![2, 0xff, 0xff, 0xff, 0xff, 0x0f])), "netd channel: undecodable frame"),
        ("the parent's message type", Box::new(raw(vec![1])), "netd channel: undecodable frame"),
        ("empty frame", Box::new(raw(Vec::new())), "netd channel: channel closed by peer"),
        (
            "a descriptor",
            Box::new(|keyd: &mut HostileNetd| {
                use nix::sys::socket::{ControlMessage, sendmsg};
                let file = std::fs::File::open("/dev/null").expect("open");
                let bytes = encode(&NetdToKeyd::SendKeyWanted { current: Epoch(0) });
                let fds = [file.as_raw_fd()];
                sendmsg::<()>(
                    keyd.netd_raw.as_raw_fd(),
                    &[std::io::IoSlice::new(&bytes)],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::empty(),
                    None,
                )
                .expect("sendmsg");
            }),
            "netd channel: unexpected ancillary data",
        ),
        (
            "a completion nobody started",
            Box::new(ask(NetdToKeyd::ResponderAuthReceived { message: responder_auth })),
            "refused request from netd: no initiation for this Responder Auth",
        ),
        (
            "a send key of an epoch never handed out",
            Box::new(ask(NetdToKeyd::SendKeyWanted { current: Epoch(7) })),
            "refused request from netd: send key wanted after",
        ),
        (
            "a receive epoch never handed out",
            Box::new(ask(NetdToKeyd::RecvEpochStarted { epoch: Epoch(3) })),
            "refused request from netd: receive",
        ),
        (
            "a second initiation",
            Box::new(|keyd: &mut HostileNetd| {
                keyd.ask(&NetdToKeyd::BuildInitiatorAuth { ni: [1; 16], cookie: [2; 16] });
                assert!(matches!(keyd.answer(), Some(KeydToNetd::SendInitiatorAuth { .. })));
                keyd.ask(&NetdToKeyd::BuildInitiatorAuth { ni: [3; 16], cookie: [4; 16] });
            }),
            "refused request from netd: an initiation is already pending",
        ),
        (
            "an Initiator Auth netd should have refused",
            Box::new(ask(NetdToKeyd::InitiatorAuthReceived {
                message: vec![0x83; 10],
                peer: "192.0.2.1:5555".parse().expect("addr"),
                peer_silent: true,
            })),
            "refused request from netd: malformed Initiator Auth",
        ),
    ]
}

#[test]
fn a_hostile_netd_gets_no_secret_from_keyd_and_makes_it_exit_cleanly() {
    if !require_root("a_hostile_netd_gets_no_secret_from_keyd_and_makes_it_exit_cleanly") {
        return;
    }
    let psk = random_key();
    let attacks = hostile_inputs();
    let mut refused = Vec::new();
    for (name, attack, reason) in attacks {
        let mut keyd = HostileNetd::start(psk);
        attack(&mut keyd);
        assert_refused(name, keyd.finish(false), reason);
        refused.push(name);
    }

    // A forged Initiator Auth (right length, wrong MAC) is the network's doing: answered
    // with a failure, counted, and keyd carries on.
    let mut keyd = HostileNetd::start(psk);
    let mut forged = vec![0u8; INITIATOR_AUTH_FIXED_LEN + 256];
    forged[..8].copy_from_slice(&Params::new(Group::Modp2048, KEY_ID).header(0x83));
    keyd.ask(&NetdToKeyd::InitiatorAuthReceived {
        message: forged,
        peer: "192.0.2.1:5555".parse().expect("addr"),
        peer_silent: false,
    });
    assert!(matches!(
        keyd.answer(),
        Some(KeydToNetd::HandshakeFailed { reason: yavipin_ipc::FailReason::BadAuth, .. })
    ));
    keyd.parent.send(&ParentToKeyd::Status).expect("status");
    match keyd.parent_message(Duration::from_secs(2)) {
        Some(KeydToParent::Status(status)) => {
            assert_eq!(count(&status.failures, "bad-auth", |r| r.name().to_owned()), 1);
            assert_eq!(status.modexps, 0, "an exponentiation before the MAC");
        }
        other => panic!("status: {other:?}"),
    }
    let (status, lines) = keyd.finish(true);
    assert!(status.success() && lines.is_empty(), "{status:?} {lines:?}");

    // Requests after the parent's Shutdown find nobody: keyd is gone, erased, exit 0.
    let mut keyd = HostileNetd::start(psk);
    keyd.parent.send(&ParentToKeyd::Shutdown).expect("shutdown");
    assert!(wait_exited(keyd.child.id(), Duration::from_secs(5)));
    keyd.ask_raw(&encode(&NetdToKeyd::BuildInitiatorAuth { ni: [5; 16], cookie: [6; 16] }));
    assert!(keyd.answer().is_none());
    let (status, lines) = keyd.finish(false);
    assert!(status.success() && lines.is_empty(), "{status:?} {lines:?}");

    // A whole handshake between two keyds driven by the hostile netd: it obtains the
    // traffic keys (as a real netd does) and nothing else; replays and steps it has no
    // right to are refused.
    let (mut initiator, mut responder) = (HostileNetd::start(psk), HostileNetd::start(psk));
    initiator.ask(&NetdToKeyd::BuildInitiatorAuth { ni: [9; 16], cookie: [8; 16] });
    let Some(KeydToNetd::SendInitiatorAuth { message: initiator_auth, .. }) = initiator.answer() else {
        panic!("no Initiator Auth")
    };
    let peer: SocketAddr = "192.0.2.1:5555".parse().expect("addr");
    responder.ask(&NetdToKeyd::InitiatorAuthReceived { message: initiator_auth.clone(), peer, peer_silent: false });
    let Some(KeydToNetd::SendResponderAuth { message: responder_auth, recv_key, .. }) = responder.answer() else {
        panic!("no Responder Auth")
    };
    initiator.ask(&NetdToKeyd::ResponderAuthReceived { message: responder_auth.clone() });
    let Some(KeydToNetd::SessionKeys { send_key, .. }) = initiator.answer() else { panic!("no session keys") };
    assert_eq!(send_key.secret.expose(), recv_key.secret.expose(), "both keyds derived the same key");
    // The same completion again: that initiation is spent.
    initiator.ask(&NetdToKeyd::ResponderAuthReceived { message: responder_auth });
    while let Some(answer) = initiator.answer() {
        assert!(
            matches!(answer, KeydToNetd::RecvKey(_) | KeydToNetd::HandshakeFailed { .. }),
            "a replayed completion gave {answer:?}"
        );
    }
    // One chain step is the netd's due; a step from an epoch it never had is not.
    initiator.ask(&NetdToKeyd::SendKeyWanted { current: send_key.epoch });
    assert!(matches!(initiator.answer(), Some(KeydToNetd::SendKey { .. })));
    initiator.ask(&NetdToKeyd::SendKeyWanted { current: Epoch(send_key.epoch.0 + 5) });
    assert_refused("a step far ahead", initiator.finish(false), "refused request from netd: send key wanted after");
    // The responder: confirmed by the initiator's first epoch, once.
    responder.ask(&NetdToKeyd::RecvEpochStarted { epoch: recv_key.epoch });
    let answers: Vec<KeydToNetd> = std::iter::from_fn(|| responder.answer()).collect();
    assert!(
        answers.iter().any(|a| matches!(a, KeydToNetd::SendKey { session_start: true, .. })),
        "the confirmed responder did not switch: {answers:?}"
    );
    responder.ask(&NetdToKeyd::RecvEpochStarted { epoch: recv_key.epoch });
    assert_refused("a repeated epoch start", responder.finish(false), "refused request from netd: receive");
    eprintln!(
        "hostile netd: keyd refused, with one line and status 1: {}; never sent the PSK or K_auth",
        refused.join(", ")
    );
}

// A compromised netd in a running daemon ----------------------------------------------

/// A duplicate of descriptor `fd` of process `pid`, taken with `pidfd_getfd(2)`: what an
/// attacker running code in netd holds. (Root may do this to any process, dumpable or not.)
#[allow(unsafe_code)]
fn steal_descriptor(pid: u32, fd: i32) -> OwnedFd {
    let pid = libc::pid_t::try_from(pid).expect("pid");
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1; no memory
    // is passed.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(i32::try_from(pidfd).expect("fd")) };
    // SAFETY: as above: integers in, a new descriptor or -1 out.
    let stolen = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    assert!(stolen >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor installed for us by the kernel, owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(i32::try_from(stolen).expect("fd")) }
}

/// netd's channel descriptors, [to the parent, to keyd], from its command line.
fn channels_of(pid: u32) -> [i32; 2] {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let fds: Vec<i32> =
        args.windows(2).filter(|w| w[0] == "--channel").map(|w| w[1].parse().expect("descriptor")).collect();
    fds.try_into().expect("two channels")
}

/// Waits for `daemon` to end by itself; returns its exit status, its error lines, and its
/// warnings.
fn ended_by_itself(daemon: &mut Daemon) -> (ExitStatus, Vec<String>, Vec<String>) {
    assert!(wait_exited(daemon.pid(), Duration::from_secs(15)), "the daemon kept running: {:#?}", daemon.log());
    let status = daemon.stop();
    // Its standard error closes with it; give the reader a moment to pass the last lines on.
    let _ = daemon.wait_for("\u{0}never", Duration::from_millis(300));
    let log = daemon.log().to_vec();
    assert!(!log.iter().any(|l| l.contains("panicked")), "{log:#?}");
    let lines = |marker: &str| log.iter().filter(|l| l.contains(marker)).cloned().collect();
    (status, lines("error: "), lines("warning: "))
}

#[test]
fn a_compromised_or_dead_netd_stops_the_daemon_and_a_restart_recovers() {
    if !require_root("a_compromised_or_dead_netd_stops_the_daemon_and_a_restart_recovers") {
        return;
    }
    let mut pair = Pair::start(Timers::default());
    pair.pings_both_ways();
    let mut report = Vec::new();

    // netd killed outright.
    let netd = worker(&pair.b.workers(), "netd");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(netd).expect("pid")), nix::sys::signal::SIGKILL)
        .expect("kill");
    let (status, errors, warnings) = ended_by_itself(&mut pair.b);
    assert_eq!(status.code(), Some(1), "{errors:?}");
    // keyd ends too (its channel to netd closed), and the parent may notice either first:
    // its error names netd or keyd, and its log always names netd's end.
    assert!(
        errors.iter().any(|l| l.contains("parent: error: netd") || l.contains("parent: error: keyd")),
        "{errors:?}"
    );
    assert!(
        warnings.iter().chain(&errors).any(|l| l.contains(&format!("netd (pid {netd}) signal: 9 (SIGKILL)"))),
        "the log does not say netd was killed: {errors:?} {warnings:?}"
    );
    report.push(format!("SIGKILL: {} / {}", errors.join(" / "), warnings.join(" / ")));
    pair.restart_b();
    pair.pings_both_ways();

    // netd taken over: garbage to the parent on netd's own channel.
    let netd = worker(&pair.b.workers(), "netd");
    let to_parent = steal_descriptor(netd, channels_of(netd)[0]);
    nix::sys::socket::send(to_parent.as_raw_fd(), b"\xff\xff\xff\xff garbage", MsgFlags::empty()).expect("send");
    let (status, errors, _) = ended_by_itself(&mut pair.b);
    drop(to_parent);
    assert_eq!(status.code(), Some(1), "{errors:?}");
    assert!(errors.iter().any(|l| l.contains("parent: error: netd channel: undecodable frame")), "{errors:?}");
    report.push(format!("garbage to the parent: {}", errors.join(" / ")));
    pair.restart_b();
    pair.pings_both_ways();

    // netd taken over: a request to keyd its state does not allow.
    let netd = worker(&pair.b.workers(), "netd");
    let mut to_keyd = Channel::new(steal_descriptor(netd, channels_of(netd)[1]), Ancillary::None);
    to_keyd.send(&NetdToKeyd::SendKeyWanted { current: Epoch(1_000_000) }).expect("send");
    let (status, errors, _) = ended_by_itself(&mut pair.b);
    drop(to_keyd);
    assert_eq!(status.code(), Some(1), "{errors:?}");
    assert!(errors.iter().any(|l| l.contains("keyd: error: refused request from netd")), "{errors:?}");
    assert!(errors.iter().any(|l| l.contains("parent: error: keyd")), "{errors:?}");
    report.push(format!("hostile request to keyd: {}", errors.join(" / ")));
    pair.restart_b();
    pair.pings_both_ways();
    eprintln!("compromised netd:\n  {}", report.join("\n  "));
}

// Key erasure -------------------------------------------------------------------------

/// A traffic secret netd logged (test-only key log).
#[derive(Debug, Clone)]
struct LoggedKey {
    send: bool,
    epoch: u32,
    secret: [u8; 32],
}

fn logged_keys(log: &[String]) -> Vec<LoggedKey> {
    log.iter()
        .filter_map(|line| {
            let rest = &line[line.find("TEST-KEYLOG ")? + "TEST-KEYLOG ".len()..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let [direction, "epoch", epoch, "secret", secret] = fields[..] else { return None };
            Some(LoggedKey {
                send: direction == "send",
                epoch: epoch.parse().ok()?,
                secret: unhex(secret).try_into().ok()?,
            })
        })
        .collect()
}

/// What of a traffic secret could sit in memory: the secret, the two keys derived from it
/// (docs/PROTOCOL.md 1.2), the HMAC-MD5 states keyed with the MAC key (the inner and outer
/// MD5 states after the ipad and opad blocks) and the Blowfish key schedule, the last two
/// being what netd keeps while the key lives.
fn key_material(secret: &[u8; 32]) -> [Vec<u8>; 7] {
    let kdf = hkdf::Hkdf::<sha2::Sha256>::from_prk(secret).expect("PRK");
    let (mut enc, mut mac) = ([0u8; 16], [0u8; 16]);
    kdf.expand(b"yavipin classic blowfish-cfb", &mut enc).expect("length");
    kdf.expand(b"yavipin classic hmac-md5", &mut mac).expect("length");
    let state = |pad: u8| {
        let mut block = [pad; 64];
        for (b, k) in block.iter_mut().zip(mac) {
            *b ^= k;
        }
        let mut state = [0x6745_2301_u32, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
        md5::block_api::compress(&mut state, &[block]);
        state.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>()
    };
    let schedule = blowfish_schedule(&enc);
    let tail = schedule[schedule.len() - 32..].to_vec();
    [secret.to_vec(), enc.to_vec(), mac.to_vec(), state(0x36), state(0x5c), schedule[..32].to_vec(), tail]
}

/// The Blowfish key schedule (S-boxes and P-array) for `key`, as it lies in memory: what
/// netd keeps while the key lives, and all one needs to decrypt.
#[allow(unsafe_code)]
fn blowfish_schedule(key: &[u8; 16]) -> Vec<u8> {
    use blowfish::cipher::KeyInit;
    let cipher: blowfish::Blowfish = KeyInit::new_from_slice(key).expect("a 16-byte key");
    // SAFETY: `Blowfish` is two arrays of u32 and a zero-sized marker: every one of its
    // bytes is initialised, and the slice lives no longer than `cipher`.
    let bytes = unsafe { std::slice::from_raw_parts(std::ptr::from_ref(&cipher).cast::<u8>(), size_of_val(&cipher)) };
    bytes.to_vec()
}

/// Pieces of key material searched for, per key.
const MATERIAL: [&str; 7] = [
    "traffic secret",
    "Blowfish key",
    "HMAC key",
    "HMAC inner state",
    "HMAC outer state",
    "Blowfish schedule (start)",
    "Blowfish schedule (end)",
];

/// Scans `daemon`'s netd and keyd for every key netd was ever given: the keys it holds now
/// must be found in netd (the control: the scan sees keys), every other must be gone from
/// both. Returns (keys logged, keys held, keys gone).
fn assert_old_keys_erased(side: &str, daemon: &mut Daemon, device: &str, psk: &[u8; 32]) -> (usize, usize, usize) {
    let workers = daemon.workers();
    let (netd, keyd) = (worker(&workers, "netd"), worker(&workers, "keyd"));
    let auth = k_auth(psk);
    for _ in 0..5 {
        let before = status(device);
        // Read after the status, so every key installed then has been logged.
        let given = logged_keys(daemon.log());
        assert!(given.len() >= 6, "{side}: only {} given logged: is this the key-log build?", given.len());
        let materials: Vec<[Vec<u8>; 7]> = given.iter().map(|k| key_material(&k.secret)).collect();
        let mut needles: Vec<&[u8]> = materials.iter().flat_map(|m| m.iter().map(Vec::as_slice)).collect();
        needles.push(&auth);
        let (in_netd, in_keyd) = (memory_find(netd, &needles), memory_find(keyd, &needles));
        let after = status(device);
        if (before.netd.send_epoch, &before.netd.recv_epochs) != (after.netd.send_epoch, &after.netd.recv_epochs) {
            continue; // A key changed during the scan: scan again.
        }
        assert!(in_keyd[needles.len() - 1].is_some(), "{side}: K_auth not found in keyd: the scan cannot be trusted");
        // A key is held if netd has its direction and epoch installed and it is the last
        // key logged for them (a key not yet used may be replaced).
        let held = |i: usize| {
            let key = &given[i];
            let installed = if key.send {
                after.netd.send_epoch == Some(key.epoch)
            } else {
                after.netd.recv_epochs.contains(&key.epoch)
            };
            installed && !given[i + 1..].iter().any(|k| k.send == key.send && k.epoch == key.epoch)
        };
        let mut held_count = 0;
        let mut left = Vec::new();
        for (i, key) in given.iter().enumerate() {
            let found = |set: &[Option<String>], m: usize| set[i * MATERIAL.len() + m].clone();
            if held(i) {
                held_count += 1;
                for m in [3, 4, 5, 6] {
                    assert!(
                        found(&in_netd, m).is_some(),
                        "{side}: the {} of netd's {key:?} not found: the scan cannot be trusted",
                        MATERIAL[m]
                    );
                }
                continue;
            }
            for (m, what) in MATERIAL.iter().enumerate() {
                for (process, set) in [("netd", &in_netd), ("keyd", &in_keyd)] {
                    if let Some(place) = found(set, m) {
                        let direction = if key.send { "send" } else { "receive" };
                        left.push(format!(
                            "{side}: the {what} of old {direction} epoch {} (key #{i} logged) in {process}'s {place}",
                            key.epoch
                        ));
                    }
                }
            }
        }
        assert!(
            left.is_empty(),
            "old key material still in memory (status: send {:?}, receive {:?}; logged {:?}):\n{}",
            after.netd.send_epoch,
            after.netd.recv_epochs,
            given.iter().map(|k| (k.send, k.epoch)).collect::<Vec<_>>(),
            left.join("\n")
        );
        return (given.len(), held_count, given.len() - held_count);
    }
    panic!("{side}: the given kept changing during the scans");
}

#[test]
fn old_traffic_keys_leave_memory() {
    if !require_root("old_traffic_keys_leave_memory") {
        return;
    }
    // Chain steps every 10 s and a Diffie-Hellman renewal at 60 s, traffic both ways.
    let mut pair = Pair::start_with(keylog_binary(), Timers { rekey: Some(10), dh: Some(60) });
    let sessions = pair.status_b().keyd.sessions;
    let renewed = eventually(Duration::from_secs(90), || {
        let _ = ping_with(&pair.net.b, INNER_A, LEGIT);
        let _ = ping_with(&pair.net.a, INNER_B, LEGIT);
        std::thread::sleep(Duration::from_millis(500));
        pair.status_b().keyd.sessions > sessions
    });
    assert!(renewed, "no Diffie-Hellman renewal");
    // The old session's keys' grace period, with traffic still flowing.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let _ = ping_with(&pair.net.b, INNER_A, LEGIT);
        let _ = ping_with(&pair.net.a, INNER_B, LEGIT);
        std::thread::sleep(Duration::from_millis(500));
    }
    let key = pair.key;
    let (dev_a, dev_b) = (pair.dev_a().to_owned(), pair.dev_b().to_owned());
    let mut a = (0, 0, 0);
    let mut b = (0, 0, 0);
    // Several scans, a chain step apart, with traffic in between: a copy left behind
    // anywhere shows up in one of them.
    for _ in 0..6 {
        a = assert_old_keys_erased("A", &mut pair.a, &dev_a, &key);
        b = assert_old_keys_erased("B", &mut pair.b, &dev_b, &key);
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            let _ = ping_with(&pair.net.b, INNER_A, LEGIT);
            let _ = ping_with(&pair.net.a, INNER_B, LEGIT);
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    eprintln!(
        "key erasure: A logged {} keys, {} held and found in netd, {} old and found nowhere; B: {}, {}, {} (searched: {})",
        a.0,
        a.1,
        a.2,
        b.0,
        b.1,
        b.2,
        MATERIAL.join(", ")
    );
    // The PSK never reaches netd (only_keyd_holds_the_key in e2e.rs proves it for the
    // normal build; here with several sessions done).
    for daemon in [&pair.a, &pair.b] {
        let netd = worker(&daemon.workers(), "netd");
        assert_eq!(memory_contains(netd, &[&key, &k_auth(&key)]), [false, false], "the PSK or K_auth in netd");
    }
}

#[test]
fn the_normal_build_has_no_key_log() {
    if !require_root("the_normal_build_has_no_key_log") {
        return;
    }
    let marker = b"TEST-KEYLOG";
    let normal = std::fs::read(release_binary("yavipind")).expect("read the release binary");
    assert!(!contains(&normal, marker), "the release binary contains the test key log");
    // The control: the key-log build has it, so the search would find it.
    let keylog = std::fs::read(keylog_binary()).expect("read the key-log binary");
    assert!(contains(&keylog, marker), "the key-log build lacks its marker: the check proves nothing");
}
