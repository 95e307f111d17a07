//! Data packet header: `flags(1) | seq(4, big-endian) | ciphertext | tag`.
//!
//! The flags byte (bit 7 always clear, that is what makes it a data packet):
//!
//! ```text
//!   7   6   5   4   3   2   1   0
//! +---+---+-------+-------+-------+
//! | 0 | Z | kind  |  0 0  | phase |
//! +---+---+-------+-------+-------+
//! Z      1 = the plaintext is a raw deflate stream
//! kind   00 IPv4, 01 IPv6, 10 other (plaintext starts with the 2-byte ethertype),
//!        11 control (plaintext starts with a control type byte)
//! 0 0    reserved, must be zero (a receiver drops the packet otherwise)
//! phase  key epoch modulo 4: selects the receive key without trial decryption
//! ```
//!
//! IPv4 and IPv6 therefore pay 1 + 4 bytes of header and the suite's tag, nothing else.

use crate::keys::Epoch;

/// Bytes before the ciphertext: flags and sequence number.
pub const DATA_HEADER_LEN: usize = 5;

const COMPRESSED_BIT: u8 = 0x40;
const KIND_SHIFT: u8 = 4;
const KIND_MASK: u8 = 0x30;
const RESERVED_MASK: u8 = 0x0c;
const PHASE_MASK: u8 = 0x03;

/// Ethertype of IPv4, as in the tun packet-information header.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of IPv6, as in the tun packet-information header.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// What the plaintext of a data packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InnerKind {
    /// An IPv4 packet.
    Ipv4,
    /// An IPv6 packet.
    Ipv6,
    /// Any other protocol: the plaintext starts with its 2-byte ethertype.
    Other,
    /// A tunnel control message (keepalive, echo, shutdown, path-MTU probe): the plaintext
    /// starts with a control type byte.
    Control,
}

impl InnerKind {
    /// The kind a tun packet with this ethertype is sent as.
    pub fn for_ethertype(ethertype: u16) -> Self {
        match ethertype {
            ETHERTYPE_IPV4 => Self::Ipv4,
            ETHERTYPE_IPV6 => Self::Ipv6,
            _ => Self::Other,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::Ipv4 => 0,
            Self::Ipv6 => 1,
            Self::Other => 2,
            Self::Control => 3,
        }
    }

    fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => Self::Ipv4,
            1 => Self::Ipv6,
            2 => Self::Other,
            _ => Self::Control,
        }
    }
}

/// Why bytes are not a well-formed data header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Shorter than the header.
    #[error("shorter than a data header")]
    TooShort,
    /// Bit 7 set: a handshake message, not a data packet.
    #[error("not a data packet")]
    NotData,
    /// Reserved flag bits set.
    #[error("reserved flag bits set")]
    Reserved,
}

/// A parsed data header. Constructing one from bytes checks every field, so nothing
/// that reads it afterwards can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Whether the plaintext is deflated.
    pub compressed: bool,
    /// What the plaintext carries.
    pub kind: InnerKind,
    /// The sender's key epoch modulo 4.
    pub phase: u8,
    /// Per-epoch sequence number.
    pub seq: u32,
}

impl DataHeader {
    /// A header for a packet sealed under `epoch`.
    pub fn new(compressed: bool, kind: InnerKind, epoch: Epoch, seq: u32) -> Self {
        Self { compressed, kind, phase: epoch.phase(), seq }
    }

    /// Reads the header at the start of `datagram`.
    pub fn parse(datagram: &[u8]) -> Result<Self, HeaderError> {
        let Some((&flags, rest)) = datagram.split_first() else {
            return Err(HeaderError::TooShort);
        };
        let Some(seq) = rest.first_chunk::<4>() else {
            return Err(HeaderError::TooShort);
        };
        if flags & crate::msg_type::HANDSHAKE_BIT != 0 {
            return Err(HeaderError::NotData);
        }
        if flags & RESERVED_MASK != 0 {
            return Err(HeaderError::Reserved);
        }
        Ok(Self {
            compressed: flags & COMPRESSED_BIT != 0,
            kind: InnerKind::from_bits((flags & KIND_MASK) >> KIND_SHIFT),
            phase: flags & PHASE_MASK,
            seq: u32::from_be_bytes(*seq),
        })
    }

    /// The header's wire bytes.
    pub fn to_bytes(self) -> [u8; DATA_HEADER_LEN] {
        let flags =
            (u8::from(self.compressed) * COMPRESSED_BIT) | (self.kind.bits() << KIND_SHIFT) | (self.phase & PHASE_MASK);
        let seq = self.seq.to_be_bytes();
        [flags, seq[0], seq[1], seq[2], seq[3]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_valid_flags_byte_round_trips() {
        for flags in 0u8..0x80 {
            let mut bytes = [flags, 1, 2, 3, 4];
            match DataHeader::parse(&bytes) {
                Ok(header) => {
                    assert_eq!(flags & RESERVED_MASK, 0);
                    assert_eq!(header.seq, 0x0102_0304);
                    assert_eq!(header.to_bytes(), bytes);
                }
                Err(e) => {
                    assert_eq!(e, HeaderError::Reserved);
                    assert_ne!(flags & RESERVED_MASK, 0);
                }
            }
            bytes[0] |= 0x80;
            assert_eq!(DataHeader::parse(&bytes), Err(HeaderError::NotData));
        }
    }

    #[test]
    fn short_input_is_rejected() {
        for len in 0..DATA_HEADER_LEN {
            assert_eq!(DataHeader::parse(&[0u8; DATA_HEADER_LEN][..len]), Err(HeaderError::TooShort));
        }
    }

    #[test]
    fn kinds_map_from_ethertypes() {
        assert_eq!(InnerKind::for_ethertype(ETHERTYPE_IPV4), InnerKind::Ipv4);
        assert_eq!(InnerKind::for_ethertype(ETHERTYPE_IPV6), InnerKind::Ipv6);
        assert_eq!(InnerKind::for_ethertype(0x0806), InnerKind::Other);
    }
}
