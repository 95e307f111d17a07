//! The key holder's monitor: a sans-IO state machine that answers netd's requests only when
//! its own state allows them.
//!
//! [`KeyDaemon`] holds `K_auth` (the PSK itself is dropped once `K_auth` is derived), the
//! Diffie-Hellman private value of a pending initiation and the hash chains of each
//! direction. It outputs handshake messages and [`EpochKey`]s, nothing else. Every input
//! carries `now`; outputs are polled with [`KeyDaemon::poll_output`]; its two timers (the
//! lifetime of an initiation's private value, the session's renewal time) are polled with
//! [`KeyDaemon::poll_timeout`].
//!
//! # Rules the monitor enforces
//!
//! - An Initiator Auth is built only when no initiation is pending; a Responder Auth is
//!   accepted only for the pending initiation's nonce, and completes it once: the private
//!   value is consumed by the exponentiation.
//! - `auth_i`/`auth_r` (one HMAC) are verified before any exponentiation, and a DH value
//!   outside `1 < y < p − 1` is refused before one.
//! - A private value lives until its exchange completes, netd abandons it, or
//!   [`KeydConfig::initiation_lifetime`] passes, whichever is first.
//! - Send keys are handed out one epoch at a time, only for the epoch after the one netd
//!   says it uses; receive keys up to two epochs ahead of the one the peer was last heard
//!   under. Both only ever move forward.
//! - An epoch announced for a new session (`epoch_i`/`epoch_r`) is reserved at once: the
//!   old chain never produces it. A send key that would need it waits for the new session.
//!
//! # Who renews what
//!
//! Hash-chain steps are driven by netd's data plane, which already asks for the next send
//! key on age (2 minutes by default), volume and sequence numbers: it alone knows when a
//! key went into use and how much it protected, and a second timer here would race it and
//! step twice. keyd needs no timer for that because it never keeps anything that could
//! recompute a key already handed out: a chain is stepped (and the old state overwritten)
//! in the same call that hands out its key.
//!
//! The Diffie-Hellman renewal time is keyd's: it bounds how long one exchange's chains
//! live, which is keyd's asset. [`KeydConfig::dh_interval`] after a session starts, keyd
//! tells netd [`KeydToNetd::RenewalDue`]; the side that initiated the session is told
//! first and the responder an eighth of the interval later, so the two rarely collide and
//! either can renew if the other cannot.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use yavipin_ipc::{FailReason, KeydToNetd, NetdToKeyd};
use yavipin_proto::handshake::{
    Cookie, Group, InitiatorAuth, Nonce, Params, ResponderAuth, WireError, responder_auth_ni,
};
use yavipin_proto::keys::Psk;
use yavipin_proto::timer::{Timer, TimerTable};
use yavipin_proto::{Epoch, EpochKey, Random};

use crate::dh::{Dh, DhPrivate};
use crate::schedule::{AuthKey, HashChain, SessionSeed, Transcript};

/// How far ahead of the peer's current epoch receive keys are handed out: one for the
/// next chain step, one more so that a step whose every packet was lost does not strand
/// the receiver.
const RECV_AHEAD: u32 = 2;

/// keyd's tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeydConfig {
    /// The Diffie-Hellman group both ends are configured with.
    pub group: Group,
    /// A session is renewed by a new exchange this long after it started (the responder
    /// waits an eighth longer).
    pub dh_interval: Duration,
    /// An initiation's private value is erased this long after it was made if netd has
    /// neither completed nor abandoned it. Longer than netd's longest retransmission
    /// interval (30 s plus jitter).
    pub initiation_lifetime: Duration,
}

impl Default for KeydConfig {
    fn default() -> Self {
        Self {
            group: Group::Modp2048,
            dh_interval: Duration::from_secs(600),
            initiation_lifetime: Duration::from_secs(60),
        }
    }
}

/// A request keyd refuses to serve in its state: netd is broken or hostile, and keyd ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeydError {
    /// `BuildInitiatorAuth` while an initiation is pending.
    #[error("an initiation is already pending")]
    InitiationPending,
    /// A Responder Auth for a nonce keyd has no initiation for.
    #[error("no initiation for this Responder Auth")]
    NoSuchInitiation,
    /// An Initiator Auth whose nonce does not beat keyd's own pending initiation: netd
    /// must drop those (simultaneous open).
    #[error("peer initiation forwarded although ours wins the tie-break")]
    LostTieBreak,
    /// A message that netd should have refused on its checks.
    #[error("malformed {message}: {error}")]
    Malformed {
        /// Which message.
        message: &'static str,
        /// What is wrong with it.
        error: WireError,
    },
    /// A send key wanted after an epoch that was never handed out.
    #[error("send key wanted after {current}, never handed out")]
    SendEpoch {
        /// The epoch netd claims to use.
        current: Epoch,
    },
    /// A receive epoch reported that is not newer than the last, or was never handed out.
    #[error("receive {epoch} reported out of order or never handed out")]
    RecvEpoch {
        /// The epoch reported.
        epoch: Epoch,
    },
    /// The 32-bit epoch counter of a direction is used up (after 2^32 keys).
    #[error("epoch counter exhausted")]
    EpochsExhausted,
}

/// What keyd counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeydCounters {
    /// Sessions established (initiations completed plus responses confirmed).
    pub sessions: u64,
    /// Send keys handed out.
    pub send_keys: u64,
    /// Receive keys handed out.
    pub recv_keys: u64,
    /// Initiations whose private value was erased because their lifetime ran out.
    pub initiations_expired: u64,
    /// Handshakes accepted as the peer's restart (old keys discarded).
    pub restarts: u64,
    failures: [u64; FailReason::ALL.len()],
}

impl KeydCounters {
    /// Handshake messages refused for `reason`.
    pub fn failed(&self, reason: FailReason) -> u64 {
        self.failures[reason as usize]
    }

    /// All refusals.
    pub fn failed_total(&self) -> u64 {
        self.failures.iter().sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeydTimer {
    /// The pending initiation's private value must be erased.
    InitiationExpiry,
    /// The session is due for a new Diffie-Hellman exchange.
    Renewal,
}

impl Timer for KeydTimer {
    const ALL: &'static [Self] = &[Self::InitiationExpiry, Self::Renewal];
    fn index(self) -> usize {
        self as usize
    }
}

/// This side's pending initiation.
struct Initiation {
    ni: Nonce,
    /// `epoch_i`: the reservation it announced.
    epoch: Epoch,
    private: DhPrivate,
    /// The whole Initiator Auth, the first part of the transcript.
    message: Vec<u8>,
}

/// A Responder Auth sent and not yet confirmed by the initiator's first packet.
struct Response {
    /// This side's sending chain of the new session, at step 0 (epoch `epoch_r`).
    send: HashChain,
    /// `epoch_i`: the first packet under it confirms the session.
    recv_base: Epoch,
}

/// The sending direction.
#[derive(Default)]
struct SendSide {
    /// The chain of the epoch in use, positioned at the next epoch.
    chain: Option<HashChain>,
    /// The epoch netd sends under.
    in_use: Option<Epoch>,
    /// The lowest epoch never handed out; `None` once all are.
    next_unused: Option<Epoch>,
    /// An epoch announced for a new session: the old chain stops below it. A send key
    /// wanted meanwhile is answered by the new session's first key.
    reserved: Option<Epoch>,
}

impl SendSide {
    fn new() -> Self {
        Self { next_unused: Some(Epoch(0)), ..Self::default() }
    }

    /// The epoch a new session's first send key will have, reserved from now on.
    fn announce(&mut self) -> Result<Epoch, KeydError> {
        if let Some(reserved) = self.reserved {
            return Ok(reserved);
        }
        let epoch = self.next_unused.ok_or(KeydError::EpochsExhausted)?;
        self.reserved = Some(epoch);
        Ok(epoch)
    }

    /// A new session takes over sending: hands out its first key, erases the old chain.
    fn start_session(&mut self, mut chain: HashChain) -> Result<EpochKey, KeydError> {
        debug_assert_eq!(self.reserved, Some(chain.base()), "new sessions start at the reservation");
        let key = chain.take().ok_or(KeydError::EpochsExhausted)?;
        self.next_unused = key.epoch.next();
        self.in_use = Some(key.epoch);
        self.reserved = None;
        self.chain = Some(chain);
        Ok(key)
    }

    /// The key after `current`, unless a new session has claimed it. `Ok(None)`: wait.
    fn step(&mut self, current: Epoch) -> Result<Option<EpochKey>, KeydError> {
        if self.in_use != Some(current) {
            // An epoch handed out earlier: a request that crossed the answer that replaced
            // it (a new session, a restart). Anything else was never handed out.
            return if self.next_unused.is_none_or(|next| current < next) {
                Ok(None)
            } else {
                Err(KeydError::SendEpoch { current })
            };
        }
        let next = self.next_unused.ok_or(KeydError::EpochsExhausted)?;
        let Some(chain) = self.chain.as_mut().filter(|_| self.reserved != Some(next)) else {
            return Ok(None);
        };
        debug_assert_eq!(chain.next_epoch(), Some(next));
        let key = chain.take().ok_or(KeydError::EpochsExhausted)?;
        self.next_unused = key.epoch.next();
        self.in_use = Some(key.epoch);
        Ok(Some(key))
    }
}

/// The receiving direction.
#[derive(Default)]
struct RecvSide {
    /// The chain of the peer's current epoch (or the first session's, before any packet).
    chain: Option<HashChain>,
    /// A newer session's chain, its first two keys already handed out; it takes over with
    /// the first packet under its base epoch.
    next: Option<HashChain>,
    /// `next` belongs to a session this side completed as initiator (not replaceable by a
    /// peer's Initiator Auth).
    next_committed: bool,
    /// The old chain hands out nothing from here on: `next`'s base.
    cap: Option<Epoch>,
    /// The peer's newest epoch, as netd reported it.
    in_use: Option<Epoch>,
}

fn hands_out(chain: &HashChain, epoch: Epoch) -> bool {
    epoch >= chain.base() && chain.next_epoch().is_none_or(|next| epoch < next)
}

impl RecvSide {
    /// The newest epoch the peer has used or committed to: a new session from the peer
    /// must start above it (or be a restart).
    fn floor(&self) -> Option<Epoch> {
        let committed = self.next.as_ref().filter(|_| self.next_committed).map(HashChain::base);
        self.in_use.max(committed)
    }

    /// Installs a newer session's chain; returns its first two keys.
    fn set_next(&mut self, mut chain: HashChain, committed: bool) -> Result<[EpochKey; 2], KeydError> {
        let base = chain.base();
        let first = chain.take().ok_or(KeydError::EpochsExhausted)?;
        let second = chain.take().ok_or(KeydError::EpochsExhausted)?;
        if self.chain.is_some() {
            self.cap = Some(self.cap.map_or(base, |cap| cap.min(base)));
        }
        self.next = Some(chain);
        self.next_committed = committed;
        Ok([first, second])
    }
}

/// The key daemon's core. See the module documentation.
pub struct KeyDaemon<R: Random> {
    config: KeydConfig,
    params: Params,
    auth: AuthKey,
    rng: R,
    dh: Dh,
    initiation: Option<Initiation>,
    /// The nonce of the last initiation keyd erased on its own (lifetime, a peer's winning
    /// initiation, a confirmed response): netd may still mention it.
    retired: Option<Nonce>,
    response: Option<Response>,
    send: SendSide,
    recv: RecvSide,
    timers: TimerTable<KeydTimer, 2>,
    output: VecDeque<KeydToNetd>,
    counters: KeydCounters,
}

impl<R: Random> core::fmt::Debug for KeyDaemon<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyDaemon")
            .field("key_id", &self.auth.key_id())
            .field("group", &self.config.group)
            .field("initiating", &self.initiation.is_some())
            .field("responding", &self.response.is_some())
            .field("send_epoch", &self.send.in_use)
            .field("recv_epoch", &self.recv.in_use)
            .field("modexps", &self.dh.modexps())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<R: Random> KeyDaemon<R> {
    /// A key daemon for the tunnel keyed by `psk`, named `key_id`. The PSK is consumed:
    /// only `K_auth`, derived from it, is kept.
    pub fn new(config: KeydConfig, key_id: u32, psk: Psk, rng: R) -> Self {
        let auth = AuthKey::derive(key_id, &psk);
        drop(psk);
        Self {
            params: Params::new(config.group, auth.key_id()),
            dh: Dh::new(config.group),
            config,
            auth,
            rng,
            initiation: None,
            retired: None,
            response: None,
            send: SendSide::new(),
            recv: RecvSide::default(),
            timers: TimerTable::default(),
            output: VecDeque::new(),
            counters: KeydCounters::default(),
        }
    }

    /// Modular exponentiations performed so far.
    pub fn modexps(&self) -> u64 {
        self.dh.modexps()
    }

    /// Everything counted so far.
    pub fn counters(&self) -> &KeydCounters {
        &self.counters
    }

    /// The next message for netd.
    pub fn poll_output(&mut self) -> Option<KeydToNetd> {
        self.output.pop_front()
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                KeydTimer::InitiationExpiry => {
                    if self.retire_initiation() {
                        self.counters.initiations_expired += 1;
                    }
                }
                KeydTimer::Renewal => self.output.push_back(KeydToNetd::RenewalDue),
            }
        }
    }

    /// Serves one request from netd. An error means netd asked for something keyd's state
    /// does not allow: the caller ends keyd.
    pub fn handle_netd(&mut self, now: Instant, message: NetdToKeyd) -> Result<(), KeydError> {
        match message {
            NetdToKeyd::BuildInitiatorAuth { ni, cookie } => self.build_initiator_auth(now, ni, &cookie),
            NetdToKeyd::InitiationAbandoned { ni } => {
                if self.initiation.as_ref().is_some_and(|i| i.ni == ni) {
                    self.retire_initiation();
                }
                Ok(())
            }
            NetdToKeyd::InitiatorAuthReceived { message, peer, peer_silent } => {
                self.respond(&message, peer, peer_silent)
            }
            NetdToKeyd::ResponderAuthReceived { message } => self.complete(now, &message),
            NetdToKeyd::SendKeyWanted { current } => {
                if let Some(key) = self.send.step(current)? {
                    self.push_send_key(key, false);
                }
                Ok(())
            }
            NetdToKeyd::RecvEpochStarted { epoch } => self.recv_epoch_started(now, epoch),
        }
    }

    fn build_initiator_auth(&mut self, now: Instant, ni: Nonce, cookie: &Cookie) -> Result<(), KeydError> {
        if self.initiation.is_some() {
            return Err(KeydError::InitiationPending);
        }
        let epoch = self.send.announce()?;
        let (private, public) = self.dh.generate(&mut self.rng);
        let mut message = InitiatorAuth::encode_signed(&self.params, &ni, cookie, epoch, &public);
        let auth = self.auth.initiator_auth(&message);
        message.extend_from_slice(&auth);
        self.initiation = Some(Initiation { ni, epoch, private, message: message.clone() });
        self.timers.set(KeydTimer::InitiationExpiry, now + self.config.initiation_lifetime);
        self.output.push_back(KeydToNetd::SendInitiatorAuth { ni, message });
        Ok(())
    }

    /// Answers an Initiator Auth: verify, exchange, derive, reserve `epoch_r`.
    fn respond(&mut self, message: &[u8], peer: SocketAddr, peer_silent: bool) -> Result<(), KeydError> {
        let request = InitiatorAuth::parse(message, &self.params)
            .map_err(|error| KeydError::Malformed { message: "Initiator Auth", error })?;
        if self.initiation.as_ref().is_some_and(|own| request.ni <= own.ni) {
            return Err(KeydError::LostTieBreak);
        }
        // One HMAC before anything expensive.
        if self.auth.verify_initiator_auth(request.signed, request.auth).is_err() {
            self.fail(request.ni, FailReason::BadAuth);
            return Ok(());
        }
        let restart = match self.recv.floor() {
            Some(floor) if request.epoch <= floor => {
                if !peer_silent {
                    self.fail(request.ni, FailReason::StaleEpoch);
                    return Ok(());
                }
                true
            }
            _ => false,
        };
        if request.epoch.0.checked_add(RECV_AHEAD).is_none() {
            self.fail(request.ni, FailReason::BadEpoch);
            return Ok(());
        }
        if self.dh.validate(request.dh_value).is_err() {
            self.fail(request.ni, FailReason::BadDhValue);
            return Ok(());
        }

        // Authentic: the peer's initiation wins over ours (its nonce is larger), and ours
        // is erased.
        self.retire_initiation();
        let (private, public) = self.dh.generate(&mut self.rng);
        let Ok(shared) = self.dh.agree(private, request.dh_value) else {
            self.fail(request.ni, FailReason::BadDhValue);
            return Ok(());
        };
        if restart {
            self.restart();
        }
        let mut nr = [0u8; 16];
        self.rng.fill(&mut nr);
        let epoch_r = self.send.announce()?;

        let mut answer = ResponderAuth::encode_signed(&self.params, &request.ni, &nr, epoch_r, &public);
        let transcript = Transcript::new(message, &answer);
        let seed = SessionSeed::derive(&shared, &request.ni, &nr, &transcript);
        drop(shared);
        answer.extend_from_slice(&self.auth.responder_auth(&transcript));
        answer.extend_from_slice(&seed.confirm.confirm(&transcript));

        let [first, second] = self.recv.set_next(HashChain::new(seed.initiator_to_responder, request.epoch), false)?;
        self.response =
            Some(Response { send: HashChain::new(seed.responder_to_initiator, epoch_r), recv_base: request.epoch });
        self.counters.recv_keys += 2;
        self.output.push_back(KeydToNetd::SendResponderAuth {
            ni: request.ni,
            peer,
            message: answer,
            recv_key: first,
            restart,
        });
        self.output.push_back(KeydToNetd::RecvKey(second));
        Ok(())
    }

    /// Completes this side's initiation with the peer's Responder Auth.
    fn complete(&mut self, now: Instant, message: &[u8]) -> Result<(), KeydError> {
        let ni = responder_auth_ni(message)
            .ok_or(KeydError::Malformed { message: "Responder Auth", error: WireError::BadLength })?;
        let Some(initiation) = self.initiation.as_ref().filter(|i| i.ni == ni) else {
            if self.retired == Some(ni) {
                self.fail(ni, FailReason::Expired);
                return Ok(());
            }
            return Err(KeydError::NoSuchInitiation);
        };
        let answer = ResponderAuth::parse(message, &self.params)
            .map_err(|error| KeydError::Malformed { message: "Responder Auth", error })?;
        let transcript = Transcript::new(&initiation.message, answer.signed);
        // auth_r before the exponentiation; a forgery leaves the initiation pending for the
        // genuine answer.
        if self.auth.verify_responder_auth(&transcript, answer.auth).is_err() {
            self.fail(ni, FailReason::BadAuth);
            return Ok(());
        }
        if answer.epoch.0.checked_add(RECV_AHEAD).is_none() {
            self.fail(ni, FailReason::BadEpoch);
            return Ok(());
        }
        if self.dh.validate(answer.dh_value).is_err() {
            self.fail(ni, FailReason::BadDhValue);
            return Ok(());
        }
        let Some(initiation) = self.initiation.take() else {
            return Err(KeydError::NoSuchInitiation);
        };
        self.timers.stop(KeydTimer::InitiationExpiry);
        self.retired = Some(ni);
        let Ok(shared) = self.dh.agree(initiation.private, answer.dh_value) else {
            self.fail(ni, FailReason::BadDhValue);
            return Ok(());
        };
        let seed = SessionSeed::derive(&shared, &ni, &answer.nr, &transcript);
        drop(shared);
        if seed.confirm.verify(&transcript, answer.confirm).is_err() {
            self.fail(ni, FailReason::BadConfirm);
            return Ok(());
        }

        // The responder announcing an epoch the peer already used means it lost its state.
        let restart = self.recv.in_use.is_some_and(|used| answer.epoch <= used);
        if restart {
            self.restart();
        }
        // A response of ours still waiting for confirmation belonged to an initiation the
        // peer has given up (it answered ours instead).
        self.response = None;
        let send_key = self.send.start_session(HashChain::new(seed.initiator_to_responder, initiation.epoch))?;
        let [first, second] = self.recv.set_next(HashChain::new(seed.responder_to_initiator, answer.epoch), true)?;
        self.counters.sessions += 1;
        self.counters.send_keys += 1;
        self.counters.recv_keys += 2;
        self.timers.set(KeydTimer::Renewal, now + self.config.dh_interval);
        self.output.push_back(KeydToNetd::SessionKeys { ni, send_key, recv_key: first, restart });
        self.output.push_back(KeydToNetd::RecvKey(second));
        Ok(())
    }

    fn recv_epoch_started(&mut self, now: Instant, epoch: Epoch) -> Result<(), KeydError> {
        let refused = KeydError::RecvEpoch { epoch };
        if self.recv.in_use.is_some_and(|used| epoch <= used) {
            return Err(refused);
        }
        let from_next = self.recv.next.as_ref().is_some_and(|next| hands_out(next, epoch));
        let from_chain = self.recv.chain.as_ref().is_some_and(|chain| hands_out(chain, epoch));
        if !from_next && !from_chain {
            return Err(refused);
        }
        if from_next {
            // The peer switched to the newer session: the old chain is erased.
            self.recv.chain = self.recv.next.take();
            self.recv.cap = None;
            self.recv.next_committed = false;
            let base = self.recv.chain.as_ref().map(HashChain::base);
            if self.response.as_ref().is_some_and(|r| Some(r.recv_base) == base) {
                self.confirm_response(now)?;
            }
        }
        self.recv.in_use = Some(epoch);

        let Some(target) = epoch.0.checked_add(RECV_AHEAD).map(Epoch) else {
            return Ok(());
        };
        let cap = self.recv.cap;
        if let Some(chain) = self.recv.chain.as_mut() {
            while let Some(next) = chain.next_epoch() {
                if next > target || cap.is_some_and(|cap| next >= cap) {
                    break;
                }
                let Some(key) = chain.take() else { break };
                self.counters.recv_keys += 1;
                self.output.push_back(KeydToNetd::RecvKey(key));
            }
        }
        Ok(())
    }

    /// The initiator's first packet under the new session authenticated: switch sending.
    fn confirm_response(&mut self, now: Instant) -> Result<(), KeydError> {
        let Some(response) = self.response.take() else {
            return Ok(());
        };
        // An initiation of ours announced the same epoch; it can no longer complete.
        self.retire_initiation();
        let key = self.send.start_session(response.send)?;
        self.counters.sessions += 1;
        self.push_send_key(key, true);
        self.timers.set(KeydTimer::Renewal, now + self.config.dh_interval + self.config.dh_interval / 8);
        Ok(())
    }

    fn push_send_key(&mut self, key: EpochKey, session_start: bool) {
        self.counters.send_keys += 1;
        self.output.push_back(KeydToNetd::SendKey { key, session_start });
    }

    /// Erases the pending initiation's private value, if any.
    fn retire_initiation(&mut self) -> bool {
        self.timers.stop(KeydTimer::InitiationExpiry);
        match self.initiation.take() {
            Some(initiation) => {
                self.retired = Some(initiation.ni);
                true
            }
            None => false,
        }
    }

    /// The peer lost its state: every key of the old session is void. Epoch numbering of
    /// the send direction carries on (the peer holds no receive key to conflict with).
    fn restart(&mut self) {
        self.counters.restarts += 1;
        self.send.chain = None;
        self.send.in_use = None;
        self.recv = RecvSide::default();
        self.timers.stop(KeydTimer::Renewal);
    }

    /// Refuses a handshake message from the network: counted, reported, not fatal.
    fn fail(&mut self, ni: Nonce, reason: FailReason) {
        self.counters.failures[reason as usize] += 1;
        self.output.push_back(KeydToNetd::HandshakeFailed { ni, reason });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yavipin_proto::handshake::INITIATOR_AUTH_FIXED_LEN;
    use yavipin_proto::rng::Seeded;

    const PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(192, 0, 2, 1), 4000));
    const COOKIE: Cookie = [0xc0; 16];

    fn psk(byte: u8) -> Psk {
        Psk::new(&mut [byte; 32])
    }

    fn daemon(seed: u64, psk_byte: u8) -> KeyDaemon<Seeded> {
        KeyDaemon::new(KeydConfig::default(), 1, psk(psk_byte), Seeded::new(seed))
    }

    fn drain<R: Random>(d: &mut KeyDaemon<R>) -> Vec<KeydToNetd> {
        std::iter::from_fn(|| d.poll_output()).collect()
    }

    fn same_key(a: &EpochKey, b: &EpochKey) -> bool {
        a.epoch == b.epoch && a.secret.expose() == b.secret.expose()
    }

    /// What the two sides hold after a completed (and confirmed) handshake.
    struct Established {
        /// The initiator's send key, as the responder received it.
        i2r: EpochKey,
        /// The responder's send key, as the initiator received it.
        r2i: EpochKey,
    }

    fn build(a: &mut KeyDaemon<Seeded>, now: Instant, ni: Nonce) -> Vec<u8> {
        a.handle_netd(now, NetdToKeyd::BuildInitiatorAuth { ni, cookie: COOKIE }).expect("allowed");
        match drain(a).as_slice() {
            [KeydToNetd::SendInitiatorAuth { ni: n, message }] if *n == ni => message.clone(),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn receive_initiator_auth(
        b: &mut KeyDaemon<Seeded>,
        now: Instant,
        message: &[u8],
        silent: bool,
    ) -> Vec<KeydToNetd> {
        b.handle_netd(
            now,
            NetdToKeyd::InitiatorAuthReceived { message: message.to_vec(), peer: PEER, peer_silent: silent },
        )
        .expect("allowed");
        drain(b)
    }

    /// Runs a whole handshake, `a` initiating, and checks both ends hold matching keys.
    fn handshake(a: &mut KeyDaemon<Seeded>, b: &mut KeyDaemon<Seeded>, now: Instant, ni: Nonce) -> Established {
        let init = build(a, now, ni);
        let mut out = receive_initiator_auth(b, now, &init, false).into_iter();
        let Some(KeydToNetd::SendResponderAuth { message, recv_key: b_recv0, peer, .. }) = out.next() else {
            panic!("no Responder Auth");
        };
        assert_eq!(peer, PEER);
        let Some(KeydToNetd::RecvKey(b_recv1)) = out.next() else { panic!("no second receive key") };
        assert_eq!(b_recv1.epoch.0, b_recv0.epoch.0 + 1);

        a.handle_netd(now, NetdToKeyd::ResponderAuthReceived { message }).expect("allowed");
        let mut out = drain(a).into_iter();
        let Some(KeydToNetd::SessionKeys { send_key, recv_key: a_recv0, restart, .. }) = out.next() else {
            panic!("no session keys");
        };
        assert!(!restart);
        let Some(KeydToNetd::RecvKey(a_recv1)) = out.next() else { panic!("no second receive key") };
        assert!(same_key(&send_key, &b_recv0));

        // The initiator's first packet confirms: the responder switches sending.
        b.handle_netd(now, NetdToKeyd::RecvEpochStarted { epoch: b_recv0.epoch }).expect("allowed");
        let mut out = drain(b).into_iter();
        let Some(KeydToNetd::SendKey { key: b_send, session_start: true }) = out.next() else {
            panic!("no session start")
        };
        assert!(same_key(&b_send, &a_recv0));
        // Receive keys two ahead: epoch_i + 2 (epoch_i + 1 came with the Responder Auth).
        let Some(KeydToNetd::RecvKey(ahead)) = out.next() else { panic!("no key ahead") };
        assert_eq!(ahead.epoch.0, b_recv0.epoch.0 + 2);
        a.handle_netd(now, NetdToKeyd::RecvEpochStarted { epoch: a_recv0.epoch }).expect("allowed");
        let keys = drain(a);
        assert!(matches!(keys.as_slice(), [KeydToNetd::RecvKey(k)] if k.epoch.0 == a_recv1.epoch.0 + 1));
        Established { i2r: send_key, r2i: b_send }
    }

    #[test]
    fn handshake_yields_matching_keys_and_two_exponentiations_per_side() {
        let now = Instant::now();
        let (mut a, mut b) = (daemon(1, 7), daemon(2, 7));
        let keys = handshake(&mut a, &mut b, now, [1; 16]);
        assert_eq!((keys.i2r.epoch, keys.r2i.epoch), (Epoch(0), Epoch(0)));
        assert_eq!((a.modexps(), b.modexps()), (2, 2));
        assert_eq!((a.counters().sessions, b.counters().sessions), (1, 1));
        assert_ne!(keys.i2r.secret.expose(), keys.r2i.secret.expose());
    }

    #[test]
    fn wrong_psk_is_refused_before_any_exponentiation() {
        let now = Instant::now();
        let (mut a, mut b) = (daemon(1, 7), daemon(2, 8));
        let init = build(&mut a, now, [1; 16]);
        let out = receive_initiator_auth(&mut b, now, &init, false);
        assert!(matches!(out.as_slice(), [KeydToNetd::HandshakeFailed { reason: FailReason::BadAuth, .. }]));
        assert_eq!(b.modexps(), 0);
        assert_eq!(b.counters().failed(FailReason::BadAuth), 1);
    }

    #[test]
    fn tampering_anywhere_in_either_auth_message_is_refused() {
        let now = Instant::now();
        let (mut a, mut b) = (daemon(1, 7), daemon(2, 7));
        let init = build(&mut a, now, [1; 16]);
        // Every byte after the parameters (netd checks those): nonce, cookie, epoch, g^x, tag.
        for index in [8, 24, 40, 44, 100, init.len() - 1] {
            let mut bad = init.clone();
            bad[index] ^= 1;
            let out = receive_initiator_auth(&mut b, now, &bad, false);
            assert!(
                matches!(out.as_slice(), [KeydToNetd::HandshakeFailed { reason: FailReason::BadAuth, .. }]),
                "byte {index}"
            );
        }
        assert_eq!(b.modexps(), 0);

        let mut out = receive_initiator_auth(&mut b, now, &init, false).into_iter();
        let Some(KeydToNetd::SendResponderAuth { message, .. }) = out.next() else { panic!() };
        for index in [24, 40, 44, 200, message.len() - 40, message.len() - 1] {
            let mut bad = message.clone();
            bad[index] ^= 1;
            a.handle_netd(now, NetdToKeyd::ResponderAuthReceived { message: bad }).expect("allowed");
            let out = drain(&mut a);
            let [KeydToNetd::HandshakeFailed { reason, .. }] = out.as_slice() else { panic!("{out:?}") };
            // A flipped confirm_r passes auth_r and fails only after the exponentiation.
            if index == message.len() - 1 {
                assert_eq!(*reason, FailReason::BadConfirm);
                break;
            }
            assert_eq!(*reason, FailReason::BadAuth, "byte {index}");
            assert_eq!(a.modexps(), 1, "no exponentiation before auth_r verified");
        }
        // BadConfirm consumed the initiation: the genuine answer now comes too late.
        a.handle_netd(now, NetdToKeyd::ResponderAuthReceived { message }).expect("allowed");
        assert!(matches!(drain(&mut a).as_slice(), [KeydToNetd::HandshakeFailed { reason: FailReason::Expired, .. }]));
    }

    #[test]
    fn a_forged_answer_leaves_the_initiation_open_for_the_genuine_one() {
        let now = Instant::now();
        let (mut a, mut b) = (daemon(1, 7), daemon(2, 7));
        let init = build(&mut a, now, [1; 16]);
        let mut out = receive_initiator_auth(&mut b, now, &init, false).into_iter();
        let Some(KeydToNetd::SendResponderAuth { message, .. }) = out.next() else { panic!() };
        let mut forged = message.clone();
        forged[60] ^= 0xff;
        a.handle_netd(now, NetdToKeyd::ResponderAuthReceived { message: forged }).expect("allowed");
        a.handle_netd(now, NetdToKeyd::ResponderAuthReceived { message: message.clone() }).expect("allowed");
        let out = drain(&mut a);
        assert!(matches!(out[1], KeydToNetd::SessionKeys { .. }), "{out:?}");
        // One completion per handshake.
        a.handle_netd(now, NetdToKeyd::ResponderAuthReceived { message }).expect("allowed");
        assert!(matches!(drain(&mut a).as_slice(), [KeydToNetd::HandshakeFailed { reason: FailReason::Expired, .. }]));
        assert_eq!(a.counters().sessions, 1);
    }

    /// An Initiator Auth with a valid `auth_i` (the sender holds the PSK) but `g^x` out of
    /// range is refused without exponentiation.
    #[test]
    fn out_of_range_dh_values_are_refused_without_exponentiation() {
        let now = Instant::now();
        let mut b = daemon(2, 7);
        let auth = AuthKey::derive(1, &psk(7));
        let params = Params::new(Group::Modp2048, 1);
        let p = crate::dh::prime_bytes(Group::Modp2048);
        let mut p_minus_one = p.to_vec();
        p_minus_one[255] -= 1;
        let mut one = vec![0u8; 256];
        one[255] = 1;
        for value in [vec![0u8; 256], one, p_minus_one, p.to_vec(), vec![0xff; 256]] {
            let mut message = InitiatorAuth::encode_signed(&params, &[1; 16], &COOKIE, Epoch(0), &value);
            message.extend_from_slice(&auth.initiator_auth(&message));
            let out = receive_initiator_auth(&mut b, now, &message, false);
            assert!(matches!(out.as_slice(), [KeydToNetd::HandshakeFailed { reason: FailReason::BadDhValue, .. }]));
        }
        assert_eq!(b.modexps(), 0);
        assert_eq!(b.counters().failed(FailReason::BadDhValue), 5);
    }

    #[test]
    fn out_of_state_requests_are_errors() {
        let now = Instant::now();
        let mut a = daemon(1, 7);
        assert_eq!(
            a.handle_netd(now, NetdToKeyd::SendKeyWanted { current: Epoch(0) }),
            Err(KeydError::SendEpoch { current: Epoch(0) })
        );
        assert_eq!(
            a.handle_netd(now, NetdToKeyd::RecvEpochStarted { epoch: Epoch(0) }),
            Err(KeydError::RecvEpoch { epoch: Epoch(0) })
        );
        let init = build(&mut a, now, [5; 16]);
        assert_eq!(
            a.handle_netd(now, NetdToKeyd::BuildInitiatorAuth { ni: [6; 16], cookie: COOKIE }),
            Err(KeydError::InitiationPending)
        );
        let mut unknown = vec![0u8; Group::Modp2048.responder_auth_len()];
        unknown[8..24].fill(9);
        assert_eq!(
            a.handle_netd(now, NetdToKeyd::ResponderAuthReceived { message: unknown }),
            Err(KeydError::NoSuchInitiation)
        );
        let short = init[..INITIATOR_AUTH_FIXED_LEN].to_vec();
        assert!(matches!(
            a.handle_netd(now, NetdToKeyd::InitiatorAuthReceived { message: short, peer: PEER, peer_silent: false }),
            Err(KeydError::Malformed { .. })
        ));
        // Abandoning an unknown nonce is a stale request, not an error.
        assert_eq!(a.handle_netd(now, NetdToKeyd::InitiationAbandoned { ni: [7; 16] }), Ok(()));
        assert_eq!(a.handle_netd(now, NetdToKeyd::InitiationAbandoned { ni: [5; 16] }), Ok(()));
        assert!(a.initiation.is_none(), "the private value is gone");
    }

    #[test]
    fn chain_steps_are_strictly_forward_and_match_across_sides() {
        let now = Instant::now();
        let (mut a, mut b) = (daemon(1, 7), daemon(2, 7));
        let keys = handshake(&mut a, &mut b, now, [1; 16]);
        let mut current = keys.i2r.epoch;
        // b holds receive keys for epochs 1 and 2 already (two ahead of 0).
        for step in 1..=50u32 {
            a.handle_netd(now, NetdToKeyd::SendKeyWanted { current }).expect("allowed");
            let out = drain(&mut a);
            let [KeydToNetd::SendKey { key, session_start: false }] = out.as_slice() else { panic!("{out:?}") };
            assert_eq!(key.epoch, Epoch(step));
            current = key.epoch;
            b.handle_netd(now, NetdToKeyd::RecvEpochStarted { epoch: current }).expect("allowed");
            let out = drain(&mut b);
            let [KeydToNetd::RecvKey(ahead)] = out.as_slice() else { panic!("{out:?}") };
            assert_eq!(ahead.epoch, Epoch(step + 2));
        }
        // A request that crossed its answer is ignored; one for the future is refused.
        a.handle_netd(now, NetdToKeyd::SendKeyWanted { current: Epoch(3) }).expect("stale is fine");
        assert!(drain(&mut a).is_empty());
        assert_eq!(
            a.handle_netd(now, NetdToKeyd::SendKeyWanted { current: Epoch(51) }),
            Err(KeydError::SendEpoch { current: Epoch(51) })
        );
        // Receive epochs never go back and never skip past what was handed out.
        assert!(b.handle_netd(now, NetdToKeyd::RecvEpochStarted { epoch: Epoch(50) }).is_err());
        assert!(b.handle_netd(now, NetdToKeyd::RecvEpochStarted { epoch: Epoch(53) }).is_err());
        b.handle_netd(now, NetdToKeyd::RecvEpochStarted { epoch: Epoch(52) }).expect("skipping one lost epoch");
    }

    /// The hand-over between Diffie-Hellman sessions: the announced epoch is reserved, a
    /// chain step that would need it waits, and the receiver's pre-installed old-chain keys
    /// of those epochs are replaced by the new session's.
    #[test]
    fn renewal_reserves_the_announced_epoch() {
        let now = Instant::now();
        let (mut a, mut b) = (daemon(1, 7), daemon(2, 7));
        let first = handshake(&mut a, &mut b, now, [1; 16]);
        assert_eq!(first.i2r.epoch, Epoch(0));

        let init = build(&mut a, now, [2; 16]);
        assert_eq!(InitiatorAuth::parse(&init, &a.params).expect("valid").epoch, Epoch(1));
        // The old chain may not produce epoch 1 any more: the request waits.
        a.handle_netd(now, NetdToKeyd::SendKeyWanted { current: Epoch(0) }).expect("allowed");
        assert!(drain(&mut a).is_empty());

        let mut out = receive_initiator_auth(&mut b, now, &init, false).into_iter();
        let Some(KeydToNetd::SendResponderAuth { message, recv_key, restart: false, .. }) = out.next() else {
            panic!()
        };
        // b had handed out old-chain keys for 1 and 2; the new session's replace them.
        assert_eq!(recv_key.epoch, Epoch(1));
        let Some(KeydToNetd::RecvKey(next)) = out.next() else { panic!() };
        assert_eq!(next.epoch, Epoch(2));
        // b keeps sending on the old chain until confirmed; its own steps still work until
        // they reach the epoch it announced (1).
        b.handle_netd(now, NetdToKeyd::SendKeyWanted { current: Epoch(0) }).expect("allowed");
        assert!(drain(&mut b).is_empty(), "b's epoch 1 is reserved for the new session");

        a.handle_netd(now, NetdToKeyd::ResponderAuthReceived { message }).expect("allowed");
        let out = drain(&mut a);
        let [KeydToNetd::SessionKeys { send_key, recv_key: a_recv, .. }, KeydToNetd::RecvKey(_)] = out.as_slice()
        else {
            panic!("{out:?}")
        };
        assert!(same_key(send_key, &recv_key));
        assert_eq!(a_recv.epoch, Epoch(1));

        b.handle_netd(now, NetdToKeyd::RecvEpochStarted { epoch: Epoch(1) }).expect("allowed");
        let out = drain(&mut b);
        let [KeydToNetd::SendKey { key, session_start: true }, KeydToNetd::RecvKey(ahead)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(same_key(key, a_recv));
        assert_eq!(ahead.epoch, Epoch(3));
        assert_eq!(b.modexps(), 4);
    }

    #[test]
    fn simultaneous_open_larger_nonce_wins() {
        let now = Instant::now();
        let (mut a, mut b) = (daemon(1, 7), daemon(2, 7));
        let a_init = build(&mut a, now, [9; 16]);
        let b_init = build(&mut b, now, [3; 16]);
        // netd would never forward the smaller nonce to the larger side: keyd refuses it.
        assert_eq!(
            a.handle_netd(now, NetdToKeyd::InitiatorAuthReceived { message: b_init, peer: PEER, peer_silent: false }),
            Err(KeydError::LostTieBreak)
        );
        // The smaller side answers and forgets its own initiation.
        let mut out = receive_initiator_auth(&mut b, now, &a_init, false).into_iter();
        let Some(KeydToNetd::SendResponderAuth { message, .. }) = out.next() else { panic!() };
        assert!(b.initiation.is_none());
        // A late abandonment of b's own initiation is harmless.
        b.handle_netd(now, NetdToKeyd::InitiationAbandoned { ni: [3; 16] }).expect("stale");
        a.handle_netd(now, NetdToKeyd::ResponderAuthReceived { message }).expect("allowed");
        assert!(matches!(drain(&mut a)[0], KeydToNetd::SessionKeys { .. }));
    }

    #[test]
    fn an_initiation_expires_and_its_answer_is_refused() {
        let now = Instant::now();
        let (mut a, mut b) = (daemon(1, 7), daemon(2, 7));
        let init = build(&mut a, now, [1; 16]);
        assert_eq!(a.poll_timeout(), Some(now + Duration::from_secs(60)));
        a.handle_timeout(now + Duration::from_secs(60));
        assert_eq!(a.counters().initiations_expired, 1);
        let mut out = receive_initiator_auth(&mut b, now, &init, false).into_iter();
        let Some(KeydToNetd::SendResponderAuth { message, .. }) = out.next() else { panic!() };
        a.handle_netd(now, NetdToKeyd::ResponderAuthReceived { message }).expect("allowed");
        assert!(matches!(drain(&mut a).as_slice(), [KeydToNetd::HandshakeFailed { reason: FailReason::Expired, .. }]));
        assert_eq!(a.modexps(), 1);
    }

    #[test]
    fn renewal_is_due_first_on_the_initiating_side() {
        let now = Instant::now();
        let (mut a, mut b) = (daemon(1, 7), daemon(2, 7));
        handshake(&mut a, &mut b, now, [1; 16]);
        assert_eq!(a.poll_timeout(), Some(now + Duration::from_secs(600)));
        assert_eq!(b.poll_timeout(), Some(now + Duration::from_secs(675)));
        a.handle_timeout(now + Duration::from_secs(600));
        assert!(matches!(drain(&mut a).as_slice(), [KeydToNetd::RenewalDue]));
    }

    #[test]
    fn a_restarted_peer_is_accepted_only_after_silence() {
        let now = Instant::now();
        let (mut a, mut b) = (daemon(1, 7), daemon(2, 7));
        handshake(&mut a, &mut b, now, [1; 16]);
        // a restarts: a fresh daemon whose epochs start at 0 again.
        let mut a = daemon(3, 7);
        let init = build(&mut a, now, [2; 16]);
        let out = receive_initiator_auth(&mut b, now, &init, false);
        assert!(matches!(out.as_slice(), [KeydToNetd::HandshakeFailed { reason: FailReason::StaleEpoch, .. }]));
        let out = receive_initiator_auth(&mut b, now, &init, true);
        assert!(matches!(out[0], KeydToNetd::SendResponderAuth { restart: true, .. }), "{out:?}");
        assert_eq!(b.counters().restarts, 1);
    }

    #[test]
    fn debug_shows_no_secrets() {
        let shown = format!("{:?}", daemon(1, 0xab));
        assert!(shown.contains("key_id: 1"));
        assert!(!shown.contains("171"), "{shown}");
    }

    proptest::proptest! {
        /// Any Initiator Auth of the right length that netd could forward is refused without
        /// an exponentiation unless it carries a valid `auth_i`, and never panics keyd.
        #[test]
        fn forged_initiator_auths_cost_no_exponentiation(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 324),
        ) {
            let mut b = daemon(2, 7);
            let mut message = a_header();
            message.extend_from_slice(&body);
            let out = receive_initiator_auth(&mut b, Instant::now(), &message, false);
            let refused = matches!(out.as_slice(), [KeydToNetd::HandshakeFailed { reason: FailReason::BadAuth, .. }]);
            proptest::prop_assert!(refused);
            proptest::prop_assert_eq!(b.modexps(), 0);
        }
    }

    /// The 8-byte header of an Initiator Auth for the test daemons.
    fn a_header() -> Vec<u8> {
        Params::new(Group::Modp2048, 1).header(yavipin_proto::msg_type::INITIATOR_AUTH).to_vec()
    }
}
