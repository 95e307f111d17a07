//! A two-peer network simulator with virtual time.
//!
//! Two sans-IO endpoints exchange datagrams through a fake link that can delay, jitter
//! (and so reorder), lose, duplicate and refuse datagrams larger than its MTU. Time only
//! moves when the simulator moves it, and every random choice comes from one seeded
//! generator, so a failing run replays exactly.
//!
//! A test may also stand on the path: [`Simulator::set_tap`] sees (and may alter or drop)
//! every datagram before it is scheduled, and [`Simulator::inject`] sends a datagram from
//! any address, spoofed or not.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use yavipin_proto::Random;
use yavipin_proto::rng::Seeded;

/// A datagram an endpoint wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// UDP payload.
    pub bytes: Vec<u8>,
}

/// A sans-IO peer the simulator can drive.
pub trait Endpoint {
    /// A datagram arrived from `from`.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]);
    /// The next datagram to send, if any.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// When [`Endpoint::handle_timeout`] must next run.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Time reached the endpoint's timeout.
    fn handle_timeout(&mut self, now: Instant);
}

/// Impairments of the fake link, the same in both directions.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// One-way base delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per datagram: datagrams sent closer
    /// together than this may arrive out of order.
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice (with independent delays).
    pub duplicate: f64,
    /// Datagrams longer than this are dropped, as a link without fragmentation would.
    pub mtu: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self { latency: Duration::from_millis(10), jitter: Duration::ZERO, loss: 0.0, duplicate: 0.0, mtu: 1472 }
    }
}

/// What the link did, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams handed to the link by endpoints or injected.
    pub sent: u64,
    /// Lost on purpose.
    pub lost: u64,
    /// Extra copies scheduled.
    pub duplicated: u64,
    /// Dropped for exceeding the MTU.
    pub too_big: u64,
    /// Dropped by the tap.
    pub tapped: u64,
    /// Handed to an endpoint.
    pub delivered: u64,
    /// Addressed to nobody.
    pub unroutable: u64,
}

/// A datagram on the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Source address as the receiver will see it.
    pub from: SocketAddr,
    /// Destination address.
    pub to: SocketAddr,
    /// UDP payload.
    pub bytes: Vec<u8>,
}

/// What the tap decides for a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapVerdict {
    /// Let it through (possibly altered).
    Pass,
    /// Drop it.
    Drop,
}

type Tap = Box<dyn FnMut(&mut Datagram) -> TapVerdict>;

/// Deterministic pseudo-random numbers for the link model and test traffic: reproducible,
/// not cryptographic.
#[derive(Debug, Clone)]
pub struct SimRng(Seeded);

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Seeded::new(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits make a uniform f64 in [0, 1).
        #[allow(clippy::cast_precision_loss)]
        let x = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }

    /// A uniform duration in `0..=max`.
    pub fn duration_up_to(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next_u64() % (nanos + 1))
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill(buf);
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.fill(&mut buf);
        buf
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    /// Tie-break so equal times deliver in scheduling order.
    order: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// Two endpoints, their addresses, and the link between them.
pub struct Simulator<E: Endpoint> {
    now: Instant,
    start: Instant,
    rng: SimRng,
    link: LinkConfig,
    peers: [(SocketAddr, E); 2],
    in_flight: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    tap: Option<Tap>,
    log: Option<Vec<Datagram>>,
    stats: LinkStats,
}

impl<E: Endpoint> core::fmt::Debug for Simulator<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Simulator")
            .field("elapsed", &self.elapsed())
            .field("in_flight", &self.in_flight.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<E: Endpoint> Simulator<E> {
    /// Wires `a` at `addr_a` and `b` at `addr_b` through a link, starting at `start`.
    pub fn new(start: Instant, seed: u64, link: LinkConfig, a: (SocketAddr, E), b: (SocketAddr, E)) -> Self {
        Self {
            now: start,
            start,
            rng: SimRng::new(seed),
            link,
            peers: [a, b],
            in_flight: BinaryHeap::new(),
            order: 0,
            tap: None,
            log: None,
            stats: LinkStats::default(),
        }
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// What the link did so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Changes the link's impairments from now on.
    pub fn set_link(&mut self, link: LinkConfig) {
        self.link = link;
    }

    /// The link's current impairments.
    pub fn link(&self) -> &LinkConfig {
        &self.link
    }

    /// The simulator's random generator, for tests that need reproducible randomness.
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Endpoint `i` (0 or 1) and its address.
    pub fn peer(&self, i: usize) -> &E {
        &self.peers[i].1
    }

    /// Endpoint `i` (0 or 1), mutable: to feed it tun packets or change it.
    pub fn peer_mut(&mut self, i: usize) -> &mut E {
        &mut self.peers[i].1
    }

    /// The address of endpoint `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.peers[i].0
    }

    /// Moves endpoint `i` to a new address (a NAT rebinding, a roaming laptop).
    pub fn set_addr(&mut self, i: usize, addr: SocketAddr) {
        self.peers[i].0 = addr;
    }

    /// Installs a function that sees every datagram before it enters the link.
    pub fn set_tap(&mut self, tap: impl FnMut(&mut Datagram) -> TapVerdict + 'static) {
        self.tap = Some(Box::new(tap));
    }

    /// Removes the tap.
    pub fn clear_tap(&mut self) {
        self.tap = None;
    }

    /// Starts recording every datagram handed to an endpoint.
    pub fn record_deliveries(&mut self) {
        self.log = Some(Vec::new());
    }

    /// Every datagram handed to an endpoint since recording started.
    pub fn deliveries(&self) -> &[Datagram] {
        self.log.as_deref().unwrap_or_default()
    }

    /// Puts a datagram on the link as if `from` had sent it (it goes through the link's
    /// impairments but not through the tap).
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.stats.sent += 1;
        self.schedule(Datagram { from, to, bytes });
    }

    /// Hands `bytes` to whichever endpoint owns `to`, at once, bypassing the link.
    pub fn deliver_now(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        if let Some((_, peer)) = self.peers.iter_mut().find(|(addr, _)| *addr == to) {
            peer.handle_datagram(now, from, bytes);
        }
    }

    fn schedule(&mut self, datagram: Datagram) {
        if datagram.bytes.len() > self.link.mtu {
            self.stats.too_big += 1;
            return;
        }
        if self.rng.chance(self.link.loss) {
            self.stats.lost += 1;
            return;
        }
        if self.rng.chance(self.link.duplicate) {
            self.stats.duplicated += 1;
            self.enqueue(datagram.clone());
        }
        self.enqueue(datagram);
    }

    fn enqueue(&mut self, datagram: Datagram) {
        let at = self.now + self.link.latency + self.rng.duration_up_to(self.link.jitter);
        self.order += 1;
        self.in_flight.push(Reverse(InFlight {
            at,
            order: self.order,
            from: datagram.from,
            to: datagram.to,
            bytes: datagram.bytes,
        }));
    }

    fn collect_transmits(&mut self) {
        for i in 0..2 {
            while let Some(transmit) = self.peers[i].1.poll_transmit() {
                self.stats.sent += 1;
                let mut datagram = Datagram { from: self.peers[i].0, to: transmit.to, bytes: transmit.bytes };
                if let Some(tap) = &mut self.tap
                    && tap(&mut datagram) == TapVerdict::Drop
                {
                    self.stats.tapped += 1;
                    continue;
                }
                self.schedule(datagram);
            }
        }
    }

    /// Runs until nothing is left to do before `deadline`, then sets the clock to it.
    pub fn run_until(&mut self, deadline: Instant) {
        loop {
            self.collect_transmits();
            let next_delivery = self.in_flight.peek().map(|Reverse(d)| d.at);
            let next_timeout = self.peers.iter().filter_map(|(_, p)| p.poll_timeout()).min();
            let next = match (next_delivery, next_timeout) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => break,
            };
            if next > deadline {
                break;
            }
            // A timeout in the past fires now; time never goes backwards.
            self.now = self.now.max(next);
            self.deliver_due();
            self.fire_timeouts();
        }
        self.now = self.now.max(deadline);
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    fn deliver_due(&mut self) {
        while self.in_flight.peek().is_some_and(|Reverse(d)| d.at <= self.now) {
            let Some(Reverse(d)) = self.in_flight.pop() else { break };
            let now = self.now;
            match self.peers.iter_mut().find(|(addr, _)| *addr == d.to) {
                Some((_, peer)) => {
                    self.stats.delivered += 1;
                    peer.handle_datagram(now, d.from, &d.bytes);
                    if let Some(log) = &mut self.log {
                        log.push(Datagram { from: d.from, to: d.to, bytes: d.bytes });
                    }
                }
                None => self.stats.unroutable += 1,
            }
        }
    }

    fn fire_timeouts(&mut self) {
        let now = self.now;
        for (_, peer) in &mut self.peers {
            if peer.poll_timeout().is_some_and(|t| t <= now) {
                peer.handle_timeout(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes every datagram back once and records what it got.
    #[derive(Default)]
    struct Echo {
        peer: Option<SocketAddr>,
        got: Vec<(Instant, Vec<u8>)>,
        out: Vec<Transmit>,
        reflect: bool,
    }

    impl Endpoint for Echo {
        fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
            self.got.push((now, datagram.to_vec()));
            if self.reflect {
                self.out.push(Transmit { to: from, bytes: datagram.to_vec() });
            }
        }
        fn poll_transmit(&mut self) -> Option<Transmit> {
            self.out.pop()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn handle_timeout(&mut self, _: Instant) {}
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn sim(link: LinkConfig, seed: u64) -> Simulator<Echo> {
        sim_with(link, seed, true)
    }

    fn sim_with(link: LinkConfig, seed: u64, reflect: bool) -> Simulator<Echo> {
        let a = Echo { peer: Some(addr(2)), ..Echo::default() };
        let b = Echo { reflect, ..Echo::default() };
        Simulator::new(Instant::now(), seed, link, (addr(1), a), (addr(2), b))
    }

    #[test]
    fn latency_is_applied_both_ways() {
        let mut s = sim(LinkConfig::default(), 1);
        let t0 = s.now();
        s.peer_mut(0).out.push(Transmit { to: addr(2), bytes: vec![1, 2, 3] });
        s.run_for(Duration::from_secs(1));
        assert_eq!(s.peer(1).got, vec![(t0 + Duration::from_millis(10), vec![1, 2, 3])]);
        assert_eq!(s.peer(0).got, vec![(t0 + Duration::from_millis(20), vec![1, 2, 3])]);
        assert_eq!(s.peer(0).peer, Some(addr(2)));
    }

    #[test]
    fn loss_duplication_and_mtu() {
        let link = LinkConfig { loss: 0.5, duplicate: 0.5, ..LinkConfig::default() };
        let mut s = sim_with(link, 7, false);
        for i in 0..1000u16 {
            s.inject(addr(1), addr(2), i.to_be_bytes().to_vec());
        }
        s.inject(addr(1), addr(2), vec![0; 1473]);
        s.run_for(Duration::from_secs(1));
        let st = s.stats();
        assert_eq!(st.too_big, 1);
        assert!((400..600).contains(&st.lost), "{st:?}");
        assert!((150..350).contains(&st.duplicated), "{st:?}");
        // Only datagrams that survived loss are duplicated.
        assert_eq!(s.peer(1).got.len() as u64, 1000 - st.lost + st.duplicated);
        assert_eq!(st.delivered, 1000 - st.lost + st.duplicated);
    }

    #[test]
    fn jitter_reorders_and_same_seed_replays() {
        let link = LinkConfig { jitter: Duration::from_millis(50), ..LinkConfig::default() };
        let run = |seed| {
            let mut s = sim(link.clone(), seed);
            for i in 0..100u8 {
                s.inject(addr(1), addr(2), vec![i]);
            }
            s.run_for(Duration::from_secs(1));
            s.peer(1).got.iter().map(|(_, b)| b[0]).collect::<Vec<_>>()
        };
        let first = run(3);
        assert_eq!(first.len(), 100);
        assert!(first.windows(2).any(|w| w[0] > w[1]), "jitter must reorder");
        assert_eq!(first, run(3));
        assert_ne!(first, run(4));
    }

    #[test]
    fn tap_can_drop_and_alter() {
        let mut s = sim(LinkConfig::default(), 1);
        s.set_tap(|d| {
            if d.bytes[0] == 0 {
                TapVerdict::Drop
            } else {
                d.bytes[0] ^= 0xff;
                TapVerdict::Pass
            }
        });
        s.peer_mut(0).out.push(Transmit { to: addr(2), bytes: vec![0] });
        s.peer_mut(0).out.push(Transmit { to: addr(2), bytes: vec![1] });
        s.run_for(Duration::from_secs(1));
        let got: Vec<_> = s.peer(1).got.iter().map(|(_, b)| b.clone()).collect();
        assert_eq!(got, vec![vec![0xfe]]);
        // The echo of 0xfe is altered back to 1 on its way to the first peer.
        assert_eq!(s.peer(0).got.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(), vec![vec![1]]);
        assert_eq!(s.stats().tapped, 1);
    }
}
