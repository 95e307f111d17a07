//! Liveness end to end: two nodes (netd's tunnel and keyd's monitor each) in the simulator,
//! in virtual time. Unreachability detection through every state and within its bound,
//! the tunnel coming back, NAT keepalives to the second, the shutdown notice (and forged
//! or replayed ones), roaming, and path-MTU discovery down to a 1280-byte link and back up.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use yavipin_keyd::KeydConfig;
use yavipin_netd::NudState::{Delay, Incomplete, Probe, Reachable, Stale, Unreachable};
use yavipin_netd::{
    DataConfig, DownReason, DropReason, HandshakeConfig, LivenessConfig, NudState, PmtuConfig, PmtuState, TunnelConfig,
    TunnelEvent,
};
use yavipin_proto::handshake::Group;
use yavipin_proto::msg_type;
use yavipin_tests::node::{Node, NodeConfig};
use yavipin_tests::sim::{Datagram, LinkConfig, Simulator, TapVerdict};

const PSK: [u8; 32] = [0x42; 32];
const KEY_ID: u32 = 7;
/// Bytes a sealed packet adds to its inner packet.
const OVERHEAD: usize = 17;

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, last], 4000 + u16::from(last)))
}

/// A node at `addr(me)`; it initiates towards `addr(peer)` if given one.
fn node_config(me: u8, peer: Option<u8>, seed: u64) -> NodeConfig {
    let handshake = HandshakeConfig::new(addr(me), Group::Modp2048, KEY_ID);
    NodeConfig { tunnel: TunnelConfig::new(handshake, peer.map(addr)), keyd: KeydConfig::default(), psk: PSK, seed }
}

/// The usual pair: the first node initiates, the second only responds.
fn pair() -> (NodeConfig, NodeConfig) {
    (node_config(1, Some(2), 11), node_config(2, None, 12))
}

fn simulate(a: NodeConfig, b: NodeConfig, link: LinkConfig, seed: u64) -> Simulator<Node> {
    let start = Instant::now();
    let (addr_a, addr_b) = (a.tunnel.handshake.local, b.tunnel.handshake.local);
    Simulator::new(start, seed, link, (addr_a, Node::new(start, a)), (addr_b, Node::new(start, b)))
}

/// Runs until both sides are up.
fn come_up(sim: &mut Simulator<Node>) {
    for _ in 0..100 {
        if sim.peer(0).tunnel.is_up() && sim.peer(1).tunnel.is_up() {
            return;
        }
        sim.run_for(Duration::from_millis(100));
    }
    panic!("the tunnel did not come up");
}

/// Sends one packet each way and checks it arrives.
fn exchange(sim: &mut Simulator<Node>, id: u64, len: usize) {
    let now = sim.now();
    for side in 0..2 {
        sim.peer_mut(side).send(now, id, len).expect("tunnel up");
    }
    sim.run_for(Duration::from_millis(200));
    for side in 0..2 {
        assert!(sim.peer(side).received.contains(&id), "side {side} did not get packet {id}");
    }
}

fn states(node: &Node) -> Vec<(Instant, NudState)> {
    node.events_where(|e| match e {
        TunnelEvent::Reachability { state } => Some(*state),
        _ => None,
    })
}

fn downs(node: &Node) -> Vec<(Instant, DownReason)> {
    node.events_where(|e| match e {
        TunnelEvent::Down { reason } => Some(*reason),
        _ => None,
    })
}

fn ups(node: &Node) -> usize {
    node.events_where(|e| matches!(e, TunnelEvent::Up { .. }).then_some(())).len()
}

fn mtus(node: &Node) -> Vec<(u16, u16)> {
    node.events_where(|e| match e {
        TunnelEvent::MtuChanged { path_mtu, inner_mtu } => Some((*path_mtu, *inner_mtu)),
        _ => None,
    })
    .into_iter()
    .map(|(_, m)| m)
    .collect()
}

fn is_data(d: &Datagram) -> bool {
    d.bytes[0] & msg_type::HANDSHAKE_BIT == 0
}

fn without_pmtu(mut config: NodeConfig) -> NodeConfig {
    config.tunnel.pmtu = PmtuConfig { enabled: false, ..PmtuConfig::default() };
    config
}

/// The second node never probes and never sends keepalives: the first one's detector
/// hears from it only what it asks for.
fn quiet_responder(mut config: NodeConfig) -> NodeConfig {
    config.tunnel.liveness = LivenessConfig {
        keepalive_interval: None,
        reachable_time: Duration::from_secs(3600),
        ..LivenessConfig::default()
    };
    config
}

#[test]
fn reachable_stale_delay_probe_and_back_on_an_echo_reply() {
    let (a, b) = pair();
    let mut sim = simulate(without_pmtu(a), quiet_responder(without_pmtu(b)), LinkConfig::default(), 1);
    come_up(&mut sim);
    sim.run_for(Duration::from_secs(100));
    let a = sim.peer(0);
    let seen: Vec<NudState> = states(a).iter().map(|(_, s)| *s).collect();
    assert_eq!(seen[..5], [Reachable, Stale, Delay, Probe, Reachable], "{seen:?}");
    // Every round goes the same way: only echo replies confirm the first node.
    for round in seen[1..].chunks(4) {
        assert_eq!(round[..round.len().min(4)], [Stale, Delay, Probe, Reachable][..round.len().min(4)]);
    }
    let timed = states(a);
    for window in timed.windows(2) {
        match (window[0].1, window[1].1) {
            (Delay, Probe) => assert_eq!(window[1].0 - window[0].0, Duration::from_secs(5), "first-probe delay"),
            // One echo request, answered after a round trip.
            (Probe, Reachable) => assert_eq!(window[1].0 - window[0].0, Duration::from_millis(20)),
            _ => {}
        }
    }
    let rounds = seen.iter().filter(|s| **s == Probe).count() as u64;
    assert!(rounds >= 2, "{seen:?}");
    let counters = a.tunnel.counters();
    assert_eq!((counters.echo_requests, counters.echo_replies), (rounds, rounds));
    assert_eq!(sim.peer(1).tunnel.counters().echoes_answered, rounds);
    // The responder heard the first node's keepalives: never in doubt.
    assert_eq!(states(sim.peer(1)).iter().map(|(_, s)| *s).collect::<Vec<_>>(), [Reachable]);
    assert_eq!(sim.peer(1).tunnel.counters().echo_requests, 0);
    assert!(a.tunnel.is_up() && sim.peer(1).tunnel.is_up());
}

#[test]
fn traffic_confirms_reachability_and_stops_probing() {
    let (a, b) = pair();
    let mut sim = simulate(without_pmtu(a), quiet_responder(without_pmtu(b)), LinkConfig::default(), 2);
    come_up(&mut sim);
    let echo_requests = |sim: &Simulator<Node>| sim.peer(0).tunnel.counters().echo_requests;
    let start = sim.now();
    for side in 0..2 {
        sim.peer_mut(side).start_traffic(start, Duration::from_secs(1), 100);
    }
    sim.run_for(Duration::from_secs(180));
    assert_eq!(echo_requests(&sim), 0, "traffic both ways: no probe");
    assert_eq!(sim.peer(0).tunnel.reachability(), Reachable);

    // The responder falls silent (it still answers probes): the first node probes.
    sim.peer_mut(1).stop_traffic();
    sim.run_for(Duration::from_secs(180));
    let probed = echo_requests(&sim);
    assert!(probed >= 3, "{probed} probes");
    assert_eq!(sim.peer(0).tunnel.counters().echo_replies, probed, "every probe answered");

    // Its traffic resumes: probing stops.
    let now = sim.now();
    sim.peer_mut(1).start_traffic(now, Duration::from_secs(1), 100);
    sim.run_for(Duration::from_secs(10));
    let settled = echo_requests(&sim);
    sim.run_for(Duration::from_secs(180));
    assert_eq!(echo_requests(&sim), settled, "traffic confirms: no more probes");
    assert!(sim.peer(0).tunnel.is_up());
    assert!(downs(sim.peer(0)).is_empty());
}

/// A tap that drops everything while the returned flag is set.
fn cuttable(sim: &mut Simulator<Node>) -> Rc<Cell<bool>> {
    let cut = Rc::new(Cell::new(false));
    let flag = cut.clone();
    sim.set_tap(move |_| if flag.get() { TapVerdict::Drop } else { TapVerdict::Pass });
    cut
}

#[test]
fn a_cut_link_is_detected_on_both_sides_within_the_bound_and_the_tunnel_comes_back() {
    let bound = LivenessConfig::default().detection_bound();
    let minimum = LivenessConfig::default().detection_minimum();
    assert_eq!(bound, Duration::from_secs(53));
    for seed in 1..=6u64 {
        let (a, b) = (node_config(1, Some(2), seed * 10), node_config(2, None, seed * 10 + 1));
        let mut sim = simulate(a, b, LinkConfig::default(), seed);
        let cut = cuttable(&mut sim);
        come_up(&mut sim);
        // Even seeds: busy tunnel (traffic until and through the cut); odd: idle.
        if seed % 2 == 0 {
            let now = sim.now();
            sim.peer_mut(0).start_traffic(now, Duration::from_millis(100), 200);
            sim.peer_mut(1).start_traffic(now, Duration::from_millis(300), 200);
        }
        sim.run_for(Duration::from_secs(60 + 7 * seed));
        cut.set(true);
        let cut_at = sim.now();
        let requests_before = sim.peer(0).tunnel.handshake().counters().requests;
        sim.run_for(bound + Duration::from_secs(1));

        for side in 0..2 {
            let node = sim.peer(side);
            let down = downs(node);
            assert_eq!(down.len(), 1, "seed {seed} side {side}: {down:?}");
            let (at, reason) = down[0];
            assert_eq!(reason, DownReason::PeerUnreachable);
            let status = node.tunnel.status();
            let last_confirmed = status.last_confirmed.expect("confirmed once");
            assert!(last_confirmed <= cut_at + LinkConfig::default().latency, "seed {seed} side {side}");
            let took = at - last_confirmed;
            assert!(took <= bound && took >= minimum, "seed {seed} side {side}: {took:?} after the last confirmation");
            assert!(at - cut_at <= bound, "seed {seed} side {side}: {:?} after the cut", at - cut_at);
            // Through every state, three probes, then keys erased and the tunnel down.
            let seen: Vec<NudState> = states(node).iter().rev().take(3).map(|(_, s)| *s).collect();
            assert_eq!(seen, [Unreachable, Probe, Delay], "seed {seed} side {side}");
            assert!(!node.tunnel.is_up());
            assert!(node.tunnel.data().send_epoch().is_none() && node.tunnel.data().recv_epochs().is_empty());
            assert_eq!(status.reachability, Unreachable);
            assert_eq!(status.last_down, Some(DownReason::PeerUnreachable));
            assert_eq!((status.path_mtu, status.pmtu), (None, PmtuState::Disabled));
            assert_eq!(node.tunnel.counters().unreachable, 1);
        }
        // The initiator tries again with its back-off; the pure responder waits.
        sim.run_for(Duration::from_secs(30));
        assert!(sim.peer(0).tunnel.handshake().counters().requests > requests_before + 2, "seed {seed}");
        assert_eq!(sim.peer(1).tunnel.handshake().counters().requests, 0, "seed {seed}");
        assert!(!sim.peer(0).tunnel.is_up() && !sim.peer(1).tunnel.is_up());

        // The link returns: within one back-off interval (30 s, +25 %) the tunnel is up.
        cut.set(false);
        sim.run_for(Duration::from_secs(40));
        for side in 0..2 {
            let node = sim.peer(side);
            assert!(node.tunnel.is_up(), "seed {seed} side {side}");
            assert_eq!(ups(node), 2, "seed {seed} side {side}");
            assert_eq!(node.tunnel.reachability(), Reachable);
        }
        for side in 0..2 {
            sim.peer_mut(side).stop_traffic();
        }
        exchange(&mut sim, 1_000_000 + seed, 100);
    }
}

/// Both sides' NAT keepalives over ten idle minutes, with nothing else to send: no chain
/// step or renewal in the window, and a detector that never needs to probe (the peer's
/// keepalives come more often than its shortest reachable time).
fn idle_config(me: u8, peer: Option<u8>, seed: u64, keepalive: Option<u64>) -> NodeConfig {
    let mut config = without_pmtu(node_config(me, peer, seed));
    config.tunnel.data = DataConfig {
        rekey_after_time: Duration::from_secs(3600),
        reject_after_time: Duration::from_secs(7200),
        ..DataConfig::default()
    };
    config.keyd.dh_interval = Duration::from_secs(3600);
    config.tunnel.liveness = LivenessConfig {
        keepalive_interval: keepalive.map(Duration::from_secs),
        reachable_time: Duration::from_secs(if keepalive.is_some() { 60 } else { 3600 }),
        ..LivenessConfig::default()
    };
    config
}

#[test]
fn keepalives_go_out_exactly_as_configured_and_only_when_idle() {
    // Every 25 s from the first node, every 10 s from the second.
    let mut sim =
        simulate(idle_config(1, Some(2), 1, Some(25)), idle_config(2, None, 2, Some(10)), LinkConfig::default(), 3);
    come_up(&mut sim);
    sim.run_for(Duration::from_secs(5));
    let sent = Rc::new(RefCell::new(Vec::new()));
    let sink = sent.clone();
    let first = sim.addr(0);
    sim.set_tap(move |d| {
        if is_data(d) {
            sink.borrow_mut().push(usize::from(d.from != first));
        }
        TapVerdict::Pass
    });
    let idle_since = [0, 1].map(|side| sim.peer(side).tunnel.counters().idle_keepalives);
    // Step through the ten minutes one second at a time, noting when each side sent.
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let start = sim.now();
    for _ in 0..600 {
        let before = sent.borrow().len();
        sim.run_for(Duration::from_secs(1));
        for &side in &sent.borrow()[before..] {
            times[side].push(sim.now() - start);
        }
    }
    for (side, interval, expected) in [(0, 25, 24), (1, 10, 60)] {
        let node = sim.peer(side);
        let keepalives = node.tunnel.counters().idle_keepalives - idle_since[side];
        assert_eq!(keepalives, expected, "side {side}");
        assert_eq!(times[side].len() as u64, expected, "side {side}: nothing else was sent");
        for pair in times[side].windows(2) {
            assert_eq!(
                pair[1].saturating_sub(pair[0]),
                Duration::from_secs(interval),
                "side {side}: {:?}",
                times[side]
            );
        }
        assert_eq!(node.tunnel.counters().echo_requests, 0);
    }
    assert!(sim.peer(0).tunnel.is_up() && sim.peer(1).tunnel.is_up());

    // Traffic both ways: no keepalive at all.
    let now = sim.now();
    let before = [0, 1].map(|side| sim.peer(side).tunnel.counters().idle_keepalives);
    for side in 0..2 {
        sim.peer_mut(side).start_traffic(now, Duration::from_secs(5), 100);
    }
    sim.run_for(Duration::from_secs(600));
    for (side, before) in before.into_iter().enumerate() {
        assert_eq!(sim.peer(side).tunnel.counters().idle_keepalives, before, "side {side}");
    }

    // Keepalives off: an idle tunnel sends nothing at all.
    let mut sim = simulate(idle_config(1, Some(2), 1, None), idle_config(2, None, 2, None), LinkConfig::default(), 4);
    come_up(&mut sim);
    sim.run_for(Duration::from_secs(5));
    let counted = Rc::new(Cell::new(0u32));
    let count = counted.clone();
    sim.set_tap(move |_| {
        count.set(count.get() + 1);
        TapVerdict::Pass
    });
    sim.run_for(Duration::from_secs(600));
    assert_eq!(counted.get(), 0);
    assert_eq!(sim.peer(0).tunnel.counters().idle_keepalives + sim.peer(1).tunnel.counters().idle_keepalives, 0);
}

/// Records every datagram from `from` into `log`, passing it or dropping it per `pass`.
fn recording(log: &Rc<RefCell<Vec<Datagram>>>, from: SocketAddr) -> impl FnMut(&mut Datagram) -> TapVerdict + 'static {
    let log = log.clone();
    move |d| {
        if d.from == from && is_data(d) {
            log.borrow_mut().push(d.clone());
        }
        TapVerdict::Pass
    }
}

#[test]
fn a_shutdown_notice_tears_the_peer_down_at_once_and_a_replay_does_nothing() {
    let (a, b) = pair();
    let mut sim = simulate(a, b.clone(), LinkConfig::default(), 5);
    come_up(&mut sim);
    exchange(&mut sim, 1, 100);
    let responder = sim.addr(1);
    let log = Rc::new(RefCell::new(Vec::new()));
    sim.set_tap(recording(&log, responder));

    // The responder shuts down: one notice, then nothing.
    let now = sim.now();
    sim.peer_mut(1).shutdown(now);
    assert!(sim.peer(1).tunnel.is_closed() && !sim.peer(1).tunnel.is_up());
    assert_eq!(sim.peer(1).tunnel.poll_timeout(), None);
    assert_eq!(downs(sim.peer(1)), [(now, DownReason::LocalShutdown)]);
    sim.run_for(Duration::from_millis(100));
    let notice = {
        let sent = log.borrow();
        assert_eq!(sent.len(), 1, "exactly one notice");
        sent[0].clone()
    };
    assert_eq!(notice.bytes.len(), 5 + 1 + 12, "a one-byte control message");
    let a = sim.peer(0);
    assert_eq!(downs(a), [(now + Duration::from_millis(10), DownReason::PeerShutdown)], "at once");
    assert_eq!(a.tunnel.status().last_down.map(DownReason::name), Some("peer shut down"));
    assert!(a.tunnel.data().send_epoch().is_none() && a.tunnel.data().recv_epochs().is_empty(), "keys erased");
    assert_eq!(a.tunnel.counters().shutdowns_received, 1);

    // A duplicate right after: no key left for it, no second teardown.
    sim.inject(notice.from, notice.to, notice.bytes.clone());
    sim.run_for(Duration::from_secs(10));
    assert_eq!(downs(sim.peer(0)).len(), 1);
    assert!(sim.peer(0).tunnel.handshake().counters().requests >= 3, "the initiator retries");
    assert_eq!(log.borrow().len(), 1, "a closed tunnel sends nothing");

    // The responder comes back as a new process; the initiator's retry reaches it.
    let now = sim.now();
    *sim.peer_mut(1) = Node::new(now, NodeConfig { seed: 99, ..b });
    sim.run_for(Duration::from_secs(40));
    assert!(sim.peer(0).tunnel.is_up() && sim.peer(1).tunnel.is_up());
    assert_eq!(ups(sim.peer(0)), 2);
    exchange(&mut sim, 2, 100);

    // The old notice replayed into the new session: it does not authenticate.
    let drops = |sim: &Simulator<Node>| {
        let c = sim.peer(0).tunnel.data().counters();
        c.dropped(DropReason::UnknownEpoch) + c.dropped(DropReason::BadMac) + c.dropped(DropReason::Replayed)
    };
    let before = drops(&sim);
    sim.inject(notice.from, notice.to, notice.bytes.clone());
    sim.run_for(Duration::from_secs(1));
    assert_eq!(drops(&sim), before + 1);
    assert_eq!(downs(sim.peer(0)).len(), 1, "nothing changed");
    assert!(sim.peer(0).tunnel.is_up());
    assert_eq!(sim.peer(0).tunnel.counters().shutdowns_received, 1);
    exchange(&mut sim, 3, 100);
}

#[test]
fn a_pure_responder_told_of_a_shutdown_waits_to_be_contacted() {
    let (a, b) = pair();
    let mut sim = simulate(a, b, LinkConfig::default(), 6);
    come_up(&mut sim);
    let now = sim.now();
    sim.peer_mut(0).shutdown(now);
    sim.run_for(Duration::from_secs(120));
    let b = sim.peer(1);
    assert_eq!(downs(b).iter().map(|(_, r)| *r).collect::<Vec<_>>(), [DownReason::PeerShutdown]);
    assert!(!b.tunnel.is_up());
    assert_eq!(b.tunnel.handshake().counters().requests, 0, "no initiation without a configured peer");
    assert_eq!(b.tunnel.reachability(), Incomplete);
}

/// CFB is malleable: flipping ciphertext bits flips the same plaintext bits. A keepalive
/// (plaintext `0x01`) turned into a shutdown notice (`0x04`) must fail the tag, and leave
/// the replay window as it was.
#[test]
fn a_forged_shutdown_notice_does_not_authenticate() {
    let (a, b) = pair();
    let mut sim = simulate(without_pmtu(a), without_pmtu(b), LinkConfig::default(), 7);
    come_up(&mut sim);
    let responder = sim.addr(1);
    let held = Rc::new(RefCell::new(Vec::new()));
    let sink = held.clone();
    // Hold back the responder's next keepalive.
    sim.set_tap(move |d| {
        if d.from == responder && is_data(d) && d.bytes.len() == 18 && sink.borrow().is_empty() {
            sink.borrow_mut().push(d.clone());
            return TapVerdict::Drop;
        }
        TapVerdict::Pass
    });
    sim.run_for(Duration::from_secs(30));
    sim.clear_tap();
    let keepalive: Datagram = held.borrow().first().cloned().expect("a keepalive within 25 s");
    let mut forged = keepalive.bytes.clone();
    forged[5] ^= 0x01 ^ 0x04;
    let bad_mac = |sim: &Simulator<Node>| sim.peer(0).tunnel.data().counters().dropped(DropReason::BadMac);
    sim.inject(keepalive.from, keepalive.to, forged);
    // A notice from nowhere, with a made-up tag.
    let mut invented = keepalive.bytes.clone();
    invented[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    invented[6..].fill(0xa5);
    sim.inject(addr(66), keepalive.to, invented);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(bad_mac(&sim), 2);
    assert!(sim.peer(0).tunnel.is_up());
    assert!(downs(sim.peer(0)).is_empty());
    assert_eq!(sim.peer(0).tunnel.peer(), Some(responder), "nor did it move the endpoint");
    // The genuine keepalive still gets in: the forgery changed no state.
    let accepted = sim.peer(0).tunnel.data().counters().received.packets;
    sim.inject(keepalive.from, keepalive.to, keepalive.bytes.clone());
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.peer(0).tunnel.data().counters().received.packets, accepted + 1);
}

#[test]
fn roaming_follows_authenticated_packets_without_a_new_handshake() {
    let (a, b) = pair();
    let mut sim = simulate(a, b, LinkConfig::default(), 8);
    come_up(&mut sim);
    let start = sim.now();
    for side in 0..2 {
        sim.peer_mut(side).start_traffic(start, Duration::from_millis(50), 100);
    }
    sim.run_for(Duration::from_secs(2));
    // Keep one of the initiator's packets from the old address back, and a copy of one
    // that was delivered.
    let (old, responder) = (sim.addr(0), sim.addr(1));
    let log = Rc::new(RefCell::new(Vec::new()));
    let kept = Rc::new(RefCell::new(None));
    let (sink, keep) = (log.clone(), kept.clone());
    sim.set_tap(move |d| {
        if d.from == old && is_data(d) {
            if keep.borrow().is_none() {
                *keep.borrow_mut() = Some(d.clone());
                return TapVerdict::Drop;
            }
            sink.borrow_mut().push(d.clone());
        }
        TapVerdict::Pass
    });
    sim.run_for(Duration::from_millis(200));
    sim.clear_tap();
    let held: Datagram = kept.borrow().clone().expect("held back");
    let delivered: Datagram = log.borrow().first().cloned().expect("delivered");
    let handshakes = |sim: &Simulator<Node>| {
        [0, 1].map(|s| (sim.peer(s).keyd.counters().sessions, sim.peer(s).tunnel.handshake().counters().requests))
    };
    let before = handshakes(&sim);

    // NAT rebinding: the initiator's packets now come from another address.
    let rebound = addr(9);
    sim.set_addr(0, rebound);
    let received = sim.peer(0).received.len();
    sim.run_for(Duration::from_secs(2));
    let b = sim.peer(1);
    assert_eq!(b.tunnel.peer(), Some(rebound));
    let moves = b.events_where(|e| match e {
        TunnelEvent::PeerMoved { from, to } => Some((*from, *to)),
        _ => None,
    });
    assert_eq!(moves.iter().map(|(_, m)| *m).collect::<Vec<_>>(), [(Some(old), rebound)]);
    assert!(sim.peer(0).received.len() > received + 30, "traffic resumed towards the new address");
    assert_eq!(handshakes(&sim), before, "no new handshake");

    // From a third address: a replay of a delivered packet, garbage with a data header,
    // and the held-back packet (genuine, never seen, but older than what came since).
    let replayed = |sim: &Simulator<Node>| sim.peer(1).tunnel.data().counters().dropped(DropReason::Replayed);
    let bad_mac = |sim: &Simulator<Node>| sim.peer(1).tunnel.data().counters().dropped(DropReason::BadMac);
    let (replays, forgeries) = (replayed(&sim), bad_mac(&sim));
    let spoofer = addr(66);
    sim.inject(spoofer, responder, delivered.bytes.clone());
    let mut garbage = delivered.bytes.clone();
    garbage[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    sim.inject(spoofer, responder, garbage);
    sim.run_for(Duration::from_millis(100));
    assert_eq!((replayed(&sim), bad_mac(&sim)), (replays + 1, forgeries + 1));
    assert_eq!(sim.peer(1).tunnel.peer(), Some(rebound));
    let held_id = sim.peer(0).sent[&held.bytes];
    sim.inject(old, responder, held.bytes.clone());
    sim.run_for(Duration::from_millis(100));
    assert!(sim.peer(1).received.contains(&held_id), "authentic and fresh: delivered");
    assert_eq!(sim.peer(1).tunnel.peer(), Some(rebound), "but too old to move the endpoint back");
    assert_eq!(sim.peer(1).tunnel.counters().peer_moves, 1);
    let received = sim.peer(0).received.len();
    sim.run_for(Duration::from_secs(1));
    assert!(sim.peer(0).received.len() > received + 10);
    assert_eq!(sim.peer(0).tunnel.peer(), Some(responder));
    assert_eq!(handshakes(&sim), before);
}

/// Path-MTU discovery settings that keep the test short: a new search two minutes after
/// one completes.
fn pmtu_config(me: u8, peer: Option<u8>, seed: u64) -> NodeConfig {
    let mut config = node_config(me, peer, seed);
    config.tunnel.pmtu.raise_interval = Duration::from_secs(120);
    config
}

/// Lengths of the data-kind datagrams the first node puts on the link.
fn probe_sizes(sim: &mut Simulator<Node>) -> Rc<RefCell<Vec<usize>>> {
    let sizes = Rc::new(RefCell::new(Vec::new()));
    let (sink, from) = (sizes.clone(), sim.addr(0));
    sim.set_tap(move |d| {
        if d.from == from && is_data(d) {
            sink.borrow_mut().push(d.bytes.len());
        }
        TapVerdict::Pass
    });
    sizes
}

#[test]
fn path_mtu_adapts_to_a_1280_byte_link_and_grows_back() {
    let link = LinkConfig { mtu: 1280, ..LinkConfig::default() };
    let mut sim = simulate(pmtu_config(1, Some(2), 1), pmtu_config(2, None, 2), link, 9);
    let sizes = probe_sizes(&mut sim);
    come_up(&mut sim);
    // IPv4 peers: 20 + 8 bytes of headers.
    assert_eq!(mtus(sim.peer(0)).first(), Some(&(1280, 1280 - 28 - 17)), "the base at first");
    sim.run_for(Duration::from_secs(400));
    for side in 0..2 {
        let node = sim.peer(side);
        assert_eq!(node.tunnel.path_mtu(), Some(1280 + 28), "side {side}");
        assert_eq!(node.tunnel.inner_mtu(), Some(1263), "side {side}");
        assert_eq!(mtus(node).last(), Some(&(1308, 1263)), "side {side}");
        // Complete, or already looking for more room (every two minutes here).
        assert!(matches!(node.tunnel.status().pmtu, PmtuState::SearchComplete | PmtuState::Searching));
        assert!(node.tunnel.is_up(), "side {side}: probe losses never took the tunnel down");
    }
    // The probes had exactly the sizes tested: the base (1280 − 28), the maximum (1500
    // inner + 17), then halfway between.
    {
        let sizes = sizes.borrow();
        let probes: Vec<usize> = sizes.iter().copied().filter(|&s| s > 100).collect();
        assert_eq!(probes[..5], [1252, 1517, 1517, 1517, 1384], "{probes:?}");
        // Each size above the link's went out three times before it counted as too large.
        for size in probes.iter().filter(|&&s| s > 1280) {
            assert_eq!(probes.iter().filter(|&&s| s == *size).count() % 3, 0, "{size}: {probes:?}");
        }
    }
    // Inner packets up to the new MTU pass, one byte more does not.
    exchange(&mut sim, 1, 1263);
    let too_big = sim.stats().too_big;
    let now = sim.now();
    sim.peer_mut(0).send(now, 2, 1264).expect("sealed");
    sim.run_for(Duration::from_millis(100));
    assert_eq!(sim.stats().too_big, too_big + 1);
    assert!(!sim.peer(1).received.contains(&2));

    // The link grows back to 1472-byte datagrams (1500-byte packets): the next search,
    // two minutes after the last, finds it.
    sim.set_link(LinkConfig::default());
    sim.run_for(Duration::from_secs(400));
    for side in 0..2 {
        let node = sim.peer(side);
        assert_eq!(node.tunnel.path_mtu(), Some(1500), "side {side}");
        assert_eq!(mtus(node).last(), Some(&(1500, 1455)), "side {side}");
    }
    exchange(&mut sim, 3, 1455);

    // It shrinks again: confirmation probes of 1500 black-hole, so back to the base and
    // down to the new size, without the tunnel going down.
    sim.set_link(LinkConfig { mtu: 1400, ..LinkConfig::default() });
    sim.run_for(Duration::from_secs(400));
    for side in 0..2 {
        let node = sim.peer(side);
        assert_eq!(node.tunnel.path_mtu(), Some(1428), "side {side}");
        assert!(node.tunnel.is_up());
        assert!(downs(node).is_empty());
    }
    exchange(&mut sim, 4, 1400 - OVERHEAD);
}

#[test]
fn the_local_stacks_emsgsize_lowers_the_mtu_at_once() {
    let mut sim = simulate(pmtu_config(1, Some(2), 1), pmtu_config(2, None, 2), LinkConfig::default(), 10);
    come_up(&mut sim);
    sim.run_for(Duration::from_secs(400));
    assert_eq!(sim.peer(0).tunnel.path_mtu(), Some(1500));
    // The interface now sends 1400-byte packets at most (a tunnel inside a tunnel, say).
    sim.peer_mut(0).local_mtu = Some(1400 - 28);
    let now = sim.now();
    sim.peer_mut(0).send(now, 1, 1455).expect("sealed");
    // Refused locally, the MTU drops and the search below it needs no timer: the local
    // stack refuses the oversized probes at once and the peer acknowledges the others.
    sim.run_for(Duration::from_secs(1));
    let a = sim.peer(0);
    assert_eq!(a.tunnel.path_mtu(), Some(1400));
    assert_eq!(a.tunnel.inner_mtu(), Some(1400 - 28 - 17));
    assert!(a.tunnel.counters().too_big >= 2);
    assert!(mtus(a).contains(&(1280, 1235)), "the base first");
    assert_eq!(mtus(a).last(), Some(&(1400, 1355)));
    exchange(&mut sim, 2, 1355);
}

/// keyd may answer a request made for a session that was torn down meanwhile (a chain
/// step's keys crossing the teardown on the channel): the tunnel must not come back up on
/// them, and takes the next session's keys as usual.
#[test]
fn keys_for_a_torn_down_session_are_ignored() {
    use yavipin_ipc::KeydToNetd;
    use yavipin_proto::{Epoch, EpochKey, TrafficSecret};

    let (a, b) = pair();
    let mut sim = simulate(a, b, LinkConfig::default(), 11);
    let cut = cuttable(&mut sim);
    come_up(&mut sim);
    cut.set(true);
    sim.run_for(Duration::from_secs(60));
    assert!(!sim.peer(1).tunnel.is_up());
    let now = sim.now();
    let key = |epoch| EpochKey { epoch: Epoch(epoch), secret: TrafficSecret::new([0x77; 32]) };
    let responder = &mut sim.peer_mut(1).tunnel;
    responder.handle_keyd(now, KeydToNetd::SendKey { key: key(40), session_start: false }).expect("ignored");
    responder.handle_keyd(now, KeydToNetd::RecvKey(key(41))).expect("ignored");
    assert!(!responder.is_up());
    assert!(responder.data().recv_epochs().is_empty());
    assert_eq!(responder.counters().stale_keys, 2);
    // Nor is a renewal started for the dead session: the pure responder waits.
    responder.handle_keyd(now, KeydToNetd::RenewalDue).expect("ignored");
    assert!(!responder.handshake().initiating());

    cut.set(false);
    sim.run_for(Duration::from_secs(40));
    assert!(sim.peer(0).tunnel.is_up() && sim.peer(1).tunnel.is_up());
    exchange(&mut sim, 1, 100);
}

#[test]
fn status_reports_liveness_and_path_mtu() {
    let renewing = |mut config: NodeConfig| {
        config.keyd.dh_interval = Duration::from_secs(60);
        config
    };
    let (a, b) = pair();
    let mut sim = simulate(renewing(a), renewing(b), LinkConfig::default(), 12);
    let before = sim.peer(0).tunnel.status();
    assert!(!before.up && before.up_since.is_none() && before.last_handshake.is_none());
    assert_eq!((before.reachability, before.pmtu, before.path_mtu), (Incomplete, PmtuState::Disabled, None));
    come_up(&mut sim);
    let up_at = sim.now();
    // Long enough for the search to end: the maximum (1545) and three sizes between 1500
    // and it fail, 45 s each.
    sim.run_for(Duration::from_secs(300));
    for side in 0..2 {
        let status = sim.peer(side).tunnel.status();
        assert!(status.up && !status.closed, "side {side}");
        assert_eq!(status.peer, Some(sim.addr(1 - side)));
        assert!(status.up_since.is_some_and(|t| t <= up_at));
        let (handshake, renewal) = (status.last_handshake.expect("handshake"), status.last_renewal.expect("renewed"));
        assert_eq!(handshake, renewal, "the last handshake was a renewal");
        assert!(renewal > up_at);
        assert!(status.last_confirmed.is_some());
        assert_ne!(status.reachability, Unreachable);
        assert_eq!((status.path_mtu, status.inner_mtu), (Some(1500), Some(1455)), "side {side}");
        assert_eq!(status.last_down, None);
        assert!(status.counters.pmtu_probes >= 2 && status.counters.pmtu_acks >= 1);
    }
    assert_eq!(
        sim.peer(0).tunnel.status().counters.pmtu_probes_answered,
        sim.peer(1).tunnel.status().counters.pmtu_acks
    );
}
