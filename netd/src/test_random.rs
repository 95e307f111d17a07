//! Reproducible randomness for the unit tests of the handshake, liveness and path-MTU cores.

use yavipin_proto::Random;

/// A linear congruential counter: reproducible, and successive ids differ.
pub(crate) struct Counter(pub(crate) u32);

impl Random for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for byte in buf {
            self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *byte = self.0.to_be_bytes()[0];
        }
    }
}
