//! A simulator endpoint that runs only the data plane, with keyd's part played by a
//! deterministic stand-in: traffic secrets are a fixed function of (direction, epoch), and
//! key requests are answered at once. Protocol tests of the data plane run on it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use yavipin_netd::{Classic, DataConfig, DataPlane, Delivery, Event, Inner, SealError};
use yavipin_proto::{Epoch, EpochKey, TrafficSecret};

use crate::sim::{Endpoint, Transmit};

/// Ethertype of the test traffic (IPv4).
const ETHERTYPE: u16 = 0x0800;

/// The stand-in for keyd's traffic secret of `direction` (0: first peer → second, 1: the
/// reverse) at `epoch`. Distinct for every pair; both peers compute the same.
pub fn test_secret(direction: u8, epoch: Epoch) -> EpochKey {
    let mut bytes = [0x5a; 32];
    bytes[..4].copy_from_slice(&epoch.0.to_be_bytes());
    bytes[4] = direction;
    EpochKey { epoch, secret: TrafficSecret::new(bytes) }
}

/// One peer of a data-plane-only tunnel.
pub struct DataPeer {
    /// The core under test.
    pub plane: DataPlane<Classic>,
    peer: SocketAddr,
    /// Direction this peer sends in (0 or 1).
    direction: u8,
    /// Answer `SendKeyWanted` with the next epoch at once, as keyd would.
    pub auto_renew: bool,
    /// Send-key renewals performed.
    pub renewals: u32,
    /// Ids of the packets delivered, in arrival order.
    pub received: Vec<u64>,
    /// Control messages delivered.
    pub control: Vec<Vec<u8>>,
    /// Every event the core emitted, in order.
    pub events: Vec<Event>,
    /// Id of every sealed data packet, by datagram bytes (each datagram is unique).
    pub sent: HashMap<Vec<u8>, u64>,
    out: VecDeque<Transmit>,
    buf: Vec<u8>,
}

impl core::fmt::Debug for DataPeer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DataPeer")
            .field("direction", &self.direction)
            .field("renewals", &self.renewals)
            .field("received", &self.received.len())
            .finish_non_exhaustive()
    }
}

impl DataPeer {
    /// A peer sending in `direction` to `peer`, keyed at epoch 0 both ways, with the
    /// receive key of epoch 1 already installed.
    pub fn new(now: Instant, config: DataConfig, direction: u8, peer: SocketAddr) -> Self {
        let mut plane = DataPlane::new(config);
        plane.install_send_key(now, test_secret(direction, Epoch(0))).expect("first key");
        plane.install_recv_key(test_secret(1 - direction, Epoch(0))).expect("first key");
        plane.install_recv_key(test_secret(1 - direction, Epoch(1))).expect("next key");
        let buf = vec![0; plane.max_datagram_len()];
        Self {
            plane,
            peer,
            direction,
            auto_renew: true,
            renewals: 0,
            received: Vec::new(),
            control: Vec::new(),
            events: Vec::new(),
            sent: HashMap::new(),
            out: VecDeque::new(),
            buf,
        }
    }

    /// Seals a packet of `len` bytes (at least 8) that carries `id`, and queues it.
    pub fn send(&mut self, now: Instant, id: u64, len: usize) -> Result<(), SealError> {
        let mut payload = vec![0u8; len.max(8)];
        payload[..8].copy_from_slice(&id.to_be_bytes());
        self.send_inner(now, Inner::Packet { ethertype: ETHERTYPE, payload: &payload })?;
        if let Some(sealed) = self.out.back() {
            self.sent.insert(sealed.bytes.clone(), id);
        }
        Ok(())
    }

    /// Seals and queues any inner message.
    pub fn send_inner(&mut self, now: Instant, inner: Inner<'_>) -> Result<(), SealError> {
        let result = self.plane.seal(now, inner, &mut self.buf);
        self.drain_events(now);
        let len = result?;
        self.out.push_back(Transmit { to: self.peer, bytes: self.buf[..len].to_vec() });
        Ok(())
    }

    /// Moves sending to the next epoch, as keyd's answer to a renewal request would.
    pub fn renew_send(&mut self, now: Instant) {
        let next = self.plane.send_epoch().and_then(|s| s.epoch.next()).expect("room for an epoch");
        self.plane.install_send_key(now, test_secret(self.direction, next)).expect("newer epoch");
        self.renewals += 1;
    }

    fn drain_events(&mut self, now: Instant) {
        while let Some(event) = self.plane.poll_event() {
            self.events.push(event);
            match event {
                Event::SendKeyWanted { .. } if self.auto_renew => self.renew_send(now),
                Event::RecvEpochStarted { epoch } => {
                    let next = epoch.next().expect("room for an epoch");
                    self.plane.install_recv_key(test_secret(1 - self.direction, next)).expect("next receive key fits");
                }
                Event::SendKeyWanted { .. } | Event::RecvKeyErased { .. } => {}
            }
        }
    }
}

impl Endpoint for DataPeer {
    fn handle_datagram(&mut self, now: Instant, _from: SocketAddr, datagram: &[u8]) {
        let mut out = vec![0u8; DataPlane::<Classic>::OPEN_BUFFER_LEN];
        if let Ok(opened) = self.plane.open(now, datagram, &mut out) {
            let inner = &out[opened.range];
            match opened.kind {
                Delivery::Packet { .. } => {
                    let id = u64::from_be_bytes(inner[..8].try_into().expect("test packets carry an id"));
                    self.received.push(id);
                }
                Delivery::Control => self.control.push(inner.to_vec()),
            }
        }
        self.drain_events(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.plane.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.plane.handle_timeout(now);
        self.drain_events(now);
    }
}
