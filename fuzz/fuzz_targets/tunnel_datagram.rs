//! netd's `Tunnel::handle_datagram` facing the network before any key exists: a
//! responder-only tunnel and an initiating one, fed datagrams from fuzzer-chosen source
//! addresses, with virtual time passing between them. keyd never answers, so no handshake
//! can complete; what is checked is everything netd does on its own
//! (`docs/PROTOCOL.md` section 2):
//!
//! - the only datagram sent in answer to one received is a Cookie Reply, to the sender,
//!   no longer than what it answers; timers send only Requests, only to the configured
//!   peer;
//! - keyd hears of an Initiator Auth only if it echoes a cookie this tunnel made for that
//!   address and nonce under the current or the previous secret, only the first time, and
//!   (while the tunnel initiates itself) only if the peer's nonce wins the tie-break;
//! - keyd is asked to build an Initiator Auth only for a Cookie Reply from the configured
//!   peer that carries the nonce of the Request under way, and told of an abandoned
//!   initiation only when a retransmission replaces one it was building;
//! - nothing is delivered, no tunnel comes up, and every datagram is counted exactly once
//!   (a drop, a Cookie Reply, a forwarded Initiator Auth or a request to keyd).
//!
//! Besides raw datagrams the fuzzer can send well-formed Requests, echo a cookie the
//! tunnel handed out (from the address it was issued to or another), and answer the
//! initiator's Request with a Cookie Reply for its current nonce: an attacker who receives
//! what is sent to its own address, or who is on the path, can do all of these.

#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use yavipin_fuzz::ops::tunnel_datagram::Op;
use yavipin_fuzz::{Clock, KEY_ID, decode_ops, input_salt};
use yavipin_ipc::NetdToKeyd;
use yavipin_netd::{HandshakeConfig, HandshakeDrop, Tunnel, TunnelConfig};
use yavipin_proto::Epoch;
use yavipin_proto::handshake::{
    COOKIE_REPLY_LEN, Cookie, CookieReply, Group, InitiatorAuth, MAC_LEN, Nonce, Params, REQUEST_LEN, Request,
    ResponderAuth,
};
use yavipin_proto::msg_type;
use yavipin_proto::rng::Seeded;

const MAX_OPS: usize = 48;
const GROUP: Group = Group::Modp2048;
/// As `docs/PROTOCOL.md` section 2.2 gives it.
#[allow(clippy::duration_suboptimal_units)]
const COOKIE_ROTATION: Duration = Duration::from_secs(120);

const RESPONDER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 2)), 4002);
const INITIATOR: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1)), 4001);

/// Source addresses the fuzzer picks from: the initiator's configured peer, the other
/// tunnel, strangers of both families, the peer's address in its IPv4-mapped IPv6 form,
/// and the peer's address with another port.
fn source(choice: u8) -> SocketAddr {
    match choice % 6 {
        0 => RESPONDER,
        1 => INITIATOR,
        2 => "203.0.113.9:53".parse().expect("address"),
        3 => "[2001:db8::9]:4000".parse().expect("address"),
        4 => SocketAddr::new(IpAddr::V6(Ipv6Addr::from(0xffff_c633_6402u128)), 4002),
        _ => "198.51.100.2:4003".parse().expect("address"),
    }
}

/// The address as the cookie sees it: IPv4 mapped into IPv6.
fn cookie_identity(addr: SocketAddr) -> (Ipv6Addr, u16) {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    (ip, addr.port())
}

/// A cookie the tunnel handed out.
#[derive(Debug, Clone, Copy)]
struct Issued {
    to: SocketAddr,
    ni: Nonce,
    cookie: Cookie,
    generation: u128,
}

/// What the harness knows of one tunnel.
struct Side {
    tunnel: Tunnel<Seeded>,
    issued: Vec<Issued>,
    redeemed: HashSet<Cookie>,
    /// The initiation under way (initiating tunnel only): its nonce, and whether keyd was
    /// asked to build its Initiator Auth.
    own: Option<(Nonce, bool)>,
    /// Nonces keyd was asked to build an Initiator Auth for.
    built: HashSet<Nonce>,
}

struct Harness {
    clock: Clock,
    start: Instant,
    params: Params,
    /// The responder-only tunnel, then the initiating one.
    sides: Vec<Side>,
}

/// Everything a tunnel counts for incoming datagrams.
fn accounted(tunnel: &Tunnel<Seeded>) -> u64 {
    let hs = tunnel.handshake().counters();
    tunnel.data().counters().dropped_total() + hs.dropped_total() + hs.cookie_replies + hs.forwarded
}

impl Harness {
    /// The two tunnels, their randomness (cookie secrets, nonces) salted with the input.
    fn new(salt: u64) -> Self {
        let clock = Clock::new();
        let now = clock.now();
        let responder = Tunnel::new(
            now,
            TunnelConfig::new(HandshakeConfig::new(RESPONDER, GROUP, KEY_ID), None),
            Seeded::new(1 ^ salt),
        );
        let initiator = Tunnel::new(
            now,
            TunnelConfig::new(HandshakeConfig::new(INITIATOR, GROUP, KEY_ID), Some(RESPONDER)),
            Seeded::new(2 ^ salt),
        );
        let side =
            |tunnel| Side { tunnel, issued: Vec::new(), redeemed: HashSet::new(), own: None, built: HashSet::new() };
        let mut h = Self {
            clock,
            start: now,
            params: Params::new(GROUP, KEY_ID),
            sides: vec![side(responder), side(initiator)],
        };
        h.after_timers(0);
        h.after_timers(1);
        assert!(h.sides[1].own.is_some(), "a tunnel with a peer initiates at once");
        assert!(h.sides[0].own.is_none(), "a tunnel without a peer only responds");
        h
    }

    /// Cookie secrets rotated so far: timers run exactly at their deadlines.
    fn generation(&self) -> u128 {
        (self.clock.now() - self.start).as_nanos() / COOKIE_ROTATION.as_nanos()
    }

    /// Checks what a tunnel did when its timers ran: only Requests to its peer, and keyd
    /// told of an abandoned initiation only if it was building one.
    fn after_timers(&mut self, index: usize) {
        let side = &mut self.sides[index];
        let mut abandoned = Vec::new();
        while let Some(message) = side.tunnel.poll_keyd() {
            yavipin_fuzz::trace!("  timer -> keyd {message:?}");
            match message {
                NetdToKeyd::InitiationAbandoned { ni } => abandoned.push(ni),
                other => panic!("a timer sent keyd {other:?}"),
            }
        }
        let mut requests = Vec::new();
        while let Some(transmit) = side.tunnel.poll_transmit() {
            assert_eq!(transmit.to, RESPONDER, "a timer sent a datagram to someone other than the peer");
            assert_eq!(transmit.bytes.len(), REQUEST_LEN, "a timer sent something other than a Request");
            let request = Request::parse(&transmit.bytes, &self.params).expect("a well-formed Request");
            requests.push(request.ni);
        }
        if index == 0 {
            assert!(requests.is_empty() && abandoned.is_empty(), "the responder-only tunnel initiated");
            return;
        }
        match (side.own, requests.last()) {
            (Some((old, building)), Some(&new)) => {
                assert_ne!(old, new, "a retransmitted Request reused its nonce");
                let expected: Vec<Nonce> = if building { vec![old] } else { vec![] };
                assert_eq!(abandoned, expected, "abandonment reported for the wrong initiation");
                assert!(abandoned.iter().all(|ni| side.built.contains(ni)));
                side.own = Some((new, false));
            }
            (None, Some(&new)) => {
                assert!(abandoned.is_empty());
                side.own = Some((new, false));
            }
            (_, None) => assert!(abandoned.is_empty(), "abandoned without starting over"),
        }
        assert!(requests.len() <= 1, "several Requests at one deadline");
    }

    /// Delivers `datagram` from `from` and checks every consequence.
    fn datagram(&mut self, index: usize, from: SocketAddr, datagram: &[u8]) {
        let generation = self.generation();
        let now = self.clock.now();
        let params = self.params;
        let side = &mut self.sides[index];

        // What the protocol says must happen, decided before the tunnel sees the datagram.
        let mut expect_forward = false;
        if let Ok(message) = InitiatorAuth::parse(datagram, &params) {
            let valid = side.issued.iter().any(|i| {
                cookie_identity(i.to) == cookie_identity(from)
                    && i.ni == message.ni
                    && i.cookie == message.cookie
                    && generation - i.generation <= 1
            });
            if valid && side.redeemed.insert(message.cookie) {
                expect_forward = side.own.is_none_or(|(own, _)| own < message.ni);
            }
        }
        let expect_build = matches!(
            (CookieReply::parse(datagram, &params), side.own),
            (Ok(reply), Some((own, false))) if from == RESPONDER && reply.ni == own
        );

        let before = accounted(&side.tunnel);
        let mut out = vec![0u8; side.tunnel.max_datagram_len()];
        let delivered = side.tunnel.handle_datagram(now, from, datagram, &mut out);
        assert_eq!(delivered, None, "something was delivered to the tun device without a key");
        assert!(!side.tunnel.is_up());

        yavipin_fuzz::trace!("  from {from}: forward expected {expect_forward}, build expected {expect_build}");
        let (mut forwarded, mut built) = (0u64, 0u64);
        while let Some(message) = side.tunnel.poll_keyd() {
            match message {
                NetdToKeyd::InitiatorAuthReceived { message, peer, peer_silent } => {
                    assert!(expect_forward, "keyd was handed an Initiator Auth without a fresh valid cookie");
                    assert_eq!((message.as_slice(), peer), (datagram, from));
                    assert!(peer_silent, "no session yet: the peer counts as silent");
                    forwarded += 1;
                }
                NetdToKeyd::BuildInitiatorAuth { ni, cookie } => {
                    assert!(expect_build, "keyd was asked to build an Initiator Auth for a stray Cookie Reply");
                    assert_eq!(&datagram[datagram.len() - 16..], &cookie);
                    side.built.insert(ni);
                    side.own = side.own.map(|(own, _)| (own, true));
                    built += 1;
                }
                other => panic!("an unauthenticated datagram sent keyd {other:?}"),
            }
        }
        assert_eq!(
            forwarded,
            u64::from(expect_forward),
            "an Initiator Auth with a fresh valid cookie was not passed on"
        );
        assert_eq!(built, u64::from(expect_build), "the Cookie Reply for our Request was not acted on");

        let mut answers = 0;
        while let Some(transmit) = side.tunnel.poll_transmit() {
            answers += 1;
            assert_eq!(transmit.to, from, "an answer went to another address than the sender's");
            assert_eq!(transmit.bytes.first(), Some(&msg_type::COOKIE_REPLY), "an answer other than a Cookie Reply");
            assert_eq!(transmit.bytes.len(), COOKIE_REPLY_LEN);
            assert!(transmit.bytes.len() <= datagram.len(), "amplification: the answer is larger than the datagram");
            let reply = CookieReply::parse(&transmit.bytes, &params).expect("a well-formed Cookie Reply");
            side.issued.push(Issued { to: from, ni: reply.ni, cookie: reply.cookie, generation });
        }
        assert!(answers <= 1, "several answers to one datagram");
        assert_eq!(accounted(&side.tunnel) + built, before + 1, "a datagram was not counted exactly once");
    }

    /// Moves time forward by `by`, stopping at every deadline on the way.
    fn advance(&mut self, by: Duration) {
        let target = self.clock.now() + by;
        loop {
            let next = self.sides.iter().filter_map(|s| s.tunnel.poll_timeout()).min();
            match next {
                Some(at) if at <= target => {
                    self.clock.set(at);
                    let now = self.clock.now();
                    for index in 0..2 {
                        if self.sides[index].tunnel.poll_timeout().is_some_and(|t| t <= now) {
                            self.sides[index].tunnel.handle_timeout(now);
                        }
                        self.after_timers(index);
                    }
                }
                _ => break,
            }
        }
        self.clock.set(target);
    }

    /// An Initiator Auth with the tunnel's parameters, of exactly the right length.
    fn initiator_auth(&self, ni: &Nonce, cookie: &Cookie, epoch: u32, tail: &[u8]) -> Vec<u8> {
        let mut value = tail.to_vec();
        value.resize(GROUP.value_len() + MAC_LEN, 0x02);
        let mut message =
            InitiatorAuth::encode_signed(&self.params, ni, cookie, Epoch(epoch), &value[..GROUP.value_len()]);
        message.extend_from_slice(&value[GROUP.value_len()..]);
        message
    }
}

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new(input_salt(data));
    for op in decode_ops::<Op>(data, MAX_OPS) {
        yavipin_fuzz::trace!("op {op:?}");
        match op {
            Op::Datagram { initiator, from, bytes } => h.datagram(usize::from(initiator), source(from), &bytes),
            Op::Request { initiator, from, ni } => {
                let request = Request::encode(&h.params, &ni);
                h.datagram(usize::from(initiator), source(from), &request);
            }
            Op::EchoCookie { initiator, which, elsewhere, epoch, tail } => {
                let index = usize::from(initiator);
                let issued = &h.sides[index].issued;
                let Some(&cookie) = issued.get(usize::from(which) % issued.len().max(1)) else { continue };
                let from = elsewhere.map_or(cookie.to, source);
                let message = h.initiator_auth(&cookie.ni, &cookie.cookie, epoch, &tail);
                h.datagram(index, from, &message);
            }
            Op::CookieReply { from, current, ni, cookie } => {
                let ni = match h.sides[1].own {
                    Some((own, _)) if current => own,
                    _ => ni,
                };
                let reply = CookieReply::encode(&h.params, &ni, &cookie);
                h.datagram(1, source(from), &reply);
            }
            Op::ResponderAuth { from, tail } => {
                let Some((ni, _)) = h.sides[1].own else { continue };
                let mut value = tail;
                value.resize(GROUP.value_len() + 2 * MAC_LEN, 0x03);
                let mut message =
                    ResponderAuth::encode_signed(&h.params, &ni, &[9; 16], Epoch(0), &value[..GROUP.value_len()]);
                message.extend_from_slice(&value[GROUP.value_len()..]);
                let before = h.sides[1].tunnel.handshake().counters().dropped(HandshakeDrop::Unexpected);
                h.datagram(1, source(from), &message);
                // keyd never built the Initiator Auth, so no Responder Auth can be expected.
                let after = h.sides[1].tunnel.handshake().counters().dropped(HandshakeDrop::Unexpected);
                assert_eq!(after, before + 1, "a Responder Auth nobody waits for was not refused as unexpected");
            }
            Op::Advance { millis } => h.advance(Duration::from_millis(u64::from(millis % 600_000))),
        }
    }
});
