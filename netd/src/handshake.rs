//! netd's side of the handshake (`docs/PROTOCOL.md` section 2): everything that needs no
//! long-lived secret.
//!
//! - As responder: answers a well-formed Request with a Cookie Reply and keeps nothing;
//!   checks an Initiator Auth's length, parameters and cookie (current or previous secret,
//!   constant time, once only) and only then passes it to keyd. Nothing reaches keyd, and
//!   no exponentiation happens anywhere, before a valid cookie comes back.
//! - As initiator: sends Requests with fresh nonces, asks keyd for the Initiator Auth once
//!   the matching Cookie Reply arrives, passes keyd the Responder Auth that answers it, and
//!   starts over with a fresh Request after 1 s, 2 s, 4 s … 30 s (±25 % jitter) without an
//!   answer.
//! - Simultaneous open: holding an initiation of its own, a side passes a peer's Initiator
//!   Auth to keyd only if the peer's `Ni` is larger, and drops it otherwise.
//!
//! Every message that is not acted on is dropped and counted under one [`HandshakeDrop`];
//! none is answered. Keys never pass through here: [`crate::tunnel::Tunnel`] installs what
//! keyd hands out.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use yavipin_ipc::{FailReason, NetdToKeyd};
use yavipin_proto::handshake::{CookieReply, Group, InitiatorAuth, Nonce, Params, Request, ResponderAuth};
use yavipin_proto::timer::{Timer, TimerTable};
use yavipin_proto::{Random, msg_type};

use crate::cookie::{COOKIE_SECRET_LEN, CookieError, CookieJar};
use crate::tunnel::Transmit;

/// Handshake tunables. [`HandshakeConfig::new`] gives the protocol's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// This side's address as the socket is bound: part of every cookie.
    pub local: SocketAddr,
    /// The Diffie-Hellman group.
    pub group: Group,
    /// The PSK's id.
    pub key_id: u32,
    /// How often the cookie secret changes.
    pub cookie_rotation: Duration,
    /// First retransmission interval.
    pub retransmit_initial: Duration,
    /// Longest retransmission interval.
    pub retransmit_max: Duration,
}

impl HandshakeConfig {
    /// Defaults: cookie secret rotated every 120 s, retransmission from 1 s to 30 s.
    pub fn new(local: SocketAddr, group: Group, key_id: u32) -> Self {
        Self {
            local,
            group,
            key_id,
            cookie_rotation: Duration::from_secs(120),
            retransmit_initial: Duration::from_secs(1),
            retransmit_max: Duration::from_secs(30),
        }
    }
}

pub use yavipin_ipc::reasons::HandshakeDrop;

impl From<CookieError> for HandshakeDrop {
    fn from(error: CookieError) -> Self {
        match error {
            CookieError::Invalid => Self::BadCookie,
            CookieError::Used => Self::UsedCookie,
            CookieError::TableFull => Self::CookieTableFull,
        }
    }
}

/// What the handshake counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeCounters {
    /// Cookie Replies sent.
    pub cookie_replies: u64,
    /// Initiator Auths passed to keyd.
    pub forwarded: u64,
    /// Requests sent (first attempts and retransmissions).
    pub requests: u64,
    drops: [u64; HandshakeDrop::ALL.len()],
}

impl HandshakeCounters {
    /// Messages dropped for `reason`.
    pub fn dropped(&self, reason: HandshakeDrop) -> u64 {
        self.drops[reason.index()]
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Where the handshake's output goes: datagrams for the peer, requests for keyd.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Datagrams to send.
    pub transmits: VecDeque<Transmit>,
    /// Messages for keyd, in order.
    pub keyd: VecDeque<NetdToKeyd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandshakeTimer {
    /// No answer to the current initiation: start over.
    Retransmit,
    /// Time for a new cookie secret.
    CookieRotate,
}

impl Timer for HandshakeTimer {
    const ALL: &'static [Self] = &[Self::Retransmit, Self::CookieRotate];
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Request sent, waiting for the Cookie Reply.
    Requested,
    /// Cookie Reply received, keyd is building the Initiator Auth.
    Building,
    /// Initiator Auth sent, waiting for the Responder Auth. `verifying`: one is with keyd.
    Sent { verifying: bool },
}

#[derive(Debug)]
struct Initiation {
    ni: Nonce,
    peer: SocketAddr,
    stage: Stage,
    /// Attempts before this one: sets the retransmission interval.
    attempt: u32,
}

/// The handshake engine of one tunnel. See the module documentation.
pub struct Handshake<R: Random> {
    config: HandshakeConfig,
    params: Params,
    rng: R,
    cookies: CookieJar,
    initiation: Option<Initiation>,
    timers: TimerTable<HandshakeTimer, 2>,
    counters: HandshakeCounters,
}

impl<R: Random> core::fmt::Debug for Handshake<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Handshake")
            .field("local", &self.config.local)
            .field("initiation", &self.initiation.as_ref().map(|i| (i.stage, i.attempt)))
            .field("cookies", &self.cookies)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<R: Random> Handshake<R> {
    /// A handshake engine with a fresh cookie secret.
    pub fn new(now: Instant, config: HandshakeConfig, mut rng: R) -> Self {
        let mut secret = zeroize::Zeroizing::new([0u8; COOKIE_SECRET_LEN]);
        rng.fill(&mut secret[..]);
        let mut timers = TimerTable::default();
        timers.set(HandshakeTimer::CookieRotate, now + config.cookie_rotation);
        Self {
            params: Params::new(config.group, config.key_id),
            cookies: CookieJar::new(&secret),
            config,
            rng,
            initiation: None,
            timers,
            counters: HandshakeCounters::default(),
        }
    }

    /// The parameters both ends must share.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Everything counted so far.
    pub fn counters(&self) -> &HandshakeCounters {
        &self.counters
    }

    /// Counts a drop decided by the tunnel (a key keyd handed out that does not fit).
    pub(crate) fn count(&mut self, reason: HandshakeDrop) {
        self.counters.drops[reason.index()] += 1;
    }

    /// Whether an initiation of ours is under way.
    pub fn initiating(&self) -> bool {
        self.initiation.is_some()
    }

    /// Cookies remembered as used.
    pub fn used_cookies(&self) -> usize {
        self.cookies.used()
    }

    /// When [`Self::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                HandshakeTimer::Retransmit => self.retransmit(now, out),
                HandshakeTimer::CookieRotate => {
                    let mut secret = zeroize::Zeroizing::new([0u8; COOKIE_SECRET_LEN]);
                    self.rng.fill(&mut secret[..]);
                    self.cookies.rotate(&secret);
                    self.timers.set(HandshakeTimer::CookieRotate, now + self.config.cookie_rotation);
                }
            }
        }
    }

    /// Starts a new initiation towards `peer`, replacing any under way.
    pub fn start(&mut self, now: Instant, peer: SocketAddr, out: &mut Outbox) {
        self.abandon(out);
        self.begin(now, peer, 0, out);
    }

    fn retransmit(&mut self, now: Instant, out: &mut Outbox) {
        let Some(initiation) = &self.initiation else { return };
        if initiation.stage == (Stage::Sent { verifying: true }) {
            // keyd is checking an answer: its verdict decides, not the clock. It comes
            // within microseconds; look again after the shortest interval.
            self.timers.set(HandshakeTimer::Retransmit, now + self.config.retransmit_initial);
            return;
        }
        let (peer, attempt) = (initiation.peer, initiation.attempt.saturating_add(1));
        self.abandon(out);
        self.begin(now, peer, attempt, out);
    }

    fn begin(&mut self, now: Instant, peer: SocketAddr, attempt: u32, out: &mut Outbox) {
        let mut ni = [0u8; 16];
        self.rng.fill(&mut ni);
        out.transmits.push_back(Transmit { to: peer, bytes: Request::encode(&self.params, &ni).to_vec() });
        self.counters.requests += 1;
        self.initiation = Some(Initiation { ni, peer, stage: Stage::Requested, attempt });
        let delay = self.backoff(attempt);
        self.timers.set(HandshakeTimer::Retransmit, now + delay);
    }

    /// `initial · 2^attempt`, at most `max`, times a uniform factor in [0.75, 1.25).
    fn backoff(&mut self, attempt: u32) -> Duration {
        let doubled = 1u32.checked_shl(attempt).and_then(|factor| self.config.retransmit_initial.checked_mul(factor));
        let base = doubled.map_or(self.config.retransmit_max, |d| d.min(self.config.retransmit_max));
        let base_nanos = base.as_nanos();
        // 3/4 of the base plus up to 1/2 of it: r / 2^33 is uniform in [0, 1/2).
        let jitter = (base_nanos * u128::from(self.rng.next_u32())) >> 33;
        let nanos = base_nanos * 3 / 4 + jitter;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Drops the initiation under way; keyd erases its private value if it made one.
    fn abandon(&mut self, out: &mut Outbox) {
        self.timers.stop(HandshakeTimer::Retransmit);
        if let Some(initiation) = self.initiation.take()
            && initiation.stage != Stage::Requested
        {
            out.keyd.push_back(NetdToKeyd::InitiationAbandoned { ni: initiation.ni });
        }
    }

    /// A datagram whose first byte has the handshake bit set.
    pub fn handle_message(&mut self, from: SocketAddr, datagram: &[u8], peer_silent: bool, out: &mut Outbox) {
        let result = match datagram.first().copied() {
            Some(msg_type::REQUEST) => self.on_request(from, datagram, out),
            Some(msg_type::COOKIE_REPLY) => self.on_cookie_reply(from, datagram, out),
            Some(msg_type::INITIATOR_AUTH) => self.on_initiator_auth(from, datagram, peer_silent, out),
            Some(msg_type::RESPONDER_AUTH) => self.on_responder_auth(from, datagram, out),
            _ => Err(HandshakeDrop::UnknownType),
        };
        if let Err(reason) = result {
            self.count(reason);
        }
    }

    /// Stateless: the answer is a function of the Request, its source and the secret.
    fn on_request(&mut self, from: SocketAddr, datagram: &[u8], out: &mut Outbox) -> Result<(), HandshakeDrop> {
        let request = Request::parse(datagram, &self.params)?;
        let cookie = self.cookies.cookie(from, self.config.local, &self.params, &request.ni);
        let reply = CookieReply::encode(&self.params, &request.ni, &cookie);
        out.transmits.push_back(Transmit { to: from, bytes: reply.to_vec() });
        self.counters.cookie_replies += 1;
        Ok(())
    }

    fn on_cookie_reply(&mut self, from: SocketAddr, datagram: &[u8], out: &mut Outbox) -> Result<(), HandshakeDrop> {
        let reply = CookieReply::parse(datagram, &self.params)?;
        let initiation = self
            .initiation
            .as_mut()
            .filter(|i| i.stage == Stage::Requested && i.peer == from)
            .ok_or(HandshakeDrop::Unexpected)?;
        if initiation.ni != reply.ni {
            return Err(HandshakeDrop::NonceMismatch);
        }
        initiation.stage = Stage::Building;
        out.keyd.push_back(NetdToKeyd::BuildInitiatorAuth { ni: reply.ni, cookie: reply.cookie });
        Ok(())
    }

    fn on_initiator_auth(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        peer_silent: bool,
        out: &mut Outbox,
    ) -> Result<(), HandshakeDrop> {
        let message = InitiatorAuth::parse(datagram, &self.params)?;
        self.cookies.redeem(from, self.config.local, &self.params, &message.ni, &message.cookie)?;
        // The cookie is spent even when the tie-break drops the message: a replay of it
        // must not get through once our own initiation is gone.
        if self.initiation.as_ref().is_some_and(|own| own.ni >= message.ni) {
            return Err(HandshakeDrop::SimultaneousOpen);
        }
        self.counters.forwarded += 1;
        out.keyd.push_back(NetdToKeyd::InitiatorAuthReceived { message: datagram.to_vec(), peer: from, peer_silent });
        Ok(())
    }

    fn on_responder_auth(&mut self, from: SocketAddr, datagram: &[u8], out: &mut Outbox) -> Result<(), HandshakeDrop> {
        let message = ResponderAuth::parse(datagram, &self.params)?;
        let initiation = self
            .initiation
            .as_mut()
            .filter(|i| i.stage == (Stage::Sent { verifying: false }) && i.peer == from)
            .ok_or(HandshakeDrop::Unexpected)?;
        if initiation.ni != message.ni {
            return Err(HandshakeDrop::NonceMismatch);
        }
        initiation.stage = Stage::Sent { verifying: true };
        out.keyd.push_back(NetdToKeyd::ResponderAuthReceived { message: datagram.to_vec() });
        Ok(())
    }

    /// keyd built the Initiator Auth for `ni`: send it, unless that initiation is gone.
    pub fn initiator_auth_built(&mut self, ni: Nonce, message: Vec<u8>, out: &mut Outbox) {
        if let Some(initiation) = self.initiation.as_mut().filter(|i| i.ni == ni && i.stage == Stage::Building) {
            initiation.stage = Stage::Sent { verifying: false };
            out.transmits.push_back(Transmit { to: initiation.peer, bytes: message });
        }
    }

    /// We answered a peer's initiation, or a session it started was confirmed: ours, if
    /// any, gives way (keyd has erased it or will on [`NetdToKeyd::InitiationAbandoned`]).
    pub fn responded(&mut self, out: &mut Outbox) {
        self.abandon(out);
    }

    /// keyd completed the initiation `ni`. False if no such initiation is waiting for an
    /// answer: keyd and netd disagree.
    pub fn completed(&mut self, ni: Nonce) -> bool {
        let ours = self.initiation.as_ref().is_some_and(|i| i.ni == ni && i.stage == (Stage::Sent { verifying: true }));
        if ours {
            self.initiation = None;
            self.timers.stop(HandshakeTimer::Retransmit);
        }
        ours
    }

    /// keyd refused a message of the handshake `ni`: count it; an initiation whose answer
    /// was refused waits for another answer (the refused one may have been forged).
    pub fn failed(&mut self, ni: Nonce, reason: FailReason) {
        self.count(reason.into());
        if let Some(initiation) = self.initiation.as_mut().filter(|i| i.ni == ni)
            && initiation.stage == (Stage::Sent { verifying: true })
        {
            initiation.stage = Stage::Sent { verifying: false };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yavipin_proto::handshake::{COOKIE_REPLY_LEN, REQUEST_LEN};

    use crate::test_random::Counter;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], 4000))
    }

    fn engine(local: SocketAddr, seed: u32) -> Handshake<Counter> {
        Handshake::new(Instant::now(), HandshakeConfig::new(local, Group::Modp2048, 1), Counter(seed))
    }

    #[test]
    fn drop_reasons_are_distinct_and_ordered() {
        for (i, reason) in HandshakeDrop::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let names: std::collections::HashSet<_> = HandshakeDrop::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), HandshakeDrop::ALL.len());
    }

    #[test]
    fn a_request_earns_a_smaller_cookie_reply_and_leaves_no_state() {
        let mut responder = engine(addr(2), 1);
        let mut out = Outbox::default();
        let request = Request::encode(responder.params(), &[4; 16]);
        for _ in 0..3 {
            responder.handle_message(addr(1), &request, true, &mut out);
        }
        assert_eq!(out.transmits.len(), 3);
        assert!(out.keyd.is_empty());
        let reply = &out.transmits[0];
        assert_eq!((reply.to, reply.bytes.len()), (addr(1), COOKIE_REPLY_LEN));
        assert!(reply.bytes.len() < REQUEST_LEN);
        assert_eq!(responder.used_cookies(), 0);
        assert!(!responder.initiating());
    }

    #[test]
    fn initiator_flow_and_exponential_backoff_with_jitter() {
        let now = Instant::now();
        let (mut a, mut b) = (engine(addr(1), 1), engine(addr(2), 2));
        let mut out = Outbox::default();
        a.start(now, addr(2), &mut out);
        let request = out.transmits.pop_front().expect("a Request");
        b.handle_message(addr(1), &request.bytes, true, &mut out);
        let reply = out.transmits.pop_front().expect("a Cookie Reply");
        // From the wrong address: not ours.
        a.handle_message(addr(3), &reply.bytes, true, &mut out);
        assert_eq!(a.counters().dropped(HandshakeDrop::Unexpected), 1);
        a.handle_message(addr(2), &reply.bytes, true, &mut out);
        assert!(matches!(out.keyd.pop_front(), Some(NetdToKeyd::BuildInitiatorAuth { .. })));
        // A duplicate Cookie Reply is no longer expected.
        a.handle_message(addr(2), &reply.bytes, true, &mut out);
        assert_eq!(a.counters().dropped(HandshakeDrop::Unexpected), 2);

        // Retransmission intervals: 1, 2, 4, 8, 16, 30, 30 s, each within ±25 %.
        let mut t = now;
        for (attempt, base) in [1u64, 2, 4, 8, 16, 30, 30].into_iter().enumerate() {
            let deadline = a.poll_timeout().expect("armed").min(t + Duration::from_secs(40));
            let waited = deadline - t;
            let base = Duration::from_secs(base);
            assert!(waited >= base * 3 / 4 && waited < base * 5 / 4, "attempt {attempt}: {waited:?}");
            t = deadline;
            a.handle_timeout(t, &mut out);
            let abandoned = out.keyd.drain(..).filter(|m| matches!(m, NetdToKeyd::InitiationAbandoned { .. })).count();
            assert_eq!(abandoned, usize::from(attempt == 0), "only the first reached keyd");
        }
        assert_eq!(a.counters().requests, 8);
        let nonces: std::collections::HashSet<_> = out.transmits.iter().map(|t| t.bytes[8..24].to_vec()).collect();
        assert_eq!(nonces.len(), out.transmits.len(), "every Request has a fresh nonce");
    }

    #[test]
    fn simultaneous_open_drops_the_smaller_nonce_and_spends_its_cookie() {
        let now = Instant::now();
        let mut a = engine(addr(1), 1);
        let mut out = Outbox::default();
        a.start(now, addr(2), &mut out);
        let ni_a: Nonce = out.transmits[0].bytes[8..24].try_into().expect("16 bytes");
        out.transmits.clear();
        // The peer asks a for a cookie and echoes it with a nonce smaller than a's.
        let small = [0u8; 16];
        assert!(small < ni_a);
        a.handle_message(addr(2), &Request::encode(a.params(), &small), true, &mut out);
        let reply = CookieReply::parse(&out.transmits.pop_front().expect("reply").bytes, a.params()).expect("valid");
        let mut auth =
            InitiatorAuth::encode_signed(a.params(), &small, &reply.cookie, yavipin_proto::Epoch(0), &[2; 256]);
        auth.extend_from_slice(&[0; 32]);
        a.handle_message(addr(2), &auth, true, &mut out);
        assert_eq!(a.counters().dropped(HandshakeDrop::SimultaneousOpen), 1);
        assert!(out.keyd.is_empty());
        a.handle_message(addr(2), &auth, true, &mut out);
        assert_eq!(a.counters().dropped(HandshakeDrop::UsedCookie), 1);
    }

    proptest::proptest! {
        /// Whatever arrives, a responder that never handed out a cookie sends keyd nothing,
        /// and answers at most with a reply no larger than the datagram.
        #[test]
        fn arbitrary_datagrams_never_reach_keyd(
            first in 0x80u8..=0xff,
            rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        ) {
            let mut responder = engine(addr(2), 3);
            let mut out = Outbox::default();
            let mut datagram = vec![first];
            datagram.extend_from_slice(&rest);
            responder.handle_message(addr(1), &datagram, true, &mut out);
            proptest::prop_assert!(out.keyd.is_empty());
            proptest::prop_assert!(out.transmits.iter().all(|t| t.bytes.len() < datagram.len()));
            proptest::prop_assert_eq!(responder.used_cookies(), 0);
        }
    }
}
