//! Handshake cost.
//!
//! - `full/14`, `full/15`: one complete handshake, both sides, in one thread: netd's
//!   tunnel and keyd's monitor on each side, from the first Request to the responder's
//!   switch to the new session (Request, Cookie Reply, Initiator Auth, Responder Auth and
//!   the confirming keepalive), with the kernel's random source. Four modular
//!   exponentiations with 512-bit exponents dominate.
//! - `modexp/14`, `modexp/15`: one of those exponentiations (a key pair generation).
//! - `cookie_reply`: the responder's whole answer to one Request through its tunnel
//!   (dispatch, checks, one HMAC-SHA-256, the 40-byte reply queued and taken).
//!
//! Run with `cargo bench -p yavipin-keyd --bench handshake`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use yavipin_keyd::{Dh, KeyDaemon, KeydConfig};
use yavipin_netd::{HandshakeConfig, Tunnel, TunnelConfig};
use yavipin_proto::OsRandom;
use yavipin_proto::handshake::{Group, Params, Request};
use yavipin_proto::keys::Psk;

const KEY_ID: u32 = 1;

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, last], 4000))
}

struct Side {
    tunnel: Tunnel<OsRandom>,
    keyd: KeyDaemon<OsRandom>,
}

impl Side {
    fn new(now: Instant, group: Group, me: u8, peer: Option<u8>) -> Self {
        let config = TunnelConfig::new(HandshakeConfig::new(addr(me), group, KEY_ID), peer.map(addr));
        let keyd_config = KeydConfig { group, ..KeydConfig::default() };
        Self {
            tunnel: Tunnel::new(now, config, OsRandom),
            keyd: KeyDaemon::new(keyd_config, KEY_ID, Psk::new(&mut [0x42; 32]), OsRandom),
        }
    }

    fn pump(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(message) = self.tunnel.poll_keyd() {
                moved = true;
                self.keyd.handle_netd(now, message).expect("valid request");
            }
            while let Some(message) = self.keyd.poll_output() {
                moved = true;
                self.tunnel.handle_keyd(now, message).expect("valid answer");
            }
            if !moved {
                break;
            }
        }
    }
}

/// One handshake from nothing to both sides sending under the session.
fn full_handshake(group: Group) {
    let now = Instant::now();
    let mut sides = vec![Side::new(now, group, 1, Some(2)), Side::new(now, group, 2, None)];
    let mut buf = vec![0u8; 2048];
    while sides[1].tunnel.counters().responded == 0 {
        for from in 0..2 {
            let to = 1 - from;
            while let Some(transmit) = sides[from].tunnel.poll_transmit() {
                sides[to].tunnel.handle_datagram(
                    now,
                    addr(u8::try_from(from + 1).expect("1 or 2")),
                    &transmit.bytes,
                    &mut buf,
                );
                sides[to].pump(now);
            }
        }
    }
    black_box(&sides);
}

fn bench(c: &mut Criterion) {
    let mut full = c.benchmark_group("full");
    full.sample_size(20).measurement_time(Duration::from_secs(8));
    for group in Group::ALL {
        full.bench_with_input(BenchmarkId::from_parameter(group.id()), &group, |b, &group| {
            b.iter(|| full_handshake(group));
        });
    }
    full.finish();

    let mut modexp = c.benchmark_group("modexp");
    modexp.sample_size(20);
    for group in Group::ALL {
        let mut dh = Dh::new(group);
        modexp.bench_with_input(BenchmarkId::from_parameter(group.id()), &group, |b, _| {
            b.iter(|| black_box(dh.generate(&mut OsRandom)));
        });
    }
    modexp.finish();

    let now = Instant::now();
    let mut responder =
        Tunnel::new(now, TunnelConfig::new(HandshakeConfig::new(addr(2), Group::Modp2048, KEY_ID), None), OsRandom);
    let request = Request::encode(&Params::new(Group::Modp2048, KEY_ID), &[7; 16]);
    let mut buf = vec![0u8; 2048];
    c.bench_function("cookie_reply", |b| {
        b.iter(|| {
            responder.handle_datagram(now, addr(1), black_box(&request), &mut buf);
            black_box(responder.poll_transmit())
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
