//! The sans-IO data plane: tun packets in, sealed UDP payloads out, and back.
//!
//! No sockets, no clock, no threads: every call takes `now`, outputs are returned or polled
//! ([`DataPlane::poll_event`], [`DataPlane::poll_timeout`]). Buffers belong to the caller;
//! nothing is allocated per packet.
//!
//! Receive path, in this order and never otherwise: length and header → receive key of the
//! packet's epoch → read-only replay check → tag (constant time) → decrypt → replay commit
//! → decompress and emit. No state changes before the tag verified.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

use yavipin_proto::data::{DataHeader, InnerKind};
use yavipin_proto::timer::{Timer, TimerTable};
use yavipin_proto::{DATA_HEADER_LEN, Epoch, EpochKey};

use crate::compress::{Compressor, Decompressor, InflateError};
use crate::counters::{Counters, DropReason, SealError, Traffic};
use crate::replay::{ReplayError, ReplayWindow};
use crate::suite::{Nonce, Suite};

/// Bytes of the ethertype that precedes an "other" packet inside the ciphertext.
const ETHERTYPE_LEN: usize = 2;
/// The largest inner packet accepted from the peer (after decompression): an IP packet's
/// maximum. The MTU limits what a side sends, never what it accepts: peers with different
/// MTUs interoperate (a dual-stack responder assumes IPv6 headers, an IPv4 initiator does
/// not), and the peer's path-MTU probes of its full size arrive.
pub const MAX_RECEIVED_INNER_LEN: usize = 65_535;
/// Receive-key slots, one per epoch phase (epoch modulo 4).
const SLOTS: usize = 4;

/// Tunables of the data plane. [`DataConfig::default`] is what a tunnel runs with unless
/// configured otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataConfig {
    /// Largest inner packet sent, in bytes (the tun device's MTU). What is accepted is
    /// bounded by [`MAX_RECEIVED_INNER_LEN`] instead.
    pub max_inner_len: usize,
    /// Per-packet deflate. Off by default: compression before encryption leaks content
    /// through packet lengths (VORACLE).
    pub compression: bool,
    /// Ask for the next send key after this many bytes through the block cipher.
    pub rekey_after_bytes: u64,
    /// Refuse to send under one key beyond this many bytes (Sweet32 bound for 64-bit blocks).
    pub reject_after_bytes: u64,
    /// Ask for the next send key after this many packets.
    pub rekey_after_packets: u32,
    /// Refuse to send under one key beyond this many packets (sequence numbers never wrap).
    pub reject_after_packets: u32,
    /// Ask for the next send key after the key has been in use this long.
    pub rekey_after_time: Duration,
    /// Refuse to send under a key older than this.
    pub reject_after_time: Duration,
    /// How long a receive key stays usable after the peer moved to a newer epoch, for
    /// packets reordered across the switch.
    pub recv_grace: Duration,
}

/// Soft per-key volume limit: 64 MiB through a 64-bit block cipher keeps the birthday
/// bound (2^32 blocks, 32 GiB) far away.
pub const DEFAULT_REKEY_BYTES: u64 = 64 << 20;

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            max_inner_len: 1500,
            compression: false,
            rekey_after_bytes: DEFAULT_REKEY_BYTES,
            reject_after_bytes: 2 * DEFAULT_REKEY_BYTES,
            rekey_after_packets: 1 << 31,
            reject_after_packets: u32::MAX,
            rekey_after_time: Duration::from_secs(120),
            reject_after_time: Duration::from_secs(240),
            recv_grace: Duration::from_secs(10),
        }
    }
}

/// What to seal: a packet read from the tun device, or a tunnel control message.
#[derive(Debug, Clone, Copy)]
pub enum Inner<'a> {
    /// A tun packet and the ethertype from its packet-information header.
    Packet {
        /// The ethertype (0x0800 IPv4, 0x86dd IPv6, anything else travels as "other").
        ethertype: u16,
        /// The packet itself.
        payload: &'a [u8],
    },
    /// A control message, starting with its type byte. Never compressed.
    Control(&'a [u8]),
}

/// A datagram that authenticated and decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// What it carries.
    pub kind: Delivery,
    /// Where the inner bytes are in the caller's output buffer.
    pub range: Range<usize>,
}

/// Where an opened packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// To the tun device, with this ethertype.
    Packet {
        /// Ethertype for the packet-information header.
        ethertype: u16,
    },
    /// To the tunnel's control logic; the range starts with the control type byte.
    Control,
}

/// Why the next send key is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewReason {
    /// The key reached its soft age limit.
    Time,
    /// The key protected its soft byte limit.
    Volume,
    /// The key used its soft number of sequence numbers.
    Sequence,
}

/// Something the data plane wants its owner to know or do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Fetch the send key of the epoch after `current` (from keyd).
    SendKeyWanted {
        /// The epoch now in use.
        current: Epoch,
        /// Which soft limit was reached.
        reason: RenewReason,
    },
    /// The peer started sending under `epoch`: the key for the epoch after it should be
    /// installed before the peer needs it.
    RecvEpochStarted {
        /// The peer's new epoch.
        epoch: Epoch,
    },
    /// The receive key of `epoch` was erased.
    RecvKeyErased {
        /// The erased epoch.
        epoch: Epoch,
    },
}

/// Why a key was not installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The epoch is not newer than the one in use.
    #[error("{epoch} is not newer than {current}")]
    Stale {
        /// The refused epoch.
        epoch: Epoch,
        /// The epoch in use.
        current: Epoch,
    },
    /// The epoch's phase is taken by the current epoch or by another key not yet used.
    #[error("{epoch} would evict {occupant}, still in use")]
    SlotBusy {
        /// The refused epoch.
        epoch: Epoch,
        /// The epoch holding the slot.
        occupant: Epoch,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataTimer {
    /// The send key reaches its soft age limit.
    SendRekey,
    /// The earliest retiring receive key's grace period ends.
    RecvRetire,
}

impl Timer for DataTimer {
    const ALL: &'static [Self] = &[Self::SendRekey, Self::RecvRetire];
    fn index(self) -> usize {
        self as usize
    }
}

struct SendState<S: Suite> {
    epoch: Epoch,
    keys: S::Keys,
    next_seq: u32,
    /// Bytes through the cipher under this key, per-packet IV block included.
    volume: u64,
    installed_at: Instant,
    renewal_requested: bool,
    traffic: Traffic,
}

struct RecvState<S: Suite> {
    epoch: Epoch,
    keys: S::Keys,
    window: ReplayWindow,
    /// Set once a newer epoch is in use: the key is erased at this time.
    retire_at: Option<Instant>,
    traffic: Traffic,
}

/// Per-epoch traffic, for status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochTraffic {
    /// The epoch.
    pub epoch: Epoch,
    /// Traffic under its key.
    pub traffic: Traffic,
}

/// The data plane of one tunnel, generic over the cipher suite.
pub struct DataPlane<S: Suite> {
    config: DataConfig,
    send: Option<SendState<S>>,
    recv: [Option<RecvState<S>>; SLOTS],
    /// Newest epoch the peer has been heard under.
    recv_current: Option<Epoch>,
    timers: TimerTable<DataTimer, 2>,
    events: VecDeque<Event>,
    compressor: Compressor,
    decompressor: Decompressor,
    /// Decrypted deflate stream of a compressed packet, before inflation.
    scratch: Box<[u8]>,
    counters: Counters,
}

impl<S: Suite> core::fmt::Debug for DataPlane<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DataPlane")
            .field("suite", &S::NAME)
            .field("send_epoch", &self.send.as_ref().map(|s| s.epoch))
            .field("recv_epochs", &self.recv_epochs())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Bytes through the block cipher for a plaintext of `len` bytes: the IV block plus the
/// plaintext (a partial last block costs a whole block encryption, but the limit is a
/// bound, so counting bytes is close enough and never undercounts by more than 7).
fn cipher_volume(len: usize) -> u64 {
    len as u64 + 8
}

impl<S: Suite> DataPlane<S> {
    /// Bytes a sealed packet adds to its inner packet (IPv4 and IPv6; "other" adds two
    /// more for the ethertype).
    pub const OVERHEAD: usize = DATA_HEADER_LEN + S::TAG_LEN;

    /// An `out` buffer of [`Self::open`] this large takes every packet the peer may send.
    pub const OPEN_BUFFER_LEN: usize = MAX_RECEIVED_INNER_LEN + ETHERTYPE_LEN;

    /// A data plane with no keys yet.
    pub fn new(config: DataConfig) -> Self {
        let scratch = vec![0u8; MAX_RECEIVED_INNER_LEN + ETHERTYPE_LEN].into_boxed_slice();
        Self {
            config,
            send: None,
            recv: [None, None, None, None],
            recv_current: None,
            timers: TimerTable::default(),
            events: VecDeque::with_capacity(8),
            compressor: Compressor::new(),
            decompressor: Decompressor::new(),
            scratch,
            counters: Counters::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &DataConfig {
        &self.config
    }

    /// Everything counted so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The epoch and traffic of the send key, if any.
    pub fn send_epoch(&self) -> Option<EpochTraffic> {
        self.send.as_ref().map(|s| EpochTraffic { epoch: s.epoch, traffic: s.traffic })
    }

    /// Epochs with a receive key installed, oldest first.
    pub fn recv_epochs(&self) -> Vec<EpochTraffic> {
        let mut epochs: Vec<_> =
            self.recv.iter().flatten().map(|r| EpochTraffic { epoch: r.epoch, traffic: r.traffic }).collect();
        epochs.sort_by_key(|e| e.epoch);
        epochs
    }

    /// Largest datagram [`Self::seal`] can produce.
    pub fn max_datagram_len(&self) -> usize {
        Self::OVERHEAD + ETHERTYPE_LEN + self.config.max_inner_len
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                DataTimer::SendRekey => self.want_send_key(RenewReason::Time),
                DataTimer::RecvRetire => self.erase_retired(now),
            }
        }
    }

    /// Switches sending to `key` at once; the previous send key is erased.
    pub fn install_send_key(&mut self, now: Instant, key: EpochKey) -> Result<(), KeyError> {
        let EpochKey { epoch, secret } = key;
        if let Some(current) = &self.send
            && epoch <= current.epoch
        {
            return Err(KeyError::Stale { epoch, current: current.epoch });
        }
        let keys = S::derive(&secret);
        // The secret is not needed once the keys are derived; dropping it erases it.
        drop(secret);
        self.send = Some(SendState {
            epoch,
            keys,
            next_seq: 0,
            volume: 0,
            installed_at: now,
            renewal_requested: false,
            traffic: Traffic::default(),
        });
        self.timers.set(DataTimer::SendRekey, now + self.config.rekey_after_time);
        Ok(())
    }

    /// Makes `key` usable for receiving: the peer may switch to its epoch at any time.
    /// A key not yet used may be replaced by another for the same epoch.
    pub fn install_recv_key(&mut self, key: EpochKey) -> Result<(), KeyError> {
        let EpochKey { epoch, secret } = key;
        if let Some(current) = self.recv_current
            && epoch <= current
        {
            return Err(KeyError::Stale { epoch, current });
        }
        let slot = &mut self.recv[usize::from(epoch.phase())];
        if let Some(occupant) = slot {
            // A retiring key (three epochs behind by now) only waits for stragglers and
            // gives way early; the current key and keys not yet used are never evicted.
            if occupant.retire_at.is_some() {
                self.events.push_back(Event::RecvKeyErased { epoch: occupant.epoch });
            } else if occupant.epoch != epoch {
                return Err(KeyError::SlotBusy { epoch, occupant: occupant.epoch });
            }
        }
        let keys = S::derive(&secret);
        drop(secret);
        *slot =
            Some(RecvState { epoch, keys, window: ReplayWindow::new(), retire_at: None, traffic: Traffic::default() });
        self.arm_retire_timer();
        Ok(())
    }

    /// Erases every key at once (tunnel down, shutdown).
    pub fn clear_keys(&mut self) {
        self.send = None;
        self.recv = [None, None, None, None];
        self.recv_current = None;
        self.timers.stop(DataTimer::SendRekey);
        self.timers.stop(DataTimer::RecvRetire);
    }

    /// Seals `inner` into `out` and returns the datagram's length.
    pub fn seal(&mut self, now: Instant, inner: Inner<'_>, out: &mut [u8]) -> Result<usize, SealError> {
        let result = self.seal_inner(now, inner, out);
        if let Err(error) = result {
            self.counters.count_refusal(error);
        }
        result
    }

    fn seal_inner(&mut self, now: Instant, inner: Inner<'_>, out: &mut [u8]) -> Result<usize, SealError> {
        let config = &self.config;
        let send = self.send.as_mut().ok_or(SealError::NoKey)?;
        let exhausted = if send.volume >= config.reject_after_bytes {
            Some(RenewReason::Volume)
        } else if send.next_seq >= config.reject_after_packets {
            Some(RenewReason::Sequence)
        } else if now.saturating_duration_since(send.installed_at) >= config.reject_after_time {
            Some(RenewReason::Time)
        } else {
            None
        };
        if let Some(reason) = exhausted {
            self.want_send_key(reason);
            return Err(SealError::KeyExhausted);
        }

        let ethertype_bytes;
        let (kind, prefix, payload): (InnerKind, &[u8], &[u8]) = match inner {
            Inner::Packet { ethertype, payload } => {
                let kind = InnerKind::for_ethertype(ethertype);
                ethertype_bytes = ethertype.to_be_bytes();
                let prefix: &[u8] = if kind == InnerKind::Other { &ethertype_bytes } else { &[] };
                (kind, prefix, payload)
            }
            Inner::Control(message) => (InnerKind::Control, &[], message),
        };
        if payload.len() > config.max_inner_len {
            return Err(SealError::TooLarge);
        }
        let plain_len = prefix.len() + payload.len();
        let sealed_len = DATA_HEADER_LEN + plain_len + S::TAG_LEN;
        if out.len() < sealed_len {
            return Err(SealError::BufferTooSmall);
        }

        let body = &mut out[DATA_HEADER_LEN..DATA_HEADER_LEN + plain_len];
        let compressed_len = if config.compression && kind != InnerKind::Control {
            self.compressor.compress(prefix, payload, body)
        } else {
            None
        };
        let body_len = if let Some(len) = compressed_len {
            len
        } else {
            body[..prefix.len()].copy_from_slice(prefix);
            body[prefix.len()..].copy_from_slice(payload);
            plain_len
        };

        let seq = send.next_seq;
        let header = DataHeader::new(compressed_len.is_some(), kind, send.epoch, seq).to_bytes();
        out[..DATA_HEADER_LEN].copy_from_slice(&header);
        let (body, rest) = out[DATA_HEADER_LEN..].split_at_mut(body_len);
        S::seal(&send.keys, Nonce { epoch: send.epoch, seq }, &header, body, &mut rest[..S::TAG_LEN]);

        send.next_seq += 1;
        send.volume += cipher_volume(body_len);
        send.traffic.add(payload.len());
        self.counters.sent.add(payload.len());
        if compressed_len.is_some() {
            self.counters.compressed.add(plain_len - body_len);
        }
        let reason = if send.volume >= config.rekey_after_bytes {
            Some(RenewReason::Volume)
        } else if send.next_seq >= config.rekey_after_packets {
            Some(RenewReason::Sequence)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.want_send_key(reason);
        }
        Ok(DATA_HEADER_LEN + body_len + S::TAG_LEN)
    }

    fn want_send_key(&mut self, reason: RenewReason) {
        if let Some(send) = &mut self.send
            && !send.renewal_requested
        {
            send.renewal_requested = true;
            self.events.push_back(Event::SendKeyWanted { current: send.epoch, reason });
        }
    }

    /// Authenticates and decrypts `datagram` into `out` ([`Self::OPEN_BUFFER_LEN`] bytes
    /// take anything; a packet that does not fit a smaller one is dropped as too large). On
    /// success the inner bytes are at `out[opened.range]`. Every failure is counted and must
    /// be dropped silently.
    pub fn open(&mut self, now: Instant, datagram: &[u8], out: &mut [u8]) -> Result<Opened, DropReason> {
        let result = self.open_inner(now, datagram, out);
        if let Err(reason) = result {
            self.counters.count_drop(reason);
        }
        result
    }

    fn open_inner(&mut self, now: Instant, datagram: &[u8], out: &mut [u8]) -> Result<Opened, DropReason> {
        // 1. Length and header.
        if datagram.len() < DATA_HEADER_LEN + S::TAG_LEN {
            return Err(DropReason::TooShort);
        }
        let header = DataHeader::parse(datagram).map_err(|_| DropReason::BadHeader)?;
        let (header_bytes, rest) = datagram.split_at(DATA_HEADER_LEN);
        let header_bytes: &[u8; DATA_HEADER_LEN] = header_bytes.try_into().map_err(|_| DropReason::TooShort)?;
        let (ciphertext, tag) = rest.split_at(rest.len() - S::TAG_LEN);
        let max_plain = MAX_RECEIVED_INNER_LEN + ETHERTYPE_LEN;
        if ciphertext.len() > max_plain {
            return Err(DropReason::TooLarge);
        }

        // 2. Key of the packet's epoch.
        let slot = self.recv[usize::from(header.phase)].as_mut().ok_or(DropReason::UnknownEpoch)?;

        // 3. Replay pre-check, read-only.
        slot.window.check(header.seq).map_err(|e| match e {
            ReplayError::Replayed => DropReason::Replayed,
            ReplayError::TooOld => DropReason::TooOld,
        })?;

        // 4 and 5. Tag in constant time, then decryption.
        let target = if header.compressed { &mut self.scratch[..] } else { &mut *out };
        let plain = target.get_mut(..ciphertext.len()).ok_or(DropReason::TooLarge)?;
        let nonce = Nonce { epoch: slot.epoch, seq: header.seq };
        S::open(&slot.keys, nonce, header_bytes, ciphertext, tag, plain).map_err(|_| DropReason::BadMac)?;

        // 6. Commit: from here on the packet is authentic and counts as received once.
        slot.window.commit(header.seq);
        let epoch = slot.epoch;
        if self.recv_current.is_none_or(|current| epoch > current) {
            self.advance_recv_epoch(now, epoch);
        }

        // 7. Decompress and deliver.
        let plain_len = if header.compressed {
            let limit = max_plain.min(out.len());
            self.decompressor.decompress(&self.scratch[..ciphertext.len()], &mut out[..limit]).map_err(|e| match e {
                InflateError::Corrupt => DropReason::Decompress,
                InflateError::TooLarge => DropReason::TooLarge,
            })?
        } else {
            ciphertext.len()
        };
        let (kind, range) = match header.kind {
            InnerKind::Ipv4 | InnerKind::Ipv6 => {
                let ethertype = if header.kind == InnerKind::Ipv4 {
                    yavipin_proto::data::ETHERTYPE_IPV4
                } else {
                    yavipin_proto::data::ETHERTYPE_IPV6
                };
                (Delivery::Packet { ethertype }, 0..plain_len)
            }
            InnerKind::Other => {
                let ethertype = out[..plain_len].first_chunk::<2>().ok_or(DropReason::Malformed)?;
                (Delivery::Packet { ethertype: u16::from_be_bytes(*ethertype) }, ETHERTYPE_LEN..plain_len)
            }
            InnerKind::Control if plain_len == 0 => return Err(DropReason::Malformed),
            InnerKind::Control => (Delivery::Control, 0..plain_len),
        };
        if range.len() > MAX_RECEIVED_INNER_LEN {
            return Err(DropReason::TooLarge);
        }
        self.counters.received.add(range.len());
        if let Some(slot) = self.recv[usize::from(header.phase)].as_mut() {
            slot.traffic.add(range.len());
        }
        Ok(Opened { kind, range })
    }

    /// The peer moved to `epoch`: every older receive key now has `recv_grace` to live.
    fn advance_recv_epoch(&mut self, now: Instant, epoch: Epoch) {
        self.recv_current = Some(epoch);
        let retire_at = now + self.config.recv_grace;
        for slot in self.recv.iter_mut().flatten() {
            if slot.epoch < epoch && slot.retire_at.is_none() {
                slot.retire_at = Some(retire_at);
            }
        }
        self.arm_retire_timer();
        self.events.push_back(Event::RecvEpochStarted { epoch });
    }

    fn erase_retired(&mut self, now: Instant) {
        for slot in &mut self.recv {
            if let Some(epoch) = slot.as_ref().filter(|s| s.retire_at.is_some_and(|at| at <= now)).map(|s| s.epoch) {
                // Dropped where it lies, which zeroizes its keys there. (`take()` would move
                // the state out and zeroize only the moved copy, leaving the keys' bytes in
                // the slot.)
                *slot = None;
                self.events.push_back(Event::RecvKeyErased { epoch });
            }
        }
        self.arm_retire_timer();
    }

    fn arm_retire_timer(&mut self) {
        match self.recv.iter().flatten().filter_map(|s| s.retire_at).min() {
            Some(at) => self.timers.set(DataTimer::RecvRetire, at),
            None => self.timers.stop(DataTimer::RecvRetire),
        }
    }
}
