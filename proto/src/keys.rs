//! Key material that keyd hands to netd: one traffic secret per direction and key epoch.
//!
//! A [`TrafficSecret`] is never `Clone`, never serialisable through serde, and its `Debug`
//! shows nothing of the key. It is erased when dropped.

use core::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a per-direction, per-epoch traffic secret.
pub const TRAFFIC_SECRET_LEN: usize = 32;

/// A key epoch: the position of a traffic key along the tunnel's key schedule, one counter
/// per direction, strictly increasing across hash-chain steps and Diffie-Hellman renewals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Epoch(pub u32);

impl Epoch {
    /// The two bits of the epoch carried in every data packet.
    pub fn phase(self) -> u8 {
        (self.0 & 3) as u8
    }

    /// The following epoch, if the counter has room for one.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}

/// 32 bytes from which a cipher suite derives one direction's keys for one epoch.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TrafficSecret(Box<[u8; TRAFFIC_SECRET_LEN]>);

impl TrafficSecret {
    /// Takes ownership of the bytes; the caller's copy should be a zeroizing buffer too.
    pub fn new(bytes: [u8; TRAFFIC_SECRET_LEN]) -> Self {
        let mut bytes = bytes;
        let secret = Self(Box::new(bytes));
        bytes.zeroize();
        secret
    }

    /// The secret bytes, for key derivation only.
    pub fn expose(&self) -> &[u8; TRAFFIC_SECRET_LEN] {
        &self.0
    }
}

impl fmt::Debug for TrafficSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TrafficSecret(..)")
    }
}

/// Length of the pre-shared key.
pub const PSK_LEN: usize = 32;

/// The 256-bit pre-shared key: read by the parent, held by keyd alone. Erased on drop,
/// never `Clone`, never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Psk(Box<[u8; PSK_LEN]>);

impl Psk {
    /// Takes ownership of the bytes and erases the caller's copy.
    pub fn new(bytes: &mut [u8; PSK_LEN]) -> Self {
        let psk = Self(Box::new(*bytes));
        bytes.zeroize();
        psk
    }

    /// The key bytes, for key derivation only.
    pub fn expose(&self) -> &[u8; PSK_LEN] {
        &self.0
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(..)")
    }
}

/// A traffic secret and the epoch it belongs to.
#[derive(Debug)]
pub struct EpochKey {
    /// The epoch this key is valid for.
    pub epoch: Epoch,
    /// The secret itself.
    pub secret: TrafficSecret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = EpochKey { epoch: Epoch(7), secret: TrafficSecret::new([0xab; TRAFFIC_SECRET_LEN]) };
        let shown = format!("{key:?}");
        assert!(shown.contains('7'));
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    #[test]
    fn psk_takes_and_erases_the_callers_copy() {
        let mut bytes = [0x42; PSK_LEN];
        let psk = Psk::new(&mut bytes);
        assert_eq!(bytes, [0; PSK_LEN]);
        assert_eq!(psk.expose(), &[0x42; PSK_LEN]);
        assert_eq!(format!("{psk:?}"), "Psk(..)");
    }

    #[test]
    fn phase_is_epoch_mod_4() {
        assert_eq!(Epoch(0).phase(), 0);
        assert_eq!(Epoch(5).phase(), 1);
        assert_eq!(Epoch(u32::MAX).phase(), 3);
        assert_eq!(Epoch(u32::MAX).next(), None);
    }
}
