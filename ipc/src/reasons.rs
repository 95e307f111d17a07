//! The closed sets that cross the parent's channels and the control socket: why netd drops
//! a datagram or refuses a tun packet, the peer's reachability, why the tunnel went down.
//! They are defined here, once, so that every process sees the same type; netd counts
//! under them, the parent and `yavipin show` only name them. On the channels they travel
//! as postcard variant indices, in the control socket's JSON as their names (kebab case,
//! equal to [`DropReason::name`] and its kin, which a test checks).

use core::fmt;

use serde::{Deserialize, Serialize};
use yavipin_proto::handshake::WireError;

use crate::FailReason;

/// Why a received data datagram was dropped. Every drop is counted under exactly one reason;
/// none of them is ever answered on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropReason {
    /// Shorter than header plus tag.
    TooShort,
    /// Reserved header bits set.
    BadHeader,
    /// No receive key for the packet's epoch (never installed, or already erased).
    UnknownEpoch,
    /// Sequence number already accepted.
    Replayed,
    /// Sequence number behind the replay window.
    TooOld,
    /// Authentication tag did not verify.
    BadMac,
    /// Larger than the configured maximum, before or after decompression.
    TooLarge,
    /// Marked compressed but not a valid deflate stream.
    Decompress,
    /// Authentic but malformed inside (an "other" packet without its ethertype, an empty
    /// control message).
    Malformed,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 9] = [
        Self::TooShort,
        Self::BadHeader,
        Self::UnknownEpoch,
        Self::Replayed,
        Self::TooOld,
        Self::BadMac,
        Self::TooLarge,
        Self::Decompress,
        Self::Malformed,
    ];

    /// Stable name for logs and status output.
    pub fn name(self) -> &'static str {
        match self {
            Self::TooShort => "too-short",
            Self::BadHeader => "bad-header",
            Self::UnknownEpoch => "unknown-epoch",
            Self::Replayed => "replayed",
            Self::TooOld => "too-old",
            Self::BadMac => "bad-mac",
            Self::TooLarge => "too-large",
            Self::Decompress => "decompress",
            Self::Malformed => "malformed",
        }
    }

    /// Position in [`Self::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a packet from the tun device was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
pub enum SealError {
    /// No send key installed yet.
    #[error("no send key")]
    NoKey,
    /// The send key reached a hard limit (volume, sequence numbers or age) and its
    /// successor has not arrived.
    #[error("send key exhausted")]
    KeyExhausted,
    /// The packet exceeds the configured maximum inner size.
    #[error("packet too large")]
    TooLarge,
    /// The output buffer cannot hold the sealed packet.
    #[error("output buffer too small")]
    BufferTooSmall,
}

impl SealError {
    /// Every error, in counter order.
    pub const ALL: [Self; 4] = [Self::NoKey, Self::KeyExhausted, Self::TooLarge, Self::BufferTooSmall];

    /// Stable name for logs and status output.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoKey => "no-key",
            Self::KeyExhausted => "key-exhausted",
            Self::TooLarge => "too-large",
            Self::BufferTooSmall => "buffer-too-small",
        }
    }

    /// Position in [`Self::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a handshake message was dropped. Each is counted; none is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HandshakeDrop {
    /// A first byte with the handshake bit set that names no message (or an empty datagram).
    UnknownType,
    /// Not the message's one valid length.
    BadLength,
    /// Unsupported version.
    BadVersion,
    /// Another suite.
    BadSuite,
    /// Another Diffie-Hellman group.
    BadGroup,
    /// Another pre-shared key.
    BadKeyId,
    /// A Request with non-zero padding.
    BadPadding,
    /// A cookie neither secret made for this sender.
    BadCookie,
    /// A cookie that already opened a handshake (a replayed Initiator Auth).
    UsedCookie,
    /// Too many cookies used under the current secret.
    CookieTableFull,
    /// No handshake of ours expects this message now (or it came from elsewhere).
    Unexpected,
    /// A Cookie Reply or Responder Auth for another nonce than ours.
    NonceMismatch,
    /// A peer's Initiator Auth that loses the simultaneous-open tie-break.
    SimultaneousOpen,
    /// A new session's receive key could not be installed (its slot holds a key in use).
    KeySlotBusy,
    /// keyd: `auth_i` or `auth_r` did not verify.
    BadAuth,
    /// keyd: `confirm_r` did not verify.
    BadConfirm,
    /// keyd: an authenticated DH value out of range.
    BadDhValue,
    /// keyd: an epoch the peer already used, and no sign of a restart.
    StaleEpoch,
    /// keyd: an epoch with no room for the session's keys.
    BadEpoch,
    /// keyd: the initiation answered had expired.
    Expired,
}

impl HandshakeDrop {
    /// Every reason, in counter order.
    pub const ALL: [Self; 20] = [
        Self::UnknownType,
        Self::BadLength,
        Self::BadVersion,
        Self::BadSuite,
        Self::BadGroup,
        Self::BadKeyId,
        Self::BadPadding,
        Self::BadCookie,
        Self::UsedCookie,
        Self::CookieTableFull,
        Self::Unexpected,
        Self::NonceMismatch,
        Self::SimultaneousOpen,
        Self::KeySlotBusy,
        Self::BadAuth,
        Self::BadConfirm,
        Self::BadDhValue,
        Self::StaleEpoch,
        Self::BadEpoch,
        Self::Expired,
    ];

    /// Stable name for logs and status output.
    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownType => "unknown-type",
            Self::BadLength => "bad-length",
            Self::BadVersion => "bad-version",
            Self::BadSuite => "bad-suite",
            Self::BadGroup => "bad-group",
            Self::BadKeyId => "bad-key-id",
            Self::BadPadding => "bad-padding",
            Self::BadCookie => "bad-cookie",
            Self::UsedCookie => "used-cookie",
            Self::CookieTableFull => "cookie-table-full",
            Self::Unexpected => "unexpected",
            Self::NonceMismatch => "nonce-mismatch",
            Self::SimultaneousOpen => "simultaneous-open",
            Self::KeySlotBusy => "key-slot-busy",
            Self::BadAuth => "bad-auth",
            Self::BadConfirm => "bad-confirm",
            Self::BadDhValue => "bad-dh-value",
            Self::StaleEpoch => "stale-epoch",
            Self::BadEpoch => "bad-epoch",
            Self::Expired => "expired",
        }
    }

    /// Position in [`Self::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<WireError> for HandshakeDrop {
    fn from(error: WireError) -> Self {
        match error {
            WireError::BadLength => Self::BadLength,
            // Messages are dispatched on their type byte, so this is never reached.
            WireError::BadType => Self::UnknownType,
            WireError::BadVersion => Self::BadVersion,
            WireError::BadSuite => Self::BadSuite,
            WireError::BadGroup => Self::BadGroup,
            WireError::BadKeyId => Self::BadKeyId,
            WireError::BadPadding => Self::BadPadding,
        }
    }
}

impl From<FailReason> for HandshakeDrop {
    fn from(reason: FailReason) -> Self {
        match reason {
            FailReason::BadAuth => Self::BadAuth,
            FailReason::BadConfirm => Self::BadConfirm,
            FailReason::BadDhValue => Self::BadDhValue,
            FailReason::StaleEpoch => Self::StaleEpoch,
            FailReason::BadEpoch => Self::BadEpoch,
            FailReason::Expired => Self::Expired,
        }
    }
}

/// A dropped datagram's reason, whichever part of netd dropped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatagramDrop {
    /// The data plane dropped it.
    Data(DropReason),
    /// The handshake dropped it.
    Handshake(HandshakeDrop),
}

impl fmt::Display for DatagramDrop {
    /// `data/bad-mac`, `handshake/bad-cookie`: the names logs and `yavipin show` use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Data(reason) => write!(f, "data/{}", reason.name()),
            Self::Handshake(reason) => write!(f, "handshake/{}", reason.name()),
        }
    }
}

/// Reachability of the peer, after RFC 4861 §7.3.2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NudState {
    /// No session: nothing to watch.
    #[default]
    Incomplete,
    /// Confirmed recently.
    Reachable,
    /// Not confirmed for a while; nothing sent since.
    Stale,
    /// Sent something unconfirmed; waiting a little for traffic before probing.
    Delay,
    /// Probing with echo requests.
    Probe,
    /// Probes went unanswered: the session was torn down.
    Unreachable,
}

impl NudState {
    /// Every state.
    pub const ALL: [Self; 6] =
        [Self::Incomplete, Self::Reachable, Self::Stale, Self::Delay, Self::Probe, Self::Unreachable];

    /// Stable name for logs and status output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::Reachable => "reachable",
            Self::Stale => "stale",
            Self::Delay => "delay",
            Self::Probe => "probe",
            Self::Unreachable => "unreachable",
        }
    }
}

impl fmt::Display for NudState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the tunnel went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DownReason {
    /// The unreachability detector's probes went unanswered.
    PeerUnreachable,
    /// The peer sent an authenticated shutdown notice.
    PeerShutdown,
    /// The peer restarted: a new session from it voided the old one's keys.
    PeerRestarted,
    /// netd was told to shut down.
    LocalShutdown,
}

impl DownReason {
    /// Every reason.
    pub const ALL: [Self; 4] = [Self::PeerUnreachable, Self::PeerShutdown, Self::PeerRestarted, Self::LocalShutdown];

    /// Stable wording for logs and status output.
    pub fn name(self) -> &'static str {
        match self {
            Self::PeerUnreachable => "peer unreachable",
            Self::PeerShutdown => "peer shut down",
            Self::PeerRestarted => "peer restarted",
            Self::LocalShutdown => "shut down",
        }
    }
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The control socket's JSON names each value as logs and `yavipin show` do.
    fn json_name<T: Serialize>(value: T) -> String {
        serde_json::to_string(&value).expect("encodes").trim_matches('"').to_owned()
    }

    #[test]
    fn names_are_distinct_in_counter_order_and_equal_to_the_json_names() {
        fn check<T: Copy + Serialize>(all: &[T], name: fn(T) -> &'static str, index: fn(T) -> usize) {
            let names: std::collections::HashSet<_> = all.iter().map(|&r| name(r)).collect();
            assert_eq!(names.len(), all.len());
            for (i, &r) in all.iter().enumerate() {
                assert_eq!(index(r), i);
                assert_eq!(json_name(r), name(r));
            }
        }
        check(&DropReason::ALL, DropReason::name, DropReason::index);
        check(&SealError::ALL, SealError::name, SealError::index);
        check(&HandshakeDrop::ALL, HandshakeDrop::name, HandshakeDrop::index);
        check(&FailReason::ALL, FailReason::name, |r| FailReason::ALL.iter().position(|&x| x == r).unwrap_or(99));
        for state in NudState::ALL {
            assert_eq!(json_name(state), state.name());
        }
        let reasons: std::collections::HashSet<_> = DownReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(reasons.len(), DownReason::ALL.len());
        assert_eq!(DatagramDrop::Data(DropReason::BadMac).to_string(), "data/bad-mac");
        assert_eq!(DatagramDrop::Handshake(HandshakeDrop::BadCookie).to_string(), "handshake/bad-cookie");
    }
}
