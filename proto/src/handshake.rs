//! Handshake messages (`docs/PROTOCOL.md` section 2): Request, Cookie Reply, Initiator Auth
//! and Responder Auth.
//!
//! Every message starts with its type byte and the same parameters (version, suite, group,
//! key id), and has exactly one valid length for a given group. Parsing checks, in this
//! order: length, type, version, suite, group, key id (and the Request's zero padding);
//! after that no accessor can fail. Nothing here is cryptographic: the MACs are carried,
//! computed and verified elsewhere (keyd, and netd for the cookie).

use crate::keys::Epoch;
use crate::msg_type;

/// Protocol version carried in every handshake message.
pub const VERSION: u8 = 1;
/// The classic suite (Blowfish-CFB64, HMAC-MD5-96).
pub const SUITE_CLASSIC: u8 = 1;
/// Bytes of `Ni` and `Nr`.
pub const NONCE_LEN: usize = 16;
/// Bytes of a cookie.
pub const COOKIE_LEN: usize = 16;
/// Bytes of `auth_i`, `auth_r` and `confirm_r` (HMAC-SHA-256).
pub const MAC_LEN: usize = 32;
/// Type byte, version, suite, group and key id.
pub const PARAMS_LEN: usize = 8;
/// Length of a Request.
pub const REQUEST_LEN: usize = 64;
/// Length of a Cookie Reply.
pub const COOKIE_REPLY_LEN: usize = 40;
/// Length of an Initiator Auth without its DH value.
pub const INITIATOR_AUTH_FIXED_LEN: usize = PARAMS_LEN + NONCE_LEN + COOKIE_LEN + 4 + MAC_LEN;
/// Length of a Responder Auth without its DH value.
pub const RESPONDER_AUTH_FIXED_LEN: usize = PARAMS_LEN + 2 * NONCE_LEN + 4 + 2 * MAC_LEN;

/// The Request's zero padding: it makes a Request larger than the Cookie Reply it earns.
const REQUEST_PADDING: usize = REQUEST_LEN - PARAMS_LEN - NONCE_LEN;

/// A handshake nonce (`Ni` or `Nr`): random, public.
pub type Nonce = [u8; NONCE_LEN];
/// A responder's stateless cookie.
pub type Cookie = [u8; COOKIE_LEN];

/// The finite-field Diffie-Hellman groups of RFC 3526 a tunnel may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// Group 14, 2048-bit MODP: the default.
    Modp2048,
    /// Group 15, 3072-bit MODP.
    Modp3072,
}

impl Group {
    /// Every group, by id.
    pub const ALL: [Self; 2] = [Self::Modp2048, Self::Modp3072];

    /// The group's number on the wire (its RFC 3526 number).
    pub fn id(self) -> u8 {
        match self {
            Self::Modp2048 => 14,
            Self::Modp3072 => 15,
        }
    }

    /// The group numbered `id`, if supported.
    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.id() == id)
    }

    /// `G`: bytes of a DH value (and of the shared secret) in this group.
    pub fn value_len(self) -> usize {
        match self {
            Self::Modp2048 => 256,
            Self::Modp3072 => 384,
        }
    }

    /// Length of an Initiator Auth in this group.
    pub fn initiator_auth_len(self) -> usize {
        INITIATOR_AUTH_FIXED_LEN + self.value_len()
    }

    /// Length of a Responder Auth in this group.
    pub fn responder_auth_len(self) -> usize {
        RESPONDER_AUTH_FIXED_LEN + self.value_len()
    }
}

/// Why bytes are not the handshake message expected. Named in check order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// Not the one valid length.
    #[error("wrong length")]
    BadLength,
    /// Not the message type expected.
    #[error("wrong message type")]
    BadType,
    /// Unsupported protocol version.
    #[error("unsupported version")]
    BadVersion,
    /// Not the configured suite.
    #[error("wrong suite")]
    BadSuite,
    /// Not the configured Diffie-Hellman group.
    #[error("wrong group")]
    BadGroup,
    /// Names another pre-shared key.
    #[error("unknown key id")]
    BadKeyId,
    /// A Request whose padding is not all zero.
    #[error("non-zero padding")]
    BadPadding,
}

/// The parameters each message carries after its type byte: what both ends must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Always [`VERSION`].
    pub version: u8,
    /// Always [`SUITE_CLASSIC`] for now.
    pub suite: u8,
    /// The Diffie-Hellman group.
    pub group: Group,
    /// Names the pre-shared key.
    pub key_id: u32,
}

impl Params {
    /// Version 1, the classic suite, `group` and `key_id`.
    pub fn new(group: Group, key_id: u32) -> Self {
        Self { version: VERSION, suite: SUITE_CLASSIC, group, key_id }
    }

    /// The first [`PARAMS_LEN`] bytes of a message of type `message_type`.
    pub fn header(self, message_type: u8) -> [u8; PARAMS_LEN] {
        let id = self.key_id.to_be_bytes();
        [message_type, self.version, self.suite, self.group.id(), id[0], id[1], id[2], id[3]]
    }

    /// Checks a message's header against these parameters, in wire order.
    fn check(self, message_type: u8, header: [u8; PARAMS_LEN]) -> Result<(), WireError> {
        let [ty, version, suite, group, id @ ..] = header;
        if ty != message_type {
            Err(WireError::BadType)
        } else if version != self.version {
            Err(WireError::BadVersion)
        } else if suite != self.suite {
            Err(WireError::BadSuite)
        } else if group != self.group.id() {
            Err(WireError::BadGroup)
        } else if u32::from_be_bytes(id) != self.key_id {
            Err(WireError::BadKeyId)
        } else {
            Ok(())
        }
    }

    /// Checks the length of a message whose size depends on its group: the length must be
    /// the one for the group the message names if that group is known (so a peer
    /// configured with another group is reported as such), else for ours.
    fn check_sized(self, message_type: u8, bytes: &[u8], len_for: fn(Group) -> usize) -> Result<(), WireError> {
        let header = bytes.first_chunk::<PARAMS_LEN>().ok_or(WireError::BadLength)?;
        let claimed = Group::from_id(header[3]).unwrap_or(self.group);
        if bytes.len() != len_for(claimed) {
            return Err(WireError::BadLength);
        }
        self.check(message_type, *header)
    }
}

/// Reads fixed-size fields front to back. Lengths are checked before a reader is made, so
/// running short only happens on a bug, and even then is an error, never a panic.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Result<&'a [u8; N], WireError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(WireError::BadLength)?;
        self.0 = rest;
        Ok(head)
    }

    fn slice(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < len {
            return Err(WireError::BadLength);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
}

/// Request: `type | params | Ni | zero padding (40)`, 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The initiator's nonce.
    pub ni: Nonce,
}

impl Request {
    /// The wire bytes.
    pub fn encode(params: &Params, ni: &Nonce) -> [u8; REQUEST_LEN] {
        let mut out = [0u8; REQUEST_LEN];
        out[..PARAMS_LEN].copy_from_slice(&params.header(msg_type::REQUEST));
        out[PARAMS_LEN..PARAMS_LEN + NONCE_LEN].copy_from_slice(ni);
        out
    }

    /// Checks and reads a Request.
    pub fn parse(bytes: &[u8], expected: &Params) -> Result<Self, WireError> {
        if bytes.len() != REQUEST_LEN {
            return Err(WireError::BadLength);
        }
        let mut r = Reader(bytes);
        expected.check(msg_type::REQUEST, *r.array()?)?;
        let ni = *r.array::<NONCE_LEN>()?;
        let padding = r.array::<REQUEST_PADDING>()?;
        if padding.iter().any(|&b| b != 0) {
            return Err(WireError::BadPadding);
        }
        Ok(Self { ni })
    }
}

/// Cookie Reply: `type | params | Ni | cookie`, 40 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieReply {
    /// The nonce of the Request answered.
    pub ni: Nonce,
    /// The responder's cookie for that Request.
    pub cookie: Cookie,
}

impl CookieReply {
    /// The wire bytes.
    pub fn encode(params: &Params, ni: &Nonce, cookie: &Cookie) -> [u8; COOKIE_REPLY_LEN] {
        let mut out = [0u8; COOKIE_REPLY_LEN];
        out[..PARAMS_LEN].copy_from_slice(&params.header(msg_type::COOKIE_REPLY));
        out[PARAMS_LEN..PARAMS_LEN + NONCE_LEN].copy_from_slice(ni);
        out[PARAMS_LEN + NONCE_LEN..].copy_from_slice(cookie);
        out
    }

    /// Checks and reads a Cookie Reply.
    pub fn parse(bytes: &[u8], expected: &Params) -> Result<Self, WireError> {
        if bytes.len() != COOKIE_REPLY_LEN {
            return Err(WireError::BadLength);
        }
        let mut r = Reader(bytes);
        expected.check(msg_type::COOKIE_REPLY, *r.array()?)?;
        Ok(Self { ni: *r.array()?, cookie: *r.array()? })
    }
}

/// Initiator Auth: `type | params | Ni | cookie | epoch_i | g^x (G) | auth_i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitiatorAuth<'a> {
    /// The initiator's nonce.
    pub ni: Nonce,
    /// The cookie echoed back.
    pub cookie: Cookie,
    /// The epoch of the initiator's first send key in the new session.
    pub epoch: Epoch,
    /// `g^x`, exactly `G` big-endian bytes (not yet range-checked).
    pub dh_value: &'a [u8],
    /// `auth_i` as received.
    pub auth: &'a [u8; MAC_LEN],
    /// Every byte before `auth_i`: what `auth_i` covers.
    pub signed: &'a [u8],
}

impl<'a> InitiatorAuth<'a> {
    /// Everything before `auth_i`; the caller appends the [`MAC_LEN`]-byte `auth_i`.
    /// `dh_value` must be exactly the group's `G` bytes.
    pub fn encode_signed(params: &Params, ni: &Nonce, cookie: &Cookie, epoch: Epoch, dh_value: &[u8]) -> Vec<u8> {
        debug_assert_eq!(dh_value.len(), params.group.value_len());
        let mut out = Vec::with_capacity(params.group.initiator_auth_len());
        out.extend_from_slice(&params.header(msg_type::INITIATOR_AUTH));
        out.extend_from_slice(ni);
        out.extend_from_slice(cookie);
        out.extend_from_slice(&epoch.0.to_be_bytes());
        out.extend_from_slice(dh_value);
        out
    }

    /// Checks and reads an Initiator Auth.
    pub fn parse(bytes: &'a [u8], expected: &Params) -> Result<Self, WireError> {
        expected.check_sized(msg_type::INITIATOR_AUTH, bytes, Group::initiator_auth_len)?;
        let signed = &bytes[..bytes.len() - MAC_LEN];
        let mut r = Reader(bytes);
        r.array::<PARAMS_LEN>()?;
        Ok(Self {
            ni: *r.array()?,
            cookie: *r.array()?,
            epoch: Epoch(u32::from_be_bytes(*r.array()?)),
            dh_value: r.slice(expected.group.value_len())?,
            auth: r.array()?,
            signed,
        })
    }
}

/// Responder Auth: `type | params | Ni | Nr | epoch_r | g^y (G) | auth_r | confirm_r`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponderAuth<'a> {
    /// The initiator's nonce, echoed.
    pub ni: Nonce,
    /// The responder's nonce.
    pub nr: Nonce,
    /// The epoch of the responder's first send key in the new session.
    pub epoch: Epoch,
    /// `g^y`, exactly `G` big-endian bytes (not yet range-checked).
    pub dh_value: &'a [u8],
    /// `auth_r` as received.
    pub auth: &'a [u8; MAC_LEN],
    /// `confirm_r` as received.
    pub confirm: &'a [u8; MAC_LEN],
    /// Every byte before `auth_r`: the Responder Auth's share of the transcript.
    pub signed: &'a [u8],
}

impl<'a> ResponderAuth<'a> {
    /// Everything before `auth_r`; the caller appends `auth_r` and `confirm_r`.
    /// `dh_value` must be exactly the group's `G` bytes.
    pub fn encode_signed(params: &Params, ni: &Nonce, nr: &Nonce, epoch: Epoch, dh_value: &[u8]) -> Vec<u8> {
        debug_assert_eq!(dh_value.len(), params.group.value_len());
        let mut out = Vec::with_capacity(params.group.responder_auth_len());
        out.extend_from_slice(&params.header(msg_type::RESPONDER_AUTH));
        out.extend_from_slice(ni);
        out.extend_from_slice(nr);
        out.extend_from_slice(&epoch.0.to_be_bytes());
        out.extend_from_slice(dh_value);
        out
    }

    /// Checks and reads a Responder Auth.
    pub fn parse(bytes: &'a [u8], expected: &Params) -> Result<Self, WireError> {
        expected.check_sized(msg_type::RESPONDER_AUTH, bytes, Group::responder_auth_len)?;
        let signed = &bytes[..bytes.len() - 2 * MAC_LEN];
        let mut r = Reader(bytes);
        r.array::<PARAMS_LEN>()?;
        Ok(Self {
            ni: *r.array()?,
            nr: *r.array()?,
            epoch: Epoch(u32::from_be_bytes(*r.array()?)),
            dh_value: r.slice(expected.group.value_len())?,
            auth: r.array()?,
            confirm: r.array()?,
            signed,
        })
    }
}

/// The nonce a Responder Auth answers, read without checking anything else: lets the
/// initiator drop one that does not belong to its handshake before any other work.
pub fn responder_auth_ni(bytes: &[u8]) -> Option<Nonce> {
    bytes.get(PARAMS_LEN..PARAMS_LEN + NONCE_LEN)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: Params =
        Params { version: VERSION, suite: SUITE_CLASSIC, group: Group::Modp2048, key_id: 0x0102_0304 };

    #[test]
    fn lengths_match_the_protocol() {
        assert_eq!(INITIATOR_AUTH_FIXED_LEN, 76);
        assert_eq!(RESPONDER_AUTH_FIXED_LEN, 108);
        assert_eq!(Group::Modp2048.initiator_auth_len(), 332);
        assert_eq!(Group::Modp3072.responder_auth_len(), 492);
        // The Request must earn a smaller answer.
        const { assert!(COOKIE_REPLY_LEN < REQUEST_LEN) };
        for group in Group::ALL {
            assert_eq!(Group::from_id(group.id()), Some(group));
        }
        assert_eq!(Group::from_id(2), None);
    }

    #[test]
    fn request_round_trip_and_checks() {
        let ni = [7u8; NONCE_LEN];
        let bytes = Request::encode(&PARAMS, &ni);
        assert_eq!(Request::parse(&bytes, &PARAMS), Ok(Request { ni }));
        assert_eq!(Request::parse(&bytes[..63], &PARAMS), Err(WireError::BadLength));
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(Request::parse(&long, &PARAMS), Err(WireError::BadLength));
        let cases = [
            (0, WireError::BadType),
            (1, WireError::BadVersion),
            (2, WireError::BadSuite),
            (3, WireError::BadGroup),
            (7, WireError::BadKeyId),
            (63, WireError::BadPadding),
        ];
        for (index, error) in cases {
            let mut bad = bytes;
            bad[index] ^= 0x40;
            assert_eq!(Request::parse(&bad, &PARAMS), Err(error), "byte {index}");
        }
    }

    #[test]
    fn cookie_reply_round_trip() {
        let (ni, cookie) = ([1u8; NONCE_LEN], [2u8; COOKIE_LEN]);
        let bytes = CookieReply::encode(&PARAMS, &ni, &cookie);
        assert_eq!(bytes[0], msg_type::COOKIE_REPLY);
        assert_eq!(CookieReply::parse(&bytes, &PARAMS), Ok(CookieReply { ni, cookie }));
        assert_eq!(CookieReply::parse(&bytes[1..], &PARAMS), Err(WireError::BadLength));
    }

    #[test]
    fn initiator_auth_round_trip() {
        let gx = vec![0x5a; 256];
        let mut bytes = InitiatorAuth::encode_signed(&PARAMS, &[3; 16], &[4; 16], Epoch(9), &gx);
        bytes.extend_from_slice(&[6; MAC_LEN]);
        assert_eq!(bytes.len(), 332);
        let view = InitiatorAuth::parse(&bytes, &PARAMS).expect("valid");
        assert_eq!(view.ni, [3; 16]);
        assert_eq!(view.cookie, [4; 16]);
        assert_eq!(view.epoch, Epoch(9));
        assert_eq!(view.dh_value, &gx[..]);
        assert_eq!(view.auth, &[6; MAC_LEN]);
        assert_eq!(view.signed, &bytes[..300]);
        assert_eq!(InitiatorAuth::parse(&bytes[..331], &PARAMS), Err(WireError::BadLength));
    }

    #[test]
    fn a_peer_with_another_group_is_reported_as_such() {
        let other = Params::new(Group::Modp3072, PARAMS.key_id);
        let mut bytes = InitiatorAuth::encode_signed(&other, &[0; 16], &[0; 16], Epoch(0), &[1; 384]);
        bytes.extend_from_slice(&[0; MAC_LEN]);
        assert_eq!(InitiatorAuth::parse(&bytes, &PARAMS), Err(WireError::BadGroup));
        bytes[3] = 99;
        assert_eq!(InitiatorAuth::parse(&bytes, &PARAMS), Err(WireError::BadLength));
    }

    #[test]
    fn responder_auth_round_trip() {
        let gy = vec![0xa5; 256];
        let mut bytes = ResponderAuth::encode_signed(&PARAMS, &[1; 16], &[2; 16], Epoch(3), &gy);
        bytes.extend_from_slice(&[4; MAC_LEN]);
        bytes.extend_from_slice(&[5; MAC_LEN]);
        assert_eq!(bytes.len(), PARAMS.group.responder_auth_len());
        let view = ResponderAuth::parse(&bytes, &PARAMS).expect("valid");
        assert_eq!((view.ni, view.nr, view.epoch), ([1; 16], [2; 16], Epoch(3)));
        assert_eq!(view.dh_value, &gy[..]);
        assert_eq!((view.auth, view.confirm), (&[4; MAC_LEN], &[5; MAC_LEN]));
        assert_eq!(view.signed.len(), bytes.len() - 64);
        assert_eq!(responder_auth_ni(&bytes), Some([1; 16]));
        assert_eq!(responder_auth_ni(&bytes[..20]), None);
        let mut wrong_type = bytes.clone();
        wrong_type[0] = msg_type::INITIATOR_AUTH;
        assert_eq!(ResponderAuth::parse(&wrong_type, &PARAMS), Err(WireError::BadType));
    }
}
