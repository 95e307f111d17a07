//! The handshake and the key schedule end to end: two nodes (netd's tunnel and keyd's
//! monitor each) in the simulator, under loss, reordering, attacks and floods.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use yavipin_ipc::FailReason;
use yavipin_keyd::{AuthKey, KeydConfig};
use yavipin_netd::{DataConfig, DropReason, HandshakeConfig, HandshakeDrop, TunnelConfig};
use yavipin_proto::handshake::{Group, InitiatorAuth, Params, REQUEST_LEN, Request};
use yavipin_proto::keys::Psk;
use yavipin_proto::msg_type;
use yavipin_tests::node::{Node, NodeConfig};
use yavipin_tests::sim::{Datagram, LinkConfig, Simulator, TapVerdict};

const PSK: [u8; 32] = [0x42; 32];
const KEY_ID: u32 = 7;

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, last], 4000 + u16::from(last)))
}

/// A node at `addr(me)`; it initiates towards `addr(peer)` if given one.
fn node_config(me: u8, peer: Option<u8>, seed: u64) -> NodeConfig {
    let handshake = HandshakeConfig::new(addr(me), Group::Modp2048, KEY_ID);
    NodeConfig { tunnel: TunnelConfig::new(handshake, peer.map(addr)), keyd: KeydConfig::default(), psk: PSK, seed }
}

fn simulate(a: NodeConfig, b: NodeConfig, link: LinkConfig, seed: u64) -> Simulator<Node> {
    let start = Instant::now();
    let (addr_a, addr_b) = (a.tunnel.handshake.local, b.tunnel.handshake.local);
    Simulator::new(start, seed, link, (addr_a, Node::new(start, a)), (addr_b, Node::new(start, b)))
}

fn lossy() -> LinkConfig {
    LinkConfig {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(30),
        loss: 0.30,
        duplicate: 0.05,
        ..LinkConfig::default()
    }
}

/// Sends one packet each way and checks it arrives.
fn exchange(sim: &mut Simulator<Node>, id: u64) {
    let now = sim.now();
    for side in 0..2 {
        sim.peer_mut(side).send(now, id, 100).expect("tunnel up");
    }
    sim.run_for(Duration::from_millis(200));
    for side in 0..2 {
        assert!(sim.peer(side).received.contains(&id), "side {side} did not get packet {id}");
    }
}

fn handshake_drops(node: &Node, reason: HandshakeDrop) -> u64 {
    node.tunnel.handshake().counters().dropped(reason)
}

#[test]
fn handshake_completes_both_ways_under_loss_and_reordering() {
    let (mut lost, mut retries) = (0, 0);
    for seed in 1..=8u64 {
        // Either side initiates; the other has no configured peer and learns it.
        let (initiator, responder) = if seed % 2 == 0 { (0, 1) } else { (1, 0) };
        let configs = [(1u8, 2u8), (2, 1)].map(|(me, peer)| {
            let known = if usize::from(me - 1) == initiator { Some(peer) } else { None };
            node_config(me, known, seed * 10 + u64::from(me))
        });
        let [a, b] = configs;
        let mut sim = simulate(a, b, lossy(), seed);
        sim.run_for(Duration::from_secs(90));
        for side in 0..2 {
            assert!(sim.peer(side).tunnel.is_up(), "seed {seed}: side {side} is not up");
        }
        assert_eq!(sim.peer(responder).tunnel.peer(), Some(sim.addr(initiator)), "endpoint learned");
        lost += sim.stats().lost;
        retries += sim.peer(initiator).tunnel.handshake().counters().requests - 1;
        // Confirmation completed: the responder switched to the new session.
        assert_eq!(sim.peer(responder).tunnel.counters().responded, 1, "seed {seed}");
        assert_eq!(sim.peer(initiator).tunnel.counters().initiated, 1, "seed {seed}");
        sim.set_link(LinkConfig::default());
        exchange(&mut sim, 1_000 + seed);
    }
    // Retransmission carried the handshakes through the losses.
    assert!(lost > 5 && retries > 3, "lost {lost}, retries {retries}");
}

#[test]
fn simultaneous_open_yields_exactly_one_session() {
    for seed in 1..=8u64 {
        let link = LinkConfig { jitter: Duration::from_millis(5), ..LinkConfig::default() };
        let mut sim = simulate(node_config(1, Some(2), seed), node_config(2, Some(1), seed + 100), link, seed);
        sim.run_for(Duration::from_secs(20));
        let (a, b) = (sim.peer(0), sim.peer(1));
        assert!(a.tunnel.is_up() && b.tunnel.is_up(), "seed {seed}");
        assert_eq!((a.keyd.counters().sessions, b.keyd.counters().sessions), (1, 1), "seed {seed}");
        let initiated = [a, b].map(|n| n.tunnel.counters().initiated);
        let responded = [a, b].map(|n| n.tunnel.counters().responded);
        assert_eq!(initiated.iter().sum::<u64>(), 1, "seed {seed}: one side initiated the session");
        assert_eq!(responded.iter().sum::<u64>(), 1, "seed {seed}: the other responded");
        let tie_breaks =
            handshake_drops(a, HandshakeDrop::SimultaneousOpen) + handshake_drops(b, HandshakeDrop::SimultaneousOpen);
        assert!(tie_breaks >= 1, "seed {seed}: both initiated, one gave way");
        exchange(&mut sim, seed);
    }
}

/// Which ids the network delivered to `side` as data packets, each once.
fn delivered_ids(sim: &Simulator<Node>, side: usize) -> Vec<u64> {
    let sender = sim.peer(1 - side);
    let mut ids: Vec<u64> = sim
        .deliveries()
        .iter()
        .filter(|d| d.to == sim.addr(side))
        .filter_map(|d| sender.sent.get(&d.bytes).copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[test]
fn a_thousand_chain_steps_and_twenty_dh_renewals_lose_nothing_delivered() {
    let renewing = |me, peer, seed| {
        let mut config = node_config(me, peer, seed);
        // A chain step every 25 packets, a new Diffie-Hellman exchange every 2.5 s.
        config.tunnel.data = DataConfig { rekey_after_packets: 25, ..DataConfig::default() };
        config.keyd.dh_interval = Duration::from_millis(2500);
        config
    };
    let link = LinkConfig {
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(5),
        loss: 0.03,
        duplicate: 0.01,
        ..LinkConfig::default()
    };
    let mut sim = simulate(renewing(1, Some(2), 11), renewing(2, None, 12), link, 99);
    sim.record_deliveries();
    let start = sim.now();
    for side in 0..2 {
        sim.peer_mut(side).start_traffic(start, Duration::from_millis(2), 200);
    }
    sim.run_for(Duration::from_secs(53));
    for side in 0..2 {
        sim.peer_mut(side).stop_traffic();
    }
    sim.run_for(Duration::from_secs(1));

    for side in 0..2 {
        let node = sim.peer(side);
        let keyd = node.keyd.counters();
        let chain_steps = keyd.send_keys - keyd.sessions;
        assert!(chain_steps >= 1000, "side {side}: {chain_steps} chain steps");
        assert!(keyd.sessions >= 21, "side {side}: {} sessions", keyd.sessions);
        assert_eq!(node.refused, 0, "side {side}: packets refused after the tunnel came up");

        let delivered = delivered_ids(&sim, side);
        let mut received = node.received.clone();
        received.sort_unstable();
        received.dedup();
        assert_eq!(received.len(), node.received.len(), "side {side}: a packet was delivered twice");
        assert_eq!(delivered, received, "side {side}: every packet the network delivered was accepted");
        assert!(received.len() > 20_000, "side {side}: {} packets", received.len());
        let drops = node.tunnel.data().counters();
        assert_eq!(drops.dropped(DropReason::UnknownEpoch), 0, "side {side}");
        assert_eq!(drops.dropped(DropReason::BadMac), 0, "side {side}");
    }
}

/// Runs a pair whose every datagram goes through `tap`, for `secs` seconds.
fn attacked(
    a: NodeConfig,
    b: NodeConfig,
    secs: u64,
    tap: impl FnMut(&mut Datagram) -> TapVerdict + 'static,
) -> Simulator<Node> {
    let mut sim = simulate(a, b, LinkConfig::default(), 5);
    sim.set_tap(tap);
    sim.run_for(Duration::from_secs(secs));
    sim
}

fn never_established(sim: &Simulator<Node>) {
    for side in 0..2 {
        let node = sim.peer(side);
        assert!(!node.tunnel.is_up(), "side {side} came up");
        assert_eq!(node.keyd.counters().sessions, 0, "side {side}");
    }
}

fn auth_key() -> AuthKey {
    AuthKey::derive(KEY_ID, &Psk::new(&mut PSK.clone()))
}

fn params() -> Params {
    Params::new(Group::Modp2048, KEY_ID)
}

#[test]
fn a_wrong_psk_never_establishes() {
    let mut b = node_config(2, None, 2);
    b.psk = [0x43; 32];
    let sim = attacked(node_config(1, Some(2), 1), b, 60, |_| TapVerdict::Pass);
    never_established(&sim);
    let refused = handshake_drops(sim.peer(1), HandshakeDrop::BadAuth);
    assert!(refused >= 5, "every attempt refused by the responder: {refused}");
    assert_eq!(sim.peer(1).keyd.counters().failed(FailReason::BadAuth), refused);
    assert_eq!(sim.peer(1).keyd.modexps(), 0, "no exponentiation before auth_i verified");
}

/// Flips one bit of every message of type `kind` at byte `index` (from the end if
/// negative), and checks the handshake never completes and the drop is counted where
/// expected.
#[test]
fn tampered_handshake_messages_never_establish() {
    let g = Group::Modp2048.value_len();
    let cases: [(u8, isize, usize, HandshakeDrop); 7] = [
        (msg_type::REQUEST, 1, 1, HandshakeDrop::BadVersion),
        (msg_type::REQUEST, 63, 1, HandshakeDrop::BadPadding),
        (msg_type::COOKIE_REPLY, -1, 1, HandshakeDrop::BadCookie),
        (msg_type::INITIATOR_AUTH, 30, 1, HandshakeDrop::BadCookie),
        (msg_type::INITIATOR_AUTH, 44 + 17, 1, HandshakeDrop::BadAuth),
        (msg_type::RESPONDER_AUTH, 44 + isize::try_from(g).expect("small") - 1, 0, HandshakeDrop::BadAuth),
        (msg_type::RESPONDER_AUTH, -1, 0, HandshakeDrop::BadConfirm),
    ];
    for (kind, index, counted_at, reason) in cases {
        let sim = attacked(node_config(1, Some(2), 1), node_config(2, None, 2), 20, move |d| {
            if d.bytes[0] == kind {
                let at = if index < 0 { d.bytes.len() - index.unsigned_abs() } else { index.unsigned_abs() };
                d.bytes[at] ^= 0x01;
            }
            TapVerdict::Pass
        });
        never_established(&sim);
        let counted = handshake_drops(sim.peer(counted_at), reason);
        assert!(counted >= 3, "type {kind:#x} byte {index}: {reason:?} counted {counted} times");
    }
}

#[test]
fn replayed_handshake_messages_change_nothing() {
    let mut sim = simulate(node_config(1, Some(2), 1), node_config(2, None, 2), LinkConfig::default(), 3);
    sim.record_deliveries();
    sim.run_for(Duration::from_secs(2));
    assert!(sim.peer(0).tunnel.is_up() && sim.peer(1).tunnel.is_up());
    let recorded: Vec<Datagram> =
        sim.deliveries().iter().filter(|d| d.bytes[0] & msg_type::HANDSHAKE_BIT != 0).cloned().collect();
    assert_eq!(recorded.len(), 4, "Request, Cookie Reply, Initiator Auth, Responder Auth");
    let modexps = [0, 1].map(|side| sim.peer(side).keyd.modexps());
    for _ in 0..3 {
        for d in &recorded {
            sim.inject(d.from, d.to, d.bytes.clone());
        }
        sim.run_for(Duration::from_secs(1));
    }
    for (side, before) in modexps.into_iter().enumerate() {
        assert_eq!(sim.peer(side).keyd.counters().sessions, 1, "side {side}");
        assert_eq!(sim.peer(side).keyd.modexps(), before, "side {side}: no exponentiation for a replay");
    }
    assert_eq!(handshake_drops(sim.peer(1), HandshakeDrop::UsedCookie), 3, "Initiator Auth replays");
    // Per round: the replayed Cookie Reply and Responder Auth, and the fresh Cookie Reply
    // that the replayed Request earned (harmless: smaller than the Request, no state).
    assert_eq!(handshake_drops(sim.peer(0), HandshakeDrop::Unexpected), 9);
    exchange(&mut sim, 1);
}

/// A man in the middle without the PSK replaces both DH values with his own.
#[test]
fn swapped_dh_values_never_establish() {
    let mut dh = yavipin_keyd::Dh::new(Group::Modp2048);
    let (_, mitm) = dh.generate(&mut yavipin_proto::rng::Seeded::new(666));
    let g = Group::Modp2048.value_len();
    let sim = attacked(node_config(1, Some(2), 1), node_config(2, None, 2), 30, move |d| {
        match d.bytes[0] {
            msg_type::INITIATOR_AUTH | msg_type::RESPONDER_AUTH => d.bytes[44..44 + g].copy_from_slice(&mitm),
            _ => {}
        }
        TapVerdict::Pass
    });
    never_established(&sim);
    assert!(handshake_drops(sim.peer(1), HandshakeDrop::BadAuth) >= 3);
    assert_eq!(sim.peer(1).keyd.modexps(), 0);
}

/// An attacker holding the PSK sends DH values of order 1 or 2, or unreduced ones, with
/// valid MACs: refused before any exponentiation, both as responder and as initiator.
#[test]
fn out_of_range_dh_values_never_establish() {
    let g = Group::Modp2048.value_len();
    let p = yavipin_keyd::dh::prime_bytes(Group::Modp2048).to_vec();
    let mut p_minus_one = p.clone();
    p_minus_one[g - 1] -= 1;
    let mut one = vec![0u8; g];
    one[g - 1] = 1;
    for (direction, bad) in [
        (msg_type::INITIATOR_AUTH, vec![0u8; g]),
        (msg_type::INITIATOR_AUTH, one.clone()),
        (msg_type::INITIATOR_AUTH, p_minus_one.clone()),
        (msg_type::INITIATOR_AUTH, p.clone()),
        (msg_type::RESPONDER_AUTH, one),
        (msg_type::RESPONDER_AUTH, p_minus_one),
    ] {
        let auth = auth_key();
        let mut last_initiator_auth = Vec::new();
        let sim = attacked(node_config(1, Some(2), 1), node_config(2, None, 2), 20, move |d| {
            let mac_len = 32;
            match d.bytes[0] {
                msg_type::INITIATOR_AUTH if direction == msg_type::INITIATOR_AUTH => {
                    d.bytes[44..44 + g].copy_from_slice(&bad);
                    let end = d.bytes.len() - mac_len;
                    let tag = auth.initiator_auth(&d.bytes[..end]);
                    d.bytes[end..].copy_from_slice(&tag);
                }
                msg_type::INITIATOR_AUTH => last_initiator_auth.clone_from(&d.bytes),
                msg_type::RESPONDER_AUTH if direction == msg_type::RESPONDER_AUTH => {
                    d.bytes[44..44 + g].copy_from_slice(&bad);
                    let end = d.bytes.len() - 2 * mac_len;
                    let transcript = yavipin_keyd::schedule::Transcript::new(&last_initiator_auth, &d.bytes[..end]);
                    let tag = auth.responder_auth(&transcript);
                    d.bytes[end..end + mac_len].copy_from_slice(&tag);
                }
                _ => {}
            }
            TapVerdict::Pass
        });
        never_established(&sim);
        let victim = sim.peer(usize::from(direction == msg_type::INITIATOR_AUTH));
        let refused = handshake_drops(victim, HandshakeDrop::BadDhValue);
        assert!(refused >= 3, "{direction:#x}: {refused}");
        assert_eq!(victim.keyd.counters().failed(FailReason::BadDhValue), refused);
        if direction == msg_type::INITIATOR_AUTH {
            assert_eq!(victim.keyd.modexps(), 0);
        } else {
            // The initiator made its own value once per attempt and never used it.
            assert!(victim.keyd.modexps() <= refused + 1, "{} for {refused} attempts", victim.keyd.modexps());
        }
    }
}

/// 100 000 spoofed Requests from as many addresses, and malformed junk: the responder
/// answers each Request with a smaller Cookie Reply, keeps nothing, tells keyd nothing and
/// exponentiates nothing.
#[test]
fn a_request_flood_costs_the_responder_nothing() {
    const FLOOD: u32 = 100_000;
    let mut sim = simulate(node_config(1, None, 1), node_config(2, None, 2), LinkConfig::default(), 7);
    let replies = std::rc::Rc::new(std::cell::Cell::new((0u64, 0usize)));
    let seen = replies.clone();
    sim.set_tap(move |d| {
        let (count, longest) = seen.get();
        seen.set((count + 1, longest.max(d.bytes.len())));
        TapVerdict::Pass
    });
    let victim = sim.addr(1);
    let params = params();
    for n in 0..FLOOD {
        let octets = n.to_be_bytes();
        let from = SocketAddr::from(([10, octets[1], octets[2], octets[3]], 1024 + (n % 50_000) as u16));
        let mut ni = [0u8; 16];
        ni[..4].copy_from_slice(&octets);
        sim.inject(from, victim, Request::encode(&params, &ni).to_vec());
        if n % 10_000 == 0 {
            // Junk mixed in: a short Request, an unknown type, a forged Initiator Auth.
            sim.inject(from, victim, vec![msg_type::REQUEST; 63]);
            sim.inject(from, victim, vec![0xff; 64]);
            let mut forged = InitiatorAuth::encode_signed(&params, &ni, &[0; 16], yavipin_proto::Epoch(0), &[2; 256]);
            forged.extend_from_slice(&[0; 32]);
            sim.inject(from, victim, forged);
        }
        if n % 1_000 == 999 {
            sim.run_for(Duration::from_millis(20));
            let node = sim.peer(1);
            assert_eq!(node.tunnel.handshake().used_cookies(), 0);
            assert!(!node.tunnel.handshake().initiating());
        }
    }
    sim.run_for(Duration::from_secs(1));
    let node = sim.peer(1);
    let (count, longest) = replies.get();
    assert_eq!(count, u64::from(FLOOD), "one Cookie Reply per Request, nothing else");
    assert!(longest <= REQUEST_LEN, "a reply of {longest} bytes");
    assert_eq!(node.keyd.modexps(), 0);
    assert_eq!(node.to_keyd, 0, "keyd heard nothing");
    assert_eq!(node.tunnel.handshake().used_cookies(), 0);
    assert_eq!(node.tunnel.handshake().counters().cookie_replies, u64::from(FLOOD));
    assert_eq!(handshake_drops(node, HandshakeDrop::BadLength), 10);
    assert_eq!(handshake_drops(node, HandshakeDrop::UnknownType), 10);
    assert_eq!(handshake_drops(node, HandshakeDrop::BadCookie), 10);
}

/// Holds back the first node's data packets while `hold` is set, for injecting later.
#[derive(Default)]
struct Holdback {
    hold: bool,
    held: Vec<Datagram>,
}

/// Sends two packets from the first node and holds them back; returns them with their ids.
fn hold_two(
    sim: &mut Simulator<Node>,
    tap: &std::rc::Rc<std::cell::RefCell<Holdback>>,
    first: u64,
) -> Vec<(Datagram, u64)> {
    tap.borrow_mut().hold = true;
    trickle(sim, first..first + 2);
    tap.borrow_mut().hold = false;
    let held: Vec<Datagram> = tap.borrow_mut().held.drain(..).collect();
    assert_eq!(held.len(), 2);
    held.into_iter()
        .map(|d| {
            let id = sim.peer(0).sent[&d.bytes];
            (d, id)
        })
        .collect()
}

/// The receiver moved past the held packets' epoch just now: the first is accepted within
/// the grace period, the second refused after it.
fn check_grace(sim: &mut Simulator<Node>, held: &[(Datagram, u64)], grace: Duration, renewal: &str) {
    let refused = unknown_epoch_drops(sim);
    sim.run_for(grace / 2);
    let (first, id) = &held[0];
    sim.deliver_now(first.from, first.to, &first.bytes);
    assert!(sim.peer(1).received.contains(id), "{renewal}: accepted within the grace period");
    sim.run_for(grace);
    let (second, id) = &held[1];
    sim.deliver_now(second.from, second.to, &second.bytes);
    assert!(!sim.peer(1).received.contains(id), "{renewal}: refused after the grace period");
    assert_eq!(unknown_epoch_drops(sim), refused + 1, "{renewal}");
}

/// Sends packets from the first node, 10 ms apart.
fn trickle(sim: &mut Simulator<Node>, ids: std::ops::Range<u64>) {
    for id in ids {
        let now = sim.now();
        sim.peer_mut(0).send(now, id, 100).expect("tunnel up");
        sim.run_for(Duration::from_millis(10));
    }
}

fn unknown_epoch_drops(sim: &Simulator<Node>) -> u64 {
    sim.peer(1).tunnel.data().counters().dropped(DropReason::UnknownEpoch)
}

/// Packets sealed under an epoch that was replaced (by a chain step, then by a new
/// Diffie-Hellman session) are accepted during the grace period and refused after it.
#[test]
fn old_epochs_are_refused_once_their_grace_period_ends() {
    let grace = Duration::from_secs(1);
    let with_grace = |me, peer, seed| {
        let mut config = node_config(me, peer, seed);
        config.tunnel.data = DataConfig { rekey_after_packets: 10, recv_grace: grace, ..DataConfig::default() };
        config.keyd.dh_interval = Duration::from_secs(10);
        config
    };
    let mut sim = simulate(with_grace(1, Some(2), 1), with_grace(2, None, 2), LinkConfig::default(), 4);
    let tap = std::rc::Rc::new(std::cell::RefCell::new(Holdback::default()));
    let state = tap.clone();
    let from = sim.addr(0);
    sim.set_tap(move |d| {
        let mut state = state.borrow_mut();
        if state.hold && d.from == from && d.bytes[0] & msg_type::HANDSHAKE_BIT == 0 {
            state.held.push(d.clone());
            return TapVerdict::Drop;
        }
        TapVerdict::Pass
    });
    sim.run_for(Duration::from_secs(1));
    assert!(sim.peer(1).tunnel.is_up());

    // A chain step: two packets of the current epoch held back, then traffic until the
    // sender moves on (every 10 packets).
    let epoch = |sim: &Simulator<Node>| sim.peer(0).tunnel.data().send_epoch().expect("keyed").epoch;
    let old = epoch(&sim);
    let held = hold_two(&mut sim, &tap, 0);
    let mut next_id = 2;
    while epoch(&sim) == old {
        trickle(&mut sim, next_id..next_id + 1);
        next_id += 1;
    }
    trickle(&mut sim, next_id..next_id + 1);
    check_grace(&mut sim, &held, grace, "chain step");

    // A Diffie-Hellman renewal: two packets held back just before keyd's renewal time; the
    // new session takes over with the initiator's confirmation.
    let renewal_at = sim.peer(0).keyd.poll_timeout().expect("renewal scheduled");
    sim.run_until(renewal_at.checked_sub(Duration::from_millis(100)).expect("after the start"));
    let held = hold_two(&mut sim, &tap, 1000);
    sim.run_for(Duration::from_millis(300));
    assert_eq!(sim.peer(1).keyd.counters().sessions, 2, "renewed and confirmed");
    check_grace(&mut sim, &held, grace, "Diffie-Hellman renewal");
    assert_eq!(sim.peer(0).keyd.counters().sessions, 2);
}

/// A peer that lost its state (a restart) comes back with epochs from 0: the other side
/// refuses that as a delayed message while the old session is alive, and accepts it as a
/// restart once the old session has been silent for `restart_quiet`.
#[test]
fn a_restarted_peer_is_taken_back_after_silence() {
    let mut sim = simulate(node_config(1, Some(2), 1), node_config(2, None, 2), LinkConfig::default(), 8);
    sim.run_for(Duration::from_secs(1));
    for id in 0..50 {
        exchange(&mut sim, id);
    }
    let now = sim.now();
    *sim.peer_mut(0) = Node::new(now, node_config(1, Some(2), 3));
    sim.run_for(Duration::from_secs(40));
    let (a, b) = (sim.peer(0), sim.peer(1));
    assert!(a.tunnel.is_up() && b.tunnel.is_up());
    assert!(handshake_drops(b, HandshakeDrop::StaleEpoch) >= 1, "refused while the old session was fresh");
    assert_eq!(b.tunnel.counters().restarts, 1);
    assert_eq!(b.keyd.counters().restarts, 1);
    exchange(&mut sim, 1_000);
}

/// The responder sends nothing under a new session before the initiator's first packet
/// under it authenticated; the initiator repeats that confirmation until it gets through.
#[test]
fn the_responder_waits_for_key_confirmation() {
    let mut sim = simulate(node_config(1, Some(2), 1), node_config(2, None, 2), LinkConfig::default(), 6);
    let blocked = std::rc::Rc::new(std::cell::Cell::new(true));
    let block = blocked.clone();
    let initiator = sim.addr(0);
    sim.set_tap(move |d| {
        let data = d.bytes[0] & msg_type::HANDSHAKE_BIT == 0;
        if block.get() && data && d.from == initiator { TapVerdict::Drop } else { TapVerdict::Pass }
    });
    sim.run_for(Duration::from_secs(5));
    let (a, b) = (sim.peer(0), sim.peer(1));
    assert!(a.tunnel.is_up(), "the initiator switched at once");
    assert!(!b.tunnel.is_up(), "the responder has no send key before confirmation");
    assert!(b.tunnel.data().recv_epochs().len() == 2, "but holds the initiator's first two keys");
    assert!(a.tunnel.counters().keepalives >= 3, "confirmation repeated: {}", a.tunnel.counters().keepalives);
    assert_eq!(b.keyd.counters().sessions, 0);

    blocked.set(false);
    sim.run_for(Duration::from_secs(10));
    let (a, b) = (sim.peer(0), sim.peer(1));
    assert!(b.tunnel.is_up());
    assert_eq!(b.keyd.counters().sessions, 1);
    // The responder's keepalive told the initiator: it stopped repeating.
    let sent = a.tunnel.counters().keepalives;
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.peer(0).tunnel.counters().keepalives, sent);
    exchange(&mut sim, 1);
}

/// Chain steps go on by time while nothing is sent; the receiver, which holds keys only
/// two epochs ahead, must still follow when traffic resumes.
#[test]
fn an_idle_tunnel_keeps_up_with_timed_chain_steps() {
    let mut sim = simulate(node_config(1, Some(2), 1), node_config(2, None, 2), LinkConfig::default(), 9);
    sim.run_for(Duration::from_secs(1));
    exchange(&mut sim, 1);
    // Seven minutes idle: three or more timed steps, before the ten-minute renewal.
    sim.run_for(Duration::from_secs(7 * 60));
    assert!(sim.peer(0).keyd.counters().send_keys >= 4);
    assert_eq!(sim.peer(0).keyd.counters().sessions, 1);
    exchange(&mut sim, 2);
}
