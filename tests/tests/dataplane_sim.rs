//! The data plane across an impaired network: loss, reordering, duplication and constant
//! key renewal, with keys served the way keyd serves them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use yavipin_netd::{DataConfig, DropReason};
use yavipin_tests::data_peer::DataPeer;
use yavipin_tests::sim::{LinkConfig, Simulator};

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, last], 4000))
}

fn pair(config: &DataConfig, link: LinkConfig, seed: u64) -> Simulator<DataPeer> {
    let start = Instant::now();
    let a = DataPeer::new(start, config.clone(), 0, addr(2));
    let b = DataPeer::new(start, config.clone(), 1, addr(1));
    Simulator::new(start, seed, link, (addr(1), a), (addr(2), b))
}

/// Which ids each peer's network delivered, with multiplicity.
fn delivered_ids(sim: &Simulator<DataPeer>, to: usize) -> HashMap<u64, usize> {
    let from = 1 - to;
    let mut ids = HashMap::new();
    for d in sim.deliveries().iter().filter(|d| d.to == sim.addr(to)) {
        let id = sim.peer(from).sent[&d.bytes];
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

#[test]
fn every_delivered_packet_accepted_exactly_once_across_100_renewals() {
    const PACKETS: u64 = 10_000;
    let config = DataConfig { rekey_after_packets: 100, ..DataConfig::default() };
    let link = LinkConfig {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(30),
        loss: 0.10,
        duplicate: 0.10,
        ..LinkConfig::default()
    };
    let mut sim = pair(&config, link, 0x5eed);
    sim.record_deliveries();
    for id in 0..PACKETS {
        let now = sim.now();
        for side in 0..2 {
            sim.peer_mut(side).send(now, id, 64 + usize::try_from(id % 1300).expect("small")).expect("key available");
        }
        sim.run_for(Duration::from_millis(1));
    }
    sim.run_for(Duration::from_secs(1));

    let stats = sim.stats();
    assert!(stats.lost > 1500 && stats.duplicated > 1500, "impairments applied: {stats:?}");
    for side in 0..2 {
        let peer = sim.peer(side);
        let sender = sim.peer(1 - side);
        assert!(sender.renewals >= 99, "sender renewed {} times", sender.renewals);

        let delivered = delivered_ids(&sim, side);
        let mut accepted = peer.received.clone();
        // Reordering happened: the arrival order is not the sending order.
        assert!(accepted.windows(2).any(|w| w[0] > w[1]));
        accepted.sort_unstable();
        let before = accepted.len();
        accepted.dedup();
        assert_eq!(before, accepted.len(), "a packet was accepted twice");
        let mut expected: Vec<u64> = delivered.keys().copied().collect();
        expected.sort_unstable();
        assert_same_ids(&accepted, &expected);

        let duplicates: u64 = delivered.values().map(|&n| n as u64 - 1).sum();
        let counters = peer.plane.counters();
        assert_eq!(counters.dropped(DropReason::Replayed), duplicates);
        assert_eq!(counters.dropped_total(), duplicates, "only duplicates are dropped");
    }
}

/// Compares sorted id lists, reporting only the differences.
fn assert_same_ids(got: &[u64], want: &[u64]) {
    let missing: Vec<_> = want.iter().filter(|id| got.binary_search(id).is_err()).take(10).collect();
    let extra: Vec<_> = got.iter().filter(|id| want.binary_search(id).is_err()).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} accepted, {} expected; first missing {missing:?}, first unexpected {extra:?}",
        got.len(),
        want.len()
    );
}

/// Reordering that spans the switch between epochs (40 ms of jitter, an epoch every 50 ms)
/// loses nothing: the previous key waits for stragglers, the next one is installed early.
#[test]
fn renewal_under_reordering_loses_nothing_without_loss() {
    let config = DataConfig { rekey_after_packets: 100, ..DataConfig::default() };
    let link = LinkConfig { jitter: Duration::from_millis(40), ..LinkConfig::default() };
    let mut sim = pair(&config, link, 42);
    for id in 0..3000 {
        let now = sim.now();
        sim.peer_mut(0).send(now, id, 100).expect("key available");
        sim.run_for(Duration::from_micros(500));
    }
    sim.run_for(Duration::from_secs(1));
    let mut got = sim.peer(1).received.clone();
    assert!(got.windows(2).any(|w| w[0] > w[1]), "jitter must reorder");
    got.sort_unstable();
    assert_same_ids(&got, &(0..3000).collect::<Vec<_>>());
    assert_eq!(sim.peer(0).renewals, 30);
    assert_eq!(sim.peer(1).plane.counters().dropped_total(), 0);
}
