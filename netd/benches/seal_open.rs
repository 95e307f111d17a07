//! Data-plane core speed against the bare crypto it is built on.
//!
//! - `core/seal+open/N`: `DataPlane::<Classic>::seal` of an N-byte IPv4 packet, then
//!   `DataPlane::open` of the datagram on a second data plane holding the matching receive key.
//! - `ceiling/seal+open/N`: the same cryptographic work with the same crates and no core:
//!   Blowfish-CFB64 encryption under a fixed IV, HMAC-MD5 over a 5-byte header and the
//!   ciphertext, constant-time check of the 12-byte tag, CFB decryption.
//!
//! - `primitives/*/1400`: Blowfish-CFB64 encryption, its decryption, and HMAC-MD5 apart.
//!
//! `core / ceiling` is the share of the crypto ceiling the core keeps.
//!
//! Run with `cargo bench -p yavipin-netd --bench seal_open`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use blowfish::Blowfish;
use cfb_mode::cipher::{Block, InnerIvInit, KeyInit};
use cfb_mode::{Decryptor, Encryptor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use md5::Md5;
use subtle::ConstantTimeEq;
use yavipin_netd::{Classic, DataConfig, DataPlane, Delivery, Inner};
use yavipin_proto::{Epoch, EpochKey, TrafficSecret};

/// Inner payload sizes: a small packet, a mid-size one, a full-MTU one.
const SIZES: [usize; 3] = [64, 512, 1400];
const ETHERTYPE_IPV4: u16 = 0x0800;
const TAG_LEN: usize = 12;

/// Limits so large that no key runs out, however many packets the bench sends. The
/// sequence number still bounds a key at 2^32 packets, hours of benchmarking away.
fn unlimited() -> DataConfig {
    DataConfig {
        max_inner_len: 1500,
        compression: false,
        rekey_after_bytes: u64::MAX,
        reject_after_bytes: u64::MAX,
        rekey_after_packets: u32::MAX,
        reject_after_packets: u32::MAX,
        rekey_after_time: Duration::from_secs(365 * 24 * 3600),
        reject_after_time: Duration::from_secs(365 * 24 * 3600),
        recv_grace: Duration::from_secs(10),
    }
}

fn key() -> EpochKey {
    EpochKey { epoch: Epoch(1), secret: TrafficSecret::new([0x42; 32]) }
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| u8::try_from(i % 251).expect("below 251")).collect()
}

fn core(c: &mut Criterion, size: usize) {
    let mut group = c.benchmark_group("core");
    // The core is clock-free: one instant serves every call.
    let now = Instant::now();
    let mut sender = DataPlane::<Classic>::new(unlimited());
    let mut receiver = DataPlane::<Classic>::new(unlimited());
    sender.install_send_key(now, key()).expect("first send key");
    receiver.install_recv_key(key()).expect("first receive key");
    let packet = payload(size);
    let mut wire = vec![0u8; sender.max_datagram_len()];
    let mut out = vec![0u8; 1500];

    group.throughput(Throughput::Bytes(size as u64));
    group.bench_with_input(BenchmarkId::new("seal+open", size), &packet, |b, packet| {
        // Every seal takes the next sequence number, so the receive window never sees
        // a replay.
        b.iter(|| {
            let inner = Inner::Packet { ethertype: ETHERTYPE_IPV4, payload: black_box(packet) };
            let len = sender.seal(now, inner, &mut wire).expect("key never exhausted");
            let opened = receiver.open(now, black_box(&wire[..len]), &mut out).expect("authentic");
            debug_assert_eq!(opened.kind, Delivery::Packet { ethertype: ETHERTYPE_IPV4 });
            black_box(&out[opened.range]);
        });
    });
    assert_eq!(receiver.counters().received.packets, sender.counters().sent.packets);
    group.finish();
}

fn ceiling(c: &mut Criterion, size: usize) {
    let mut group = c.benchmark_group("ceiling");
    let cipher = Blowfish::new_from_slice(&[0x11; 16]).expect("16-byte key");
    let mac = Hmac::<Md5>::new_from_slice(&[0x22; 16]).expect("any key length");
    let iv = Block::<Blowfish>::from([0x33; 8]);
    let header: [u8; 5] = [0x10, 0, 0, 0, 1];
    let mut buf = payload(size);
    let mut out = vec![0u8; size];

    group.throughput(Throughput::Bytes(size as u64));
    group.bench_function(BenchmarkId::new("seal+open", size), |b| {
        b.iter(|| {
            // Seal: encrypt in place, then tag header || ciphertext.
            Encryptor::<&Blowfish>::inner_iv_init(&cipher, &iv).encrypt(black_box(&mut buf));
            let mut m = mac.clone();
            m.update(&header);
            m.update(&buf);
            let full = m.finalize().into_bytes();
            let mut tag = [0u8; TAG_LEN];
            tag.copy_from_slice(&full[..TAG_LEN]);
            let tag = black_box(tag);

            // Open: recompute, compare in constant time, decrypt.
            let mut m = mac.clone();
            m.update(&header);
            m.update(black_box(&buf));
            let expected = m.finalize().into_bytes();
            assert!(bool::from(expected[..TAG_LEN].ct_eq(&tag)), "authentic");
            Decryptor::<&Blowfish>::inner_iv_init(&cipher, &iv).decrypt_b2b(&buf, &mut out).expect("same lengths");
            black_box(&out);
        });
    });
    group.finish();
}

/// The three primitives apart, on a full-size packet: which one bounds the suite, and how
/// much CFB decryption (whose block encryptions are independent) gains over encryption
/// (a chain).
fn primitives(c: &mut Criterion) {
    const SIZE: usize = 1400;
    let mut group = c.benchmark_group("primitives");
    let cipher = Blowfish::new_from_slice(&[0x11; 16]).expect("16-byte key");
    let mac = Hmac::<Md5>::new_from_slice(&[0x22; 16]).expect("any key length");
    let iv = Block::<Blowfish>::from([0x33; 8]);
    let mut buf = payload(SIZE);
    let mut out = vec![0u8; SIZE];
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.bench_function(BenchmarkId::new("blowfish-cfb64-encrypt", SIZE), |b| {
        b.iter(|| Encryptor::<&Blowfish>::inner_iv_init(&cipher, &iv).encrypt(black_box(&mut buf)));
    });
    group.bench_function(BenchmarkId::new("blowfish-cfb64-decrypt", SIZE), |b| {
        b.iter(|| {
            Decryptor::<&Blowfish>::inner_iv_init(&cipher, &iv)
                .decrypt_b2b(black_box(&buf), &mut out)
                .expect("lengths");
            black_box(&out);
        });
    });
    group.bench_function(BenchmarkId::new("hmac-md5", SIZE), |b| {
        b.iter(|| {
            let mut m = mac.clone();
            m.update(black_box(&buf));
            black_box(m.finalize().into_bytes());
        });
    });
    group.finish();
}

/// Core and ceiling run back to back at each size, so that both see the same machine
/// conditions (on a shared machine, throughput drifts by several percent over a minute).
fn seal_open(c: &mut Criterion) {
    for size in SIZES {
        core(c, size);
        ceiling(c, size);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    targets = seal_open, primitives
}
criterion_main!(benches);
