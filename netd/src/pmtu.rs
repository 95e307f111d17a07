//! Path-MTU discovery in the style of RFC 8899 (datagram packetization-layer PMTUD), with
//! authenticated probes inside the tunnel and no trust in ICMP.
//!
//! `Pmtu` is a sans-IO state machine. It decides which datagram size to test; the tunnel
//! seals a path-MTU probe (control message `0x05`) padded so that the sealed datagram is
//! exactly that size, and the peer answers with a small acknowledgement (`0x06`) naming
//! the probe's id and the size it arrived with. Only an acknowledgement, which is
//! authenticated, encrypted and replay-protected like everything in the tunnel, ever
//! raises the estimate. Forged ICMP "packet too big" messages, the attack that forced
//! ESP tunnels down to 68 bytes, have nothing to act on.
//!
//! # Sizes
//!
//! Sizes are path MTUs: whole IP packets, IP header (20 bytes for an IPv4 peer, 40 for
//! IPv6) and UDP header (8) included. A probe for size `s` is a UDP payload of
//! `s − 28` (or `s − 48`) bytes. The tunnel's inner MTU, for the tun device, is the path
//! MTU minus those headers minus the data packet's 17 bytes.
//!
//! - **Base** ([`PmtuConfig::base_mtu`], 1280): what the tunnel assumes when it comes up,
//!   and probes first. 1280 is IPv6's minimum link MTU, and far above the 576 bytes every
//!   IPv4 host must accept, which in practice every IPv4 path carries.
//! - **Floor**: used only when even the base fails (RFC 8899's ERROR state): 576 for IPv4
//!   (RFC 791/1122), 1280 for IPv6 (RFC 8200).
//! - **Maximum**: [`PmtuConfig::max_mtu`], never above the largest probe the data plane
//!   can seal (its maximum inner size plus 17) plus the headers.
//!
//! # Search
//!
//! 1. `Base`: probe the base. Acknowledged: search. Lost `max_probes` times: `Error`.
//! 2. `Searching`: between the largest size confirmed (`lo`) and the smallest known to
//!    fail (`hi`): first the maximum itself (most paths carry all of it), then binary
//!    search, to the byte. Every acknowledged size becomes the path MTU at once; the next
//!    probe goes out immediately.
//! 3. `SearchComplete`: a confirmation probe at the current size every
//!    [`PmtuConfig::confirm_interval`] (black-hole detection), and a new search upwards
//!    every [`PmtuConfig::raise_interval`] if below the maximum (RFC 8899's
//!    `PMTU_RAISE_TIMER`, 600 s), so that a path that grew is found again.
//! 4. `Error`: the base itself does not get through. The floor is used and the base
//!    probed again every confirm interval.
//!
//! # Loss is not shrinkage
//!
//! A size fails only after [`PmtuConfig::max_probes`] probes of it (RFC 8899's `MAX_PROBES`,
//! 3) went unacknowledged for [`PmtuConfig::probe_timer`] each, and each of those losses
//! counts only if something authenticated arrived from the peer after the probe was sent:
//! small packets got through while the large one did not. If nothing arrives at all, the
//! outcome waits (the whole path is down, which is the unreachability detector's business,
//! not a reason to shrink).
//!
//! A size that black-holes after it was confirmed (confirmation probes lost `max_probes`
//! times) sends the search back to the base, with the failed size as the upper end. The
//! local stack's refusal (`EMSGSIZE`, reported by the shell through
//! [`crate::tunnel::Tunnel::handle_send_error_too_big`]) is trusted at once: it comes from this host's own interface, not
//! from the network (the shell must ask for `IP_PMTUDISC_PROBE` so that the kernel's
//! ICMP-fed route cache never produces it).

use std::time::{Duration, Instant};

use yavipin_proto::Random;
use yavipin_proto::timer::{Timer, TimerTable};

/// IPv4 and UDP header bytes.
pub const IPV4_OVERHEAD: u16 = 20 + 8;
/// IPv6 and UDP header bytes.
pub const IPV6_OVERHEAD: u16 = 40 + 8;
/// The smallest MTU an IPv4 path may have that a tunnel can still use: every IPv4 host
/// accepts 576-byte datagrams (RFC 791, RFC 1122 §3.3.3).
pub const IPV4_MIN_MTU: u16 = 576;
/// IPv6's minimum link MTU (RFC 8200 §5).
pub const IPV6_MIN_MTU: u16 = 1280;
/// Probe ids remembered per size tested: an acknowledgement of any of them confirms it.
const IDS: usize = 4;

/// Path-MTU discovery tunables. The defaults follow RFC 8899 §5.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmtuConfig {
    /// Probe at all. Without discovery the tunnel assumes the maximum.
    pub enabled: bool,
    /// `BASE_PLPMTU`: assumed when the tunnel comes up, probed first.
    pub base_mtu: u16,
    /// Largest path MTU to look for. `None`: the largest datagram the data plane can seal,
    /// plus the headers.
    pub max_mtu: Option<u16>,
    /// `PROBE_TIMER`: how long an acknowledgement may take.
    pub probe_timer: Duration,
    /// `MAX_PROBES`: losses of one size before it counts as too large.
    pub max_probes: u32,
    /// Time between confirmation probes of the size in use (black-hole detection).
    pub confirm_interval: Duration,
    /// `PMTU_RAISE_TIMER`: time between searches for a larger path MTU.
    pub raise_interval: Duration,
}

impl Default for PmtuConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            base_mtu: 1280,
            max_mtu: None,
            probe_timer: Duration::from_secs(15),
            max_probes: 3,
            confirm_interval: Duration::from_secs(60),
            raise_interval: Duration::from_secs(600),
        }
    }
}

/// Where discovery stands (RFC 8899 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PmtuState {
    /// No session, or discovery switched off.
    Disabled,
    /// Confirming the base.
    Base,
    /// Looking for the largest size that gets through.
    Searching,
    /// Found; confirmed periodically.
    SearchComplete,
    /// Even the base does not get through: the family's floor is in use.
    Error,
}

impl PmtuState {
    /// Stable name for logs and status output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Base => "base",
            Self::Searching => "searching",
            Self::SearchComplete => "search-complete",
            Self::Error => "error",
        }
    }
}

/// A probe to seal and send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeRequest {
    /// Its id.
    pub(crate) id: u32,
    /// The sealed datagram's exact length (UDP payload).
    pub(crate) len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PmtuTimer {
    /// The probe in flight had its time.
    Probe,
    /// Time to confirm the size in use (or, in `Error`, to try the base again).
    Confirm,
    /// Time to search upwards.
    Raise,
}

impl Timer for PmtuTimer {
    const ALL: &'static [Self] = &[Self::Probe, Self::Confirm, Self::Raise];
    fn index(self) -> usize {
        self as usize
    }
}

/// One size under test.
#[derive(Debug, Clone, Copy)]
struct Test {
    size: u16,
    /// Ids of its probes, newest last (a ring).
    ids: [Option<u32>; IDS],
    sent: usize,
    losses: u32,
    /// When the latest probe went out.
    sent_at: Option<Instant>,
    /// Its timer ran out before anything arrived from the peer: the loss is decided by the
    /// next packet that does.
    awaiting_evidence: bool,
}

/// The path-MTU discovery of one tunnel. See the module documentation.
#[derive(Debug)]
pub(crate) struct Pmtu {
    config: PmtuConfig,
    /// Largest datagram the data plane seals (a probe's UDP payload at most).
    max_datagram: u16,
    /// Bytes every datagram adds inside the UDP payload (17).
    data_overhead: u16,
    state: PmtuState,
    /// IP and UDP header bytes towards the peer.
    overhead: u16,
    floor: u16,
    base: u16,
    max: u16,
    /// The path MTU in use; `None` without a session.
    current: Option<u16>,
    lo: u16,
    hi: u16,
    test: Option<Test>,
    /// A probe is to be sent.
    pending: bool,
    last_heard: Option<Instant>,
    timers: TimerTable<PmtuTimer, 3>,
}

impl Pmtu {
    /// Discovery for datagrams of at most `max_datagram` bytes, each carrying
    /// `data_overhead` bytes of header and tag.
    pub(crate) fn new(config: PmtuConfig, max_datagram: usize, data_overhead: usize) -> Self {
        Self {
            config,
            max_datagram: u16::try_from(max_datagram).unwrap_or(u16::MAX),
            data_overhead: u16::try_from(data_overhead).unwrap_or(u16::MAX),
            state: PmtuState::Disabled,
            overhead: IPV4_OVERHEAD,
            floor: IPV4_MIN_MTU,
            base: IPV4_MIN_MTU,
            max: IPV4_MIN_MTU,
            current: None,
            lo: 0,
            hi: 0,
            test: None,
            pending: false,
            last_heard: None,
            timers: TimerTable::default(),
        }
    }

    pub(crate) fn state(&self) -> PmtuState {
        self.state
    }

    /// The path MTU in use, while a session is up.
    pub(crate) fn path_mtu(&self) -> Option<u16> {
        self.current
    }

    /// The inner MTU that follows from it: what the tun device can take.
    pub(crate) fn inner_mtu(&self) -> Option<u16> {
        self.current.map(|mtu| mtu.saturating_sub(self.overhead + self.data_overhead))
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    fn set_path(&mut self, overhead: u16) {
        self.overhead = overhead;
        self.floor = if overhead == IPV4_OVERHEAD { IPV4_MIN_MTU } else { IPV6_MIN_MTU };
        let sealable = self.max_datagram.saturating_add(overhead);
        self.max = self.config.max_mtu.map_or(sealable, |max| max.min(sealable));
        self.base = self.config.base_mtu.min(self.max);
        self.floor = self.floor.min(self.base);
    }

    /// A session came up towards a peer whose datagrams carry `overhead` bytes of IP and
    /// UDP header.
    pub(crate) fn start(&mut self, overhead: u16) {
        self.stop();
        self.set_path(overhead);
        if self.config.enabled {
            self.current = Some(self.base);
            self.state = PmtuState::Base;
            self.lo = self.base;
            self.hi = self.max.saturating_add(1);
            self.begin_test(self.base);
        } else {
            self.current = Some(self.max);
        }
    }

    /// The session is gone.
    pub(crate) fn stop(&mut self) {
        for timer in PmtuTimer::ALL {
            self.timers.stop(*timer);
        }
        self.state = PmtuState::Disabled;
        self.current = None;
        self.test = None;
        self.pending = false;
        self.last_heard = None;
    }

    /// The peer's endpoint changed: a new path, perhaps of another address family. The
    /// size in use is confirmed at once.
    pub(crate) fn path_changed(&mut self, now: Instant, overhead: u16) {
        if self.current.is_none() {
            return;
        }
        self.set_path(overhead);
        if !self.config.enabled {
            self.current = Some(self.max);
            return;
        }
        if self.current.is_some_and(|mtu| mtu > self.max) {
            self.current = Some(self.max);
        }
        self.lo = self.lo.min(self.max);
        self.hi = self.hi.min(self.max.saturating_add(1));
        if self.state == PmtuState::SearchComplete && self.test.is_none() {
            self.timers.set(PmtuTimer::Confirm, now);
        }
    }

    /// Something authenticated arrived from the peer: evidence that small packets get
    /// through. Called per packet.
    pub(crate) fn heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
        if self.test.is_some_and(|t| t.awaiting_evidence) {
            self.lost(now);
        }
    }

    /// A path-MTU acknowledgement: true if it confirmed the size under test.
    pub(crate) fn on_ack(&mut self, now: Instant, id: u32, datagram_len: u16) -> bool {
        let Some(test) = self.test else { return false };
        if !test.ids.contains(&Some(id)) || datagram_len.saturating_add(self.overhead) != test.size {
            return false;
        }
        self.test = None;
        self.timers.stop(PmtuTimer::Probe);
        self.succeeded(now, test.size);
        true
    }

    /// The local stack refused to send a datagram of `datagram_len` bytes as too large
    /// (`EMSGSIZE`).
    pub(crate) fn too_big(&mut self, now: Instant, datagram_len: usize) {
        let Some(current) = self.current else { return };
        if !self.config.enabled {
            return;
        }
        let size = u16::try_from(datagram_len).unwrap_or(u16::MAX).saturating_add(self.overhead);
        if let Some(test) = self.test.filter(|t| t.size == size) {
            self.test = None;
            self.timers.stop(PmtuTimer::Probe);
            self.failed(now, test.size);
            return;
        }
        if size > current {
            // Larger than what is in use: only keep the search below it.
            self.hi = self.hi.min(size);
            return;
        }
        // What is in use does not even leave this host.
        self.test = None;
        self.timers.stop(PmtuTimer::Probe);
        self.timers.stop(PmtuTimer::Raise);
        self.hi = size;
        if self.base < size {
            self.current = Some(self.base);
            self.state = PmtuState::Base;
            self.lo = self.base;
            self.begin_test(self.base);
        } else {
            self.enter_error(now, size);
        }
    }

    /// Runs the timers due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                PmtuTimer::Probe => {
                    let Some(test) = &mut self.test else { continue };
                    if self.last_heard.is_some_and(|heard| test.sent_at.is_some_and(|sent| heard > sent)) {
                        self.lost(now);
                    } else {
                        test.awaiting_evidence = true;
                    }
                }
                PmtuTimer::Confirm => match self.state {
                    PmtuState::SearchComplete if self.test.is_none() => {
                        let size = self.current.unwrap_or(self.base);
                        self.begin_test(size);
                    }
                    PmtuState::Error if self.test.is_none() => self.begin_test(self.base),
                    _ => {}
                },
                PmtuTimer::Raise => match self.state {
                    PmtuState::SearchComplete if self.test.is_none() => {
                        self.state = PmtuState::Searching;
                        self.lo = self.current.unwrap_or(self.base);
                        self.hi = self.max.saturating_add(1);
                        self.timers.stop(PmtuTimer::Confirm);
                        self.next_search(now);
                    }
                    // A confirmation is under way: look again after it.
                    PmtuState::SearchComplete => {
                        let retry = self.config.probe_timer * self.config.max_probes.max(1);
                        self.timers.set(PmtuTimer::Raise, now + retry);
                    }
                    _ => {}
                },
            }
        }
    }

    /// The probe to send now, if any, with a fresh id.
    pub(crate) fn poll_probe(&mut self, now: Instant, rng: &mut impl Random) -> Option<ProbeRequest> {
        if !self.pending {
            return None;
        }
        self.pending = false;
        let test = self.test.as_mut()?;
        let id = rng.next_u32();
        test.ids[test.sent % IDS] = Some(id);
        test.sent += 1;
        test.sent_at = Some(now);
        test.awaiting_evidence = false;
        let len = test.size.saturating_sub(self.overhead);
        self.timers.set(PmtuTimer::Probe, now + self.config.probe_timer);
        Some(ProbeRequest { id, len: usize::from(len) })
    }

    fn begin_test(&mut self, size: u16) {
        self.test = Some(Test { size, ids: [None; IDS], sent: 0, losses: 0, sent_at: None, awaiting_evidence: false });
        self.pending = true;
    }

    fn lost(&mut self, now: Instant) {
        let Some(test) = &mut self.test else { return };
        test.awaiting_evidence = false;
        test.losses += 1;
        if test.losses >= self.config.max_probes.max(1) {
            let size = test.size;
            self.test = None;
            self.timers.stop(PmtuTimer::Probe);
            self.failed(now, size);
        } else {
            self.pending = true;
        }
    }

    fn succeeded(&mut self, now: Instant, size: u16) {
        match self.state {
            PmtuState::Base | PmtuState::Error => {
                if self.state == PmtuState::Error {
                    // Whatever failed before, the path carries the base again: all of the
                    // range is open.
                    self.hi = self.max.saturating_add(1);
                }
                self.current = Some(size);
                self.state = PmtuState::Searching;
                self.lo = size;
                self.next_search(now);
            }
            PmtuState::Searching => {
                self.lo = self.lo.max(size);
                self.current = Some(self.lo);
                self.next_search(now);
            }
            PmtuState::SearchComplete => self.timers.set(PmtuTimer::Confirm, now + self.config.confirm_interval),
            PmtuState::Disabled => {}
        }
    }

    fn failed(&mut self, now: Instant, size: u16) {
        match self.state {
            PmtuState::Base | PmtuState::Error => self.enter_error(now, size),
            PmtuState::Searching => {
                self.hi = self.hi.min(size);
                self.next_search(now);
            }
            PmtuState::SearchComplete => {
                // A black hole at a size that used to pass: back to the base, and search
                // again below the failed size.
                self.timers.stop(PmtuTimer::Raise);
                self.timers.stop(PmtuTimer::Confirm);
                self.hi = size;
                self.lo = self.base;
                self.current = Some(self.base);
                self.state = PmtuState::Base;
                self.begin_test(self.base);
            }
            PmtuState::Disabled => {}
        }
    }

    fn enter_error(&mut self, now: Instant, failed: u16) {
        self.state = PmtuState::Error;
        self.hi = self.hi.min(failed);
        self.current = Some(self.floor);
        self.timers.set(PmtuTimer::Confirm, now + self.config.confirm_interval);
    }

    fn next_search(&mut self, now: Instant) {
        if self.hi <= self.lo.saturating_add(1) {
            self.state = PmtuState::SearchComplete;
            self.timers.set(PmtuTimer::Confirm, now + self.config.confirm_interval);
            if self.lo < self.max {
                self.timers.set(PmtuTimer::Raise, now + self.config.raise_interval);
            } else {
                self.timers.stop(PmtuTimer::Raise);
            }
            return;
        }
        let size = if self.hi > self.max { self.max } else { self.lo + (self.hi - self.lo) / 2 };
        self.begin_test(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_random::Counter;

    /// Default discovery for a data plane of 1500-byte inner packets.
    fn pmtu() -> Pmtu {
        Pmtu::new(PmtuConfig::default(), 1500 + 17, 17)
    }

    /// A path that carries datagrams (UDP payloads) up to `path` bytes and answers at
    /// once, with small packets arriving in between. Runs until `until`; returns the
    /// sizes probed, in order.
    fn drive(p: &mut Pmtu, t: &mut Instant, until: Instant, path: usize, rng: &mut Counter) -> Vec<usize> {
        let mut probed = Vec::new();
        loop {
            while let Some(probe) = p.poll_probe(*t, rng) {
                probed.push(probe.len);
                if probe.len <= path {
                    let acked = p.on_ack(*t, probe.id, u16::try_from(probe.len).expect("small"));
                    assert!(acked);
                }
            }
            let Some(next) = p.poll_timeout().filter(|&at| at <= until) else { break };
            // Small packets from the peer keep arriving.
            *t = next;
            p.heard(t.checked_sub(Duration::from_millis(1)).unwrap_or(*t));
            p.handle_timeout(*t);
        }
        *t = until;
        probed
    }

    #[test]
    fn finds_the_path_mtu_to_the_byte_and_only_after_three_losses() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut rng = Counter(1);
        let mut p = pmtu();
        p.start(IPV4_OVERHEAD);
        assert_eq!((p.path_mtu(), p.inner_mtu()), (Some(1280), Some(1280 - 28 - 17)));
        assert_eq!(p.state(), PmtuState::Base);
        let probed = drive(&mut p, &mut t, t0 + Duration::from_secs(3600), 1280, &mut rng);
        assert_eq!(p.state(), PmtuState::SearchComplete);
        assert_eq!(p.path_mtu(), Some(1280 + 28));
        assert_eq!(p.inner_mtu(), Some(1280 - 17));
        // Base first, then the maximum (1517-byte datagrams), three times.
        assert_eq!(probed[..4], [1252, 1517, 1517, 1517]);
        // Every size that failed was tried exactly three times.
        for size in probed.iter().filter(|&&s| s > 1280) {
            assert_eq!(probed.iter().filter(|&&s| s == *size).count() % 3, 0, "{size}");
        }
    }

    #[test]
    fn a_path_at_the_maximum_takes_one_probe() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut rng = Counter(2);
        let mut p = pmtu();
        p.start(IPV6_OVERHEAD);
        let probed = drive(&mut p, &mut t, t0 + Duration::from_secs(1), 9000, &mut rng);
        assert_eq!(probed, [1280 - 48, 1517]);
        assert_eq!(p.path_mtu(), Some(1517 + 48));
        assert_eq!(p.inner_mtu(), Some(1500));
        assert_eq!(p.state(), PmtuState::SearchComplete);
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(60)), "confirmation only: nothing to raise");
    }

    #[test]
    fn no_evidence_no_verdict() {
        let t0 = Instant::now();
        let mut rng = Counter(3);
        let mut p = pmtu();
        p.start(IPV4_OVERHEAD);
        let base = p.poll_probe(t0, &mut rng).expect("base probe");
        assert!(p.on_ack(t0, base.id, 1252));
        let max = p.poll_probe(t0, &mut rng).expect("max probe");
        assert_eq!(max.len, 1517);
        // Nothing at all arrives: the probe's timer runs out many times over, no loss.
        p.handle_timeout(t0 + Duration::from_secs(600));
        assert!(p.poll_probe(t0, &mut rng).is_none());
        assert_eq!(p.state(), PmtuState::Searching);
        // The first packet from the peer decides: a loss, and a second probe.
        p.heard(t0 + Duration::from_secs(601));
        let again = p.poll_probe(t0 + Duration::from_secs(601), &mut rng).expect("retry");
        assert_eq!(again.len, 1517);
        assert_ne!(again.id, max.id);
        // A late acknowledgement of the first probe still confirms the size.
        assert!(p.on_ack(t0 + Duration::from_secs(602), max.id, 1517));
        assert_eq!(p.path_mtu(), Some(1545));
        assert!(!p.on_ack(t0 + Duration::from_secs(602), again.id, 1517), "only once");
    }

    #[test]
    fn a_wrong_id_or_size_confirms_nothing() {
        let t0 = Instant::now();
        let mut rng = Counter(4);
        let mut p = pmtu();
        p.start(IPV4_OVERHEAD);
        let probe = p.poll_probe(t0, &mut rng).expect("base probe");
        assert!(!p.on_ack(t0, probe.id ^ 1, 1252));
        assert!(!p.on_ack(t0, probe.id, 1251));
        assert_eq!(p.state(), PmtuState::Base);
    }

    #[test]
    fn grows_again_after_the_raise_timer_and_falls_back_on_a_black_hole() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut rng = Counter(5);
        let mut p = pmtu();
        p.start(IPV4_OVERHEAD);
        drive(&mut p, &mut t, t0 + Duration::from_secs(400), 1280, &mut rng);
        assert_eq!(p.path_mtu(), Some(1308));
        // The path grows: found again after the raise timer.
        drive(&mut p, &mut t, t0 + Duration::from_secs(1600), 1472, &mut rng);
        assert_eq!(p.path_mtu(), Some(1500));
        // The path shrinks: confirmation probes black-hole, back to the base and down.
        drive(&mut p, &mut t, t0 + Duration::from_secs(2800), 1400, &mut rng);
        assert_eq!(p.path_mtu(), Some(1428));
        assert_eq!(p.state(), PmtuState::SearchComplete);
    }

    #[test]
    fn emsgsize_is_believed_at_once() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut rng = Counter(6);
        let mut p = pmtu();
        p.start(IPV4_OVERHEAD);
        drive(&mut p, &mut t, t0 + Duration::from_secs(1), 9000, &mut rng);
        assert_eq!(p.path_mtu(), Some(1545));
        // The interface now takes 1400-byte packets only: a 1500-byte datagram is refused.
        p.too_big(t, 1500);
        assert_eq!(p.path_mtu(), Some(1280));
        // The probes above 1372 bytes of payload are refused as well, without waiting.
        while let Some(probe) = p.poll_probe(t, &mut rng) {
            if probe.len <= 1372 {
                assert!(p.on_ack(t, probe.id, u16::try_from(probe.len).expect("small")));
            } else {
                p.too_big(t, probe.len);
            }
        }
        assert_eq!(p.path_mtu(), Some(1400));
        assert_eq!(p.state(), PmtuState::SearchComplete);
        assert_eq!(t, t0 + Duration::from_secs(1), "no timer was needed");
    }

    #[test]
    fn a_base_that_fails_falls_to_the_floor() {
        let t0 = Instant::now();
        let mut t = t0;
        let mut rng = Counter(7);
        let mut p = pmtu();
        p.start(IPV4_OVERHEAD);
        drive(&mut p, &mut t, t0 + Duration::from_secs(100), 1000, &mut rng);
        assert_eq!(p.state(), PmtuState::Error);
        assert_eq!(p.path_mtu(), Some(IPV4_MIN_MTU));
        // The base is tried again later and the path is found once it works.
        drive(&mut p, &mut t, t0 + Duration::from_secs(1000), 1472, &mut rng);
        assert_eq!(p.path_mtu(), Some(1500));
    }

    #[test]
    fn disabled_discovery_assumes_the_maximum() {
        let t0 = Instant::now();
        let mut rng = Counter(8);
        let config = PmtuConfig { enabled: false, max_mtu: Some(1400), ..PmtuConfig::default() };
        let mut p = Pmtu::new(config, 1517, 17);
        p.start(IPV4_OVERHEAD);
        assert_eq!(p.path_mtu(), Some(1400));
        assert!(p.poll_probe(t0, &mut rng).is_none());
        assert_eq!(p.poll_timeout(), None);
        p.stop();
        assert_eq!(p.path_mtu(), None);
    }
}
