//! Optional per-packet raw deflate.
//!
//! Each packet is compressed on its own (no shared dictionary across packets, so loss and
//! reordering cost nothing). A packet is marked compressed only when deflate made it
//! strictly smaller; after incompressible packets the compressor backs off exponentially
//! so encrypted or already-compressed traffic costs almost no CPU. Decompression is bounded
//! by the caller's buffer: a stream that would expand beyond it is refused (no bombs).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Longest run of packets sent uncompressed after repeated failures to shrink.
const MAX_BACKOFF: u32 = 256;

/// Compressor with its back-off state. Allocates its deflate state once.
pub struct Compressor {
    deflate: Compress,
    /// Packets still to send uncompressed before trying again.
    skip: u32,
    /// Length of the next back-off period after a failure.
    backoff: u32,
}

impl core::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Compressor").field("skip", &self.skip).field("backoff", &self.backoff).finish_non_exhaustive()
    }
}

impl Default for Compressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Compressor {
    /// A compressor at a fast level: per-packet compression trades ratio for latency.
    pub fn new() -> Self {
        Self { deflate: Compress::new(Compression::fast(), false), skip: 0, backoff: 1 }
    }

    /// Deflates `prefix || payload` into `out` if that makes it strictly shorter than the
    /// input. Returns the compressed length, or `None` to send the packet as it is.
    pub fn compress(&mut self, prefix: &[u8], payload: &[u8], out: &mut [u8]) -> Option<usize> {
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        let input_len = prefix.len() + payload.len();
        // Only strictly shorter output is worth a flag; give deflate no room beyond that.
        let limit = input_len.saturating_sub(1).min(out.len());
        let out = &mut out[..limit];
        let shrank = self.deflate_into(prefix, payload, out);
        self.deflate.reset();
        if shrank.is_some() {
            self.backoff = 1;
        } else {
            self.skip = self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
        shrank
    }

    fn deflate_into(&mut self, prefix: &[u8], payload: &[u8], out: &mut [u8]) -> Option<usize> {
        if !prefix.is_empty() {
            self.deflate.compress(prefix, out, FlushCompress::None).ok()?;
            if self.deflate.total_in() != prefix.len() as u64 {
                return None;
            }
        }
        let written = usize::try_from(self.deflate.total_out()).ok()?;
        let status = self.deflate.compress(payload, out.get_mut(written..)?, FlushCompress::Finish).ok()?;
        if status != Status::StreamEnd {
            return None; // ran out of room: would not have shrunk the packet
        }
        usize::try_from(self.deflate.total_out()).ok()
    }
}

/// Why a compressed plaintext was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// Not a valid raw deflate stream, or bytes after its end.
    Corrupt,
    /// Would expand beyond the allowed size.
    TooLarge,
}

/// Decompressor, allocated once.
pub struct Decompressor {
    inflate: Decompress,
}

impl core::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Decompressor")
    }
}

impl Default for Decompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Decompressor {
    /// A raw-deflate decompressor.
    pub fn new() -> Self {
        Self { inflate: Decompress::new(false) }
    }

    /// Inflates `input` into `out`, whose length is the most the packet may expand to.
    pub fn decompress(&mut self, input: &[u8], out: &mut [u8]) -> Result<usize, InflateError> {
        let result = self.inflate.decompress(input, out, FlushDecompress::Finish);
        let consumed = self.inflate.total_in();
        let produced = self.inflate.total_out();
        self.inflate.reset(false);
        match result {
            Ok(Status::StreamEnd) if consumed == input.len() as u64 => {
                usize::try_from(produced).map_err(|_| InflateError::TooLarge)
            }
            // Output full before the end of the stream: a bomb, or more than fits.
            Ok(Status::Ok | Status::BufError) if produced == out.len() as u64 => Err(InflateError::TooLarge),
            // Trailing bytes after the end, a truncated stream, or not deflate at all.
            Ok(Status::StreamEnd | Status::Ok | Status::BufError) | Err(_) => Err(InflateError::Corrupt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_data_shrinks_and_round_trips() {
        let mut c = Compressor::new();
        let mut d = Decompressor::new();
        let payload = [b'a'; 1000];
        let mut packed = [0u8; 1100];
        let len = c.compress(&[0x08, 0x06], &payload, &mut packed).expect("shrinks");
        assert!(len < 100, "{len}");
        let mut out = [0u8; 1002];
        let n = d.decompress(&packed[..len], &mut out).expect("valid");
        assert_eq!(&out[..2], &[0x08, 0x06]);
        assert_eq!(&out[2..n], &payload[..]);
    }

    #[test]
    fn incompressible_data_is_left_alone_and_backs_off() {
        let mut c = Compressor::new();
        // A fixed pseudo-random sequence: deflate cannot shrink it.
        let mut x = 0x1234_5678u32;
        let payload: Vec<u8> = (0..1200)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect();
        let mut out = [0u8; 1300];
        assert_eq!(c.compress(&[], &payload, &mut out), None);
        assert_eq!(c.skip, 1);
        assert_eq!(c.compress(&[], &payload, &mut out), None); // skipped
        assert_eq!(c.compress(&[], &payload, &mut out), None); // tried again, failed
        assert_eq!(c.skip, 2);
        // Compressible traffic resets the back-off once the skip period is over.
        c.skip = 0;
        assert!(c.compress(&[], &[0u8; 500], &mut out).is_some());
        assert_eq!(c.backoff, 1);
    }

    #[test]
    fn bomb_is_refused() {
        // 1 MiB of zeros deflates to about a kilobyte.
        let mut c = Compress::new(Compression::best(), false);
        let zeros = vec![0u8; 1 << 20];
        let mut bomb = vec![0u8; 4096];
        c.compress(&zeros, &mut bomb, FlushCompress::Finish).expect("deflate");
        bomb.truncate(usize::try_from(c.total_out()).expect("small"));
        let mut d = Decompressor::new();
        let mut out = [0u8; 1500];
        assert_eq!(d.decompress(&bomb, &mut out), Err(InflateError::TooLarge));
        // The decompressor is reusable after a refusal.
        let mut packed = [0u8; 64];
        let len = Compressor::new().compress(&[], &[7u8; 40], &mut packed).expect("shrinks");
        assert_eq!(d.decompress(&packed[..len], &mut out), Ok(40));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_corrupt() {
        let mut d = Decompressor::new();
        let mut out = [0u8; 1500];
        assert_eq!(d.decompress(&[0xff; 20], &mut out), Err(InflateError::Corrupt));
        let mut packed = [0u8; 64];
        let len = Compressor::new().compress(&[], &[7u8; 40], &mut packed).expect("shrinks");
        assert_eq!(d.decompress(&packed[..=len], &mut out), Err(InflateError::Corrupt));
        assert_eq!(d.decompress(&packed[..len - 1], &mut out), Err(InflateError::Corrupt));
    }
}
