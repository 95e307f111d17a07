//! keyd, the key holder: cookie-protected, PSK-authenticated Diffie-Hellman and the
//! hash-chain key schedule, as a sans-IO monitor ([`KeyDaemon`]) that netd talks to through
//! [`yavipin_ipc::NetdToKeyd`] and [`yavipin_ipc::KeydToNetd`].
//!
//! keyd holds every long-lived secret of a tunnel: `K_auth` (derived from the pre-shared
//! key), the Diffie-Hellman private values and the hash-chain states. netd only ever
//! receives per-epoch traffic secrets.

#![forbid(unsafe_code)]

pub mod daemon;
pub mod dh;
pub mod schedule;
pub mod shell;

pub use daemon::{KeyDaemon, KeydConfig, KeydCounters, KeydError};
pub use dh::Dh;
pub use schedule::{AuthKey, KEY_LEN};

/// A seeded generator for unit tests (splitmix64): reproducible, not for keys.
#[cfg(test)]
pub(crate) struct TestRandom(pub(crate) u64);

#[cfg(test)]
impl yavipin_proto::Random for TestRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}
