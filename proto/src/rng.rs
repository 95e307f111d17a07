//! Randomness as an input: the sans-IO cores draw nonces, DH exponents, cookie secrets and
//! jitter through [`Random`], so production uses the kernel's generator and the simulator a
//! seeded one, and a simulated run is reproducible from its seed.

/// A source of random bytes.
pub trait Random {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);

    /// A uniformly distributed `u32`.
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0u8; 4];
        self.fill(&mut bytes);
        u32::from_be_bytes(bytes)
    }
}

/// The kernel's generator (`getrandom(2)`), for the daemons.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl Random for OsRandom {
    /// # Panics
    ///
    /// When the kernel refuses randomness. On Linux `getrandom(2)` blocks until the pool is
    /// seeded and otherwise only fails if the system call itself is unavailable (a kernel
    /// older than 3.17, or a seccomp policy that forgot it): a configuration error after
    /// which no key, nonce or cookie could be trusted, so the process stops.
    fn fill(&mut self, buf: &mut [u8]) {
        if let Err(error) = getrandom::fill(buf) {
            panic!("the kernel random source failed: {error}");
        }
    }
}

/// A seeded generator (splitmix64): reproducible from its seed, for the simulator, unit
/// tests and fuzzing. Never for keys: it exists only with the `seeded` feature, which no
/// daemon enables.
#[cfg(feature = "seeded")]
#[derive(Debug, Clone)]
pub struct Seeded(u64);

#[cfg(feature = "seeded")]
impl Seeded {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(feature = "seeded")]
impl Random for Seeded {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_random_fills_and_differs() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        OsRandom.fill(&mut a);
        OsRandom.fill(&mut b);
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }
}
