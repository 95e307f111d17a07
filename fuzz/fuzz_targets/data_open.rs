//! `DataPlane::open` (netd's receive path, `docs/PROTOCOL.md` section 1.3) against
//! arbitrary and tampered datagrams, with compression on.
//!
//! The first input byte picks the mode:
//!
//! - even, *forgery*: the rest is one datagram, opened twice by a receiver that holds keys
//!   for epochs 1 and 2 and has already accepted four genuine packets. Nothing may be
//!   delivered (that would need the MAC key), each call counts exactly one drop under the
//!   reason it returns, and the receiver's state does not change (no event, same epochs,
//!   same per-epoch traffic).
//! - odd, *tampering*: the rest drives a matching sender and the receiver through a
//!   sequence of operations: seal, deliver a sealed packet after bit flips, truncation or
//!   extension, move the sender to its next epoch, install a receive key, let time pass.
//!   A datagram equal to a genuine one is delivered once, intact, with its kind, if the
//!   receiver holds its epoch; any other datagram is dropped. The keys are salted with the
//!   input (see `input_salt`), the forgery mode's are of another direction.
//!
//! In both modes the counters never decrease and account for every call.

#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use yavipin_fuzz::ops::data_open::{Kind, Mutation, Op, Payload};
use yavipin_fuzz::{
    Clock, FORGERY_KEYS, TAMPERING_KEYS, data_config, decode_ops, epoch_key, forgery_prelude, input_salt, seal_as,
};
use yavipin_netd::{Classic, Counters, DataPlane, Delivery, DropReason, SealError};
use yavipin_proto::Epoch;
use yavipin_proto::data::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};

const MAX_INNER: usize = 1500;
const MAX_OPS: usize = 64;

/// Counters only ever grow; returns nothing, panics otherwise.
fn assert_monotone(before: &Counters, after: &Counters) {
    for reason in DropReason::ALL {
        assert!(after.dropped(reason) >= before.dropped(reason), "{} decreased", reason.name());
    }
    for error in SealError::ALL {
        assert!(after.refused(error) >= before.refused(error), "{} decreased", error.name());
    }
    for (a, b) in [(after.sent, before.sent), (after.received, before.received), (after.compressed, before.compressed)]
    {
        assert!(a.packets >= b.packets && a.bytes >= b.bytes, "traffic counter decreased");
    }
}

/// Checks how one `open` call was counted: one drop under its reason, or one packet received.
fn assert_counted(before: &Counters, after: &Counters, result: &Result<yavipin_netd::Opened, DropReason>) {
    assert_monotone(before, after);
    match result {
        Err(reason) => {
            assert_eq!(after.dropped(*reason), before.dropped(*reason) + 1, "drop not counted under its reason");
            assert_eq!(after.dropped_total(), before.dropped_total() + 1, "one call, one drop");
            assert_eq!(after.received, before.received, "a drop counted as received");
        }
        Ok(opened) => {
            assert_eq!(after.dropped_total(), before.dropped_total(), "a delivery counted as a drop");
            assert_eq!(after.received.packets, before.received.packets + 1);
            assert_eq!(after.received.bytes, before.received.bytes + opened.range.len() as u64);
        }
    }
}

trait PayloadBytes {
    fn bytes(&self) -> Vec<u8>;
}

impl PayloadBytes for Payload {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Bytes(bytes) => bytes.clone(),
            Self::Repeated { byte, len } => vec![*byte; usize::from(*len) % (MAX_INNER + 64)],
        }
    }
}

struct Sealed {
    bytes: Vec<u8>,
    epoch: Epoch,
    kind: Kind,
    payload: Vec<u8>,
    /// Authenticated once already: the replay window holds its sequence number.
    delivered: bool,
}

struct Harness {
    clock: Clock,
    keys: (u8, u64),
    tx: DataPlane<Classic>,
    rx: DataPlane<Classic>,
    send_epoch: u32,
    out: Vec<u8>,
    seal_buf: Vec<u8>,
}

impl Harness {
    /// Sender at epoch 1; receiver holding epochs 1 and 2; keys of `direction` and `salt`.
    fn new(direction: u8, salt: u64) -> Self {
        let clock = Clock::new();
        let mut tx = DataPlane::new(data_config());
        let mut rx = DataPlane::new(data_config());
        tx.install_send_key(clock.now(), epoch_key(direction, salt, 1)).expect("first send key");
        rx.install_recv_key(epoch_key(direction, salt, 1)).expect("first receive key");
        rx.install_recv_key(epoch_key(direction, salt, 2)).expect("next receive key");
        let out = vec![0; DataPlane::<Classic>::OPEN_BUFFER_LEN];
        let seal_buf = vec![0; tx.max_datagram_len()];
        Self { clock, keys: (direction, salt), tx, rx, send_epoch: 1, out, seal_buf }
    }

    fn key(&self, epoch: u32) -> yavipin_proto::EpochKey {
        epoch_key(self.keys.0, self.keys.1, epoch)
    }

    fn seal(&mut self, kind: Kind, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        let before = self.tx.counters().clone();
        let result = seal_as(&mut self.tx, self.clock.now(), kind, payload, &mut self.seal_buf);
        assert_monotone(&before, self.tx.counters());
        match result {
            Ok(len) => {
                assert!(len <= self.tx.max_datagram_len());
                assert_eq!(self.tx.counters().sent.packets, before.sent.packets + 1);
                Ok(self.seal_buf[..len].to_vec())
            }
            Err(error) => {
                assert_eq!(self.tx.counters().refused(error), before.refused(error) + 1, "refusal not counted");
                if payload.len() > MAX_INNER {
                    // The key's limits are checked first.
                    assert!(matches!(error, SealError::TooLarge | SealError::KeyExhausted), "{error:?}");
                }
                Err(error)
            }
        }
    }

    /// Opens `datagram`, checking the counters; returns the verdict and the inner bytes.
    fn open(&mut self, datagram: &[u8]) -> Result<(Delivery, Vec<u8>), DropReason> {
        let before = self.rx.counters().clone();
        let result = self.rx.open(self.clock.now(), datagram, &mut self.out);
        assert_counted(&before, self.rx.counters(), &result);
        result.map(|opened| (opened.kind, self.out[opened.range].to_vec()))
    }

    fn advance(&mut self, by: Duration) {
        self.clock.advance(by);
        let now = self.clock.now();
        for plane in [&mut self.tx, &mut self.rx] {
            if plane.poll_timeout().is_some_and(|t| t <= now) {
                plane.handle_timeout(now);
            }
            while plane.poll_event().is_some() {}
        }
    }
}

/// Forgery mode: nothing but drops, and no state change.
fn forgery(datagram: &[u8]) {
    let mut h = Harness::new(FORGERY_KEYS, 0);
    // Four genuine packets first, so the replay window and the epoch are not at rest.
    for (kind, payload) in forgery_prelude() {
        let sealed = h.seal(kind, &payload).expect("sealed");
        h.open(&sealed).expect("a genuine packet opens");
    }
    while h.rx.poll_event().is_some() {}
    let epochs = h.rx.recv_epochs();
    for _ in 0..2 {
        let result = h.open(datagram);
        assert!(result.is_err(), "a datagram that was never sealed was delivered: {result:?}");
        assert_eq!(h.rx.poll_event(), None, "a dropped datagram changed the receiver's state");
        assert_eq!(h.rx.recv_epochs(), epochs, "a dropped datagram changed the receiver's keys or traffic");
    }
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        match mutation {
            Mutation::Flip { at, mask } => {
                if !bytes.is_empty() {
                    let at = usize::from(*at) % bytes.len();
                    bytes[at] ^= mask;
                }
            }
            Mutation::Truncate { to } => bytes.truncate(usize::from(*to) % (bytes.len() + 1)),
            Mutation::Append(extra) => {
                bytes.extend_from_slice(extra);
                bytes.truncate(4096);
            }
        }
    }
    bytes
}

/// Tampering mode: genuine datagrams are delivered once and intact, others never.
fn tampering(ops: Vec<Op>, salt: u64) {
    let mut h = Harness::new(TAMPERING_KEYS, salt);
    let mut sealed: Vec<Sealed> = Vec::new();
    let mut by_bytes: HashMap<Vec<u8>, usize> = HashMap::new();
    for op in ops {
        yavipin_fuzz::trace!("op {op:?}");
        match op {
            Op::Seal { kind, payload } => {
                let payload = payload.bytes();
                if let Ok(bytes) = h.seal(kind, &payload) {
                    // (epoch, seq) never repeats under a key, so no two datagrams are equal.
                    let index = sealed.len();
                    assert!(by_bytes.insert(bytes.clone(), index).is_none(), "the sender repeated a datagram");
                    let epoch = Epoch(h.send_epoch);
                    sealed.push(Sealed { bytes, epoch, kind, payload, delivered: false });
                }
            }
            Op::Deliver { packet, mutations } => {
                if sealed.is_empty() {
                    continue;
                }
                let original = &sealed[usize::from(packet) % sealed.len()];
                let datagram = mutate(original.bytes.clone(), &mutations);
                let held: Vec<Epoch> = h.rx.recv_epochs().iter().map(|e| e.epoch).collect();
                let result = h.open(&datagram);
                yavipin_fuzz::trace!("  -> {:?}", result.as_ref().map(|(kind, inner)| (kind, inner.len())));
                let Some(&index) = by_bytes.get(&datagram) else {
                    assert!(result.is_err(), "a modified datagram was delivered: {result:?}");
                    continue;
                };
                let genuine = &mut sealed[index];
                if !held.contains(&genuine.epoch) {
                    assert!(result.is_err(), "delivered under an epoch the receiver does not hold");
                } else if genuine.delivered {
                    assert_eq!(result.map(|_| ()), Err(DropReason::Replayed), "a replay was not refused");
                } else if genuine.kind == Kind::Control && genuine.payload.is_empty() {
                    // Authentic but malformed: the replay window took it (step 6 of the
                    // receive order comes before delivery), so a repeat is a replay.
                    assert_eq!(result.map(|_| ()), Err(DropReason::Malformed));
                    genuine.delivered = true;
                } else {
                    let (delivery, inner) = result.expect("a genuine datagram was dropped");
                    let expected = match genuine.kind {
                        Kind::Ipv4 => Delivery::Packet { ethertype: ETHERTYPE_IPV4 },
                        Kind::Ipv6 => Delivery::Packet { ethertype: ETHERTYPE_IPV6 },
                        Kind::Other(ethertype) => Delivery::Packet { ethertype },
                        Kind::Control => Delivery::Control,
                    };
                    assert_eq!(delivery, expected, "delivered as another kind");
                    assert!(inner == genuine.payload, "delivered bytes differ from the ones sealed");
                    genuine.delivered = true;
                }
            }
            Op::SenderNextEpoch => {
                if h.send_epoch < 6 {
                    h.send_epoch += 1;
                    let now = h.clock.now();
                    let key = h.key(h.send_epoch);
                    h.tx.install_send_key(now, key).expect("a newer send key is taken");
                }
            }
            Op::ReceiverInstall { epoch } => {
                // Refusals (stale epoch, busy slot) are part of the contract; either way the
                // oracle reads the epochs the receiver really holds.
                let key = h.key(u32::from(epoch % 8));
                let _ = h.rx.install_recv_key(key);
                while h.rx.poll_event().is_some() {}
            }
            Op::Advance { millis } => h.advance(Duration::from_millis(u64::from(millis % 120_000))),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        forgery(rest);
    } else {
        tampering(decode_ops(rest, MAX_OPS), input_salt(rest));
    }
});
