//! One tunnel's sans-IO core in netd: the handshake engine, the data plane and the
//! liveness logic together.
//!
//! [`Tunnel`] takes datagrams from the UDP socket ([`Tunnel::handle_datagram`]), packets
//! from the tun device ([`Tunnel::send_packet`]), keyd's answers ([`Tunnel::handle_keyd`]),
//! the local stack's refusals of oversized datagrams
//! ([`Tunnel::handle_send_error_too_big`]) and the order to stop ([`Tunnel::shutdown`]);
//! it hands out datagrams to send ([`Tunnel::poll_transmit`]), requests for keyd
//! ([`Tunnel::poll_keyd`]), events for the parent ([`Tunnel::poll_event`]) and its next
//! deadline ([`Tunnel::poll_timeout`]). Data packets are sealed into and opened into
//! caller-owned buffers; only handshake and control messages are queued.
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
//!
//! Liveness (`docs/PROTOCOL.md` section 5):
//! - unreachability detection ([`crate::liveness`]): when the peer stops confirming, echo
//!   requests probe it; unanswered, the session is torn down (keys erased,
//!   [`TunnelEvent::Down`]) and a side with a configured peer initiates again, with the
//!   handshake's capped back-off, until it is up; a side without one waits to be contacted;
//! - a keepalive after [`crate::liveness::LivenessConfig::keepalive_interval`] without
//!   sealing anything, for NATs on the path;
//! - a shutdown notice, sent by [`Tunnel::shutdown`]; an authenticated one from the peer
//!   tears the session down at once;
//! - roaming: the peer's endpoint follows the source address of the newest authenticated
//!   packet, and nothing else (see [`Tunnel::handle_datagram`]);
//! - path-MTU discovery with authenticated probes ([`crate::pmtu`]).
//!
//! After a session is torn down, keyd may still answer requests made for it: a chain step's
//! send or receive key. Those are ignored until the next session's keys arrive, so that a
//! torn-down tunnel cannot come back up on the old session's keys.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use yavipin_ipc::{KeydToNetd, NetdToKeyd};
use yavipin_proto::data::DataHeader;
use yavipin_proto::timer::{Timer, TimerTable};
use yavipin_proto::{Epoch, EpochKey, Random, msg_type};
use zeroize::Zeroizing;

use crate::control::{self, Control};
use crate::counters::SealError;
use crate::dataplane::{DataConfig, DataPlane, Delivery, Event, Inner, KeyError};
use crate::handshake::{Handshake, HandshakeConfig, HandshakeDrop, Outbox};
use crate::liveness::{LivenessConfig, Nud, NudAction, NudState};
use crate::pmtu::{IPV4_OVERHEAD, IPV6_OVERHEAD, Pmtu, PmtuConfig, PmtuState, ProbeRequest};
use crate::suite::Classic;

/// Events kept for the shell at most; older ones give way (the shell drains after every
/// input, so only a shell that never looks loses any).
const EVENT_QUEUE: usize = 64;

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
    /// The peer's endpoint, if configured: this side then initiates at once, and again
    /// whenever the session is torn down. Without one the tunnel only responds, and learns
    /// the endpoint from an authenticated handshake.
    pub peer: Option<SocketAddr>,
    /// A peer's Initiator Auth announcing an epoch it already used is taken as a restart
    /// of the peer only when nothing authenticated has come from it for this long and the
    /// session is at least this old (or the session was torn down); otherwise it is a
    /// delayed message and refused.
    pub restart_quiet: Duration,
    /// A send key that replaces one after nothing was sealed for this long is announced
    /// with a keepalive. The receiver holds keys only two epochs ahead of the last one it
    /// heard, so timed steps of an idle tunnel must not pass silently.
    pub idle_step_keepalive: Duration,
    /// Unreachability detection and the NAT keepalive.
    pub liveness: LivenessConfig,
    /// Path-MTU discovery.
    pub pmtu: PmtuConfig,
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
            liveness: LivenessConfig::default(),
            pmtu: PmtuConfig::default(),
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
    /// The tunnel was shut down.
    #[error("tunnel shut down")]
    Closed,
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

pub use yavipin_ipc::reasons::DownReason;

/// Something the shell reports to the parent or logs. Drained with [`Tunnel::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEvent {
    /// A session is established (the first, or the first after the tunnel went down):
    /// set the link up, run the up script.
    Up {
        /// The peer's endpoint.
        peer: SocketAddr,
    },
    /// The session is gone and its keys erased: set the link down, run the down script.
    Down {
        /// Why.
        reason: DownReason,
    },
    /// The unreachability detector changed state (for logs at debug level).
    Reachability {
        /// The new state.
        state: NudState,
    },
    /// The peer's endpoint moved (NAT rebinding, roaming), learned from an authenticated
    /// packet.
    PeerMoved {
        /// The endpoint before.
        from: Option<SocketAddr>,
        /// The endpoint now.
        to: SocketAddr,
    },
    /// The usable MTU changed: set the tun device's MTU to `inner_mtu`.
    MtuChanged {
        /// Largest IP packet known to reach the peer.
        path_mtu: u16,
        /// Largest tun packet that fits in it.
        inner_mtu: u16,
    },
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
    /// Keepalives sent to confirm a new session's keys or announce an idle chain step.
    pub keepalives: u64,
    /// Keepalives sent because nothing was sealed for the keepalive interval (NAT).
    pub idle_keepalives: u64,
    /// Echo requests sent by the unreachability detector.
    pub echo_requests: u64,
    /// Echo replies that answered one of them.
    pub echo_replies: u64,
    /// Echo requests from the peer answered.
    pub echoes_answered: u64,
    /// Echo replies that matched no request of the current round (late or duplicated).
    pub stray_echo_replies: u64,
    /// Times the peer was declared unreachable.
    pub unreachable: u64,
    /// Shutdown notices sent.
    pub shutdowns_sent: u64,
    /// Authenticated shutdown notices received.
    pub shutdowns_received: u64,
    /// Times the peer's endpoint moved.
    pub peer_moves: u64,
    /// Path-MTU probes sent.
    pub pmtu_probes: u64,
    /// Path-MTU probes acknowledged.
    pub pmtu_acks: u64,
    /// Path-MTU probes of the peer acknowledged.
    pub pmtu_probes_answered: u64,
    /// Path-MTU acknowledgements that matched no probe under test.
    pub stray_pmtu_acks: u64,
    /// Datagrams the local stack refused as too large (reported by the shell).
    pub too_big: u64,
    /// Keys keyd handed out for a session already torn down, ignored.
    pub stale_keys: u64,
    /// Events dropped because the shell did not drain them.
    pub events_dropped: u64,
    /// Control messages received of a type this tunnel does not handle, or malformed.
    pub unknown_control: u64,
    /// Receive keys from keyd that did not fit the data plane (a slot held a key in use).
    pub recv_keys_refused: u64,
}

/// A snapshot of the tunnel's state for the status command: plain data, no secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelStatus {
    /// A send key is installed: packets flow.
    pub up: bool,
    /// [`Tunnel::shutdown`] was called.
    pub closed: bool,
    /// The peer's endpoint, configured or learned.
    pub peer: Option<SocketAddr>,
    /// The unreachability detector's state.
    pub reachability: NudState,
    /// When reachability was last confirmed.
    pub last_confirmed: Option<Instant>,
    /// When the tunnel last came up.
    pub up_since: Option<Instant>,
    /// When the last handshake (a Diffie-Hellman exchange) completed.
    pub last_handshake: Option<Instant>,
    /// When the last Diffie-Hellman renewal of a running session completed.
    pub last_renewal: Option<Instant>,
    /// Why the tunnel last went down.
    pub last_down: Option<DownReason>,
    /// Where path-MTU discovery stands.
    pub pmtu: PmtuState,
    /// Largest IP packet known to reach the peer.
    pub path_mtu: Option<u16>,
    /// Largest tun packet that fits in it.
    pub inner_mtu: Option<u16>,
    /// Everything counted.
    pub counters: TunnelCounters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TunnelTimer {
    /// The initiator repeats its key confirmation.
    Confirm,
    /// Nothing sealed for the keepalive interval (re-armed lazily from the last packet).
    Keepalive,
}

impl Timer for TunnelTimer {
    const ALL: &'static [Self] = &[Self::Confirm, Self::Keepalive];
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

/// The tunnel's own random stream (probe ids, reachable-time jitter): SHA-256 of a seed
/// and a counter. The seed comes from the injected [`Random`] before the handshake takes
/// it, so production draws from the kernel and a simulation replays from its seed. The
/// values it yields only travel encrypted; they need to be unpredictable and distinct,
/// never secret.
struct TunnelRandom {
    seed: Zeroizing<[u8; 32]>,
    counter: u64,
    block: Zeroizing<[u8; 32]>,
    used: usize,
}

impl TunnelRandom {
    fn new(rng: &mut impl Random) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill(&mut seed[..]);
        Self { seed, counter: 0, block: Zeroizing::new([0; 32]), used: 32 }
    }
}

impl Random for TunnelRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            if self.used == self.block.len() {
                let mut hash = Sha256::new();
                hash.update(b"yavipin tunnel random");
                hash.update(&self.seed[..]);
                hash.update(self.counter.to_be_bytes());
                *self.block = hash.finalize().into();
                self.counter += 1;
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
    }
}

/// Whether a sealed control message counts as traffic (for the keepalive's idle clock and
/// the unreachability detector): everything but path-MTU probes, which may be too large to
/// arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sealed {
    Traffic,
    Probe,
}

/// Where the tunnel is in its life, beyond whether a session is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// Initiating, responding or up.
    Running,
    /// The last session was torn down: keys keyd still hands out for it are ignored, and a
    /// peer announcing an old epoch is taken as restarted, until the next session's keys.
    TornDown,
    /// [`Tunnel::shutdown`] was called: every input is ignored.
    Closed,
}

/// One tunnel. See the module documentation.
pub struct Tunnel<R: Random> {
    config: TunnelConfig,
    handshake: Handshake<R>,
    data: DataPlane<Classic>,
    peer: Option<SocketAddr>,
    out: Outbox,
    events: VecDeque<TunnelEvent>,
    confirmation: Option<Confirmation>,
    session_started: Option<Instant>,
    up_since: Option<Instant>,
    last_renewal: Option<Instant>,
    last_authentic: Option<Instant>,
    /// When a packet (data, or a control message other than a path-MTU probe) was last
    /// sealed.
    last_sealed: Option<Instant>,
    nud: Nud,
    pmtu: Pmtu,
    rng: TunnelRandom,
    /// Whether `Up` was the last of `Up`/`Down` reported.
    reported_up: bool,
    /// The MTUs last reported.
    reported_mtu: Option<(u16, u16)>,
    /// Why the tunnel is going down, for the `Down` event.
    down_reason: Option<DownReason>,
    last_down: Option<DownReason>,
    life: Life,
    /// Phase and sequence number of the newest packet from the peer under its current
    /// epoch: only a packet newer than every other moves the endpoint.
    recv_top: Option<(u8, u32)>,
    /// Set while opening a packet if it started a newer epoch.
    epoch_advanced: bool,
    timers: TimerTable<TunnelTimer, 2>,
    counters: TunnelCounters,
    /// Sealing buffer for control messages.
    scratch: Vec<u8>,
    /// Plaintext of path-MTU probes.
    probe: Vec<u8>,
}

impl<R: Random> core::fmt::Debug for Tunnel<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tunnel")
            .field("peer", &self.peer)
            .field("reachability", &self.nud.state())
            .field("path_mtu", &self.pmtu.path_mtu())
            .field("handshake", &self.handshake)
            .field("data", &self.data)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<R: Random> Tunnel<R> {
    /// A tunnel with no keys. With a configured peer it starts initiating at `now`.
    pub fn new(now: Instant, config: TunnelConfig, mut rng: R) -> Self {
        let data = DataPlane::new(config.data.clone());
        let scratch = vec![0; data.max_datagram_len()];
        let probe = vec![0; config.data.max_inner_len];
        let own = TunnelRandom::new(&mut rng);
        let overhead = DataPlane::<Classic>::OVERHEAD;
        let mut tunnel = Self {
            handshake: Handshake::new(now, config.handshake.clone(), rng),
            pmtu: Pmtu::new(config.pmtu.clone(), config.data.max_inner_len + overhead, overhead),
            nud: Nud::new(now, config.liveness.clone()),
            data,
            peer: config.peer,
            out: Outbox::default(),
            events: VecDeque::with_capacity(EVENT_QUEUE),
            confirmation: None,
            session_started: None,
            up_since: None,
            last_renewal: None,
            last_authentic: None,
            last_sealed: None,
            rng: own,
            reported_up: false,
            reported_mtu: None,
            down_reason: None,
            last_down: None,
            life: Life::Running,
            recv_top: None,
            epoch_advanced: false,
            timers: TimerTable::default(),
            counters: TunnelCounters::default(),
            scratch,
            probe,
            config,
        };
        if let Some(peer) = tunnel.peer {
            tunnel.handshake.start(now, peer, &mut tunnel.out);
        }
        tunnel
    }

    /// The peer's endpoint, configured or learned (and moved by roaming).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Whether a send key is installed: packets can flow.
    pub fn is_up(&self) -> bool {
        self.data.send_epoch().is_some()
    }

    /// Whether [`Self::shutdown`] was called: the tunnel does nothing any more.
    pub fn is_closed(&self) -> bool {
        self.life == Life::Closed
    }

    /// The unreachability detector's state.
    pub fn reachability(&self) -> NudState {
        self.nud.state()
    }

    /// Largest IP packet known to reach the peer, while up.
    pub fn path_mtu(&self) -> Option<u16> {
        self.pmtu.path_mtu()
    }

    /// Largest tun packet that fits in [`Self::path_mtu`]: the tun device's MTU.
    pub fn inner_mtu(&self) -> Option<u16> {
        self.pmtu.inner_mtu()
    }

    /// The configuration in force.
    pub fn config(&self) -> &TunnelConfig {
        &self.config
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

    /// A snapshot for the status command.
    pub fn status(&self) -> TunnelStatus {
        TunnelStatus {
            up: self.is_up(),
            closed: self.life == Life::Closed,
            peer: self.peer,
            reachability: self.nud.state(),
            last_confirmed: self.nud.last_confirmed(),
            up_since: self.up_since.filter(|_| self.reported_up),
            last_handshake: self.session_started,
            last_renewal: self.last_renewal,
            last_down: self.last_down,
            pmtu: self.pmtu.state(),
            path_mtu: self.pmtu.path_mtu(),
            inner_mtu: self.pmtu.inner_mtu(),
            counters: self.counters.clone(),
        }
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

    /// The next event for the parent or the log. Drain after every input.
    pub fn poll_event(&mut self) -> Option<TunnelEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.life == Life::Closed {
            return None;
        }
        [
            self.timers.next_deadline(),
            self.handshake.poll_timeout(),
            self.data.poll_timeout(),
            self.nud.poll_timeout(),
            self.pmtu.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.life == Life::Closed {
            return;
        }
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
                TunnelTimer::Keepalive => self.keepalive_due(now),
            }
        }
        while let Some(action) = self.nud.handle_timeout(now, &mut self.rng) {
            self.take_nud_transitions();
            match action {
                NudAction::Probe(id) => {
                    if self.send_control(now, &control::echo(control::ECHO_REQUEST, id), Sealed::Traffic) {
                        self.counters.echo_requests += 1;
                    }
                }
                NudAction::Unreachable => {
                    self.counters.unreachable += 1;
                    self.teardown(now, DownReason::PeerUnreachable);
                }
            }
        }
        self.take_nud_transitions();
        self.pmtu.handle_timeout(now);
        self.after_pmtu(now);
        self.drain_events();
        self.sync_up(now);
    }

    /// A datagram from the socket. A data packet that opens into a tun packet is written to
    /// `out` ([`DataPlane::OPEN_BUFFER_LEN`] bytes take anything) and described by the result;
    /// everything else is handled here.
    ///
    /// Roaming: a datagram that authenticated and passed the replay window from another
    /// address than the peer's moves the peer's endpoint there, if it is the newest packet
    /// the peer sent (it starts a newer epoch, or carries the highest sequence number yet
    /// under the current one), so that a packet delayed on the old path does not move it
    /// back. Datagrams that fail the tag or the replay window change nothing.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Option<Delivered> {
        if self.life == Life::Closed {
            return None;
        }
        let first = datagram.first().copied().unwrap_or(msg_type::HANDSHAKE_BIT);
        if first & msg_type::HANDSHAKE_BIT != 0 {
            let silent = self.peer_silent(now);
            self.handshake.handle_message(from, datagram, silent, &mut self.out);
            return None;
        }
        self.epoch_advanced = false;
        let opened = self.data.open(now, datagram, out);
        // Counted by the data plane under its reason.
        let Ok(opened) = opened else {
            self.drain_events();
            return None;
        };
        self.last_authentic = Some(now);
        self.drain_events();
        if self.is_newest(datagram) && self.peer != Some(from) {
            self.roam(now, from);
        }
        let delivered = match opened.kind {
            Delivery::Packet { ethertype } => {
                self.nud.confirm(now, &mut self.rng);
                Some(Delivered { ethertype, range: opened.range })
            }
            Delivery::Control => {
                self.handle_control(now, datagram.len(), &out[opened.range]);
                None
            }
        };
        // After an acknowledgement was matched: the packet that decides a pending probe's
        // loss must not be that probe's own acknowledgement.
        self.pmtu.heard(now);
        self.take_nud_transitions();
        self.after_pmtu(now);
        self.drain_events();
        self.sync_up(now);
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
        if self.life == Life::Closed {
            return Err(SendError::Closed);
        }
        let to = self.peer.ok_or(SendError::NoPeer)?;
        let sealed = self.data.seal(now, Inner::Packet { ethertype, payload }, out);
        self.drain_events();
        let len = sealed?;
        self.last_sealed = Some(now);
        self.nud.sealed(now);
        self.take_nud_transitions();
        Ok(Outgoing { to, len })
    }

    /// The local stack refused to send a datagram of `len` bytes to the peer because it is
    /// larger than the interface (`EMSGSIZE`). Lowers the path MTU at once if it was in
    /// use ([`TunnelEvent::MtuChanged`]). The shell must call this for data packets and
    /// for [`Self::poll_transmit`]'s datagrams alike, and must have asked the kernel not to
    /// apply ICMP-learned path MTUs (`IP_PMTUDISC_PROBE`), so that only this host's own
    /// interfaces are believed.
    pub fn handle_send_error_too_big(&mut self, now: Instant, len: usize) {
        if self.life == Life::Closed {
            return;
        }
        self.counters.too_big += 1;
        self.pmtu.too_big(now, len);
        self.after_pmtu(now);
    }

    /// Sends the peer an authenticated shutdown notice (if a session is up), erases every
    /// key and closes the tunnel: from now on it ignores every input. The shell then sends
    /// what [`Self::poll_transmit`] holds and exits. The notice is not acknowledged; if it
    /// is lost, the peer's unreachability detection notices the silence.
    pub fn shutdown(&mut self, now: Instant) {
        if self.life == Life::Closed {
            return;
        }
        if self.is_up() && self.send_control(now, &[control::SHUTDOWN], Sealed::Traffic) {
            self.counters.shutdowns_sent += 1;
        }
        self.teardown(now, DownReason::LocalShutdown);
        self.life = Life::Closed;
        self.timers.stop(TunnelTimer::Confirm);
        self.timers.stop(TunnelTimer::Keepalive);
    }

    /// One of keyd's answers.
    pub fn handle_keyd(&mut self, now: Instant, message: KeydToNetd) -> Result<(), TunnelError> {
        if self.life == Life::Closed {
            return Ok(());
        }
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
                        // A new session's keys: what keyd hands out from here on is its.
                        self.life = Life::Running;
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
                self.life = Life::Running;
                let renewal = self.is_up();
                let recv_epoch = recv_key.epoch;
                self.data.install_send_key(now, send_key).map_err(TunnelError::Key)?;
                self.install_recv(recv_key)?;
                self.counters.initiated += 1;
                self.session_started(now, renewal);
                let interval = self.config.handshake.retransmit_initial;
                self.confirmation = Some(Confirmation { epoch: recv_epoch, interval });
                self.timers.set(TunnelTimer::Confirm, now + interval);
                self.send_keepalive(now);
            }
            // A chain step of the session torn down: dropping the key erases it.
            KeydToNetd::SendKey { key, session_start: false } if self.life == Life::TornDown => {
                drop(key);
                self.counters.stale_keys += 1;
            }
            KeydToNetd::SendKey { key, session_start } => {
                let idle = self
                    .last_sealed
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.config.idle_step_keepalive);
                let renewal = self.is_up();
                self.data.install_send_key(now, key).map_err(TunnelError::Key)?;
                if !session_start && idle {
                    self.send_keepalive(now);
                }
                if session_start {
                    // The responder's switch: tell the initiator its confirmation arrived.
                    // A renewal of our own, if one started meanwhile, is not needed now.
                    self.life = Life::Running;
                    self.counters.responded += 1;
                    self.session_started(now, renewal);
                    self.handshake.responded(&mut self.out);
                    self.send_keepalive(now);
                }
            }
            KeydToNetd::RecvKey(key) if self.life == Life::TornDown => {
                drop(key);
                self.counters.stale_keys += 1;
            }
            KeydToNetd::RecvKey(key) => self.install_recv(key)?,
            KeydToNetd::HandshakeFailed { ni, reason } => self.handshake.failed(ni, reason),
            KeydToNetd::RenewalDue => {
                // Only a running session is renewed: after a teardown the side that
                // initiates already does, and the other waits to be contacted.
                if let Some(peer) = self.peer
                    && self.is_up()
                    && !self.handshake.initiating()
                {
                    self.handshake.start(now, peer, &mut self.out);
                }
            }
        }
        self.drain_events();
        self.sync_up(now);
        Ok(())
    }

    fn session_started(&mut self, now: Instant, renewal: bool) {
        self.session_started = Some(now);
        if renewal {
            self.last_renewal = Some(now);
        }
        // The handshake was a round trip.
        self.nud.confirm(now, &mut self.rng);
        self.take_nud_transitions();
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
        self.recv_top = None;
        self.confirmation = None;
        self.timers.stop(TunnelTimer::Confirm);
        if self.reported_up {
            self.down_reason = Some(DownReason::PeerRestarted);
        }
    }

    /// Erases the session's keys and reports the tunnel down; a side with a configured peer
    /// initiates again (unless it is shutting down).
    fn teardown(&mut self, now: Instant, reason: DownReason) {
        self.data.clear_keys();
        self.recv_top = None;
        self.confirmation = None;
        self.timers.stop(TunnelTimer::Confirm);
        self.life = Life::TornDown;
        if self.reported_up {
            self.down_reason = Some(reason);
        }
        if reason != DownReason::LocalShutdown
            && let Some(peer) = self.config.peer
            && !self.handshake.initiating()
        {
            self.handshake.start(now, peer, &mut self.out);
        }
        self.drain_events();
        self.sync_up(now);
    }

    /// Reports `Up`/`Down` when [`Self::is_up`] changed, and starts or stops what runs only
    /// while a session is up.
    fn sync_up(&mut self, now: Instant) {
        let up = self.is_up();
        if up == self.reported_up {
            if up {
                // A restart answered at once by the new session: the link never went down.
                self.down_reason = None;
            }
            return;
        }
        self.reported_up = up;
        if up {
            self.up_since = Some(now);
            self.nud.start(now, &mut self.rng);
            self.take_nud_transitions();
            let overhead = self.peer.map_or(IPV4_OVERHEAD, overhead_to);
            self.pmtu.start(overhead);
            if let Some(interval) = self.config.liveness.keepalive() {
                self.timers.set(TunnelTimer::Keepalive, now + interval);
            }
            if let Some(peer) = self.peer {
                self.push_event(TunnelEvent::Up { peer });
            }
            self.after_pmtu(now);
        } else {
            let reason = self.down_reason.take().unwrap_or(DownReason::PeerRestarted);
            self.last_down = Some(reason);
            self.nud.stop(if reason == DownReason::PeerUnreachable {
                NudState::Unreachable
            } else {
                NudState::Incomplete
            });
            self.take_nud_transitions();
            self.pmtu.stop();
            self.reported_mtu = None;
            self.timers.stop(TunnelTimer::Keepalive);
            self.push_event(TunnelEvent::Down { reason });
        }
    }

    /// Whether an Initiator Auth repeating an old epoch may be the peer's restart.
    fn peer_silent(&self, now: Instant) -> bool {
        let quiet =
            |t: Option<Instant>| t.is_none_or(|t| now.saturating_duration_since(t) >= self.config.restart_quiet);
        self.life == Life::TornDown || (quiet(self.last_authentic) && quiet(self.session_started))
    }

    /// Whether the datagram just opened is the newest the peer sent.
    fn is_newest(&mut self, datagram: &[u8]) -> bool {
        let Ok(header) = DataHeader::parse(datagram) else { return false };
        let newest = match self.recv_top {
            Some((phase, top)) if !self.epoch_advanced => phase == header.phase && header.seq > top,
            _ => true,
        };
        if newest {
            self.recv_top = Some((header.phase, header.seq));
        }
        newest
    }

    fn roam(&mut self, now: Instant, to: SocketAddr) {
        let from = self.peer.replace(to);
        self.counters.peer_moves += 1;
        self.push_event(TunnelEvent::PeerMoved { from, to });
        self.pmtu.path_changed(now, overhead_to(to));
    }

    fn handle_control(&mut self, now: Instant, datagram_len: usize, message: &[u8]) {
        let Ok(message) = Control::parse(message) else {
            self.counters.unknown_control += 1;
            return;
        };
        match message {
            Control::Keepalive => self.nud.confirm(now, &mut self.rng),
            // The peer probing us is no evidence that our packets arrive: no confirmation.
            Control::EchoRequest { id } => {
                if self.send_control(now, &control::echo(control::ECHO_REPLY, id), Sealed::Traffic) {
                    self.counters.echoes_answered += 1;
                }
            }
            Control::EchoReply { id } => {
                if self.nud.echo_reply(now, id, &mut self.rng) {
                    self.counters.echo_replies += 1;
                } else {
                    self.counters.stray_echo_replies += 1;
                }
            }
            Control::Shutdown => {
                self.counters.shutdowns_received += 1;
                self.teardown(now, DownReason::PeerShutdown);
            }
            Control::PathProbe { id } => {
                self.nud.confirm(now, &mut self.rng);
                let size = u16::try_from(datagram_len).unwrap_or(u16::MAX);
                if self.send_control(now, &control::path_ack(id, size), Sealed::Traffic) {
                    self.counters.pmtu_probes_answered += 1;
                }
            }
            Control::PathAck { id, size } => {
                if self.pmtu.on_ack(now, id, size) {
                    self.counters.pmtu_acks += 1;
                    // A round trip under the session's keys.
                    self.nud.confirm(now, &mut self.rng);
                } else {
                    self.counters.stray_pmtu_acks += 1;
                }
            }
        }
    }

    /// Seals a control message and queues it for the peer; false if there was no key (the
    /// data plane counts the refusal) or no peer.
    fn send_control(&mut self, now: Instant, message: &[u8], sealed: Sealed) -> bool {
        let Some(to) = self.peer else { return false };
        let Ok(len) = self.data.seal(now, Inner::Control(message), &mut self.scratch) else { return false };
        self.queue_sealed(now, to, len, sealed);
        true
    }

    fn queue_sealed(&mut self, now: Instant, to: SocketAddr, len: usize, sealed: Sealed) {
        if sealed == Sealed::Traffic {
            self.last_sealed = Some(now);
            self.nud.sealed(now);
            self.take_nud_transitions();
        }
        self.out.transmits.push_back(Transmit { to, bytes: self.scratch[..len].to_vec() });
    }

    fn send_keepalive(&mut self, now: Instant) {
        if self.send_control(now, &[control::KEEPALIVE], Sealed::Traffic) {
            self.counters.keepalives += 1;
        }
    }

    /// The keepalive timer: a keepalive if nothing was sealed for the interval, else the
    /// timer moves to the interval after the last packet.
    fn keepalive_due(&mut self, now: Instant) {
        let Some(interval) = self.config.liveness.keepalive() else { return };
        if !self.is_up() {
            return;
        }
        let due = self.last_sealed.map_or(now, |t| t + interval);
        if due <= now {
            if self.send_control(now, &[control::KEEPALIVE], Sealed::Traffic) {
                self.counters.idle_keepalives += 1;
            }
            self.timers.set(TunnelTimer::Keepalive, now + interval);
        } else {
            self.timers.set(TunnelTimer::Keepalive, due);
        }
    }

    /// Sends the probe path-MTU discovery asks for, and reports a changed MTU. An initiator
    /// whose key confirmation is still out holds its probes back: the responder could not
    /// acknowledge them before it switches to the new session.
    fn after_pmtu(&mut self, now: Instant) {
        if self.confirmation.is_none()
            && let Some(probe) = self.pmtu.poll_probe(now, &mut self.rng)
        {
            self.send_probe(now, probe);
        }
        let mtu = self.pmtu.path_mtu().zip(self.pmtu.inner_mtu());
        if mtu != self.reported_mtu {
            self.reported_mtu = mtu;
            if let Some((path_mtu, inner_mtu)) = mtu {
                self.push_event(TunnelEvent::MtuChanged { path_mtu, inner_mtu });
            }
        }
    }

    /// Seals a path-MTU probe whose datagram is exactly `probe.len` bytes.
    fn send_probe(&mut self, now: Instant, probe: ProbeRequest) {
        let Some(to) = self.peer else { return };
        let plain = probe.len.saturating_sub(DataPlane::<Classic>::OVERHEAD);
        let Some(buf) = self.probe.get_mut(..plain).filter(|b| b.len() >= control::PATH_PROBE_MIN_LEN) else {
            return;
        };
        let message = control::path_probe(probe.id, buf);
        let Ok(len) = self.data.seal(now, Inner::Control(message), &mut self.scratch) else { return };
        debug_assert_eq!(len, probe.len, "a probe is exactly the size it tests");
        self.counters.pmtu_probes += 1;
        self.queue_sealed(now, to, len, Sealed::Probe);
    }

    fn take_nud_transitions(&mut self) {
        while let Some(state) = self.nud.poll_transition() {
            self.push_event(TunnelEvent::Reachability { state });
        }
    }

    fn push_event(&mut self, event: TunnelEvent) {
        if self.events.len() == EVENT_QUEUE {
            self.events.pop_front();
            self.counters.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Turns the data plane's events into requests for keyd.
    fn drain_events(&mut self) {
        while let Some(event) = self.data.poll_event() {
            match event {
                Event::SendKeyWanted { current, reason: _ } => {
                    self.out.keyd.push_back(NetdToKeyd::SendKeyWanted { current });
                }
                Event::RecvEpochStarted { epoch } => {
                    self.epoch_advanced = true;
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

/// IP and UDP header bytes of a datagram to `peer`.
fn overhead_to(peer: SocketAddr) -> u16 {
    if peer.is_ipv4() { IPV4_OVERHEAD } else { IPV6_OVERHEAD }
}
