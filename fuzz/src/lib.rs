//! Pieces shared by the fuzz targets (the cores' randomness is `yavipin_proto::rng::Seeded`): the
//! pre-shared key the targets load, independent computations of what the key schedule
//! derives from it, and the scanner that looks for secret bytes in anything a core outputs.
//!
//! Every target builds its cores afresh for each input from fixed seeds, so an input
//! replays the same way every time: a crash file is a complete reproduction.

#![forbid(unsafe_code)]

pub mod ops;

use std::time::{Duration, Instant};

use hkdf::Hkdf;
use sha2::Sha256;
use yavipin_proto::{Epoch, EpochKey, TrafficSecret};

/// The pre-shared key the keyd target loads: 32 distinct bytes, so that any run of them in
/// an output is unmistakable.
pub const PSK: [u8; 32] = {
    let mut key = [0u8; 32];
    let mut i = 0u8;
    while i < 32 {
        key[i as usize] = 0x80 | (i * 3 + 1);
        i += 1;
    }
    key
};

/// The PSK's id on the wire.
pub const KEY_ID: u32 = 7;

/// `K_auth = HKDF-SHA-256(salt = "yavipin v1 psk", IKM = PSK, info = "auth", 32)`,
/// computed here from `docs/PROTOCOL.md` section 3, independently of keyd.
pub fn k_auth(psk: &[u8; 32]) -> [u8; 32] {
    let kdf = Hkdf::<Sha256>::new(Some(b"yavipin v1 psk"), psk);
    let mut key = [0u8; 32];
    kdf.expand(b"auth", &mut key).expect("32 bytes is a valid HKDF-SHA-256 length");
    key
}

/// `auth_i = HMAC-SHA-256(K_auth, "yavipin initiator auth" ‖ signed)`, independently of keyd.
pub fn initiator_auth(k_auth: &[u8; 32], signed: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(k_auth).expect("HMAC takes any key length");
    mac.update(b"yavipin initiator auth");
    mac.update(signed);
    mac.finalize().into_bytes().into()
}

/// `auth_r = HMAC-SHA-256(K_auth, "yavipin responder auth" ‖ T)` with
/// `T = SHA-256(Initiator Auth ‖ Responder Auth before auth_r)`, independently of keyd.
pub fn responder_auth(k_auth: &[u8; 32], initiator_auth: &[u8], responder_signed: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(k_auth).expect("HMAC takes any key length");
    mac.update(b"yavipin responder auth");
    mac.update(&transcript(initiator_auth, responder_signed));
    mac.finalize().into_bytes().into()
}

/// `T = SHA-256(Initiator Auth ‖ Responder Auth before auth_r)`.
pub fn transcript(initiator_auth: &[u8], responder_signed: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut hash = Sha256::new();
    hash.update(initiator_auth);
    hash.update(responder_signed);
    hash.finalize().into()
}

/// What one Diffie-Hellman exchange seeds (`docs/PROTOCOL.md` section 3), computed here
/// from the protocol text, independently of keyd.
#[derive(Debug)]
pub struct Session {
    /// `K_confirm`.
    pub confirm: [u8; 32],
    /// `C_i→r[0]`.
    pub initiator_to_responder: [u8; 32],
    /// `C_r→i[0]`.
    pub responder_to_initiator: [u8; 32],
}

impl Session {
    /// `PRK = HKDF-Extract(Ni ‖ Nr, Z)`, then `K_confirm` and both chains' first states.
    pub fn derive(shared: &[u8], ni: &[u8; 16], nr: &[u8; 16], transcript: &[u8; 32]) -> Self {
        let salt = [&ni[..], &nr[..]].concat();
        let kdf = Hkdf::<Sha256>::new(Some(&salt), shared);
        let okm = |label: &[u8]| {
            let mut out = [0u8; 32];
            kdf.expand_multi_info(&[label, transcript], &mut out).expect("32 bytes is a valid length");
            out
        };
        Self {
            confirm: okm(b"yavipin confirm"),
            initiator_to_responder: okm(b"yavipin chain i2r"),
            responder_to_initiator: okm(b"yavipin chain r2i"),
        }
    }

    /// `confirm_r = HMAC-SHA-256(K_confirm, "yavipin responder confirm" ‖ T)`.
    pub fn confirm_tag(&self, transcript: &[u8; 32]) -> [u8; 32] {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.confirm).expect("HMAC takes any key length");
        mac.update(b"yavipin responder confirm");
        mac.update(transcript);
        mac.finalize().into_bytes().into()
    }
}

/// `TS[k]` of the chain that starts at `first` (`C[0]`): `C[k+1] = SHA-256("yavipin chain
/// step" ‖ C[k])`, `TS[k] = HKDF-Expand(C[k], "yavipin traffic", 32)`.
pub fn traffic_secret(first: &[u8; 32], step: u32) -> [u8; 32] {
    use sha2::Digest;
    let mut chain = *first;
    for _ in 0..step {
        let mut hash = Sha256::new();
        hash.update(b"yavipin chain step");
        hash.update(chain);
        chain = hash.finalize().into();
    }
    let kdf = Hkdf::<Sha256>::from_prk(&chain).expect("a 32-byte PRK");
    let mut secret = [0u8; 32];
    kdf.expand(b"yavipin traffic", &mut secret).expect("32 bytes is a valid length");
    secret
}

/// A 64-bit FNV-1a hash of the whole input, mixed into the keys and random seeds of a
/// target. Coverage instrumentation shows the fuzzer the operands of comparisons, so with
/// fixed keys it could learn a genuine packet or cookie in one run and replay it in another,
/// where the harness never made it and would cry forgery. Keys that change with every input
/// close that loop: an input cannot carry a value authenticated under a key derived from
/// itself.
pub fn input_salt(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The ways `Debug` or a log line could spell `secret`: the bytes as `Debug` prints them
/// inside any byte list (`1, 2, 3`), and as hexadecimal in either case.
pub fn renderings(secret: &[u8]) -> Vec<String> {
    let decimal = secret.iter().map(u8::to_string).collect::<Vec<_>>().join(", ");
    let hex: String = secret.iter().fold(String::new(), |mut hex, b| {
        use std::fmt::Write;
        let _ = write!(hex, "{b:02x}");
        hex
    });
    vec![decimal, hex.clone(), hex.to_uppercase()]
}

/// A traffic key for `epoch`, derived from the epoch, `direction` and `salt` only: both
/// ends of a target derive the same one.
pub fn epoch_key(direction: u8, salt: u64, epoch: u32) -> EpochKey {
    let mut bytes = [0x5a; 32];
    bytes[..4].copy_from_slice(&epoch.to_be_bytes());
    bytes[4] = direction;
    bytes[5..13].copy_from_slice(&salt.to_be_bytes());
    EpochKey { epoch: Epoch(epoch), secret: TrafficSecret::new(bytes) }
}

/// Key direction of `data_open`'s forgery mode, whose keys are fixed (its seeds are genuine
/// packets the receiver has already accepted). No other mode or target seals under them.
pub const FORGERY_KEYS: u8 = 1;
/// Key direction of `data_open`'s tampering mode, salted with the input.
pub const TAMPERING_KEYS: u8 = 2;

/// Virtual time for the cores: every target starts at one `Instant` and only moves forward.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    now: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// Time zero.
    pub fn new() -> Self {
        let start = Instant::now();
        Self { start, now: start }
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Moves to `at` (never backwards).
    pub fn set(&mut self, at: Instant) {
        self.now = self.now.max(at);
    }

    /// Moves forward by `by`.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }
}

/// Reads operations encoded with postcard one after the other, at most `max`, stopping at
/// the first that does not decode. The seed generator writes them with [`encode_ops`].
pub fn decode_ops<T: serde::de::DeserializeOwned>(mut data: &[u8], max: usize) -> Vec<T> {
    let mut ops = Vec::new();
    while ops.len() < max && !data.is_empty() {
        match postcard::take_from_bytes::<T>(data) {
            Ok((op, rest)) => {
                ops.push(op);
                data = rest;
            }
            Err(_) => break,
        }
    }
    ops
}

/// The input bytes for `ops`.
pub fn encode_ops<T: serde::Serialize>(ops: &[T]) -> Vec<u8> {
    ops.iter().flat_map(|op| postcard::to_allocvec(op).expect("operations encode")).collect()
}

/// The data planes of `data_open`: compression on, 1500-byte inner packets.
pub fn data_config() -> yavipin_netd::DataConfig {
    yavipin_netd::DataConfig { max_inner_len: 1500, compression: true, ..yavipin_netd::DataConfig::default() }
}

/// The four genuine packets the `data_open` receiver accepts before a forgery arrives
/// (one of each kind, the first compressible), sealed under epoch 1 with sequence numbers
/// 0 to 3, with the [`FORGERY_KEYS`].
pub fn forgery_prelude() -> Vec<(ops::data_open::Kind, Vec<u8>)> {
    use ops::data_open::Kind;
    vec![
        (Kind::Ipv4, vec![0x45; 400]),
        (Kind::Ipv6, b"an IPv6 packet that does not compress".to_vec()),
        (Kind::Other(0x0806), b"arp".to_vec()),
        (Kind::Control, vec![0x01]),
    ]
}

/// Seals `payload` as `kind` into `out`.
pub fn seal_as(
    plane: &mut yavipin_netd::DataPlane<yavipin_netd::Classic>,
    now: Instant,
    kind: ops::data_open::Kind,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, yavipin_netd::SealError> {
    use ops::data_open::Kind;
    use yavipin_netd::Inner;
    use yavipin_proto::data::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
    let inner = match kind {
        Kind::Ipv4 => Inner::Packet { ethertype: ETHERTYPE_IPV4, payload },
        Kind::Ipv6 => Inner::Packet { ethertype: ETHERTYPE_IPV6, payload },
        Kind::Other(ethertype) => Inner::Packet { ethertype, payload },
        Kind::Control => Inner::Control(payload),
    };
    plane.seal(now, inner, out)
}

/// Whether `YAVIPIN_FUZZ_TRACE` is set: the stateful targets then print each operation
/// and what came of it, to follow a crash input or a seed step by step.
pub fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("YAVIPIN_FUZZ_TRACE").is_some())
}

/// Prints a trace line when [`tracing`].
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::tracing() {
            eprintln!($($arg)*);
        }
    };
}
