//! End to end, on impaired networks: a router namespace between the peers cuts the path,
//! translates addresses with a short UDP timeout, or lowers the MTU. Release binary, root
//! only (skipped loudly otherwise), as in `e2e.rs`.

use std::process::Command;
use std::time::{Duration, Instant};

use yavipin_parent::control::TunnelStatus;
use yavipin_tests::netns::{
    A_ADDR, Daemon, Netns, R_A_ADDR, Routed, Scratch, hex, random_key, release_binary, require_root,
};

/// Runs the nftables `rules` on the router.
fn nft(net: &Routed, rules: &str) {
    let out = net
        .r
        .command("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(rules.as_bytes())?;
            c.wait_with_output()
        });
    let out = out.expect("nft");
    assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
}

const INNER_A: &str = "10.98.0.1";
const INNER_B: &str = "10.98.0.2";

/// Starts A (responder) and B (initiator towards A) with `extra` appended to both
/// configurations; IPv4 inside only, so the tun MTU may follow the path below 1280.
fn start(net: &Routed, scratch: &Scratch, extra: &str) -> (Daemon, Daemon) {
    let bin = release_binary("yavipind");
    let key = hex(&random_key());
    let key_file = scratch.write("k", &format!("{key}\n"), 0o600);
    let config = |device: &str, inner: &str, peer: &str| {
        format!(
            "key_file = \"{}\"\n{extra}\n[interface]\nname = \"{device}\"\naddresses = [\"{inner}/30\"]\n[transport]\nlisten = \"0.0.0.0:5555\"\n{peer}",
            key_file.display()
        )
    };
    let a = scratch.write("a.toml", &config(net.a.name(), INNER_A, ""), 0o600);
    let b = scratch.write("b.toml", &config(net.b.name(), INNER_B, &format!("peer = \"{A_ADDR}:5555\"\n")), 0o600);
    let mut da = Daemon::start(&net.a, &bin, &a);
    let mut db = Daemon::start(&net.b, &bin, &b);
    for d in [&mut da, &mut db] {
        assert!(d.wait_for("tunnel up", Duration::from_secs(20)).is_some(), "no tunnel: {:#?}", d.log());
    }
    (da, db)
}

fn status(device: &str) -> TunnelStatus {
    let out = Command::new(release_binary("yavipin")).args(["show", device, "--json"]).output().expect("show");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("status json")
}

fn ping(from: &Netns, to: &str, size: usize) -> bool {
    (0..3).any(|_| from.ping(to, size))
}

#[test]
fn a_cut_path_takes_the_tunnel_down_on_both_sides_and_it_comes_back() {
    if !require_root("a_cut_path_takes_the_tunnel_down_on_both_sides_and_it_comes_back") {
        return;
    }
    let net = Routed::new();
    let scratch = Scratch::new();
    let marker = scratch.dir_path().join("down-ran");
    let script = scratch.write(
        "down",
        &format!("#!/bin/sh\necho \"$YAVIPIN_EVENT $YAVIPIN_DEVICE\" >> {}\n", marker.display()),
        0o755,
    );
    // Short timers: detection bound = max(1.5 x 2, 1) + 0.5 + 3 x 0.3 = 4.4 s.
    let extra = format!(
        "[liveness]\nreachable_time = 2\ndelay_first_probe_time = 0.5\nretrans_timer = 0.3\nkeepalive_seconds = 1\n[scripts]\ndown = \"{}\"",
        script.display()
    );
    let (mut da, mut db) = start(&net, &scratch, &extra);
    assert!(ping(&net.b, INNER_A, 56));
    // Lines from here on count as new.
    let _ = (da.log(), db.log());

    nft(&net, "table inet cut {\n chain forward {\n  type filter hook forward priority 0; policy drop;\n }\n}\n");
    let cut = Instant::now();
    let bound = Duration::from_secs_f64(4.4) + Duration::from_secs(1);
    for (name, d) in [("a", &mut da), ("b", &mut db)] {
        let line = d
            .wait_for_next("tunnel down", bound + Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{name} never noticed"));
        assert!(line.contains("peer unreachable"), "{line}");
        assert!(cut.elapsed() <= bound, "{name} took {:?}, bound {bound:?}", cut.elapsed());
    }
    // The scripts run asynchronously: wait for both to have written.
    let both = |text: &str| {
        text.contains(&format!("down {}", net.a.name())) && text.contains(&format!("down {}", net.b.name()))
    };
    let ran = yavipin_tests::netns::eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&marker).is_ok_and(|t| both(&t))
    });
    assert!(ran, "the down scripts did not both run: {:?}", std::fs::read_to_string(&marker));
    assert!(!net.a.link_is_up(net.a.name()), "the link stayed up");

    // The path comes back: the initiator reconnects on its own, no restart.
    let _ = (da.log(), db.log());
    nft(&net, "delete table inet cut");
    for d in [&mut da, &mut db] {
        assert!(d.wait_for_next("tunnel up", Duration::from_secs(45)).is_some(), "never came back: {:#?}", d.log());
    }
    assert!(ping(&net.b, INNER_A, 56));
}

#[test]
fn a_nat_with_a_short_timeout_is_kept_open_and_followed_after_a_flush() {
    if !require_root("a_nat_with_a_short_timeout_is_kept_open_and_followed_after_a_flush") {
        return;
    }
    let net = Routed::new();
    // B is behind R's NAT; UDP mappings expire after 10 s without traffic.
    nft(
        &net,
        &format!(
            "table ip nat {{\n chain post {{\n  type nat hook postrouting priority 100;\n  oifname != \"{}\" masquerade random\n }}\n}}\n",
            net.r_to_b
        ),
    );
    for knob in ["net.netfilter.nf_conntrack_udp_timeout=10", "net.netfilter.nf_conntrack_udp_timeout_stream=10"] {
        assert!(net.r.run("sysctl", &["-qw", knob]).status.success(), "{knob}");
    }
    let scratch = Scratch::new();
    let (_da, _db) = start(&net, &scratch, "[liveness]\nkeepalive_seconds = 5");
    let before = status(net.a.name());
    let seen_from = before.netd.peer.expect("A knows B's translated endpoint");
    assert_eq!(seen_from.ip(), std::net::IpAddr::V4(R_A_ADDR), "B is seen through the NAT");

    // 60 s idle: the keepalives keep the mapping; A can still reach B behind the NAT.
    std::thread::sleep(Duration::from_secs(60));
    assert!(ping(&net.a, INNER_B, 56), "the NAT mapping expired");

    // The NAT forgets the mapping: B's next packets leave from another port, and A follows
    // them without a new handshake.
    assert!(net.r.run("conntrack", &["-F"]).status.success(), "conntrack -F (apt-get install conntrack)");
    assert!(ping(&net.b, INNER_A, 56), "traffic did not resume");
    let after = status(net.a.name());
    assert_ne!(after.netd.peer, Some(seen_from), "A did not follow the new mapping");
    assert_eq!(
        (after.netd.initiated, after.netd.responded, after.keyd.sessions),
        (before.netd.initiated, before.netd.responded, before.keyd.sessions),
        "a new handshake was needed"
    );
}

#[test]
fn a_lower_path_mtu_is_found_and_large_packets_still_pass_unfragmented() {
    if !require_root("a_lower_path_mtu_is_found_and_large_packets_still_pass_unfragmented") {
        return;
    }
    let net = Routed::new();
    let scratch = Scratch::new();
    let (_da, _db) = start(&net, &scratch, "");
    // The B side of the path now carries at most 1280-byte packets.
    net.r.ip(&["link", "set", "dev", &net.r_to_b, "mtu", "1280"]);
    net.b.ip(&["link", "set", "dev", &net.b_if, "mtu", "1280"]);
    // Discovery notices (a black hole, or EMSGSIZE on B) and settles at or below 1280.
    let deadline = Instant::now() + Duration::from_secs(120);
    let inner = loop {
        // Traffic keeps the search going.
        let _ = net.b.ping(INNER_A, 56);
        let (sa, sb) = (status(net.a.name()), status(net.b.name()));
        if let (Some(pa), Some(pb)) = (sa.netd.path_mtu, sb.netd.path_mtu)
            && pa <= 1280
            && pb <= 1280
        {
            break 1280 - 28 - 17;
        }
        assert!(Instant::now() < deadline, "path MTU never adapted: {:?} {:?}", sa.netd.path_mtu, sb.netd.path_mtu);
        std::thread::sleep(Duration::from_millis(500));
    };
    // A ping filling the tunnel MTU passes with fragmentation forbidden, both ways.
    let payload = inner - 28;
    assert!(ping(&net.b, INNER_A, payload), "{payload}-byte ping from B lost");
    assert!(ping(&net.a, INNER_B, payload), "{payload}-byte ping from A lost");
}

#[test]
fn sides_with_different_mtus_each_use_the_whole_path() {
    if !require_root("sides_with_different_mtus_each_use_the_whole_path") {
        return;
    }
    // A knows no peer, so its default MTU assumes IPv6 headers (1435); B, with an IPv4
    // peer, defaults to 1455. Each side's MTU bounds what it sends, not what it accepts.
    let net = Routed::new();
    let scratch = Scratch::new();
    let (_da, _db) = start(&net, &scratch, "");
    let full = |side: &Netns| status(side.name()).netd.path_mtu;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Path MTUs count IP and UDP headers. B's probes of its full datagram (1455 + 17 + 28:
    // all a 1500-byte path holds) are acknowledged; A's reach its own maximum, 1435 + 17 + 28.
    while full(&net.b) != Some(1500) || full(&net.a) != Some(1480) {
        assert!(Instant::now() < deadline, "path MTU: A {:?}, B {:?}", full(&net.a), full(&net.b));
        let _ = net.b.ping(INNER_A, 56);
        std::thread::sleep(Duration::from_millis(500));
    }
    // Pings that fill each side's tun MTU pass with fragmentation forbidden.
    assert!(ping(&net.b, INNER_A, 1455 - 28), "a full-size ping from B was lost");
    assert!(ping(&net.a, INNER_B, 1435 - 28), "a full-size ping from A was lost");
    for side in [&net.a, &net.b] {
        let drops = status(side.name()).netd.drops;
        assert!(drops.is_empty(), "{} dropped: {drops:?}", side.name());
    }
}
