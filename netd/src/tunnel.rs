//! One tunnel's sans-IO core in netd: the handshake engine and the data plane together.
//!
//! [`Tunnel`] takes datagrams from the UDP socket ([`Tunnel::handle_datagram`]), packets
//! from the tun device ([`Tunnel::send_packet`]) and keyd's answers
//! ([`Tunnel::handle_keyd`]); it hands out datagrams to send ([`Tunnel::poll_transmit`]),
//! requests for keyd ([`Tunnel::poll_keyd`]) and its next deadline
//! ([`Tunnel::poll_timeout`]). Data packets are sealed into and opened into caller-owned
//! buffers; only handshake messages and keepalives are queued.
//!
//! Key installation follows keyd's answers:
//! - initiator: on `SessionKeys` sending switches to the new session at once and a
//!   keepalive goes out under it (the key confirmation); keepalives are repeated (1 s,
//!   doubling to 30 s) until a packet under the responder's new epoch arrives;
//! - responder: on `SendResponderAuth` the initiator's new receive key is installed before
//!   the Responder Auth leaves, and sending stays on the old keys until keyd, told that the
//!   initiator's first packet authenticated, hands out the new send key; a keepalive
//!   under it then tells the initiator;
//! - a chain step after ten seconds without sending is announced by a keepalive under the
//!   new key: the peer holds receive keys only two epochs ahead of the last it heard.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use yavipin_ipc::{KeydToNetd, NetdToKeyd};
use yavipin_proto::timer::{Timer, TimerTable};
use yavipin_proto::{Epoch, EpochKey, Random, msg_type};

use crate::counters::SealError;
use crate::dataplane::{DataConfig, DataPlane, Delivery, Event, Inner, KeyError};
use crate::handshake::{Handshake, HandshakeConfig, HandshakeDrop, Outbox};
use crate::suite::Classic;

/// Control message type of a keepalive (`docs/PROTOCOL.md` section 4).
const KEEPALIVE: u8 = 0x01;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// UDP payload.
    pub bytes: Vec<u8>,
}

/// Tunables of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// The handshake's.
    pub handshake: HandshakeConfig,
    /// The data plane's.
    pub data: DataConfig,
    /// The peer's endpoint, if configured: this side then initiates at once. Without one
    /// the tunnel only responds, and learns the endpoint from an authenticated handshake.
    pub peer: Option<SocketAddr>,
    /// A peer's Initiator Auth announcing an epoch it already used is taken as a restart
    /// of the peer only when nothing authenticated has come from it for this long and the
    /// session is at least this old; otherwise it is a delayed message and refused.
    pub restart_quiet: Duration,
    /// A send key that replaces one after nothing was sealed for this long is announced
    /// with a keepalive. The receiver holds keys only two epochs ahead of the last one it
    /// heard, so timed steps of an idle tunnel must not pass silently.
    pub idle_step_keepalive: Duration,
}

impl TunnelConfig {
    /// Defaults around `handshake` (which names this side's address), initiating towards
    /// `peer` if given.
    pub fn new(handshake: HandshakeConfig, peer: Option<SocketAddr>) -> Self {
        Self {
            handshake,
            data: DataConfig::default(),
            peer,
            restart_quiet: Duration::from_secs(10),
            idle_step_keepalive: Duration::from_secs(10),
        }
    }
}

/// A packet opened for the tun device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Ethertype for the packet-information header.
    pub ethertype: u16,
    /// Where the packet is in the caller's buffer.
    pub range: Range<usize>,
}

/// Where a sealed packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    /// The peer's endpoint.
    pub to: SocketAddr,
    /// Length of the datagram at the start of the caller's buffer.
    pub len: usize,
}

/// Why a tun packet was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer's endpoint is not known yet.
    #[error("no peer endpoint yet")]
    NoPeer,
    /// The data plane refused it.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// keyd answered something netd's state cannot take: one of the two is broken, and netd
/// ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// Session keys for an initiation netd is not waiting on.
    #[error("session keys for an initiation not waiting for them")]
    UnknownCompletion,
    /// A key keyd handed out is older than one in use.
    #[error("key refused: {0}")]
    Key(KeyError),
}

/// What the tunnel counted beyond the data plane and the handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelCounters {
    /// Sessions completed as initiator.
    pub initiated: u64,
    /// Sessions confirmed as responder.
    pub responded: u64,
    /// Sessions that replaced a restarted peer's.
    pub restarts: u64,
    /// Keepalives sent.
    pub keepalives: u64,
    /// Control messages received of a type this tunnel does not handle, or malformed.
    pub unknown_control: u64,
    /// Receive keys from keyd that did not fit the data plane (a slot held a key in use).
    pub recv_keys_refused: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TunnelTimer {
    /// The initiator repeats its key confirmation.
    Confirm,
}

impl Timer for TunnelTimer {
    const ALL: &'static [Self] = &[Self::Confirm];
    fn index(self) -> usize {
        self as usize
    }
}

/// The initiator's key confirmation, until the responder is heard under its new epoch.
#[derive(Debug, Clone, Copy)]
struct Confirmation {
    epoch: Epoch,
    interval: Duration,
}

/// One tunnel. See the module documentation.
pub struct Tunnel<R: Random> {
    config: TunnelConfig,
    handshake: Handshake<R>,
    data: DataPlane<Classic>,
    peer: Option<SocketAddr>,
    out: Outbox,
    confirmation: Option<Confirmation>,
    session_started: Option<Instant>,
    last_authentic: Option<Instant>,
    /// When a packet (data or keepalive) was last sealed.
    last_sealed: Option<Instant>,
    timers: TimerTable<TunnelTimer, 1>,
    counters: TunnelCounters,
    /// Sealing buffer for keepalives.
    scratch: Vec<u8>,
}

impl<R: Random> core::fmt::Debug for Tunnel<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tunnel")
            .field("peer", &self.peer)
            .field("handshake", &self.handshake)
            .field("data", &self.data)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<R: Random> Tunnel<R> {
    /// A tunnel with no keys. With a configured peer it starts initiating at `now`.
    pub fn new(now: Instant, config: TunnelConfig, rng: R) -> Self {
        let data = DataPlane::new(config.data.clone());
        let scratch = vec![0; data.max_datagram_len()];
        let mut tunnel = Self {
            handshake: Handshake::new(now, config.handshake.clone(), rng),
            data,
            peer: config.peer,
            out: Outbox::default(),
            confirmation: None,
            session_started: None,
            last_authentic: None,
            last_sealed: None,
            timers: TimerTable::default(),
            counters: TunnelCounters::default(),
            scratch,
            config,
        };
        if let Some(peer) = tunnel.peer {
            tunnel.handshake.start(now, peer, &mut tunnel.out);
        }
        tunnel
    }

    /// The peer's endpoint, configured or learned.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Whether a send key is installed: packets can flow.
    pub fn is_up(&self) -> bool {
        self.data.send_epoch().is_some()
    }

    /// The data plane, for status and counters.
    pub fn data(&self) -> &DataPlane<Classic> {
        &self.data
    }

    /// The handshake engine, for status and counters.
    pub fn handshake(&self) -> &Handshake<R> {
        &self.handshake
    }

    /// Everything else counted.
    pub fn counters(&self) -> &TunnelCounters {
        &self.counters
    }

    /// Largest datagram [`Self::send_packet`] produces, and the buffer size it needs.
    pub fn max_datagram_len(&self) -> usize {
        self.data.max_datagram_len()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next message for keyd.
    pub fn poll_keyd(&mut self) -> Option<NetdToKeyd> {
        self.out.keyd.pop_front()
    }

    /// When [`Self::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.timers.next_deadline(), self.handshake.poll_timeout(), self.data.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handshake.handle_timeout(now, &mut self.out);
        self.data.handle_timeout(now);
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                TunnelTimer::Confirm => {
                    if let Some(confirmation) = &mut self.confirmation {
                        confirmation.interval = (confirmation.interval * 2).min(self.config.handshake.retransmit_max);
                        let at = now + confirmation.interval;
                        self.timers.set(TunnelTimer::Confirm, at);
                        self.send_keepalive(now);
                    }
                }
            }
        }
        self.drain_events();
    }

    /// A datagram from the socket. A data packet that opens into a tun packet is written to
    /// `out` (at least [`Self::max_datagram_len`] bytes) and described by the result;
    /// everything else is handled here.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Option<Delivered> {
        let first = datagram.first().copied().unwrap_or(msg_type::HANDSHAKE_BIT);
        if first & msg_type::HANDSHAKE_BIT != 0 {
            let silent = self.peer_silent(now);
            self.handshake.handle_message(from, datagram, silent, &mut self.out);
            return None;
        }
        let opened = self.data.open(now, datagram, out);
        let delivered = match opened {
            Ok(opened) => {
                self.last_authentic = Some(now);
                match opened.kind {
                    Delivery::Packet { ethertype } => Some(Delivered { ethertype, range: opened.range }),
                    Delivery::Control => {
                        if out[opened.range] != [KEEPALIVE] {
                            self.counters.unknown_control += 1;
                        }
                        None
                    }
                }
            }
            // Counted by the data plane under its reason.
            Err(_) => None,
        };
        self.drain_events();
        delivered
    }

    /// Seals a tun packet into `out` (at least [`Self::max_datagram_len`] bytes).
    pub fn send_packet(
        &mut self,
        now: Instant,
        ethertype: u16,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<Outgoing, SendError> {
        let to = self.peer.ok_or(SendError::NoPeer)?;
        let sealed = self.data.seal(now, Inner::Packet { ethertype, payload }, out);
        self.drain_events();
        let len = sealed?;
        self.last_sealed = Some(now);
        Ok(Outgoing { to, len })
    }

    /// One of keyd's answers.
    pub fn handle_keyd(&mut self, now: Instant, message: KeydToNetd) -> Result<(), TunnelError> {
        match message {
            KeydToNetd::SendInitiatorAuth { ni, message } => {
                self.handshake.initiator_auth_built(ni, message, &mut self.out);
            }
            KeydToNetd::SendResponderAuth { ni: _, peer, message, recv_key, restart } => {
                if restart {
                    self.restart();
                }
                match self.data.install_recv_key(recv_key) {
                    Ok(()) => {
                        self.handshake.responded(&mut self.out);
                        self.peer = Some(peer);
                        self.out.transmits.push_back(Transmit { to: peer, bytes: message });
                    }
                    // The initiator will try again; by then the slot is free.
                    Err(KeyError::SlotBusy { .. }) => self.handshake.count(HandshakeDrop::KeySlotBusy),
                    Err(error @ KeyError::Stale { .. }) => return Err(TunnelError::Key(error)),
                }
            }
            KeydToNetd::SessionKeys { ni, send_key, recv_key, restart } => {
                if !self.handshake.completed(ni) {
                    return Err(TunnelError::UnknownCompletion);
                }
                if restart {
                    self.restart();
                }
                let recv_epoch = recv_key.epoch;
                self.data.install_send_key(now, send_key).map_err(TunnelError::Key)?;
                self.install_recv(recv_key)?;
                self.counters.initiated += 1;
                self.session_started = Some(now);
                let interval = self.config.handshake.retransmit_initial;
                self.confirmation = Some(Confirmation { epoch: recv_epoch, interval });
                self.timers.set(TunnelTimer::Confirm, now + interval);
                self.send_keepalive(now);
            }
            KeydToNetd::SendKey { key, session_start } => {
                let idle = self
                    .last_sealed
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.config.idle_step_keepalive);
                self.data.install_send_key(now, key).map_err(TunnelError::Key)?;
                if !session_start && idle {
                    self.send_keepalive(now);
                }
                if session_start {
                    // The responder's switch: tell the initiator its confirmation arrived.
                    // A renewal of our own, if one started meanwhile, is not needed now.
                    self.counters.responded += 1;
                    self.session_started = Some(now);
                    self.handshake.responded(&mut self.out);
                    self.send_keepalive(now);
                }
            }
            KeydToNetd::RecvKey(key) => self.install_recv(key)?,
            KeydToNetd::HandshakeFailed { ni, reason } => self.handshake.failed(ni, reason),
            KeydToNetd::RenewalDue => {
                if let Some(peer) = self.peer
                    && !self.handshake.initiating()
                {
                    self.handshake.start(now, peer, &mut self.out);
                }
            }
        }
        self.drain_events();
        Ok(())
    }

    fn install_recv(&mut self, key: EpochKey) -> Result<(), TunnelError> {
        match self.data.install_recv_key(key) {
            Ok(()) => Ok(()),
            Err(KeyError::SlotBusy { .. }) => {
                self.counters.recv_keys_refused += 1;
                Ok(())
            }
            Err(error @ KeyError::Stale { .. }) => Err(TunnelError::Key(error)),
        }
    }

    /// The peer restarted: its keys are void.
    fn restart(&mut self) {
        self.counters.restarts += 1;
        self.data.clear_keys();
        self.confirmation = None;
        self.timers.stop(TunnelTimer::Confirm);
    }

    /// Whether an Initiator Auth repeating an old epoch may be the peer's restart.
    fn peer_silent(&self, now: Instant) -> bool {
        let quiet =
            |t: Option<Instant>| t.is_none_or(|t| now.saturating_duration_since(t) >= self.config.restart_quiet);
        quiet(self.last_authentic) && quiet(self.session_started)
    }

    fn send_keepalive(&mut self, now: Instant) {
        let Some(to) = self.peer else { return };
        // A refusal (no key, key exhausted) is counted by the data plane.
        if let Ok(len) = self.data.seal(now, Inner::Control(&[KEEPALIVE]), &mut self.scratch) {
            self.counters.keepalives += 1;
            self.last_sealed = Some(now);
            self.out.transmits.push_back(Transmit { to, bytes: self.scratch[..len].to_vec() });
        }
    }

    /// Turns the data plane's events into requests for keyd.
    fn drain_events(&mut self) {
        while let Some(event) = self.data.poll_event() {
            match event {
                Event::SendKeyWanted { current, reason: _ } => {
                    self.out.keyd.push_back(NetdToKeyd::SendKeyWanted { current });
                }
                Event::RecvEpochStarted { epoch } => {
                    if self.confirmation.is_some_and(|c| epoch >= c.epoch) {
                        self.confirmation = None;
                        self.timers.stop(TunnelTimer::Confirm);
                    }
                    self.out.keyd.push_back(NetdToKeyd::RecvEpochStarted { epoch });
                }
                Event::RecvKeyErased { .. } => {}
            }
        }
    }
}
