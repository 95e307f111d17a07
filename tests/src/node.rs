//! A whole peer for the simulator: netd's [`Tunnel`] and keyd's [`KeyDaemon`] wired
//! in-process through the IPC enums (`NetdToKeyd`, `KeydToNetd`), with a traffic generator standing in for the tun
//! device.
//!
//! The two cores talk exactly as they would across the socketpair: every
//! `NetdToKeyd` goes to the daemon and every [`KeydToNetd`] back to the tunnel, in order,
//! after each input. A fatal error on either side fails the test at once. The tunnel's
//! events are collected with their time, as the shell would report them to the parent.
//!
//! A node can also play the local stack's part in path-MTU discovery: with
//! [`Node::local_mtu`] set, a datagram longer than it is not sent but reported to the
//! tunnel as `EMSGSIZE` would be.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use yavipin_ipc::KeydToNetd;
use yavipin_keyd::{KeyDaemon, KeydConfig};
use yavipin_netd::{Classic, DataPlane, SendError, Tunnel, TunnelConfig, TunnelEvent};
use yavipin_proto::keys::Psk;
use yavipin_proto::rng::Seeded;

use crate::sim::{Endpoint, Transmit};

/// Ethertype of the generated traffic (IPv4).
const ETHERTYPE: u16 = 0x0800;

/// Steady traffic from the node's "tun device": one packet of `len` bytes every `interval`.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Time between packets.
    pub interval: Duration,
    /// Bytes per packet (at least 8: the packet id).
    pub len: usize,
    next_at: Instant,
    next_id: u64,
}

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// netd's configuration (this node's address, the peer's if known, timings).
    pub tunnel: TunnelConfig,
    /// keyd's configuration.
    pub keyd: KeydConfig,
    /// The pre-shared key.
    pub psk: [u8; 32],
    /// Seed of both cores' randomness.
    pub seed: u64,
}

/// One peer: tunnel, key daemon, traffic. See the module documentation.
pub struct Node {
    /// netd's core.
    pub tunnel: Tunnel<Seeded>,
    /// keyd's core.
    pub keyd: KeyDaemon<Seeded>,
    /// Ids of the tun packets delivered, in arrival order.
    pub received: Vec<u64>,
    /// Id of every data packet sealed, by datagram bytes.
    pub sent: HashMap<Vec<u8>, u64>,
    /// Tun packets not sent because no key was installed yet.
    pub refused_before_up: u64,
    /// Tun packets not sent for any other reason (exhausted key, no peer, ...).
    pub refused: u64,
    /// Messages netd sent keyd.
    pub to_keyd: u64,
    /// Messages keyd sent netd.
    pub from_keyd: u64,
    /// The tunnel's events, with the time each was taken.
    pub events: Vec<(Instant, TunnelEvent)>,
    /// Largest datagram the local interface sends: longer ones are refused and reported to
    /// the tunnel (`EMSGSIZE`). `None`: no limit.
    pub local_mtu: Option<usize>,
    traffic: Option<Traffic>,
    out: VecDeque<Transmit>,
    buf: Vec<u8>,
}

impl core::fmt::Debug for Node {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Node")
            .field("tunnel", &self.tunnel)
            .field("keyd", &self.keyd)
            .field("received", &self.received.len())
            .field("sent", &self.sent.len())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node started at `now`: with a configured peer it starts initiating at once.
    pub fn new(now: Instant, config: NodeConfig) -> Self {
        let key_id = config.tunnel.handshake.key_id;
        let mut psk = config.psk;
        let keyd = KeyDaemon::new(config.keyd, key_id, Psk::new(&mut psk), Seeded::new(config.seed ^ 0x6b65_7964));
        let tunnel = Tunnel::new(now, config.tunnel, Seeded::new(config.seed));
        // Room for anything the peer sends; sealing needs less.
        let buf = vec![0; DataPlane::<Classic>::OPEN_BUFFER_LEN.max(tunnel.max_datagram_len())];
        let mut node = Self {
            tunnel,
            keyd,
            received: Vec::new(),
            sent: HashMap::new(),
            refused_before_up: 0,
            refused: 0,
            to_keyd: 0,
            from_keyd: 0,
            events: Vec::new(),
            local_mtu: None,
            traffic: None,
            out: VecDeque::new(),
            buf,
        };
        node.pump(now);
        node
    }

    /// Starts sending a packet of `len` bytes every `interval`, the first at `start`.
    pub fn start_traffic(&mut self, start: Instant, interval: Duration, len: usize) {
        let next_id = self.traffic.as_ref().map_or(0, |t| t.next_id);
        self.traffic = Some(Traffic { interval, len: len.max(8), next_at: start, next_id });
    }

    /// Stops the traffic generator.
    pub fn stop_traffic(&mut self) {
        self.traffic = None;
    }

    /// Seals a tun packet carrying `id` and queues it for the link.
    pub fn send(&mut self, now: Instant, id: u64, len: usize) -> Result<(), SendError> {
        let mut payload = vec![0u8; len.max(8)];
        payload[..8].copy_from_slice(&id.to_be_bytes());
        let result = self.tunnel.send_packet(now, ETHERTYPE, &payload, &mut self.buf);
        self.pump(now);
        match result {
            Ok(outgoing) if self.local_mtu.is_some_and(|mtu| outgoing.len > mtu) => {
                self.tunnel.handle_send_error_too_big(now, outgoing.len);
                self.pump(now);
                Ok(())
            }
            Ok(outgoing) => {
                let bytes = self.buf[..outgoing.len].to_vec();
                self.sent.insert(bytes.clone(), id);
                self.out.push_back(Transmit { to: outgoing.to, bytes });
                Ok(())
            }
            Err(error) => {
                if self.tunnel.is_up() {
                    self.refused += 1;
                } else {
                    self.refused_before_up += 1;
                }
                Err(error)
            }
        }
    }

    /// Shuts the tunnel down (the parent's `Shutdown`): its notice is queued for the link.
    pub fn shutdown(&mut self, now: Instant) {
        self.tunnel.shutdown(now);
        self.pump(now);
    }

    /// The local stack refused a datagram of `len` bytes as too large.
    pub fn report_too_big(&mut self, now: Instant, len: usize) {
        self.tunnel.handle_send_error_too_big(now, len);
        self.pump(now);
    }

    /// The events of one kind, as `f` picks them.
    pub fn events_where<T>(&self, f: impl Fn(&TunnelEvent) -> Option<T>) -> Vec<(Instant, T)> {
        self.events.iter().filter_map(|(at, event)| f(event).map(|t| (*at, t))).collect()
    }

    /// Runs the IPC between the two cores until both are quiet.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(message) = self.tunnel.poll_keyd() {
                moved = true;
                self.to_keyd += 1;
                let shown = format!("{message:?}");
                if let Err(error) = self.keyd.handle_netd(now, message) {
                    panic!("keyd refused {shown}: {error}");
                }
            }
            while let Some(message) = self.keyd.poll_output() {
                moved = true;
                self.from_keyd += 1;
                let shown = describe(&message);
                if let Err(error) = self.tunnel.handle_keyd(now, message) {
                    panic!("netd refused {shown}: {error}");
                }
            }
            if !moved {
                break;
            }
        }
        while let Some(transmit) = self.tunnel.poll_transmit() {
            if self.local_mtu.is_some_and(|mtu| transmit.bytes.len() > mtu) {
                // May queue another datagram (the next probe): the loop takes it too.
                self.tunnel.handle_send_error_too_big(now, transmit.bytes.len());
                continue;
            }
            self.out.push_back(Transmit { to: transmit.to, bytes: transmit.bytes });
        }
        while let Some(event) = self.tunnel.poll_event() {
            self.events.push((now, event));
        }
    }
}

/// A keyd answer's name, for failure messages (the keys themselves print as ids only).
fn describe(message: &KeydToNetd) -> String {
    match message {
        KeydToNetd::SendInitiatorAuth { .. } => "SendInitiatorAuth".into(),
        KeydToNetd::SendResponderAuth { recv_key, restart, .. } => {
            format!("SendResponderAuth({}, restart {restart})", recv_key.epoch)
        }
        KeydToNetd::SessionKeys { send_key, recv_key, .. } => {
            format!("SessionKeys(send {}, recv {})", send_key.epoch, recv_key.epoch)
        }
        KeydToNetd::SendKey { key, session_start } => format!("SendKey({}, start {session_start})", key.epoch),
        KeydToNetd::RecvKey(key) => format!("RecvKey({})", key.epoch),
        KeydToNetd::HandshakeFailed { reason, .. } => format!("HandshakeFailed({})", reason.name()),
        KeydToNetd::RenewalDue => "RenewalDue".into(),
    }
}

impl Endpoint for Node {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let delivered = self.tunnel.handle_datagram(now, from, datagram, &mut self.buf);
        if let Some(delivered) = delivered
            && let Some(id) = self.buf[delivered.range].first_chunk::<8>()
        {
            self.received.push(u64::from_be_bytes(*id));
        }
        self.pump(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.tunnel.poll_timeout(), self.keyd.poll_timeout(), self.traffic.as_ref().map(|t| t.next_at)]
            .into_iter()
            .flatten()
            .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.tunnel.handle_timeout(now);
        self.keyd.handle_timeout(now);
        self.pump(now);
        while let Some(traffic) = self.traffic.as_mut().filter(|t| t.next_at <= now) {
            let (id, len) = (traffic.next_id, traffic.len);
            traffic.next_id += 1;
            traffic.next_at += traffic.interval;
            // A refusal is counted by `send`.
            let _ = self.send(now, id, len);
        }
    }
}
