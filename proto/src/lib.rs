//! The yavipin wire format and the key material that crosses process boundaries.
//!
//! Everything here is plain data: byte layouts (see `docs/PROTOCOL.md`), checked views over
//! untrusted bytes after which no accessor can panic, and the secret types that keyd hands to
//! netd. No cryptography, no I/O.

#![forbid(unsafe_code)]

pub mod data;
pub mod handshake;
pub mod keys;
pub mod rng;
pub mod timer;

pub use data::{DATA_HEADER_LEN, DataHeader, InnerKind};
pub use keys::{Epoch, EpochKey, TRAFFIC_SECRET_LEN, TrafficSecret};
pub use rng::{OsRandom, Random};

/// The first byte of every UDP payload says what the datagram is.
///
/// Bit 7 clear: a data packet (the remaining bits are the data flags, see [`data`]).
/// Bit 7 set: a handshake message, one of the values below.
pub mod msg_type {
    /// Mask that separates data packets (bit clear) from handshake messages (bit set).
    pub const HANDSHAKE_BIT: u8 = 0x80;
    /// Initiator → responder, asks for a cookie.
    pub const REQUEST: u8 = 0x81;
    /// Responder → initiator, the stateless cookie.
    pub const COOKIE_REPLY: u8 = 0x82;
    /// Initiator → responder, echoes the cookie, carries the initiator's DH value.
    pub const INITIATOR_AUTH: u8 = 0x83;
    /// Responder → initiator, carries the responder's DH value and proof of possession.
    pub const RESPONDER_AUTH: u8 = 0x84;
}
