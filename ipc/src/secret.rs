//! The one place where secrets are encoded: serde adapters used with `#[serde(with = ...)]`
//! on IPC message fields. The secret types themselves implement neither `Serialize` nor
//! `Deserialize`, so no other code can put a key into bytes by accident. Decoding goes
//! through a zeroizing buffer; the frame buffers on both ends are erased after each frame.

use serde::{Deserializer, Serializer};
use zeroize::Zeroizing;

/// The pre-shared key (parent → keyd only).
pub mod psk {
    use super::{Deserializer, Serializer, Zeroizing};
    use serde::{Deserialize, Serialize};
    use yavipin_proto::keys::{PSK_LEN, Psk};

    /// Encodes the key.
    pub fn serialize<S: Serializer>(psk: &Psk, serializer: S) -> Result<S::Ok, S::Error> {
        psk.expose().serialize(serializer)
    }

    /// Decodes the key.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Psk, D::Error> {
        let mut bytes = Zeroizing::new(<[u8; PSK_LEN]>::deserialize(deserializer)?);
        Ok(Psk::new(&mut bytes))
    }
}

/// A traffic key and its epoch (keyd → netd only).
pub mod epoch_key {
    use super::{Deserializer, Serializer, Zeroizing};
    use serde::{Deserialize, Serialize};
    use yavipin_proto::{Epoch, EpochKey, TRAFFIC_SECRET_LEN, TrafficSecret};

    /// Encodes the epoch and the secret.
    pub fn serialize<S: Serializer>(key: &EpochKey, serializer: S) -> Result<S::Ok, S::Error> {
        (key.epoch.0, key.secret.expose()).serialize(serializer)
    }

    /// Decodes the epoch and the secret.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<EpochKey, D::Error> {
        let (epoch, bytes) = <(u32, [u8; TRAFFIC_SECRET_LEN])>::deserialize(deserializer)?;
        let bytes = Zeroizing::new(bytes);
        Ok(EpochKey { epoch: Epoch(epoch), secret: TrafficSecret::new(*bytes) })
    }
}
