//! Writes the seed corpus of every fuzz target into `fuzz/seeds/<target>/`.
//!
//! The seeds are real protocol material: packets sealed by the data plane, the four
//! handshake messages and the IPC traffic of a complete handshake between two simulated
//! peers (netd's `Tunnel` and keyd's `KeyDaemon` each, wired in-process), encoded parent
//! messages, the shipped example configuration, and operation sequences that walk the
//! stateful targets through real scenarios (a handshake and its renewal, replays, expired
//! cookies, a peer restart). Everything is seeded, so the output is the same on every run.
//!
//! Run without coverage instrumentation (`fuzz/run.sh --seeds` does this):
//! `cargo run --release --example gen_seeds -- <output directory>`

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use yavipin_fuzz::ops::{data_open as dop, keyd_requests as kop, tunnel_datagram as top};
use yavipin_fuzz::{FORGERY_KEYS, KEY_ID, PSK, data_config, encode_ops, epoch_key, forgery_prelude, seal_as};
use yavipin_ipc::control::{
    KeydInit, KeydToParent, LivenessSettings, NetdInit, NetdToParent, ParentToKeyd, ParentToNetd,
};
use yavipin_keyd::{KeyDaemon, KeydConfig};
use yavipin_netd::{Classic, DataPlane, HandshakeConfig, Tunnel, TunnelConfig};
use yavipin_proto::handshake::Group;
use yavipin_proto::keys::Psk;
use yavipin_proto::rng::Seeded;

struct Seeds {
    root: PathBuf,
}

impl Seeds {
    fn write(&self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("create the seed directory");
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    }
}

/// What crossed the wire and the IPC channels during one simulated handshake.
#[derive(Default)]
struct Capture {
    /// Every datagram, in the order delivered.
    datagrams: Vec<Vec<u8>>,
    netd_to_keyd: Vec<Vec<u8>>,
    keyd_to_netd: Vec<Vec<u8>>,
}

struct Node {
    addr: SocketAddr,
    tunnel: Tunnel<Seeded>,
    keyd: KeyDaemon<Seeded>,
}

impl Node {
    fn new(now: Instant, addr: SocketAddr, peer: Option<SocketAddr>, group: Group, seed: u64) -> Self {
        let config = TunnelConfig::new(HandshakeConfig::new(addr, group, KEY_ID), peer);
        let keyd_config = KeydConfig { group, ..KeydConfig::default() };
        let mut psk = PSK;
        Self {
            addr,
            tunnel: Tunnel::new(now, config, Seeded::new(seed)),
            keyd: KeyDaemon::new(keyd_config, KEY_ID, Psk::new(&mut psk), Seeded::new(seed + 100)),
        }
    }

    /// Runs the IPC between the two cores until both are quiet, recording every message.
    fn pump(&mut self, now: Instant, capture: &mut Capture) {
        loop {
            let mut moved = false;
            while let Some(message) = self.tunnel.poll_keyd() {
                moved = true;
                capture.netd_to_keyd.push(postcard::to_allocvec(&message).expect("encodes"));
                self.keyd.handle_netd(now, message).expect("keyd serves netd");
            }
            while let Some(message) = self.keyd.poll_output() {
                moved = true;
                capture.keyd_to_netd.push(postcard::to_allocvec(&message).expect("encodes"));
                self.tunnel.handle_keyd(now, message).expect("netd takes keyd's answer");
            }
            if !moved {
                break;
            }
        }
    }
}

/// A complete handshake between an initiator and a responder-only peer.
fn handshake(group: Group) -> Capture {
    let now = Instant::now();
    let a_addr: SocketAddr = "198.51.100.1:4001".parse().expect("address");
    let b_addr: SocketAddr = "198.51.100.2:4002".parse().expect("address");
    // A run-once generator: two large nodes on the stack are fine.
    #[allow(clippy::large_stack_arrays)]
    let mut nodes = [Node::new(now, a_addr, Some(b_addr), group, 1), Node::new(now, b_addr, None, group, 2)];
    let mut capture = Capture::default();
    let mut wire: VecDeque<(usize, SocketAddr, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 4096];
    for _ in 0..64 {
        for (index, node) in nodes.iter_mut().enumerate() {
            node.pump(now, &mut capture);
            while let Some(transmit) = node.tunnel.poll_transmit() {
                let to = usize::from(transmit.to != a_addr);
                assert_ne!(to, index);
                wire.push_back((to, node.addr, transmit.bytes));
            }
        }
        let Some((to, from, bytes)) = wire.pop_front() else { break };
        capture.datagrams.push(bytes.clone());
        nodes[to].tunnel.handle_datagram(now, from, &bytes, &mut buf);
    }
    assert!(nodes.iter().all(|n| n.tunnel.is_up()), "the simulated handshake completed");
    capture
}

fn first_of(capture: &Capture, message_type: u8) -> Vec<u8> {
    capture.datagrams.iter().find(|d| d.first() == Some(&message_type)).expect("message seen").clone()
}

fn handshake_parse(seeds: &Seeds, g14: &Capture, g15: &Capture) {
    for (name, t) in [("request", 0x81), ("cookie_reply", 0x82), ("initiator_auth", 0x83), ("responder_auth", 0x84)] {
        seeds.write("handshake_parse", &format!("{name}_g14"), &first_of(g14, t));
    }
    seeds.write("handshake_parse", "initiator_auth_g15", &first_of(g15, 0x83));
    seeds.write("handshake_parse", "responder_auth_g15", &first_of(g15, 0x84));
    let keepalive = g14.datagrams.iter().find(|d| d.first().is_some_and(|b| b & 0x80 == 0)).expect("a data packet");
    seeds.write("handshake_parse", "data_keepalive", keepalive);
}

fn ipc_decode(seeds: &Seeds, capture: &Capture) {
    let netd_init = NetdInit {
        device: "yavipin0".into(),
        local: "[::]:5555".parse().expect("address"),
        peer: Some("192.0.2.10:5555".parse().expect("address")),
        key_id: KEY_ID,
        group: Group::Modp2048,
        max_inner_len: 1435,
        compression: false,
        rekey_seconds: 120,
        liveness: LivenessSettings {
            reachable_time_ms: 30_000,
            retrans_timer_ms: 1_000,
            delay_first_probe_ms: 5_000,
            max_unicast_solicit: 3,
            keepalive_seconds: 25,
        },
    };
    let mut psk = PSK;
    let keyd_init =
        KeydInit { key_id: KEY_ID, psk: Psk::new(&mut psk), group: Group::Modp2048, dh_renewal_seconds: 600 };
    let encode = |m: &dyn erased::Encode| m.encode();
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("parent_to_netd_init", encode(&ParentToNetd::Init(netd_init))),
        ("parent_to_netd_shutdown", encode(&ParentToNetd::Shutdown)),
        ("netd_to_parent_up", encode(&NetdToParent::TunnelUp { peer: "[2001:db8::1]:5555".parse().expect("a") })),
        ("netd_to_parent_down", encode(&NetdToParent::TunnelDown { reason: yavipin_ipc::reasons::DownReason::PeerShutdown })),
        ("parent_to_keyd_init", encode(&ParentToKeyd::Init(keyd_init))),
        ("keyd_to_parent_ready", encode(&KeydToParent::Ready)),
    ];
    for (name, frame) in frames {
        seeds.write("ipc_decode", name, &frame);
    }
    // One of each kind of netd ↔ keyd message of the handshake (the variant index is the
    // first byte).
    for (prefix, messages) in [("netd_to_keyd", &capture.netd_to_keyd), ("keyd_to_netd", &capture.keyd_to_netd)] {
        let mut seen = std::collections::HashSet::new();
        for message in messages {
            if seen.insert(message[0]) {
                seeds.write("ipc_decode", &format!("{prefix}_{}", message[0]), message);
            }
        }
    }
}

/// Object-safe encoding for the list above.
mod erased {
    pub trait Encode {
        fn encode(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Vec<u8> {
            postcard::to_allocvec(self).expect("encodes")
        }
    }
}

fn data_open(seeds: &Seeds) {
    use dop::{Kind, Mutation, Op, Payload};
    // The forgery mode's receiver accepted exactly these; sealing them again the same way
    // gives the same bytes (same key, epoch 1, sequence numbers 0 to 3).
    let now = Instant::now();
    let mut tx = DataPlane::<Classic>::new(data_config());
    tx.install_send_key(now, epoch_key(FORGERY_KEYS, 0, 1)).expect("key");
    let mut out = vec![0u8; tx.max_datagram_len()];
    let mut sealed = Vec::new();
    for (kind, payload) in forgery_prelude() {
        let len = seal_as(&mut tx, now, kind, &payload, &mut out).expect("sealed");
        sealed.push(out[..len].to_vec());
    }
    let with_mode = |mode: u8, bytes: &[u8]| [&[mode][..], bytes].concat();
    for (i, packet) in sealed.iter().enumerate() {
        seeds.write("data_open", &format!("forgery_replay_{i}"), &with_mode(0, packet));
    }
    let mut tampered = sealed[0].clone();
    *tampered.last_mut().expect("a tag") ^= 1;
    seeds.write("data_open", "forgery_bad_tag", &with_mode(0, &tampered));
    // A fresh packet under epoch 3, for which the receiver has no key.
    let mut other = DataPlane::<Classic>::new(data_config());
    other.install_send_key(now, epoch_key(FORGERY_KEYS, 0, 3)).expect("key");
    let len = seal_as(&mut other, now, Kind::Ipv4, b"epoch 3", &mut out).expect("sealed");
    seeds.write("data_open", "forgery_unknown_epoch", &with_mode(0, &out[..len]));

    let deliver = |packet, mutations| Op::Deliver { packet, mutations };
    let scenarios: Vec<(&str, Vec<Op>)> = vec![
        (
            "kinds_and_replay",
            vec![
                Op::Seal { kind: Kind::Ipv4, payload: Payload::Repeated { byte: 0x45, len: 1400 } },
                Op::Seal { kind: Kind::Ipv6, payload: Payload::Bytes(b"v6 packet".to_vec()) },
                Op::Seal { kind: Kind::Other(0x0806), payload: Payload::Bytes(vec![]) },
                Op::Seal { kind: Kind::Control, payload: Payload::Bytes(vec![0x02, 0, 0, 0, 7]) },
                deliver(1, vec![]),
                deliver(0, vec![]),
                deliver(0, vec![]),
                deliver(2, vec![]),
                deliver(3, vec![]),
            ],
        ),
        (
            "tampering",
            vec![
                Op::Seal { kind: Kind::Ipv4, payload: Payload::Bytes(b"tamper with me".to_vec()) },
                Op::Seal { kind: Kind::Ipv4, payload: Payload::Repeated { byte: 0, len: 900 } },
                deliver(0, vec![Mutation::Flip { at: 0, mask: 0x40 }]),
                deliver(0, vec![Mutation::Flip { at: 7, mask: 1 }]),
                deliver(1, vec![Mutation::Truncate { to: 20 }]),
                deliver(1, vec![Mutation::Append(vec![0; 3])]),
                deliver(0, vec![Mutation::Flip { at: 3, mask: 0x80 }, Mutation::Flip { at: 3, mask: 0x80 }]),
                deliver(1, vec![]),
            ],
        ),
        (
            "epochs_and_grace",
            vec![
                Op::Seal { kind: Kind::Ipv4, payload: Payload::Bytes(b"epoch 1".to_vec()) },
                Op::SenderNextEpoch,
                Op::Seal { kind: Kind::Ipv4, payload: Payload::Bytes(b"epoch 2".to_vec()) },
                deliver(1, vec![]),
                Op::ReceiverInstall { epoch: 3 },
                Op::SenderNextEpoch,
                Op::Seal { kind: Kind::Ipv6, payload: Payload::Bytes(b"epoch 3".to_vec()) },
                Op::Advance { millis: 11_000 },
                deliver(0, vec![]),
                deliver(2, vec![]),
                Op::SenderNextEpoch,
                Op::Seal { kind: Kind::Ipv4, payload: Payload::Bytes(b"epoch 4, no key".to_vec()) },
                deliver(3, vec![]),
            ],
        ),
        (
            "size_limits",
            vec![
                Op::Seal { kind: Kind::Other(0x88b5), payload: Payload::Repeated { byte: 7, len: 1500 } },
                Op::Seal { kind: Kind::Ipv4, payload: Payload::Repeated { byte: 7, len: 1501 } },
                Op::Seal { kind: Kind::Control, payload: Payload::Bytes(vec![]) },
                deliver(0, vec![]),
                deliver(1, vec![]),
                deliver(1, vec![]),
                Op::Advance { millis: 119_000 },
                Op::Advance { millis: 119_000 },
                Op::Advance { millis: 5_000 },
                Op::Seal { kind: Kind::Ipv4, payload: Payload::Bytes(b"after the hard age limit".to_vec()) },
            ],
        ),
    ];
    for (name, ops) in scenarios {
        seeds.write("data_open", &format!("tampering_{name}"), &with_mode(1, &encode_ops(&ops)));
    }
}

fn tunnel_datagram(seeds: &Seeds, capture: &Capture) {
    use top::Op;
    let scenarios: Vec<(&str, Vec<Op>)> = vec![
        (
            "cookie_once",
            vec![
                Op::Request { initiator: false, from: 2, ni: [5; 16] },
                Op::EchoCookie { initiator: false, which: 0, elsewhere: None, epoch: 0, tail: vec![2; 8] },
                Op::EchoCookie { initiator: false, which: 0, elsewhere: None, epoch: 0, tail: vec![2; 8] },
                Op::Request { initiator: false, from: 3, ni: [6; 16] },
                Op::EchoCookie { initiator: false, which: 1, elsewhere: Some(2), epoch: 0, tail: vec![] },
            ],
        ),
        (
            "cookie_expiry",
            vec![
                Op::Request { initiator: false, from: 2, ni: [1; 16] },
                Op::Advance { millis: 130_000 },
                Op::Request { initiator: false, from: 2, ni: [2; 16] },
                Op::Advance { millis: 130_000 },
                Op::EchoCookie { initiator: false, which: 0, elsewhere: None, epoch: 0, tail: vec![] },
                Op::EchoCookie { initiator: false, which: 1, elsewhere: None, epoch: 0, tail: vec![] },
            ],
        ),
        (
            "initiator_steps",
            vec![
                Op::CookieReply { from: 0, current: true, ni: [0; 16], cookie: [9; 16] },
                Op::CookieReply { from: 0, current: true, ni: [0; 16], cookie: [9; 16] },
                Op::ResponderAuth { from: 0, tail: vec![] },
                Op::Advance { millis: 1_300 },
                Op::CookieReply { from: 4, current: true, ni: [0; 16], cookie: [9; 16] },
                Op::CookieReply { from: 0, current: false, ni: [3; 16], cookie: [9; 16] },
                Op::Advance { millis: 40_000 },
            ],
        ),
        (
            "simultaneous_open",
            vec![
                Op::Request { initiator: true, from: 0, ni: [0; 16] },
                Op::EchoCookie { initiator: true, which: 0, elsewhere: None, epoch: 0, tail: vec![] },
                Op::Request { initiator: true, from: 0, ni: [0xff; 16] },
                Op::EchoCookie { initiator: true, which: 1, elsewhere: None, epoch: 0, tail: vec![] },
            ],
        ),
    ];
    for (name, ops) in scenarios {
        seeds.write("tunnel_datagram", name, &encode_ops(&ops));
    }
    // The real handshake messages, as raw datagrams to both tunnels.
    let ops: Vec<Op> = capture
        .datagrams
        .iter()
        .take(4)
        .flat_map(|d| {
            [false, true].map(|initiator| Op::Datagram { initiator, from: u8::from(initiator), bytes: d.clone() })
        })
        .collect();
    seeds.write("tunnel_datagram", "real_messages", &encode_ops(&ops));
}

fn keyd_requests(seeds: &Seeds) {
    use kop::{DhChoice, EpochChoice, NonceChoice, Op};
    let scenarios: Vec<(&str, Vec<Op>)> = vec![
        (
            "responder_session_and_renewal",
            vec![
                Op::PeerInitiates { ni: [1; 16], silent: false, flips: vec![] },
                Op::PeerTakesAnswer,
                Op::Confirm,
                Op::StepSend,
                Op::PeerStepSend,
                Op::StepSend,
                Op::Advance { seconds: 680 },
                Op::PeerInitiates { ni: [2; 16], silent: false, flips: vec![] },
                Op::StepSend,
                Op::PeerTakesAnswer,
                Op::Confirm,
                Op::PeerStepSend,
            ],
        ),
        ("build_twice", vec![Op::Build { ni: [3; 16], cookie: [4; 16] }, Op::Build { ni: [5; 16], cookie: [4; 16] }]),
        (
            "initiator_completes",
            vec![
                Op::Build { ni: [3; 16], cookie: [4; 16] },
                Op::PeerAnswers { flips: vec![(300, 1)] },
                Op::PeerAnswers { flips: vec![] },
                Op::StepSend,
                Op::StepSend,
                Op::StepRecv(0),
                Op::SendKeyWanted(EpochChoice::Handed { index: 0, offset: 3 }),
            ],
        ),
        (
            "hostile_signed",
            vec![
                Op::Signed { ni: [7; 16], epoch: EpochChoice::Small(0), value: DhChoice::Zero, silent: false },
                Op::Signed { ni: [7; 16], epoch: EpochChoice::Small(0), value: DhChoice::PrimeMinusOne, silent: false },
                Op::Signed { ni: [8; 16], epoch: EpochChoice::Any(u32::MAX - 1), value: DhChoice::Two, silent: true },
                Op::Signed { ni: [9; 16], epoch: EpochChoice::Any(u32::MAX - 2), value: DhChoice::Two, silent: true },
                Op::Confirm,
                Op::StepRecv(1),
            ],
        ),
        (
            "tampered_and_abandoned",
            vec![
                Op::PeerInitiates { ni: [1; 16], silent: false, flips: vec![(40, 0x10)] },
                Op::Build { ni: [2; 16], cookie: [0; 16] },
                Op::Abandon(NonceChoice::Known(1)),
                Op::Abandon(NonceChoice::Any([0xee; 16])),
                Op::ResponderAuth { message: forged_answer([2; 16]) },
                Op::InitiatorAuth { message: vec![0x83, 1, 1, 14, 0, 0, 0, 7], silent: false },
            ],
        ),
        (
            "signed_sessions_checked_against_the_spec",
            vec![
                Op::Signed { ni: [6; 16], epoch: EpochChoice::Small(3), value: DhChoice::Two, silent: false },
                Op::Confirm,
                Op::StepSend,
                Op::Build { ni: [1; 16], cookie: [2; 16] },
                Op::SignedAnswer { nr: [3; 16], epoch: EpochChoice::Small(9), confirm: false },
                Op::Build { ni: [4; 16], cookie: [2; 16] },
                Op::SignedAnswer { nr: [5; 16], epoch: EpochChoice::Any(u32::MAX - 2), confirm: true },
                Op::StepRecv(3),
                Op::RecvEpochStarted(EpochChoice::Any(u32::MAX)),
                Op::StepSend,
            ],
        ),
        (
            "peer_restart",
            vec![
                Op::PeerInitiates { ni: [1; 16], silent: false, flips: vec![] },
                Op::PeerTakesAnswer,
                Op::Confirm,
                Op::PeerRestart,
                Op::PeerInitiates { ni: [2; 16], silent: false, flips: vec![] },
                Op::Advance { seconds: 20 },
                Op::PeerInitiates { ni: [3; 16], silent: true, flips: vec![] },
                Op::Confirm,
                Op::RecvEpochStarted(EpochChoice::Small(0)),
            ],
        ),
    ];
    for (name, ops) in scenarios {
        seeds.write("keyd_requests", name, &encode_ops(&ops));
    }
}

/// A Responder Auth of the right length for the pending initiation `ni`, not made by the peer.
fn forged_answer(ni: [u8; 16]) -> Vec<u8> {
    let params = yavipin_proto::handshake::Params::new(Group::Modp2048, KEY_ID);
    let mut message = yavipin_proto::handshake::ResponderAuth::encode_signed(
        &params,
        &ni,
        &[0x4e; 16],
        yavipin_proto::Epoch(0),
        &[2; 256],
    );
    message.resize(Group::Modp2048.responder_auth_len(), 0xaa);
    message
}

fn config_parse(seeds: &Seeds, repo: &Path) {
    let example = std::fs::read(repo.join("docs/example.toml")).expect("docs/example.toml");
    seeds.write("config_parse", "example.toml", &example);
    let minimal = "key_file = \"/etc/yavipin/home.key\"\n\n[interface]\naddresses = [\"10.99.0.1/30\"]\n";
    seeds.write("config_parse", "minimal.toml", minimal.as_bytes());
    seeds.write(
        "config_parse",
        "everything.toml",
        concat!(
            "key_file = \"k\"\nkey_id = 4294967295\nuser = \"nobody\"\n",
            "[interface]\nname = \"tun.vpn-0_\"\naddresses = [\"fd00::1/64\", \"10.0.0.1/8\"]\nmtu = 1280\n",
            "[transport]\nlisten = \"[::ffff:192.0.2.1]:5555\"\npeer = \"192.0.2.7:1\"\n",
            "[session]\ngroup = 15\nrekey_seconds = 3600\ndh_renewal_seconds = 3600\ncompression = true\n"
        )
        .as_bytes(),
    );
    seeds.write(
        "config_parse",
        "cross_field_errors.toml",
        b"key_file = \"k\"\n[interface]\naddresses = [\"fd00::1/64\"]\nmtu = 1000\n[session]\nrekey_seconds = 900\ndh_renewal_seconds = 600\n",
    );
    seeds.write("config_parse", "key_file", b"000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F\n");
}

fn main() {
    let root = std::env::args().nth(1).map_or_else(|| PathBuf::from("seeds"), PathBuf::from);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let seeds = Seeds { root };
    let g14 = handshake(Group::Modp2048);
    let g15 = handshake(Group::Modp3072);
    handshake_parse(&seeds, &g14, &g15);
    ipc_decode(&seeds, &g14);
    data_open(&seeds);
    tunnel_datagram(&seeds, &g14);
    keyd_requests(&seeds);
    config_parse(&seeds, &repo);
}
