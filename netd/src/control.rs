//! Tunnel control messages (`docs/PROTOCOL.md` section 4): the plaintext of a data packet
//! of kind *control*, a type byte and a body of a fixed shape.
//!
//! They travel sealed like traffic, so by the time one is parsed here it has authenticated,
//! decrypted and passed the replay window. Parsing is still strict: a type this side does
//! not know or a body of the wrong length is refused (and counted by the caller), never
//! guessed at.

/// Control message type of a keepalive.
pub const KEEPALIVE: u8 = 0x01;
/// Control message type of an echo request.
pub const ECHO_REQUEST: u8 = 0x02;
/// Control message type of an echo reply.
pub const ECHO_REPLY: u8 = 0x03;
/// Control message type of a shutdown notice.
pub const SHUTDOWN: u8 = 0x04;
/// Control message type of a path-MTU probe.
pub const PATH_PROBE: u8 = 0x05;
/// Control message type of a path-MTU acknowledgement.
pub const PATH_ACK: u8 = 0x06;

/// Bytes of an echo request or reply: type and id.
pub const ECHO_LEN: usize = 1 + 4;
/// Bytes of a path-MTU probe before its padding: type and id.
pub const PATH_PROBE_MIN_LEN: usize = 1 + 4;
/// Bytes of a path-MTU acknowledgement: type, id and the probe's datagram size.
pub const PATH_ACK_LEN: usize = 1 + 4 + 2;

/// A parsed control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Nothing but proof of life: NAT keepalive, key confirmation, idle chain step.
    Keepalive,
    /// A reachability probe; answer with an echo reply carrying `id`.
    EchoRequest {
        /// The sender's probe id.
        id: u32,
    },
    /// The answer to an echo request.
    EchoReply {
        /// The id of the request answered.
        id: u32,
    },
    /// The peer is going away.
    Shutdown,
    /// A path-MTU probe, padded to the size being tested.
    PathProbe {
        /// The sender's probe id.
        id: u32,
    },
    /// A path-MTU probe arrived.
    PathAck {
        /// The id of the probe.
        id: u32,
        /// The probe's datagram size (UDP payload) as it arrived.
        size: u16,
    },
}

/// Why a control message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A type this side does not know.
    #[error("unknown control type {0:#04x}")]
    UnknownType(u8),
    /// A body of the wrong length for its type.
    #[error("control type {0:#04x} with a body of the wrong length")]
    BadLength(u8),
}

fn id_at(message: &[u8]) -> u32 {
    let mut id = [0u8; 4];
    id.copy_from_slice(&message[1..5]);
    u32::from_be_bytes(id)
}

impl Control {
    /// Reads a control plaintext (type byte first).
    pub fn parse(message: &[u8]) -> Result<Self, ControlError> {
        let Some(&kind) = message.first() else {
            return Err(ControlError::BadLength(0));
        };
        let exact = |len: usize| if message.len() == len { Ok(()) } else { Err(ControlError::BadLength(kind)) };
        match kind {
            KEEPALIVE => exact(1).map(|()| Self::Keepalive),
            ECHO_REQUEST => exact(ECHO_LEN).map(|()| Self::EchoRequest { id: id_at(message) }),
            ECHO_REPLY => exact(ECHO_LEN).map(|()| Self::EchoReply { id: id_at(message) }),
            SHUTDOWN => exact(1).map(|()| Self::Shutdown),
            PATH_PROBE if message.len() >= PATH_PROBE_MIN_LEN => Ok(Self::PathProbe { id: id_at(message) }),
            PATH_PROBE => Err(ControlError::BadLength(kind)),
            PATH_ACK => exact(PATH_ACK_LEN)
                .map(|()| Self::PathAck { id: id_at(message), size: u16::from_be_bytes([message[5], message[6]]) }),
            other => Err(ControlError::UnknownType(other)),
        }
    }
}

/// An echo request or reply (`kind` is [`ECHO_REQUEST`] or [`ECHO_REPLY`]).
pub fn echo(kind: u8, id: u32) -> [u8; ECHO_LEN] {
    let id = id.to_be_bytes();
    [kind, id[0], id[1], id[2], id[3]]
}

/// A path-MTU acknowledgement of probe `id` that arrived as a datagram of `size` bytes.
pub fn path_ack(id: u32, size: u16) -> [u8; PATH_ACK_LEN] {
    let id = id.to_be_bytes();
    let size = size.to_be_bytes();
    [PATH_ACK, id[0], id[1], id[2], id[3], size[0], size[1]]
}

/// Writes a path-MTU probe of probe id `id` filling all of `buf` (zero padding) and
/// returns it. `buf` must hold at least [`PATH_PROBE_MIN_LEN`] bytes.
pub fn path_probe(id: u32, buf: &mut [u8]) -> &[u8] {
    buf.fill(0);
    buf[0] = PATH_PROBE;
    buf[1..5].copy_from_slice(&id.to_be_bytes());
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        assert_eq!(Control::parse(&[KEEPALIVE]), Ok(Control::Keepalive));
        assert_eq!(Control::parse(&[SHUTDOWN]), Ok(Control::Shutdown));
        assert_eq!(Control::parse(&echo(ECHO_REQUEST, 0xdead_beef)), Ok(Control::EchoRequest { id: 0xdead_beef }));
        assert_eq!(Control::parse(&echo(ECHO_REPLY, 7)), Ok(Control::EchoReply { id: 7 }));
        assert_eq!(Control::parse(&path_ack(9, 1400)), Ok(Control::PathAck { id: 9, size: 1400 }));
        let mut buf = [0xff; 1200];
        let probe = path_probe(0x0102_0304, &mut buf);
        assert_eq!(probe.len(), 1200);
        assert!(probe[5..].iter().all(|&b| b == 0), "zero padding");
        assert_eq!(Control::parse(probe), Ok(Control::PathProbe { id: 0x0102_0304 }));
    }

    #[test]
    fn wrong_lengths_and_unknown_types_are_refused() {
        assert_eq!(Control::parse(&[]), Err(ControlError::BadLength(0)));
        assert_eq!(Control::parse(&[KEEPALIVE, 0]), Err(ControlError::BadLength(KEEPALIVE)));
        assert_eq!(Control::parse(&[SHUTDOWN, 0]), Err(ControlError::BadLength(SHUTDOWN)));
        assert_eq!(Control::parse(&[ECHO_REQUEST, 1, 2, 3]), Err(ControlError::BadLength(ECHO_REQUEST)));
        assert_eq!(Control::parse(&[ECHO_REPLY, 1, 2, 3, 4, 5]), Err(ControlError::BadLength(ECHO_REPLY)));
        assert_eq!(Control::parse(&[PATH_PROBE, 1, 2, 3]), Err(ControlError::BadLength(PATH_PROBE)));
        assert_eq!(Control::parse(&[PATH_ACK, 1, 2, 3, 4, 5]), Err(ControlError::BadLength(PATH_ACK)));
        assert_eq!(Control::parse(&[0x07]), Err(ControlError::UnknownType(0x07)));
        assert_eq!(Control::parse(&[0x00]), Err(ControlError::UnknownType(0x00)));
    }

    proptest::proptest! {
        /// Nothing panics, and whatever parses has the exact length of its type.
        #[test]
        fn arbitrary_plaintexts_parse_or_are_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(message) = Control::parse(&bytes) {
                let expected = match message {
                    Control::Keepalive | Control::Shutdown => 1,
                    Control::EchoRequest { .. } | Control::EchoReply { .. } => ECHO_LEN,
                    Control::PathAck { .. } => PATH_ACK_LEN,
                    Control::PathProbe { .. } => bytes.len().max(PATH_PROBE_MIN_LEN),
                };
                proptest::prop_assert_eq!(bytes.len(), expected);
            }
        }
    }
}
