//! Stateless cookies (`docs/PROTOCOL.md` section 2.2, after RFC 2522 section 3).
//!
//! ```text
//! cookie = HMAC-SHA-256(cookie_secret, "yavipin cookie" ‖ initiator IP (16, IPv4-mapped) ‖
//!          initiator port (2) ‖ responder IP (16) ‖ responder port (2) ‖ version ‖ suite ‖
//!          group ‖ key_id ‖ Ni)[0..16]
//! ```
//!
//! A responder answers a Request with a cookie and forgets it: it can recompute the cookie
//! when the Initiator Auth echoes it, so a flood of Requests costs one HMAC each and no
//! memory. The secret is rotated every two minutes (current and previous accepted, so a
//! cookie lives two to four minutes); a cookie is accepted once, which needs a set of used
//! cookies, bounded per secret and dropped with the secret that made them.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use yavipin_proto::handshake::{COOKIE_LEN, Cookie, Nonce, Params};

/// Bytes of a cookie secret.
pub const COOKIE_SECRET_LEN: usize = 32;
/// Cookies remembered as used per secret. An entry needs a Request round trip from a
/// routable address and an Initiator Auth, so filling the set takes a real attacker
/// address; a full set refuses new handshakes until the next rotation rather than
/// forgetting a used cookie (which would let a recorded Initiator Auth be replayed).
pub const MAX_USED_COOKIES: usize = 4096;

const LABEL: &[u8] = b"yavipin cookie";

/// Why an echoed cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    /// Not made by the current or the previous secret for this sender and these fields.
    #[error("invalid cookie")]
    Invalid,
    /// Already opened a handshake.
    #[error("cookie already used")]
    Used,
    /// Too many cookies used under this secret.
    #[error("used-cookie table full")]
    TableFull,
}

/// One secret and the cookies it made that were used.
struct Generation {
    /// HMAC-SHA-256 keyed with the secret, cloned per cookie; erased on drop.
    mac: Hmac<Sha256>,
    used: HashSet<Cookie>,
}

impl Generation {
    fn new(secret: &[u8; COOKIE_SECRET_LEN]) -> Self {
        Self { mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length"), used: HashSet::new() }
    }

    fn cookie(&self, input: &[u8]) -> Cookie {
        let mut mac = self.mac.clone();
        mac.update(LABEL);
        mac.update(input);
        let full = mac.finalize().into_bytes();
        let mut cookie = [0u8; COOKIE_LEN];
        cookie.copy_from_slice(&full[..COOKIE_LEN]);
        cookie
    }
}

/// The responder's cookie secrets and used-cookie sets.
pub struct CookieJar {
    current: Generation,
    previous: Option<Generation>,
}

impl core::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CookieJar")
            .field("used", &self.used())
            .field("has_previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

/// An IP address as 16 bytes, IPv4 mapped into IPv6 (`::ffff:a.b.c.d`).
fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Bytes after the label: 16 + 2 + 16 + 2 + 1 + 1 + 1 + 4 + 16.
const INPUT_LEN: usize = 59;

fn input(initiator: SocketAddr, responder: SocketAddr, params: Params, ni: &Nonce) -> [u8; INPUT_LEN] {
    let mut out = [0u8; INPUT_LEN];
    out[..16].copy_from_slice(&ip16(initiator.ip()));
    out[16..18].copy_from_slice(&initiator.port().to_be_bytes());
    out[18..34].copy_from_slice(&ip16(responder.ip()));
    out[34..36].copy_from_slice(&responder.port().to_be_bytes());
    // Version, suite, group and key id: the message header without its type byte.
    out[36..43].copy_from_slice(&params.header(0)[1..]);
    out[43..].copy_from_slice(ni);
    out
}

impl CookieJar {
    /// A jar whose first secret is `secret` (random bytes, 32 of them).
    pub fn new(secret: &[u8; COOKIE_SECRET_LEN]) -> Self {
        Self { current: Generation::new(secret), previous: None }
    }

    /// Starts a new secret; the current one becomes the previous and the previous one,
    /// with the cookies it saw used, is forgotten.
    pub fn rotate(&mut self, secret: &[u8; COOKIE_SECRET_LEN]) {
        self.previous = Some(core::mem::replace(&mut self.current, Generation::new(secret)));
    }

    /// Cookies currently remembered as used (under both secrets).
    pub fn used(&self) -> usize {
        self.current.used.len() + self.previous.as_ref().map_or(0, |g| g.used.len())
    }

    /// The cookie for a Request from `initiator` to `responder` (this side's address).
    pub fn cookie(&self, initiator: SocketAddr, responder: SocketAddr, params: &Params, ni: &Nonce) -> Cookie {
        self.current.cookie(&input(initiator, responder, *params, ni))
    }

    /// Accepts an echoed cookie once: it must come from the current or the previous
    /// secret (compared in constant time) and not have been used.
    pub fn redeem(
        &mut self,
        initiator: SocketAddr,
        responder: SocketAddr,
        params: &Params,
        ni: &Nonce,
        cookie: &Cookie,
    ) -> Result<(), CookieError> {
        let input = input(initiator, responder, *params, ni);
        let generation = if bool::from(self.current.cookie(&input).ct_eq(cookie)) {
            &mut self.current
        } else {
            match self.previous.as_mut() {
                Some(previous) if bool::from(previous.cookie(&input).ct_eq(cookie)) => previous,
                _ => return Err(CookieError::Invalid),
            }
        };
        if generation.used.contains(cookie) {
            return Err(CookieError::Used);
        }
        if generation.used.len() >= MAX_USED_COOKIES {
            return Err(CookieError::TableFull);
        }
        generation.used.insert(*cookie);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yavipin_proto::handshake::Group;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    const PARAMS: Params = Params { version: 1, suite: 1, group: Group::Modp2048, key_id: 9 };

    /// The cookie as PROTOCOL.md writes it, assembled independently.
    #[test]
    fn cookie_matches_the_specified_input() {
        let jar = CookieJar::new(&[7; 32]);
        let (i, r) = (addr("192.0.2.1:4000"), addr("[2001:db8::1]:5000"));
        let ni = [3u8; 16];
        let mut message = b"yavipin cookie".to_vec();
        message.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1, 0x0f, 0xa0]);
        message.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x13, 0x88]);
        message.extend_from_slice(&[1, 1, 14, 0, 0, 0, 9]);
        message.extend_from_slice(&ni);
        let mut mac = Hmac::<Sha256>::new_from_slice(&[7; 32]).expect("any length");
        mac.update(&message);
        let expected = mac.finalize().into_bytes();
        assert_eq!(jar.cookie(i, r, &PARAMS, &ni), expected[..16]);
    }

    #[test]
    fn a_cookie_binds_every_input() {
        let jar = CookieJar::new(&[1; 32]);
        let (i, r, ni) = (addr("192.0.2.1:4000"), addr("198.51.100.1:5000"), [0u8; 16]);
        let base = jar.cookie(i, r, &PARAMS, &ni);
        assert_ne!(base, jar.cookie(addr("192.0.2.2:4000"), r, &PARAMS, &ni));
        assert_ne!(base, jar.cookie(addr("192.0.2.1:4001"), r, &PARAMS, &ni));
        assert_ne!(base, jar.cookie(i, addr("198.51.100.1:5001"), &PARAMS, &ni));
        assert_ne!(base, jar.cookie(i, r, &Params { key_id: 10, ..PARAMS }, &ni));
        assert_ne!(base, jar.cookie(i, r, &Params { group: Group::Modp3072, ..PARAMS }, &ni));
        assert_ne!(base, jar.cookie(i, r, &PARAMS, &[1; 16]));
        assert_ne!(base, CookieJar::new(&[2; 32]).cookie(i, r, &PARAMS, &ni));
    }

    #[test]
    fn accepted_once_across_one_rotation_only() {
        let mut jar = CookieJar::new(&[1; 32]);
        let (i, r, ni) = (addr("192.0.2.1:4000"), addr("198.51.100.1:5000"), [5u8; 16]);
        let first = jar.cookie(i, r, &PARAMS, &ni);
        let second = jar.cookie(i, r, &PARAMS, &[6; 16]);
        assert_eq!(jar.redeem(i, r, &PARAMS, &ni, &first), Ok(()));
        assert_eq!(jar.redeem(i, r, &PARAMS, &ni, &first), Err(CookieError::Used));
        let mut forged = second;
        forged[15] ^= 1;
        assert_eq!(jar.redeem(i, r, &PARAMS, &[6; 16], &forged), Err(CookieError::Invalid));
        assert_eq!(jar.redeem(addr("192.0.2.9:4000"), r, &PARAMS, &[6; 16], &second), Err(CookieError::Invalid));

        jar.rotate(&[2; 32]);
        assert_eq!(jar.redeem(i, r, &PARAMS, &ni, &first), Err(CookieError::Used), "still remembered");
        assert_eq!(jar.redeem(i, r, &PARAMS, &[6; 16], &second), Ok(()), "previous secret accepted");
        assert_eq!(jar.used(), 2);
        jar.rotate(&[3; 32]);
        assert_eq!(jar.used(), 0, "the oldest secret's used set goes with it");
        assert_eq!(jar.redeem(i, r, &PARAMS, &ni, &first), Err(CookieError::Invalid));
    }

    #[test]
    fn the_used_set_is_bounded() {
        let mut jar = CookieJar::new(&[1; 32]);
        let r = addr("198.51.100.1:5000");
        for n in 0..u16::try_from(MAX_USED_COOKIES).expect("fits") {
            let i = SocketAddr::from(([10, 0, 0, 1], n));
            let cookie = jar.cookie(i, r, &PARAMS, &[0; 16]);
            assert_eq!(jar.redeem(i, r, &PARAMS, &[0; 16], &cookie), Ok(()));
        }
        let i = addr("192.0.2.1:1");
        let cookie = jar.cookie(i, r, &PARAMS, &[0; 16]);
        assert_eq!(jar.redeem(i, r, &PARAMS, &[0; 16], &cookie), Err(CookieError::TableFull));
        jar.rotate(&[2; 32]);
        let cookie = jar.cookie(i, r, &PARAMS, &[0; 16]);
        assert_eq!(jar.redeem(i, r, &PARAMS, &[0; 16], &cookie), Ok(()));
    }
}
