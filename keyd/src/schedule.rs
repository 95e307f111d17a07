//! The key schedule of `docs/PROTOCOL.md` section 3.
//!
//! ```text
//! K_auth    = HKDF-SHA-256(salt = "yavipin v1 psk", IKM = PSK, info = "auth", 32)
//! PRK       = HKDF-Extract(salt = Ni ‖ Nr, IKM = Z)
//! K_confirm = HKDF-Expand(PRK, "yavipin confirm" ‖ T, 32)
//! C_i→r[0]  = HKDF-Expand(PRK, "yavipin chain i2r" ‖ T, 32)
//! C_r→i[0]  = HKDF-Expand(PRK, "yavipin chain r2i" ‖ T, 32)
//! C[k+1]    = SHA-256("yavipin chain step" ‖ C[k])
//! TS[k]     = HKDF-Expand(C[k], "yavipin traffic", 32)
//! ```
//!
//! Every key is its own type: erased on drop, never `Clone`, `Debug` without key bytes.
//! Only [`TrafficSecret`]s leave keyd; the PSK itself is read once, to derive `K_auth`. A [`HashChain`] overwrites `C[k]` with `C[k+1]` in
//! place the moment it hands out `TS[k]`, so keyd never holds anything from which a key
//! already in use could be recomputed.

use core::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use yavipin_proto::handshake::{MAC_LEN, Nonce};
use yavipin_proto::keys::{PSK_LEN, Psk};
use yavipin_proto::{Epoch, EpochKey, TRAFFIC_SECRET_LEN, TrafficSecret};
use zeroize::Zeroizing;

use crate::dh::SharedSecret;

/// Bytes of the pre-shared key and of every key derived here.
pub const KEY_LEN: usize = 32;

const PSK_SALT: &[u8] = b"yavipin v1 psk";
const PSK_INFO: &[u8] = b"auth";
const LABEL_INITIATOR_AUTH: &[u8] = b"yavipin initiator auth";
const LABEL_RESPONDER_AUTH: &[u8] = b"yavipin responder auth";
const LABEL_RESPONDER_CONFIRM: &[u8] = b"yavipin responder confirm";
const LABEL_CONFIRM: &[u8] = b"yavipin confirm";
const LABEL_CHAIN_I2R: &[u8] = b"yavipin chain i2r";
const LABEL_CHAIN_R2I: &[u8] = b"yavipin chain r2i";
const LABEL_CHAIN_STEP: &[u8] = b"yavipin chain step";
const LABEL_TRAFFIC: &[u8] = b"yavipin traffic";

/// A MAC did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("MAC did not verify")]
pub struct BadMac;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time verification (the `hmac` crate compares with `subtle`).
fn hmac_verify(key: &[u8], parts: &[&[u8]], tag: &[u8; MAC_LEN]) -> Result<(), BadMac> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(tag).map_err(|_| BadMac)
}

fn expand(prk: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; KEY_LEN]> {
    let kdf = Hkdf::<Sha256>::from_prk(prk).expect("a 32-byte PRK is long enough");
    let mut okm = Zeroizing::new([0u8; KEY_LEN]);
    kdf.expand_multi_info(info, &mut okm[..]).expect("32 bytes is a valid HKDF-SHA-256 length");
    okm
}

/// `K_auth`: authenticates the DH values of both sides. Derived once from the PSK, which
/// is then dropped.
pub struct AuthKey {
    key_id: u32,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl AuthKey {
    /// `K_auth` of `psk`, which `key_id` names.
    pub fn derive(key_id: u32, psk: &Psk) -> Self {
        let kdf = Hkdf::<Sha256>::new(Some(PSK_SALT), psk.expose());
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        kdf.expand(PSK_INFO, &mut key[..]).expect("32 bytes is a valid HKDF-SHA-256 length");
        Self { key_id, key }
    }

    /// The id of the PSK this key came from.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// `auth_i` over the Initiator Auth's preceding bytes.
    pub fn initiator_auth(&self, signed: &[u8]) -> [u8; MAC_LEN] {
        hmac(&self.key[..], &[LABEL_INITIATOR_AUTH, signed])
    }

    /// Checks `auth_i`, in constant time.
    pub fn verify_initiator_auth(&self, signed: &[u8], tag: &[u8; MAC_LEN]) -> Result<(), BadMac> {
        hmac_verify(&self.key[..], &[LABEL_INITIATOR_AUTH, signed], tag)
    }

    /// `auth_r` over the transcript.
    pub fn responder_auth(&self, transcript: &Transcript) -> [u8; MAC_LEN] {
        hmac(&self.key[..], &[LABEL_RESPONDER_AUTH, &transcript.0])
    }

    /// Checks `auth_r`, in constant time.
    pub fn verify_responder_auth(&self, transcript: &Transcript, tag: &[u8; MAC_LEN]) -> Result<(), BadMac> {
        hmac_verify(&self.key[..], &[LABEL_RESPONDER_AUTH, &transcript.0], tag)
    }
}

/// `T = SHA-256(Initiator Auth ‖ Responder Auth up to and excluding auth_r)`. Public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transcript([u8; 32]);

impl Transcript {
    /// The transcript of a whole Initiator Auth and the signed part of a Responder Auth.
    pub fn new(initiator_auth: &[u8], responder_signed: &[u8]) -> Self {
        let mut hash = Sha256::new();
        hash.update(initiator_auth);
        hash.update(responder_signed);
        Self(hash.finalize().into())
    }
}

/// `K_confirm`: proves the responder computed the shared secret.
pub struct ConfirmKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for ConfirmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConfirmKey(..)")
    }
}

impl ConfirmKey {
    /// `confirm_r` over the transcript.
    pub fn confirm(&self, transcript: &Transcript) -> [u8; MAC_LEN] {
        hmac(&self.0[..], &[LABEL_RESPONDER_CONFIRM, &transcript.0])
    }

    /// Checks `confirm_r`, in constant time.
    pub fn verify(&self, transcript: &Transcript, tag: &[u8; MAC_LEN]) -> Result<(), BadMac> {
        hmac_verify(&self.0[..], &[LABEL_RESPONDER_CONFIRM, &transcript.0], tag)
    }
}

/// One hash-chain state `C[k]`.
pub struct ChainKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    /// `C[k] := C[k+1] = SHA-256("yavipin chain step" ‖ C[k])`, in place: the old state
    /// is overwritten, not copied.
    fn step(&mut self) {
        let mut hash = Sha256::new();
        hash.update(LABEL_CHAIN_STEP);
        hash.update(&self.0[..]);
        // Written straight into the state's buffer: no intermediate copy of the new state.
        let state: &mut [u8; KEY_LEN] = &mut self.0;
        hash.finalize_into(state.into());
    }

    /// `TS[k] = HKDF-Expand(C[k], "yavipin traffic", 32)`.
    fn traffic_secret(&self) -> TrafficSecret {
        let okm = expand(&self.0[..], &[LABEL_TRAFFIC]);
        TrafficSecret::new(*okm)
    }
}

/// What one Diffie-Hellman exchange seeds: the confirmation key and both directions'
/// chains, each at step 0.
#[derive(Debug)]
pub struct SessionSeed {
    /// `K_confirm`.
    pub confirm: ConfirmKey,
    /// `C_i→r[0]`: the initiator's sending chain.
    pub initiator_to_responder: ChainKey,
    /// `C_r→i[0]`: the responder's sending chain.
    pub responder_to_initiator: ChainKey,
}

impl SessionSeed {
    /// Derives the session from the shared secret, both nonces and the transcript. `PRK`
    /// exists only inside this function.
    pub fn derive(shared: &SharedSecret, ni: &Nonce, nr: &Nonce, transcript: &Transcript) -> Self {
        let mut salt = [0u8; 32];
        salt[..16].copy_from_slice(ni);
        salt[16..].copy_from_slice(nr);
        let kdf = Hkdf::<Sha256>::new(Some(&salt), shared.expose());
        let okm = |label: &[u8]| {
            let mut out = Zeroizing::new([0u8; KEY_LEN]);
            kdf.expand_multi_info(&[label, &transcript.0], &mut out[..])
                .expect("32 bytes is a valid HKDF-SHA-256 length");
            out
        };
        Self {
            confirm: ConfirmKey(okm(LABEL_CONFIRM)),
            initiator_to_responder: ChainKey(okm(LABEL_CHAIN_I2R)),
            responder_to_initiator: ChainKey(okm(LABEL_CHAIN_R2I)),
        }
    }
}

/// One direction's hash chain, positioned at the next epoch it will hand out.
pub struct HashChain {
    /// `C[k]` for epoch `next`.
    key: ChainKey,
    /// The epoch of `key`; `None` once the 32-bit epoch space is used up.
    next: Option<Epoch>,
    /// The epoch of step 0.
    base: Epoch,
}

impl fmt::Debug for HashChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashChain").field("base", &self.base).field("next", &self.next).finish_non_exhaustive()
    }
}

impl HashChain {
    /// A chain whose step 0 is epoch `base`.
    pub fn new(seed: ChainKey, base: Epoch) -> Self {
        Self { key: seed, next: Some(base), base }
    }

    /// The epoch of step 0.
    pub fn base(&self) -> Epoch {
        self.base
    }

    /// The epoch [`Self::take`] hands out next, if any is left.
    pub fn next_epoch(&self) -> Option<Epoch> {
        self.next
    }

    /// Hands out the next epoch's traffic secret and steps the chain, erasing the state
    /// it came from. `None` once the epoch counter is exhausted.
    pub fn take(&mut self) -> Option<EpochKey> {
        let epoch = self.next?;
        let secret = self.key.traffic_secret();
        self.key.step();
        self.next = epoch.next();
        Some(EpochKey { epoch, secret })
    }
}

const _: () = assert!(TRAFFIC_SECRET_LEN == KEY_LEN && PSK_LEN == KEY_LEN);

#[cfg(test)]
mod tests {
    use super::*;
    use hex_literal::hex;

    /// RFC 5869 appendix A.1 (HKDF-SHA-256, basic test case) through the crate we use.
    #[test]
    fn hkdf_rfc5869_case_1() {
        let ikm = [0x0b; 22];
        let salt = hex!("000102030405060708090a0b0c");
        let info = hex!("f0f1f2f3f4f5f6f7f8f9");
        let (prk, kdf) = Hkdf::<Sha256>::extract(Some(&salt), &ikm);
        assert_eq!(prk.as_slice(), hex!("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"));
        let mut okm = [0u8; 42];
        kdf.expand(&info, &mut okm).expect("valid length");
        assert_eq!(okm, hex!("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"));
    }

    /// HKDF written out with HMAC only (RFC 5869 section 2): independent of the hkdf crate.
    fn hkdf_by_hand(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; 32] {
        let prk = hmac(salt, &[ikm]);
        hmac(&prk, &[info, &[1]])
    }

    #[test]
    fn auth_key_matches_hand_computation() {
        let key = AuthKey::derive(7, &Psk::new(&mut [0x42; PSK_LEN]));
        assert_eq!(*key.key, hkdf_by_hand(b"yavipin v1 psk", &[0x42; 32], b"auth"));
        assert_eq!(key.key_id(), 7);

        let tag = key.initiator_auth(b"message");
        assert_eq!(
            tag,
            hmac(&hkdf_by_hand(b"yavipin v1 psk", &[0x42; 32], b"auth"), &[b"yavipin initiator auth", b"message"])
        );
        assert_eq!(key.verify_initiator_auth(b"message", &tag), Ok(()));
        assert_eq!(key.verify_initiator_auth(b"messagf", &tag), Err(BadMac));
        let t = Transcript::new(b"a", b"b");
        let r = key.responder_auth(&t);
        assert_ne!(r, tag);
        assert_eq!(key.verify_responder_auth(&t, &r), Ok(()));
        // Labels separate the two directions: an initiator tag is no responder tag.
        let t_as_init = key.initiator_auth(&t.0);
        assert_eq!(key.verify_responder_auth(&t, &t_as_init), Err(BadMac));

        let other = AuthKey::derive(7, &Psk::new(&mut [0x43; PSK_LEN]));
        assert_eq!(other.verify_initiator_auth(b"message", &tag), Err(BadMac));
    }

    #[test]
    fn transcript_is_sha256_of_both_parts() {
        let t = Transcript::new(b"initiator", b"responder");
        assert_eq!(t.0, <[u8; 32]>::from(Sha256::digest(b"initiatorresponder")));
    }

    #[test]
    fn session_keys_match_hand_computation() {
        let z = SharedSecret::for_tests(vec![0x33; 256]);
        let (ni, nr) = ([1u8; 16], [2u8; 16]);
        let t = Transcript::new(b"ia", b"ra");
        let seed = SessionSeed::derive(&z, &ni, &nr, &t);

        let mut salt = [1u8; 32];
        salt[16..].fill(2);
        let prk = hmac(&salt, &[&[0x33; 256]]);
        let by_hand = |label: &[u8]| hmac(&prk, &[label, &t.0, &[1]]);
        assert_eq!(*seed.confirm.0, by_hand(b"yavipin confirm"));
        assert_eq!(*seed.initiator_to_responder.0, by_hand(b"yavipin chain i2r"));
        assert_eq!(*seed.responder_to_initiator.0, by_hand(b"yavipin chain r2i"));

        let confirm = seed.confirm.confirm(&t);
        assert_eq!(confirm, hmac(&by_hand(b"yavipin confirm"), &[b"yavipin responder confirm", &t.0]));
        assert_eq!(seed.confirm.verify(&t, &confirm), Ok(()));
        assert_eq!(seed.confirm.verify(&Transcript::new(b"ia", b"rb"), &confirm), Err(BadMac));
    }

    #[test]
    fn chain_steps_are_one_way_distinct_and_erase_their_state() {
        let c0 = [9u8; 32];
        let mut chain = HashChain::new(ChainKey(Zeroizing::new(c0)), Epoch(5));
        let mut state = c0;
        let mut seen = std::collections::HashSet::new();
        for k in 0..1000u32 {
            assert_eq!(chain.next_epoch(), Some(Epoch(5 + k)));
            let key = chain.take().expect("epochs left");
            assert_eq!(key.epoch, Epoch(5 + k));
            let ts = hmac(&state, &[b"yavipin traffic", &[1]]);
            assert_eq!(key.secret.expose(), &ts, "TS[{k}]");
            let mut hash = Sha256::new();
            hash.update(b"yavipin chain step");
            hash.update(state);
            state = hash.finalize().into();
            // The chain holds C[k+1] only: C[k] was overwritten.
            assert_eq!(*chain.key.0, state);
            assert!(seen.insert(ts) && seen.insert(state), "step {k} repeats a value");
        }
        assert_eq!(chain.base(), Epoch(5));
    }

    #[test]
    fn chain_stops_at_the_last_epoch() {
        let mut chain = HashChain::new(ChainKey(Zeroizing::new([0; 32])), Epoch(u32::MAX));
        assert_eq!(chain.take().map(|k| k.epoch), Some(Epoch(u32::MAX)));
        assert!(chain.take().is_none());
        assert_eq!(chain.next_epoch(), None);
    }

    #[test]
    fn debug_never_shows_keys() {
        let psk = Psk::new(&mut [0xab; PSK_LEN]);
        let shown = format!(
            "{:?} {:?} {:?}",
            AuthKey::derive(3, &psk),
            ConfirmKey(Zeroizing::new([0xab; 32])),
            HashChain::new(ChainKey(Zeroizing::new([0xab; 32])), Epoch(1))
        );
        assert!(!shown.to_lowercase().contains("ab,") && !shown.contains("171"), "{shown}");
        assert!(shown.contains("key_id: 3"));
    }
}
