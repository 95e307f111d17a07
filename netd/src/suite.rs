//! Cipher suites: how one direction's traffic secret turns into packet protection.
//!
//! The data plane is generic over [`Suite`], so a second suite (an AEAD) can be negotiated
//! beside the classic one without touching the packet path. A suite only ever sees one
//! packet at a time and caller-owned buffers; it allocates nothing per packet.

use blowfish::Blowfish;
use cfb_mode::cipher::InnerIvInit;
use cfb_mode::cipher::{Block, BlockCipherEncrypt, KeyInit};
use cfb_mode::{Decryptor, Encryptor};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use yavipin_proto::{DATA_HEADER_LEN, Epoch, TrafficSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The per-packet nonce: unique for every packet sealed under one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonce {
    /// The key epoch the packet is sealed under.
    pub epoch: Epoch,
    /// The packet's sequence number within the epoch.
    pub seq: u32,
}

/// The authentication tag did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTag;

/// A packet-protection algorithm: encryption plus authentication over header and ciphertext.
pub trait Suite {
    /// Name used in logs and status output.
    const NAME: &'static str;
    /// Bytes of tag appended to every packet.
    const TAG_LEN: usize;
    /// One direction's keys for one epoch; erased when dropped.
    type Keys: ZeroizeOnDrop;

    /// Derives the keys from the secret keyd supplied.
    fn derive(secret: &TrafficSecret) -> Self::Keys;

    /// Encrypts `buf` in place, then writes the tag over `header || buf` into `tag`
    /// (exactly [`Self::TAG_LEN`] bytes).
    fn seal(keys: &Self::Keys, nonce: Nonce, header: &[u8; DATA_HEADER_LEN], buf: &mut [u8], tag: &mut [u8]);

    /// Verifies `tag` over `header || ciphertext` in constant time and only then decrypts
    /// `ciphertext` into `out` (same length). On [`BadTag`], `out` is untouched.
    fn open(
        keys: &Self::Keys,
        nonce: Nonce,
        header: &[u8; DATA_HEADER_LEN],
        ciphertext: &[u8],
        tag: &[u8],
        out: &mut [u8],
    ) -> Result<(), BadTag>;
}

/// The classic suite: Blowfish (128-bit key) in 64-bit CFB mode, then HMAC-MD5 truncated to
/// 96 bits over header and ciphertext (encrypt-then-MAC).
///
/// The CFB IV is `Blowfish_K(epoch || seq)` (NIST SP 800-38A, appendix C): unpredictable to
/// anyone without the key, unique per packet, and free on the wire because both ends know
/// the epoch and the sequence number.
#[derive(Debug, Clone, Copy)]
pub struct Classic;

/// Keys of the classic suite for one direction and epoch.
pub struct ClassicKeys {
    cipher: Blowfish,
    /// HMAC-MD5 keyed with the MAC key; cloned per packet so the ipad/opad blocks are
    /// hashed once per epoch, not once per packet.
    mac: Hmac<Md5>,
}

impl ZeroizeOnDrop for ClassicKeys {}

impl core::fmt::Debug for ClassicKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ClassicKeys(..)")
    }
}

/// Length of the classic suite's Blowfish key and HMAC-MD5 key.
pub const CLASSIC_KEY_LEN: usize = 16;
/// Length of the classic suite's tag.
pub const CLASSIC_TAG_LEN: usize = 12;

const LABEL_ENC: &[u8] = b"yavipin classic blowfish-cfb";
const LABEL_MAC: &[u8] = b"yavipin classic hmac-md5";

impl ClassicKeys {
    /// Builds keys from explicit encryption and MAC keys (used by derivation and by tests).
    pub fn from_parts(enc_key: &[u8; CLASSIC_KEY_LEN], mac_key: &[u8; CLASSIC_KEY_LEN]) -> Self {
        Self {
            cipher: Blowfish::new_from_slice(enc_key).expect("16 bytes is a valid Blowfish key"),
            mac: Hmac::<Md5>::new_from_slice(mac_key).expect("HMAC takes any key length"),
        }
    }

    fn iv(&self, nonce: Nonce) -> Block<Blowfish> {
        let mut iv = Block::<Blowfish>::default();
        iv[..4].copy_from_slice(&nonce.epoch.0.to_be_bytes());
        iv[4..].copy_from_slice(&nonce.seq.to_be_bytes());
        self.cipher.encrypt_block(&mut iv);
        iv
    }

    fn tag(&self, header: &[u8], ciphertext: &[u8]) -> [u8; 16] {
        let mut mac = self.mac.clone();
        mac.update(header);
        mac.update(ciphertext);
        mac.finalize().into_bytes().into()
    }
}

impl Suite for Classic {
    const NAME: &'static str = "classic (blowfish-cfb64, hmac-md5-96)";
    const TAG_LEN: usize = CLASSIC_TAG_LEN;
    type Keys = ClassicKeys;

    fn derive(secret: &TrafficSecret) -> ClassicKeys {
        let kdf = Hkdf::<Sha256>::from_prk(secret.expose()).expect("32 bytes is a valid PRK");
        let mut enc = [0u8; CLASSIC_KEY_LEN];
        let mut mac = [0u8; CLASSIC_KEY_LEN];
        kdf.expand(LABEL_ENC, &mut enc).expect("16 bytes is a valid HKDF length");
        kdf.expand(LABEL_MAC, &mut mac).expect("16 bytes is a valid HKDF length");
        let keys = ClassicKeys::from_parts(&enc, &mac);
        enc.zeroize();
        mac.zeroize();
        keys
    }

    fn seal(keys: &ClassicKeys, nonce: Nonce, header: &[u8; DATA_HEADER_LEN], buf: &mut [u8], tag: &mut [u8]) {
        Encryptor::inner_iv_init(&keys.cipher, &keys.iv(nonce)).encrypt(buf);
        let mut full = keys.tag(header, buf);
        tag.copy_from_slice(&full[..CLASSIC_TAG_LEN]);
        full.zeroize();
    }

    fn open(
        keys: &ClassicKeys,
        nonce: Nonce,
        header: &[u8; DATA_HEADER_LEN],
        ciphertext: &[u8],
        tag: &[u8],
        out: &mut [u8],
    ) -> Result<(), BadTag> {
        let expected = keys.tag(header, ciphertext);
        if !bool::from(expected[..CLASSIC_TAG_LEN].ct_eq(tag)) {
            return Err(BadTag);
        }
        Decryptor::inner_iv_init(&keys.cipher, &keys.iv(nonce)).decrypt_b2b(ciphertext, out).map_err(|_| BadTag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blowfish::cipher::BlockCipherDecrypt;
    use hex_literal::hex;

    /// Blowfish known answers from Eric Young's published test vectors (ECB, 8-byte keys).
    #[test]
    fn blowfish_known_answers() {
        let vectors: [([u8; 8], [u8; 8], [u8; 8]); 4] = [
            (hex!("0000000000000000"), hex!("0000000000000000"), hex!("4EF997456198DD78")),
            (hex!("FFFFFFFFFFFFFFFF"), hex!("FFFFFFFFFFFFFFFF"), hex!("51866FD5B85ECB8A")),
            (hex!("3000000000000000"), hex!("1000000000000001"), hex!("7D856F9A613063F2")),
            (hex!("FEDCBA9876543210"), hex!("0123456789ABCDEF"), hex!("0ACEAB0FC6A0A28D")),
        ];
        for (key, plain, cipher) in vectors {
            let bf = <Blowfish>::new_from_slice(&key).expect("valid key");
            let mut block = Block::<Blowfish>::from(plain);
            bf.encrypt_block(&mut block);
            assert_eq!(block.as_slice(), cipher);
            bf.decrypt_block(&mut block);
            assert_eq!(block.as_slice(), plain);
        }
    }

    /// Blowfish in CFB64 from Eric Young's vectors: key 0123..F0E1D2C3B4A59687, IV
    /// FEDCBA9876543210, plaintext "7654321 Now is the time for \0".
    #[test]
    fn blowfish_cfb64_known_answer() {
        let key = hex!("0123456789ABCDEFF0E1D2C3B4A59687");
        let iv = hex!("FEDCBA9876543210");
        let mut data = *b"7654321 Now is the time for \0";
        let expected = hex!("E73214A2822139CAF26ECF6D2EB9E76E3DA3DE04D1517200519D57A6C3");
        let bf = <Blowfish>::new_from_slice(&key).expect("valid key");
        Encryptor::inner_iv_init(&bf, &iv.into()).encrypt(&mut data);
        assert_eq!(data, expected);
    }

    /// HMAC-MD5 test cases 1, 2, 3, 6 and 7 of RFC 2202.
    #[test]
    fn hmac_md5_rfc2202() {
        let cases: [(&[u8], &[u8], [u8; 16]); 5] = [
            (&[0x0b; 16], b"Hi There", hex!("9294727a3638bb1c13f48ef8158bfc9d")),
            (b"Jefe", b"what do ya want for nothing?", hex!("750c783e6ab0b503eaa86e310a5db738")),
            (&[0xaa; 16], &[0xdd; 50], hex!("56be34521d144c88dbb8c733f0e8b3f6")),
            (
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                hex!("6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"),
            ),
            (
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
                hex!("6f630fad67cda0ee1fb1f562db3aa53e"),
            ),
        ];
        for (key, data, expected) in cases {
            let mut mac = Hmac::<Md5>::new_from_slice(key).expect("any length");
            mac.update(data);
            assert_eq!(mac.finalize().into_bytes().as_slice(), expected);
        }
    }

    /// CFB computed by hand from the raw block cipher, independent of the cfb-mode crate:
    /// `C_i = P_i xor E(C_{i-1})` with `C_0 = IV = E(epoch || seq)`, the last block truncated.
    fn reference_seal(enc: &[u8; 16], mac: &[u8; 16], nonce: Nonce, header: [u8; 5], plain: &[u8]) -> Vec<u8> {
        let bf = <Blowfish>::new_from_slice(enc).expect("valid key");
        let mut register = [0u8; 8];
        register[..4].copy_from_slice(&nonce.epoch.0.to_be_bytes());
        register[4..].copy_from_slice(&nonce.seq.to_be_bytes());
        let mut block = Block::<Blowfish>::from(register);
        bf.encrypt_block(&mut block);
        let mut out = Vec::new();
        for chunk in plain.chunks(8) {
            bf.encrypt_block(&mut block);
            let cipher: Vec<u8> = chunk.iter().zip(block.iter()).map(|(p, k)| p ^ k).collect();
            block[..cipher.len()].copy_from_slice(&cipher);
            out.extend_from_slice(&cipher);
        }
        let mut hmac = Hmac::<Md5>::new_from_slice(mac).expect("any length");
        hmac.update(&header);
        hmac.update(&out);
        out.extend_from_slice(&hmac.finalize().into_bytes()[..12]);
        out
    }

    #[test]
    fn classic_seal_matches_independent_computation() {
        let enc = hex!("00112233445566778899aabbccddeeff");
        let mac = hex!("0f1e2d3c4b5a69788796a5b4c3d2e1f0");
        let keys = ClassicKeys::from_parts(&enc, &mac);
        let header = [0x10, 0, 0, 0, 42];
        for len in [0usize, 1, 7, 8, 9, 63, 64, 65, 1400] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3).to_le_bytes()[0]).collect();
            let nonce = Nonce { epoch: Epoch(3), seq: 42 };
            let mut buf = plain.clone();
            let mut tag = [0u8; 12];
            Classic::seal(&keys, nonce, &header, &mut buf, &mut tag);
            let mut sealed = buf.clone();
            sealed.extend_from_slice(&tag);
            assert_eq!(sealed, reference_seal(&enc, &mac, nonce, header, &plain), "len {len}");

            let mut opened = vec![0u8; len];
            Classic::open(&keys, nonce, &header, &buf, &tag, &mut opened).expect("authentic");
            assert_eq!(opened, plain);
        }
    }

    #[test]
    fn iv_depends_on_epoch_and_sequence() {
        let keys = ClassicKeys::from_parts(&[1; 16], &[2; 16]);
        let a = keys.iv(Nonce { epoch: Epoch(1), seq: 1 });
        let b = keys.iv(Nonce { epoch: Epoch(1), seq: 2 });
        let c = keys.iv(Nonce { epoch: Epoch(2), seq: 1 });
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
    }

    #[test]
    fn wrong_tag_leaves_output_untouched() {
        let keys = ClassicKeys::from_parts(&[1; 16], &[2; 16]);
        let nonce = Nonce { epoch: Epoch(0), seq: 0 };
        let header = [0; 5];
        let mut buf = *b"secret payload";
        let mut tag = [0u8; 12];
        Classic::seal(&keys, nonce, &header, &mut buf, &mut tag);
        tag[11] ^= 1;
        let mut out = [0x55u8; 14];
        assert_eq!(Classic::open(&keys, nonce, &header, &buf, &tag, &mut out), Err(BadTag));
        assert_eq!(out, [0x55; 14]);
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_secret() {
        let a = Classic::derive(&TrafficSecret::new([1; 32]));
        let b = Classic::derive(&TrafficSecret::new([2; 32]));
        let header = [0; 5];
        assert_ne!(a.tag(&header, b"x"), b.tag(&header, b"x"));
        let nonce = Nonce { epoch: Epoch(0), seq: 0 };
        assert_ne!(a.iv(nonce), b.iv(nonce));
    }
}
