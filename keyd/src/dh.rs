//! Finite-field Diffie-Hellman over the MODP groups of RFC 3526: group 14 (2048-bit, the
//! default) and group 15 (3072-bit), generator 2.
//!
//! Both primes are safe primes, `p = 2q + 1` with `q` prime, so the only elements of small
//! order are 1 and `p − 1`: refusing a peer value outside `1 < y < p − 1` is the whole
//! subgroup check, and costs a comparison, not an exponentiation.
//!
//! Private exponents are 512 random bits with the top bit set. RFC 3526 section 8 asks for
//! an exponent of at least twice the group's strength; its upper estimates are 160 bits
//! (group 14) and 210 bits (group 15), so 512 bits leaves a wide margin for both, while
//! an exponentiation costs about a quarter (group 14) or a sixth (group 15) of one with a
//! full-size exponent. The fixed top bit makes every exponent the same length, so the
//! running time does not depend on the exponent's leading zeros.
//!
//! Known limit: `num-bigint` is neither constant-time nor zeroizing. The exponent's bytes
//! live in a zeroizing buffer and its `BigUint` form only exists during one
//! exponentiation, but that temporary, and the shared secret's, are freed without being
//! overwritten. keyd runs non-dumpable with its memory locked, which keeps those heap
//! remnants out of core files and swap; a constant-time bignum would close the gap.

use core::fmt;

use hex_literal::hex;
use num_bigint::BigUint;
use yavipin_proto::Random;
use yavipin_proto::handshake::Group;
use zeroize::Zeroizing;

/// The generator of both groups.
pub const GENERATOR: u32 = 2;
/// Bits of a private exponent.
pub const EXPONENT_BITS: usize = 512;
const EXPONENT_LEN: usize = EXPONENT_BITS / 8;

/// RFC 3526 section 3, the 2048-bit MODP group (id 14).
const MODP_2048: [u8; 256] = hex!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"
    "29024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245"
    "E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D"
    "C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D"
    "670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9"
    "DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF"
);

/// RFC 3526 section 4, the 3072-bit MODP group (id 15).
const MODP_3072: [u8; 384] = hex!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"
    "29024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245"
    "E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D"
    "C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D"
    "670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9"
    "DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64"
    "ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6B"
    "F12FFA06D98A0864D87602733EC86A64521F2B18177B200C"
    "BBE117577A615D6C770988C0BAD946E208E24FA074E5AB31"
    "43DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF"
);

/// The group's prime, big-endian, exactly `G` bytes.
pub fn prime_bytes(group: Group) -> &'static [u8] {
    match group {
        Group::Modp2048 => &MODP_2048,
        Group::Modp3072 => &MODP_3072,
    }
}

/// A peer's DH value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    /// Not exactly `G` bytes.
    #[error("DH value of the wrong length")]
    BadLength,
    /// Outside `1 < y < p − 1`: 0, 1, `p − 1` (the elements of order 1 and 2) or not
    /// reduced modulo `p`.
    #[error("DH value out of range")]
    OutOfRange,
}

/// A private exponent. Erased when dropped; consumed by [`Dh::agree`], so it is gone as
/// soon as the shared secret exists. Not `Clone`; `Debug` names the group only.
pub struct DhPrivate {
    group: Group,
    exponent: Zeroizing<[u8; EXPONENT_LEN]>,
}

impl fmt::Debug for DhPrivate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhPrivate").field("group", &self.group).finish_non_exhaustive()
    }
}

/// `g^xy mod p` as exactly `G` big-endian bytes. Erased when dropped; `Debug` shows nothing.
pub struct SharedSecret(Zeroizing<Vec<u8>>);

impl SharedSecret {
    /// The bytes, for key derivation only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    #[cfg(test)]
    pub(crate) fn for_tests(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

/// One group's arithmetic, with a count of the modular exponentiations it performed (the
/// expensive operation a denial-of-service attack would aim at).
pub struct Dh {
    group: Group,
    prime: BigUint,
    /// `p − 1`, the largest refused value below `p`.
    prime_minus_one: BigUint,
    modexps: u64,
}

impl fmt::Debug for Dh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dh").field("group", &self.group).field("modexps", &self.modexps).finish_non_exhaustive()
    }
}

impl Dh {
    /// Arithmetic in `group`.
    pub fn new(group: Group) -> Self {
        let prime = BigUint::from_bytes_be(prime_bytes(group));
        let prime_minus_one = &prime - 1u32;
        Self { group, prime, prime_minus_one, modexps: 0 }
    }

    /// The group.
    pub fn group(&self) -> Group {
        self.group
    }

    /// Modular exponentiations performed so far.
    pub fn modexps(&self) -> u64 {
        self.modexps
    }

    /// A fresh private exponent and its public value `g^x mod p` (`G` bytes).
    pub fn generate(&mut self, rng: &mut impl Random) -> (DhPrivate, Vec<u8>) {
        let mut exponent = Zeroizing::new([0u8; EXPONENT_LEN]);
        rng.fill(&mut exponent[..]);
        exponent[0] |= 0x80;
        let private = DhPrivate { group: self.group, exponent };
        let public = self.power(&BigUint::from(GENERATOR), &private);
        (private, self.encode(&public))
    }

    /// Refuses a peer value unless it is exactly `G` bytes and `1 < y < p − 1`. No
    /// exponentiation.
    pub fn validate(&self, peer: &[u8]) -> Result<BigUint, DhError> {
        if peer.len() != self.group.value_len() {
            return Err(DhError::BadLength);
        }
        let value = BigUint::from_bytes_be(peer);
        if value <= BigUint::from(1u32) || value >= self.prime_minus_one {
            return Err(DhError::OutOfRange);
        }
        Ok(value)
    }

    /// `peer^x mod p`, after validating `peer`. Consumes (and so erases) the private value.
    pub fn agree(&mut self, private: DhPrivate, peer: &[u8]) -> Result<SharedSecret, DhError> {
        debug_assert_eq!(private.group, self.group);
        let peer = self.validate(peer)?;
        let shared = self.power(&peer, &private);
        // One exchange per private value: it is erased here, not by the caller.
        drop(private);
        Ok(SharedSecret(Zeroizing::new(self.encode(&shared))))
    }

    fn power(&mut self, base: &BigUint, private: &DhPrivate) -> BigUint {
        self.modexps += 1;
        // The BigUint form of the exponent is a temporary: see the module comment.
        let exponent = BigUint::from_bytes_be(&private.exponent[..]);
        base.modpow(&exponent, &self.prime)
    }

    /// Fixed-width big-endian: left-padded to `G` bytes.
    fn encode(&self, value: &BigUint) -> Vec<u8> {
        let len = self.group.value_len();
        let digits = value.to_bytes_be();
        let mut out = vec![0u8; len];
        out[len - digits.len()..].copy_from_slice(&digits);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yavipin_proto::rng::Seeded;

    /// `floor(2^bits · π)`, from Machin's formula `π = 16·atan(1/5) − 4·atan(1/239)` in
    /// fixed point with 64 guard bits: an independent derivation of the RFC constants.
    fn pi_scaled(bits: usize) -> BigUint {
        let scale = BigUint::from(1u32) << (bits + 64);
        let atan_inv = |x: u32| {
            let x2 = BigUint::from(x * x);
            let mut term = &scale / x;
            let (mut plus, mut minus) = (BigUint::ZERO, BigUint::ZERO);
            let mut n = 0u32;
            while term > BigUint::ZERO {
                let part = &term / (2 * n + 1);
                if n.is_multiple_of(2) {
                    plus += part;
                } else {
                    minus += part;
                }
                term /= &x2;
                n += 1;
            }
            plus - minus
        };
        (atan_inv(5) * 16u32 - atan_inv(239) * 4u32) >> 64
    }

    /// RFC 3526: `p = 2^n − 2^(n−64) − 1 + 2^64 · (floor(2^(n−130) · π) + offset)`.
    #[test]
    fn primes_follow_the_rfc_formula() {
        for (group, bits, offset) in [(Group::Modp2048, 2048, 124_476u32), (Group::Modp3072, 3072, 1_690_314)] {
            let one = BigUint::from(1u32);
            let expected = (&one << bits) - (&one << (bits - 64)) - &one + ((pi_scaled(bits - 130) + offset) << 64);
            let p = BigUint::from_bytes_be(prime_bytes(group));
            assert_eq!(p, expected, "{group:?}");
            assert_eq!(p.bits(), bits as u64);
            assert_eq!(prime_bytes(group).len(), group.value_len());
        }
    }

    /// The hexadecimal text of RFC 3526 sections 3 and 4, first and last lines, as printed.
    #[test]
    fn primes_match_the_rfc_text() {
        let p14 = BigUint::from_bytes_be(prime_bytes(Group::Modp2048)).to_str_radix(16).to_uppercase();
        assert!(p14.starts_with("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"));
        assert!(p14.ends_with("15728E5A8AACAA68FFFFFFFFFFFFFFFF"));
        let p15 = BigUint::from_bytes_be(prime_bytes(Group::Modp3072)).to_str_radix(16).to_uppercase();
        assert!(p15.starts_with("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1"));
        assert!(p15.ends_with("43DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF"));
        assert_eq!(GENERATOR, 2);
    }

    /// Safe primes with generator 2: `p ≡ 7 (mod 8)` makes 2 a quadratic residue, so it
    /// generates the prime-order subgroup; `p ≡ 3 (mod 4)` follows from `q` being odd.
    /// Fermat tests to base 3 for `p` and `q = (p − 1)/2` catch any corrupted constant.
    #[test]
    fn primes_are_safe_primes_with_generator_two() {
        for group in Group::ALL {
            let p = BigUint::from_bytes_be(prime_bytes(group));
            assert_eq!(&p % 8u32, BigUint::from(7u32));
            let q = (&p - 1u32) >> 1;
            let three = BigUint::from(3u32);
            assert_eq!(three.modpow(&(&p - 1u32), &p), BigUint::from(1u32), "{group:?}: p");
            assert_eq!(three.modpow(&(&q - 1u32), &q), BigUint::from(1u32), "{group:?}: q");
            // 2 has order q: 2^q ≡ 1.
            assert_eq!(BigUint::from(GENERATOR).modpow(&q, &p), BigUint::from(1u32));
        }
    }

    #[test]
    fn both_sides_agree_and_count_exponentiations() {
        for group in Group::ALL {
            let mut rng = Seeded::new(0x1234_5678_9abc_def0);
            let (mut alice, mut bob) = (Dh::new(group), Dh::new(group));
            let (a, a_pub) = alice.generate(&mut rng);
            let (b, b_pub) = bob.generate(&mut rng);
            assert_eq!(a_pub.len(), group.value_len());
            assert_ne!(a_pub, b_pub);
            let s1 = alice.agree(a, &b_pub).expect("valid");
            let s2 = bob.agree(b, &a_pub).expect("valid");
            assert_eq!(s1.expose(), s2.expose());
            assert_eq!(s1.expose().len(), group.value_len());
            assert_eq!((alice.modexps(), bob.modexps()), (2, 2));
        }
    }

    #[test]
    fn exponents_are_full_length() {
        let mut rng = Seeded::new(7);
        let mut dh = Dh::new(Group::Modp2048);
        let (private, _) = dh.generate(&mut rng);
        assert_eq!(BigUint::from_bytes_be(&private.exponent[..]).bits(), EXPONENT_BITS as u64);
    }

    #[test]
    fn invalid_peer_values_are_refused_without_exponentiation() {
        for group in Group::ALL {
            let len = group.value_len();
            let p = BigUint::from_bytes_be(prime_bytes(group));
            let encode = |v: &BigUint| {
                let digits = v.to_bytes_be();
                let mut out = vec![0u8; len.max(digits.len())];
                let start = out.len() - digits.len();
                out[start..].copy_from_slice(&digits);
                out
            };
            let mut dh = Dh::new(group);
            let mut rng = Seeded::new(99);
            let refused = [
                encode(&BigUint::ZERO),
                encode(&BigUint::from(1u32)),
                encode(&(&p - 1u32)),
                encode(&p),
                encode(&(&p + 1u32)),
                vec![0xff; len],
            ];
            for value in &refused {
                assert_eq!(dh.validate(value).err(), Some(DhError::OutOfRange));
                let (private, _) = dh.generate(&mut rng);
                let before = dh.modexps();
                assert_eq!(dh.agree(private, value).err(), Some(DhError::OutOfRange));
                assert_eq!(dh.modexps(), before, "no exponentiation for a refused value");
            }
            assert_eq!(dh.validate(&vec![2; len - 1]).err(), Some(DhError::BadLength));
            assert_eq!(dh.validate(&vec![2; len + 1]).err(), Some(DhError::BadLength));
            assert!(dh.validate(&encode(&BigUint::from(2u32))).is_ok());
            assert!(dh.validate(&encode(&(&p - 2u32))).is_ok());
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let secret = SharedSecret(Zeroizing::new(vec![0xab; 256]));
        assert_eq!(format!("{secret:?}"), "SharedSecret(..)");
        let mut dh = Dh::new(Group::Modp2048);
        let (private, _) = dh.generate(&mut Seeded::new(1));
        assert_eq!(format!("{private:?}"), "DhPrivate { group: Modp2048, .. }");
    }
}
