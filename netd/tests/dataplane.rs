//! The data plane through its public interface: round trips, tampering, replay, key epochs,
//! volume limits and compression.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use yavipin_netd::suite::Nonce;
use yavipin_netd::{Classic, DataConfig, DataPlane, Delivery, DropReason, Event, Inner, KeyError, SealError, Suite};
use yavipin_proto::data::{DataHeader, InnerKind};
use yavipin_proto::{DATA_HEADER_LEN, Epoch, EpochKey, TrafficSecret};

const MTU: usize = 1500;

fn key(direction: u8, epoch: u32) -> EpochKey {
    let mut bytes = [0x33; 32];
    bytes[..4].copy_from_slice(&epoch.to_be_bytes());
    bytes[4] = direction;
    EpochKey { epoch: Epoch(epoch), secret: TrafficSecret::new(bytes) }
}

/// A sender and a receiver keyed at epoch 0, the receiver also holding epoch 1.
fn pair(config: &DataConfig, now: Instant) -> (DataPlane<Classic>, DataPlane<Classic>) {
    let mut tx = DataPlane::new(config.clone());
    let mut rx = DataPlane::new(config.clone());
    tx.install_send_key(now, key(0, 0)).expect("first");
    rx.install_recv_key(key(0, 0)).expect("first");
    rx.install_recv_key(key(0, 1)).expect("next");
    (tx, rx)
}

fn seal(tx: &mut DataPlane<Classic>, now: Instant, inner: Inner<'_>) -> Vec<u8> {
    let mut out = vec![0; tx.max_datagram_len()];
    let len = tx.seal(now, inner, &mut out).expect("sealed");
    out.truncate(len);
    out
}

fn open(rx: &mut DataPlane<Classic>, now: Instant, datagram: &[u8]) -> Result<(Delivery, Vec<u8>), DropReason> {
    let mut out = vec![0; DataPlane::<Classic>::OPEN_BUFFER_LEN];
    let opened = rx.open(now, datagram, &mut out)?;
    Ok((opened.kind, out[opened.range].to_vec()))
}

fn ipv4(payload: &[u8]) -> Inner<'_> {
    Inner::Packet { ethertype: 0x0800, payload }
}

#[test]
fn overhead_is_17_bytes_for_ip_and_19_for_other() {
    let now = Instant::now();
    let (mut tx, _) = pair(&DataConfig::default(), now);
    assert_eq!(DataPlane::<Classic>::OVERHEAD, 17);
    assert_eq!(seal(&mut tx, now, ipv4(&[0; 100])).len(), 117);
    assert_eq!(seal(&mut tx, now, Inner::Packet { ethertype: 0x86dd, payload: &[0; 100] }).len(), 117);
    assert_eq!(seal(&mut tx, now, Inner::Packet { ethertype: 0x0806, payload: &[0; 100] }).len(), 119);
}

#[test]
fn kinds_survive_the_trip() {
    let now = Instant::now();
    let (mut tx, mut rx) = pair(&DataConfig::default(), now);
    for ethertype in [0x0800, 0x86dd, 0x0806, 0x8847, 0x0000, 0xffff] {
        let d = seal(&mut tx, now, Inner::Packet { ethertype, payload: b"packet" });
        assert_eq!(open(&mut rx, now, &d), Ok((Delivery::Packet { ethertype }, b"packet".to_vec())));
    }
    let d = seal(&mut tx, now, Inner::Control(&[1]));
    assert_eq!(open(&mut rx, now, &d), Ok((Delivery::Control, vec![1])));
}

#[test]
fn forged_huge_sequence_number_leaves_the_window_alone() {
    let now = Instant::now();
    let (mut tx, mut rx) = pair(&DataConfig::default(), now);
    let first = seal(&mut tx, now, ipv4(b"one"));
    let second = seal(&mut tx, now, ipv4(b"two"));
    open(&mut rx, now, &second).expect("authentic");
    // A forgery claiming sequence number 2^32 - 1 under the current epoch.
    let mut forged = first.clone();
    forged[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(open(&mut rx, now, &forged), Err(DropReason::BadMac));
    // The window did not move: the older authentic packet is still accepted, once.
    assert!(open(&mut rx, now, &first).is_ok());
    assert_eq!(open(&mut rx, now, &first), Err(DropReason::Replayed));
    assert_eq!(open(&mut rx, now, &second), Err(DropReason::Replayed));
    assert_eq!(rx.counters().dropped(DropReason::Replayed), 2);
    assert_eq!(rx.counters().dropped(DropReason::BadMac), 1);
}

#[test]
fn packets_behind_the_window_are_too_old() {
    let now = Instant::now();
    let (mut tx, mut rx) = pair(&DataConfig::default(), now);
    let old = seal(&mut tx, now, ipv4(b"old"));
    let mut last = Vec::new();
    for _ in 0..8192 {
        last = seal(&mut tx, now, ipv4(b"x"));
    }
    open(&mut rx, now, &last).expect("authentic"); // seq 8192: seq 0 is now 8192 behind
    assert_eq!(open(&mut rx, now, &old), Err(DropReason::TooOld));
}

#[test]
fn renewal_switches_sending_and_keeps_the_old_key_for_the_grace_period() {
    let now = Instant::now();
    let config = DataConfig::default();
    let (mut tx, mut rx) = pair(&config, now);
    let late = seal(&mut tx, now, ipv4(b"sent before the switch"));
    tx.install_send_key(now, key(0, 1)).expect("newer");
    let fresh = seal(&mut tx, now, ipv4(b"new epoch"));
    assert_eq!(DataHeader::parse(&fresh).expect("valid").phase, 1);

    open(&mut rx, now, &fresh).expect("next key was pre-installed");
    assert_eq!(rx.poll_event(), Some(Event::RecvEpochStarted { epoch: Epoch(1) }));
    // Reordered across the switch, within the grace period: accepted.
    let within = now + config.recv_grace.saturating_sub(Duration::from_millis(1));
    rx.handle_timeout(within);
    assert!(open(&mut rx, within, &late).is_ok());

    // After the grace period the old key is erased and its packets are refused.
    let late2 = {
        let (mut tx0, _) = pair(&config, now);
        seal(&mut tx0, now, ipv4(b"a")); // seq 0 already used above
        seal(&mut tx0, now, ipv4(b"b"))
    };
    let after = now + config.recv_grace;
    assert_eq!(rx.poll_timeout(), Some(after));
    rx.handle_timeout(after);
    assert_eq!(rx.poll_event(), Some(Event::RecvKeyErased { epoch: Epoch(0) }));
    assert_eq!(open(&mut rx, after, &late2), Err(DropReason::UnknownEpoch));
    assert_eq!(rx.recv_epochs().iter().map(|e| e.epoch).collect::<Vec<_>>(), vec![Epoch(1)]);
}

#[test]
fn key_installation_rules() {
    let now = Instant::now();
    let (mut tx, mut rx) = pair(&DataConfig::default(), now);
    assert_eq!(tx.install_send_key(now, key(0, 0)), Err(KeyError::Stale { epoch: Epoch(0), current: Epoch(0) }));
    // Epoch 5 has the phase of epoch 1, which is installed and unused: refused.
    assert_eq!(rx.install_recv_key(key(0, 5)), Err(KeyError::SlotBusy { epoch: Epoch(5), occupant: Epoch(1) }));
    // An unused key may be replaced by another for the same epoch.
    rx.install_recv_key(key(9, 1)).expect("replacement");
    let d = seal(&mut tx, now, ipv4(b"x"));
    open(&mut rx, now, &d).expect("epoch 0 untouched");
    assert_eq!(rx.install_recv_key(key(0, 0)), Err(KeyError::Stale { epoch: Epoch(0), current: Epoch(0) }));
}

#[test]
fn volume_limits_ask_then_refuse() {
    let now = Instant::now();
    let config = DataConfig { rekey_after_bytes: 10_000, reject_after_bytes: 20_000, ..DataConfig::default() };
    let (mut tx, _) = pair(&config, now);
    let mut sent = 0;
    while tx.seal(now, ipv4(&[0; 992]), &mut [0; 2000]).is_ok() {
        sent += 1;
    }
    // Each packet puts 1000 bytes through the cipher (992 + the IV block).
    assert_eq!(sent, 20);
    assert_eq!(
        tx.poll_event(),
        Some(Event::SendKeyWanted { current: Epoch(0), reason: yavipin_netd::RenewReason::Volume })
    );
    assert_eq!(tx.poll_event(), None, "asked once");
    assert_eq!(tx.counters().refused(SealError::KeyExhausted), 1);
    tx.install_send_key(now, key(0, 1)).expect("newer");
    assert!(tx.seal(now, ipv4(&[0; 992]), &mut [0; 2000]).is_ok());
}

#[test]
fn sequence_numbers_never_wrap_and_age_is_bounded() {
    let now = Instant::now();
    let config = DataConfig { rekey_after_packets: 3, reject_after_packets: 5, ..DataConfig::default() };
    let (mut tx, _) = pair(&config, now);
    for _ in 0..5 {
        tx.seal(now, ipv4(b"x"), &mut [0; 100]).expect("within limit");
    }
    assert_eq!(tx.seal(now, ipv4(b"x"), &mut [0; 100]), Err(SealError::KeyExhausted));

    let config = DataConfig::default();
    let (mut tx, _) = pair(&config, now);
    assert_eq!(tx.poll_timeout(), Some(now + config.rekey_after_time));
    tx.handle_timeout(now + config.rekey_after_time);
    assert!(matches!(tx.poll_event(), Some(Event::SendKeyWanted { reason: yavipin_netd::RenewReason::Time, .. })));
    let late = now + config.reject_after_time;
    assert_eq!(tx.seal(late, ipv4(b"x"), &mut [0; 100]), Err(SealError::KeyExhausted));
}

#[test]
fn oversized_and_unkeyed_sends_are_refused() {
    let now = Instant::now();
    let mut idle = DataPlane::<Classic>::new(DataConfig::default());
    assert_eq!(idle.seal(now, ipv4(b"x"), &mut [0; 100]), Err(SealError::NoKey));
    let (mut tx, _) = pair(&DataConfig::default(), now);
    assert_eq!(tx.seal(now, ipv4(&[0; MTU + 1]), &mut [0; 2000]), Err(SealError::TooLarge));
    assert_eq!(tx.seal(now, ipv4(&[0; 100]), &mut [0; 116]), Err(SealError::BufferTooSmall));
}

#[test]
fn the_mtu_limits_what_is_sent_never_what_is_accepted() {
    // A dual-stack responder (1435, assuming IPv6 headers) and an IPv4 initiator (1455),
    // or any two sides configured differently: each takes the other's largest packets.
    let now = Instant::now();
    let mut tx = DataPlane::<Classic>::new(DataConfig { max_inner_len: 9000, ..DataConfig::default() });
    let mut rx = DataPlane::<Classic>::new(DataConfig { max_inner_len: 1280, ..DataConfig::default() });
    tx.install_send_key(now, key(0, 0)).expect("first");
    rx.install_recv_key(key(0, 0)).expect("first");
    let big: Vec<u8> = (0..9000u32).map(|i| i.to_le_bytes()[0]).collect();
    let datagram = seal(&mut tx, now, ipv4(&big));
    assert_eq!(open(&mut rx, now, &datagram), Ok((Delivery::Packet { ethertype: 0x0800 }, big)));
    // Longer than the largest IP packet plus an ethertype: refused before the key is used.
    let oversized = [&datagram[..DATA_HEADER_LEN], &vec![0; 65_535 + 3], &[0; 12]].concat();
    assert_eq!(open(&mut rx, now, &oversized), Err(DropReason::TooLarge));
    assert_eq!((rx.counters().dropped(DropReason::TooLarge), rx.counters().received.packets), (1, 1));
    // What a side sends stays within its own MTU.
    let (mut small, _) = pair(&DataConfig { max_inner_len: 1280, ..DataConfig::default() }, now);
    assert_eq!(small.seal(now, ipv4(&[0; 1281]), &mut [0; 2000]), Err(SealError::TooLarge));
}

fn compressing() -> DataConfig {
    DataConfig { compression: true, ..DataConfig::default() }
}

#[test]
fn compressible_traffic_shrinks() {
    let now = Instant::now();
    let (mut tx, mut rx) = pair(&compressing(), now);
    let text = b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n".repeat(20);
    let d = seal(&mut tx, now, ipv4(&text));
    assert!(d.len() < text.len() / 4, "{} -> {}", text.len(), d.len());
    assert!(DataHeader::parse(&d).expect("valid").compressed);
    assert_eq!(open(&mut rx, now, &d), Ok((Delivery::Packet { ethertype: 0x0800 }, text.clone())));
    let saved = tx.counters().compressed;
    assert_eq!(saved.packets, 1);
    assert_eq!(saved.bytes, (text.len() + 17 - d.len()) as u64);
    // An "other" packet compresses together with its ethertype.
    let d = seal(&mut tx, now, Inner::Packet { ethertype: 0x88b5, payload: &text });
    assert_eq!(open(&mut rx, now, &d), Ok((Delivery::Packet { ethertype: 0x88b5 }, text)));
}

#[test]
fn deflate_bomb_is_dropped_and_counted() {
    use flate2::{Compress, Compression, FlushCompress};
    let now = Instant::now();
    let (_, mut rx) = pair(&compressing(), now);
    // An authentic packet (the attacker is the peer itself, or has its keys) whose deflate
    // stream of about 4 KiB expands to 4 MiB.
    let mut c = Compress::new(Compression::best(), false);
    let mut body = vec![0u8; 8192];
    c.compress(&vec![0u8; 4 << 20], &mut body, FlushCompress::Finish).expect("deflate");
    assert!(c.total_in() == 4 << 20 && c.total_out() < 8192, "the stream did not fit one packet");
    body.truncate(usize::try_from(c.total_out()).expect("small"));
    let header = DataHeader { compressed: true, kind: InnerKind::Ipv4, phase: 0, seq: 0 }.to_bytes();
    let keys = Classic::derive(&key(0, 0).secret);
    let mut tag = [0u8; 12];
    Classic::seal(&keys, Nonce { epoch: Epoch(0), seq: 0 }, &header, &mut body, &mut tag);
    let datagram = [&header[..], &body, &tag].concat();
    assert_eq!(open(&mut rx, now, &datagram), Err(DropReason::TooLarge));
    assert_eq!(rx.counters().dropped(DropReason::TooLarge), 1);
    assert_eq!(rx.counters().received.packets, 0);
}

#[test]
fn reserved_bits_and_short_datagrams_are_dropped() {
    let now = Instant::now();
    let (mut tx, mut rx) = pair(&DataConfig::default(), now);
    let mut d = seal(&mut tx, now, ipv4(b"x"));
    d[0] |= 0x04;
    assert_eq!(open(&mut rx, now, &d), Err(DropReason::BadHeader));
    assert_eq!(open(&mut rx, now, &d[..DATA_HEADER_LEN + 11]), Err(DropReason::TooShort));
    assert_eq!(open(&mut rx, now, &[]), Err(DropReason::TooShort));
}

fn any_inner() -> impl Strategy<Value = (u16, Vec<u8>)> {
    (
        prop_oneof![Just(0x0800u16), Just(0x86dd), any::<u16>()],
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..=MTU),
            // Compressible payloads exercise the deflate path.
            (0..=MTU, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_packet_round_trips((ethertype, payload) in any_inner(), compression in any::<bool>()) {
        let now = Instant::now();
        let config = DataConfig { compression, ..DataConfig::default() };
        let (mut tx, mut rx) = pair(&config, now);
        let d = seal(&mut tx, now, Inner::Packet { ethertype, payload: &payload });
        // Compression never makes a packet larger than it would be uncompressed.
        let plain_len = payload.len() + if matches!(ethertype, 0x0800 | 0x86dd) { 0 } else { 2 };
        prop_assert!(d.len() <= plain_len + 17);
        prop_assert_eq!(open(&mut rx, now, &d), Ok((Delivery::Packet { ethertype }, payload)));
    }

    #[test]
    fn every_single_bit_flip_is_rejected((ethertype, payload) in any_inner(), compression in any::<bool>(), bit in any::<prop::sample::Index>()) {
        let now = Instant::now();
        let config = DataConfig { compression, ..DataConfig::default() };
        let (mut tx, mut rx) = pair(&config, now);
        let mut d = seal(&mut tx, now, Inner::Packet { ethertype, payload: &payload });
        let bit = bit.index(d.len() * 8);
        d[bit / 8] ^= 1 << (bit % 8);
        let result = open(&mut rx, now, &d);
        prop_assert!(result.is_err(), "flipped bit {} accepted", bit);
        prop_assert_eq!(rx.counters().received.packets, 0);
    }

    #[test]
    fn truncation_and_extension_are_rejected((ethertype, payload) in any_inner(), cut in 1usize..64, extra in proptest::collection::vec(any::<u8>(), 1..64)) {
        let now = Instant::now();
        let (mut tx, mut rx) = pair(&DataConfig::default(), now);
        let d = seal(&mut tx, now, Inner::Packet { ethertype, payload: &payload });
        let short = &d[..d.len().saturating_sub(cut)];
        prop_assert!(open(&mut rx, now, short).is_err());
        let long = [&d[..], &extra].concat();
        prop_assert!(open(&mut rx, now, &long).is_err());
        prop_assert_eq!(rx.counters().received.packets, 0);
        // The untouched packet still opens: nothing above moved any state.
        prop_assert!(open(&mut rx, now, &d).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_deliver(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let now = Instant::now();
        let (_, mut rx) = pair(&compressing(), now);
        prop_assert!(open(&mut rx, now, &bytes).is_err());
        prop_assert_eq!(rx.counters().dropped_total(), 1);
    }
}
