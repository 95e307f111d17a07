//! Peer unreachability detection after RFC 4861 §7.3 (RFC 2461's Neighbor Unreachability
//! Detection), and the NAT keepalive's settings.
//!
//! `Nud` is a sans-IO state machine: it takes `now` and randomness with every input, says
//! when it must run next (`Nud::poll_timeout`) and what to do (`NudAction`). The tunnel
//! seals the echo requests it asks for and tears the session down when it declares the
//! peer unreachable.
//!
//! # States
//!
//! - [`NudState::Incomplete`]: no session (RFC 4861's INCOMPLETE, with the handshake in the
//!   place of address resolution). Nothing to watch.
//! - [`NudState::Reachable`]: reachability was confirmed less than `ReachableTime` ago.
//!   `ReachableTime` is [`LivenessConfig::reachable_time`] times a uniform factor in
//!   [0.5, 1.5), drawn afresh on every entry into the state and whenever its timer is
//!   re-armed (RFC 4861 §6.3.2 asks for at least every few hours).
//! - [`NudState::Stale`]: that long passed without confirmation. Nothing is sent for it;
//!   the next packet sealed for the peer moves to `Delay`.
//! - [`NudState::Delay`]: a packet went out unconfirmed; traffic from the peer still has
//!   [`LivenessConfig::delay_first_probe_time`] to confirm before probing starts.
//! - [`NudState::Probe`]: an authenticated echo request every
//!   [`LivenessConfig::retrans_timer`], [`LivenessConfig::max_unicast_solicit`] of them,
//!   each with a fresh random 32-bit id.
//! - [`NudState::Unreachable`]: the last probe's timer ran out without confirmation. The
//!   tunnel erases its keys, goes down, and (if it knows where the peer is) initiates again.
//!
//! # What confirms reachability
//!
//! RFC 4861 wants proof of *forward progress*: that the neighbour received what was sent to
//! it, not merely that it sends. Here:
//!
//! - **an echo reply whose id matches a request of the current probe round**, or a
//!   path-MTU acknowledgement matching an outstanding probe: a round trip under the
//!   session's keys;
//! - **a session coming up or being renewed**: the handshake is itself a round trip;
//! - **any other authenticated, fresh packet from the peer** (data, keepalive, path-MTU
//!   probe), the equivalent of RFC 4861's upper-layer hints. It proves the peer is alive,
//!   holds the session and reaches us; it does not prove that our packets reach it. That
//!   direction is the peer's own detector's business: if our packets stop arriving the
//!   peer stops being confirmed, probes us, declares us unreachable, erases its keys and
//!   falls silent, and its silence then brings our side down one detection bound later.
//!   Accepting traffic as confirmation is what keeps a busy tunnel free of probes.
//!
//! Two authenticated messages do **not** confirm: an echo request (the peer probing us
//! says it is *unsure* of us, which is no evidence that our packets arrive), and an echo
//! reply whose id matches no request of the current round (a late or duplicated answer to
//! a finished round; replies are replay-protected, so it is genuine, but it belongs to an
//! exchange already decided).
//!
//! # How long detection takes
//!
//! Let `L` be when the last confirming packet arrived, `B` the configured reachable time,
//! `K` the keepalive interval (0 when keepalives are off), `D` the first-probe delay, `R`
//! the retransmission timer and `N` the number of probes. `Reachable` ends at `L + r·B`
//! with `r < 1.5`. Entering `Stale`, the detector moves to `Delay` at once if a packet was
//! sealed since `L` (it went out unconfirmed) or if keepalives are off (nothing would ever
//! leave `Stale` on an idle tunnel, yet the tunnel must always know whether its peer is
//! there). Otherwise the side has sealed nothing since `L`, so its next keepalive is due
//! at most `K` after its last packet, which was before `L`. `Delay` therefore begins by
//! `L + max(1.5·B, K)`, probing `D` later, and `Unreachable` follows the `N`-th probe's
//! timer, `N·R` after the first:
//!
//! ```text
//! detection ≤ L + max(1.5·B, K) + D + N·R
//!           = L + max(45 s, 25 s) + 5 s + 3·1 s = L + 53 s      with the defaults
//! ```
//!
//! and at least `L + 0.5·B + D + N·R` (23 s). When the whole path fails, `L` is at most
//! one one-way delay after the failure, and both sides are down within the bound. When only
//! one direction fails, the side whose packets are lost is declared unreachable by its peer
//! within the bound, and detects the silence that follows within one more: `2 × 53 s`.
//! [`LivenessConfig::detection_bound`] computes the bound from the settings.
//!
//! # NAT keepalive
//!
//! [`LivenessConfig::keepalive_interval`]: when nothing has been sealed for that long, the
//! tunnel seals a keepalive, so that a NAT or stateful firewall on the path never forgets
//! the flow (typical UDP binding timeouts are 30 s or more; 25 s stays below them).
//! Everything small that is sealed counts (data, echoes, acknowledgements); path-MTU probes
//! do not, since a probe larger than the path never reaches the NAT.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use yavipin_proto::Random;
use yavipin_proto::timer::{Timer, TimerTable};

/// Echo request ids remembered in one probe round: a reply to any of them confirms.
const OUTSTANDING: usize = 8;
/// Room for the state changes one input can cause, so recording them never allocates.
const TRANSITIONS: usize = 8;

/// Liveness tunables. The defaults are RFC 4861's constants and a 25 s keepalive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivenessConfig {
    /// `REACHABLE_TIME` (base): a confirmation is trusted for this long times a random
    /// factor in [0.5, 1.5).
    pub reachable_time: Duration,
    /// `RETRANS_TIMER`: time between echo requests, and after the last one.
    pub retrans_timer: Duration,
    /// `DELAY_FIRST_PROBE_TIME`: how long traffic may still confirm before probing starts.
    pub delay_first_probe_time: Duration,
    /// `MAX_UNICAST_SOLICIT`: echo requests sent before the peer is declared unreachable (at
    /// least 1).
    pub max_unicast_solicit: u32,
    /// NAT keepalive: seal a keepalive after this long without sealing anything. `None` or
    /// zero: no keepalives.
    pub keepalive_interval: Option<Duration>,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            reachable_time: Duration::from_secs(30),
            retrans_timer: Duration::from_secs(1),
            delay_first_probe_time: Duration::from_secs(5),
            max_unicast_solicit: 3,
            keepalive_interval: Some(Duration::from_secs(25)),
        }
    }
}

impl LivenessConfig {
    /// The keepalive interval, if keepalives are on.
    pub fn keepalive(&self) -> Option<Duration> {
        self.keepalive_interval.filter(|interval| !interval.is_zero())
    }

    /// Echo requests per probe round.
    pub fn probes(&self) -> u32 {
        self.max_unicast_solicit.max(1)
    }

    /// The longest a confirmation is trusted: 1.5 × [`Self::reachable_time`].
    pub fn max_reachable_time(&self) -> Duration {
        self.reachable_time * 3 / 2
    }

    /// The longest the peer can be gone before it is declared unreachable, counted from the
    /// last confirming packet (53 s with the defaults; see the module documentation):
    ///
    /// ```text
    /// max(1.5 · REACHABLE_TIME, keepalive) + DELAY_FIRST_PROBE_TIME + MAX_UNICAST_SOLICIT · RETRANS_TIMER
    /// ```
    pub fn detection_bound(&self) -> Duration {
        self.max_reachable_time().max(self.keepalive().unwrap_or(Duration::ZERO))
            + self.delay_first_probe_time
            + self.retrans_timer * self.probes()
    }

    /// The shortest time to detection after the last confirming packet (23 s with the
    /// defaults): `0.5 · REACHABLE_TIME + DELAY_FIRST_PROBE_TIME + MAX_UNICAST_SOLICIT · RETRANS_TIMER`.
    pub fn detection_minimum(&self) -> Duration {
        self.reachable_time / 2 + self.delay_first_probe_time + self.retrans_timer * self.probes()
    }
}

pub use yavipin_ipc::reasons::NudState;

/// What the detector wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NudAction {
    /// Seal and send an echo request with this id.
    Probe(u32),
    /// The peer is unreachable: tear the session down.
    Unreachable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NudTimer {
    /// `Reachable` runs out (re-armed lazily from the last confirmation).
    ReachableExpiry,
    /// `Delay` ends: the first probe.
    FirstProbe,
    /// The next probe, or the verdict after the last.
    Retransmit,
}

impl Timer for NudTimer {
    const ALL: &'static [Self] = &[Self::ReachableExpiry, Self::FirstProbe, Self::Retransmit];
    fn index(self) -> usize {
        self as usize
    }
}

/// `base × (0.5 + u)`, `u` uniform in [0, 1) from 32 random bits.
fn randomized(base: Duration, rng: &mut impl Random) -> Duration {
    let nanos = base.as_nanos();
    let scaled = nanos / 2 + ((nanos * u128::from(rng.next_u32())) >> 32);
    Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX))
}

/// The unreachability detector. See the module documentation.
#[derive(Debug)]
pub(crate) struct Nud {
    config: LivenessConfig,
    state: NudState,
    /// When reachability was last confirmed.
    last_confirmed: Option<Instant>,
    /// The confirmation the reachable timer was armed from.
    armed_from: Instant,
    /// A packet was sealed after the last confirmation.
    sealed_unconfirmed: bool,
    /// Echo requests sent in the current probe round.
    probes: u32,
    /// Their ids, newest last (a ring).
    outstanding: [Option<u32>; OUTSTANDING],
    next_slot: usize,
    timers: TimerTable<NudTimer, 3>,
    /// State changes not yet taken by the owner.
    transitions: VecDeque<NudState>,
}

impl Nud {
    /// A detector with no session to watch.
    pub(crate) fn new(now: Instant, config: LivenessConfig) -> Self {
        Self {
            config,
            state: NudState::Incomplete,
            last_confirmed: None,
            armed_from: now,
            sealed_unconfirmed: false,
            probes: 0,
            outstanding: [None; OUTSTANDING],
            next_slot: 0,
            timers: TimerTable::default(),
            transitions: VecDeque::with_capacity(TRANSITIONS),
        }
    }

    pub(crate) fn state(&self) -> NudState {
        self.state
    }

    pub(crate) fn last_confirmed(&self) -> Option<Instant> {
        self.last_confirmed
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// The next state change since the last call, oldest first.
    pub(crate) fn poll_transition(&mut self) -> Option<NudState> {
        self.transitions.pop_front()
    }

    fn enter(&mut self, state: NudState) {
        if self.state != state {
            self.state = state;
            if self.transitions.len() == TRANSITIONS {
                // The owner drains after every input; only a runaway loop gets here, and
                // the current state stays readable through `state()`.
                self.transitions.pop_front();
            }
            self.transitions.push_back(state);
        }
    }

    /// A session came up: its handshake was a round trip.
    pub(crate) fn start(&mut self, now: Instant, rng: &mut impl Random) {
        self.enter_reachable(now, rng);
    }

    /// The session is gone (`Unreachable` after a detection, `Incomplete` otherwise).
    pub(crate) fn stop(&mut self, state: NudState) {
        for timer in NudTimer::ALL {
            self.timers.stop(*timer);
        }
        self.clear_probes();
        self.sealed_unconfirmed = false;
        self.enter(state);
    }

    /// Evidence that the peer is reachable (see the module documentation for what counts).
    /// Called per packet: in `Reachable` it only notes the time.
    pub(crate) fn confirm(&mut self, now: Instant, rng: &mut impl Random) {
        match self.state {
            NudState::Incomplete | NudState::Unreachable => {}
            NudState::Reachable => {
                self.last_confirmed = Some(now);
                self.sealed_unconfirmed = false;
            }
            NudState::Stale | NudState::Delay | NudState::Probe => self.enter_reachable(now, rng),
        }
    }

    /// A packet was sealed for the peer. Called per packet.
    pub(crate) fn sealed(&mut self, now: Instant) {
        self.sealed_unconfirmed = true;
        if self.state == NudState::Stale {
            self.enter_delay(now);
        }
    }

    /// An echo reply arrived: true if it answers a request of the current round (and so
    /// confirmed reachability).
    pub(crate) fn echo_reply(&mut self, now: Instant, id: u32, rng: &mut impl Random) -> bool {
        let matched = self.outstanding.contains(&Some(id));
        if matched {
            self.confirm(now, rng);
        }
        matched
    }

    /// Runs the timers due at `now` until one asks for something; call again until `None`.
    pub(crate) fn handle_timeout(&mut self, now: Instant, rng: &mut impl Random) -> Option<NudAction> {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                NudTimer::ReachableExpiry if self.state == NudState::Reachable => {
                    // Confirmed again since the timer was armed: a fresh reachable time
                    // from that confirmation (drawn anew, as RFC 4861 §6.3.2 asks).
                    if let Some(confirmed) = self.last_confirmed.filter(|&at| at > self.armed_from) {
                        let until = confirmed + randomized(self.config.reachable_time, rng);
                        self.armed_from = confirmed;
                        if until > now {
                            self.timers.set(NudTimer::ReachableExpiry, until);
                            continue;
                        }
                    }
                    self.enter(NudState::Stale);
                    if self.sealed_unconfirmed || self.config.keepalive().is_none() {
                        self.enter_delay(now);
                    }
                }
                NudTimer::FirstProbe if self.state == NudState::Delay => {
                    self.enter(NudState::Probe);
                    self.clear_probes();
                    return Some(self.probe(now, rng));
                }
                NudTimer::Retransmit if self.state == NudState::Probe => {
                    if self.probes < self.config.probes() {
                        return Some(self.probe(now, rng));
                    }
                    self.stop(NudState::Unreachable);
                    return Some(NudAction::Unreachable);
                }
                // A timer of a state already left.
                NudTimer::ReachableExpiry | NudTimer::FirstProbe | NudTimer::Retransmit => {}
            }
        }
        None
    }

    fn enter_reachable(&mut self, now: Instant, rng: &mut impl Random) {
        self.timers.stop(NudTimer::FirstProbe);
        self.timers.stop(NudTimer::Retransmit);
        self.clear_probes();
        self.last_confirmed = Some(now);
        self.armed_from = now;
        self.sealed_unconfirmed = false;
        self.timers.set(NudTimer::ReachableExpiry, now + randomized(self.config.reachable_time, rng));
        self.enter(NudState::Reachable);
    }

    fn enter_delay(&mut self, now: Instant) {
        self.timers.set(NudTimer::FirstProbe, now + self.config.delay_first_probe_time);
        self.enter(NudState::Delay);
    }

    fn probe(&mut self, now: Instant, rng: &mut impl Random) -> NudAction {
        let id = rng.next_u32();
        self.outstanding[self.next_slot] = Some(id);
        self.next_slot = (self.next_slot + 1) % OUTSTANDING;
        self.probes += 1;
        self.timers.set(NudTimer::Retransmit, now + self.config.retrans_timer);
        NudAction::Probe(id)
    }

    fn clear_probes(&mut self) {
        self.probes = 0;
        self.outstanding = [None; OUTSTANDING];
        self.next_slot = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_random::Counter;

    /// Randomness that always yields the same 32-bit value.
    struct Fixed(u32);
    impl Random for Fixed {
        fn fill(&mut self, buf: &mut [u8]) {
            for (i, byte) in buf.iter_mut().enumerate() {
                *byte = self.0.to_be_bytes()[i % 4];
            }
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Runs `nud` until `until`, collecting every action with its time.
    fn run(nud: &mut Nud, from: Instant, until: Instant, rng: &mut impl Random) -> Vec<(Duration, NudAction)> {
        let mut actions = Vec::new();
        while let Some(at) = nud.poll_timeout().filter(|&at| at <= until) {
            while let Some(action) = nud.handle_timeout(at, rng) {
                actions.push((at - from, action));
            }
        }
        actions
    }

    fn transitions(nud: &mut Nud) -> Vec<NudState> {
        std::iter::from_fn(|| nud.poll_transition()).collect()
    }

    #[test]
    fn defaults_give_the_53_second_bound() {
        let config = LivenessConfig::default();
        assert_eq!(config.detection_bound(), secs(53));
        assert_eq!(config.detection_minimum(), secs(23));
        let off = LivenessConfig { keepalive_interval: None, ..LivenessConfig::default() };
        assert_eq!(off.detection_bound(), secs(53));
        let slow = LivenessConfig { keepalive_interval: Some(secs(60)), ..LivenessConfig::default() };
        assert_eq!(slow.detection_bound(), secs(68), "a keepalive slower than 1.5·B stretches the bound");
    }

    #[test]
    fn reachable_time_is_randomized_within_half_to_one_and_a_half() {
        let base = secs(30);
        assert_eq!(randomized(base, &mut Fixed(0)), secs(15));
        assert!(randomized(base, &mut Fixed(u32::MAX)) < secs(45));
        assert!(randomized(base, &mut Fixed(u32::MAX)) > secs(45).saturating_sub(Duration::from_micros(1)));
        let mut rng = Counter(1);
        let draws: Vec<_> = (0..1000).map(|_| randomized(base, &mut rng)).collect();
        assert!(draws.iter().all(|d| (secs(15)..secs(45)).contains(d)));
        assert!(draws.iter().any(|d| *d < secs(20)) && draws.iter().any(|d| *d > secs(40)));
    }

    #[test]
    fn silence_goes_through_every_state_to_unreachable_within_the_bound() {
        for seed in 0..50 {
            let t0 = Instant::now();
            let mut rng = Counter(seed);
            let config = LivenessConfig::default();
            let mut nud = Nud::new(t0, config.clone());
            nud.start(t0, &mut rng);
            // Sends something right after the last confirmation, then hears nothing.
            nud.sealed(t0);
            let actions = run(&mut nud, t0, t0 + secs(120), &mut rng);
            assert_eq!(
                transitions(&mut nud),
                [NudState::Reachable, NudState::Stale, NudState::Delay, NudState::Probe, NudState::Unreachable]
            );
            let probes: Vec<_> = actions.iter().filter(|(_, a)| matches!(a, NudAction::Probe(_))).collect();
            assert_eq!(probes.len(), 3);
            assert_eq!(probes[1].0.saturating_sub(probes[0].0), secs(1));
            let (at, last) = actions.last().copied().expect("a verdict");
            assert_eq!(last, NudAction::Unreachable);
            assert_eq!(at.saturating_sub(probes[0].0), secs(3));
            assert!(at >= config.detection_minimum() && at <= config.detection_bound(), "seed {seed}: {at:?}");
        }
    }

    #[test]
    fn stale_waits_for_a_packet_when_keepalives_are_on() {
        let t0 = Instant::now();
        let mut rng = Fixed(0);
        let mut nud = Nud::new(t0, LivenessConfig::default());
        nud.start(t0, &mut rng);
        assert!(run(&mut nud, t0, t0 + secs(100), &mut rng).is_empty());
        assert_eq!(nud.state(), NudState::Stale);
        nud.sealed(t0 + secs(100));
        assert_eq!(nud.state(), NudState::Delay);
        // Traffic from the peer during the delay: no probe.
        nud.confirm(t0 + secs(102), &mut rng);
        assert_eq!(nud.state(), NudState::Reachable);
        assert_eq!(transitions(&mut nud), [NudState::Reachable, NudState::Stale, NudState::Delay, NudState::Reachable]);
    }

    #[test]
    fn confirmations_keep_reachable_and_replies_must_match() {
        let t0 = Instant::now();
        let mut rng = Counter(3);
        let mut nud = Nud::new(t0, LivenessConfig::default());
        nud.start(t0, &mut rng);
        // Confirmed every 10 s for ten minutes: never leaves Reachable.
        for i in 1..=60 {
            let now = t0 + secs(10 * i);
            assert!(run(&mut nud, t0, now, &mut rng).is_empty());
            nud.sealed(now);
            nud.confirm(now, &mut rng);
        }
        assert_eq!(transitions(&mut nud), [NudState::Reachable]);

        // Something sent, then silence until the first probe.
        let start = t0 + secs(600);
        nud.sealed(start);
        let mut until = start;
        let id = loop {
            assert!(until < start + secs(60), "no probe");
            until += secs(1);
            if let Some((_, NudAction::Probe(id))) = run(&mut nud, t0, until, &mut rng).first() {
                break *id;
            }
        };
        assert_eq!(nud.state(), NudState::Probe);
        assert!(!nud.echo_reply(until, id.wrapping_add(1), &mut rng), "a wrong id does not confirm");
        assert_eq!(nud.state(), NudState::Probe);
        assert!(nud.echo_reply(until, id, &mut rng));
        assert_eq!(nud.state(), NudState::Reachable);
        assert!(!nud.echo_reply(until, id, &mut rng), "the round is over");
    }

    #[test]
    fn without_keepalives_stale_moves_on_at_once() {
        let t0 = Instant::now();
        let mut rng = Fixed(0);
        let config = LivenessConfig { keepalive_interval: None, ..LivenessConfig::default() };
        let mut nud = Nud::new(t0, config);
        nud.start(t0, &mut rng);
        let actions = run(&mut nud, t0, t0 + secs(60), &mut rng);
        // Reachable time 15 s (factor 0.5), delay 5 s, three probes 1 s apart.
        assert_eq!(actions.first().map(|(at, _)| *at), Some(secs(20)));
        assert_eq!(actions.last(), Some(&(secs(23), NudAction::Unreachable)));
    }

    #[test]
    fn stopping_clears_everything() {
        let t0 = Instant::now();
        let mut rng = Fixed(0);
        let mut nud = Nud::new(t0, LivenessConfig::default());
        nud.start(t0, &mut rng);
        nud.stop(NudState::Incomplete);
        assert_eq!(nud.poll_timeout(), None);
        nud.confirm(t0, &mut rng);
        nud.sealed(t0);
        assert_eq!(nud.state(), NudState::Incomplete);
    }
}
