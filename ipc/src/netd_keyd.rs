//! The netd ↔ keyd channel: one enum per direction, [`NetdToKeyd`] and [`KeydToNetd`].
//!
//! keyd is a monitor: it holds the PSK (as `K_auth`), the Diffie-Hellman private values
//! and the hash-chain states, and answers only what its own state allows. netd does every
//! check that needs no secret first (exact lengths, parameters, the cookie and its single
//! use, the simultaneous-open tie-break) and passes keyd only handshake messages that
//! survived them. What crosses is plain data: nonces, handshake message bytes, epochs and
//! [`EpochKey`]s. Nothing from which an earlier key could be recomputed ever does.
//!
//! # Conversation
//!
//! Initiator side (netd sent a Request and got a Cookie Reply for its `Ni`):
//!
//! ```text
//! netd → BuildInitiatorAuth { ni, cookie }
//! keyd ← SendInitiatorAuth { ni, message }            keyd now holds x for this ni
//! netd → ResponderAuthReceived { message }            the answer, Ni already matched
//! keyd ← SessionKeys { ni, send_key, recv_key, .. }   x erased; or HandshakeFailed
//! netd → InitiationAbandoned { ni }                   instead, if netd starts over
//! ```
//!
//! Responder side (an Initiator Auth passed length, parameters, cookie and used-cookie
//! checks; nothing reaches keyd before that):
//!
//! ```text
//! netd → InitiatorAuthReceived { message, peer, peer_silent }
//! keyd ← SendResponderAuth { ni, peer, message, recv_key, restart }   or HandshakeFailed
//! ```
//!
//! The responder keeps sending under its old keys until the initiator's first packet under
//! the new session authenticates; netd reports that as `RecvEpochStarted` and keyd answers
//! with `SendKey { session_start: true }` (the responder's first new send key) and the next
//! receive key. Hash-chain steps use the same two messages: `SendKeyWanted { current }` is
//! answered by `SendKey` for the epoch after `current`, `RecvEpochStarted { epoch }` by
//! `RecvKey` for the epoch after `epoch`, each at most once and strictly forward.
//!
//! # Epochs across Diffie-Hellman renewals
//!
//! A new session's first send epoch is the next one the old chain has not handed out;
//! keyd reserves it when it announces it (`epoch_i` or `epoch_r`) and from then on never
//! hands that epoch, or a later one, out of the old chain. A `SendKeyWanted` that would
//! need it waits until the new session takes over, and is then answered by the new
//! session's first key. The receiver gets the new session's first key up front, possibly
//! replacing the old chain's pre-installed, never-used key of the same epoch.
//!
//! # Errors
//!
//! A message keyd cannot accept in its state (a second completion, a key for an epoch
//! never handed out, a Responder Auth for a nonce it did not build) is a protocol
//! violation by netd and ends keyd. Failures caused by the network (a MAC that does not
//! verify, a DH value out of range) are answered with `HandshakeFailed` and counted.
//!
//! Encoding: the messages are plain data plus [`EpochKey`], whose secret deliberately has
//! no `Serialize`; its fields are encoded by the audited adapter in [`crate::secret`], the
//! only code that turns a traffic secret into bytes.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use yavipin_proto::handshake::{Cookie, Nonce};
use yavipin_proto::{Epoch, EpochKey};

/// netd to keyd.
#[derive(Debug, Serialize, Deserialize)]
pub enum NetdToKeyd {
    /// A Cookie Reply for `ni` arrived: build the Initiator Auth that echoes `cookie`.
    /// Allowed when no initiation is pending in keyd.
    BuildInitiatorAuth {
        /// The nonce of netd's Request.
        ni: Nonce,
        /// The responder's cookie.
        cookie: Cookie,
    },
    /// netd gave up on the initiation of `ni` (it starts over with a fresh Request): erase
    /// its DH private value. A nonce keyd no longer holds is ignored.
    InitiationAbandoned {
        /// The abandoned initiation's nonce.
        ni: Nonce,
    },
    /// A peer's Initiator Auth that passed every check netd can make.
    InitiatorAuthReceived {
        /// The whole message.
        message: Vec<u8>,
        /// Where it came from: echoed in the answer, where netd learns it as the peer's
        /// endpoint once keyd authenticated the message.
        peer: SocketAddr,
        /// Nothing authenticated has come from the peer for a while and the current session
        /// is not new: if the message announces an epoch already used, the peer restarted
        /// rather than a delayed message arriving.
        peer_silent: bool,
    },
    /// The Responder Auth answering netd's pending initiation (its `Ni` matched).
    ResponderAuthReceived {
        /// The whole message.
        message: Vec<u8>,
    },
    /// The data plane wants the send key after `current` (time, volume or sequence limit).
    SendKeyWanted {
        /// The epoch netd sends under.
        current: Epoch,
    },
    /// The first packet under the peer's `epoch` authenticated.
    RecvEpochStarted {
        /// The peer's new epoch.
        epoch: Epoch,
    },
}

/// Why keyd refused a handshake message that came from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailReason {
    /// `auth_i` or `auth_r` did not verify: another PSK, a tampered message, or a DH value
    /// swapped by a man in the middle.
    BadAuth,
    /// `confirm_r` did not verify: the responder does not hold the same shared secret.
    BadConfirm,
    /// An authenticated DH value outside `1 < y < p − 1`.
    BadDhValue,
    /// The message announces an epoch not newer than one the peer already uses for this
    /// tunnel, and the peer was not silent long enough to have restarted.
    StaleEpoch,
    /// An epoch so close to the end of the 32-bit epoch space that the session's first
    /// keys do not fit.
    BadEpoch,
    /// The initiation this answers was erased: its lifetime ran out.
    Expired,
}

impl FailReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 6] =
        [Self::BadAuth, Self::BadConfirm, Self::BadDhValue, Self::StaleEpoch, Self::BadEpoch, Self::Expired];

    /// Stable name for logs and status output.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadAuth => "bad-auth",
            Self::BadConfirm => "bad-confirm",
            Self::BadDhValue => "bad-dh-value",
            Self::StaleEpoch => "stale-epoch",
            Self::BadEpoch => "bad-epoch",
            Self::Expired => "expired",
        }
    }
}

/// keyd to netd.
#[derive(Debug, Serialize, Deserialize)]
pub enum KeydToNetd {
    /// The Initiator Auth for netd's initiation `ni`: send it to the peer.
    SendInitiatorAuth {
        /// The initiation's nonce.
        ni: Nonce,
        /// The message.
        message: Vec<u8>,
    },
    /// The answer to an authentic Initiator Auth: install `recv_key` (the initiator's first
    /// new epoch), then send `message` to `peer`. Keep sending under the old keys.
    SendResponderAuth {
        /// The initiator's nonce.
        ni: Nonce,
        /// Where the Initiator Auth came from.
        peer: SocketAddr,
        /// The Responder Auth.
        message: Vec<u8>,
        /// The receive key of the initiator's first new epoch.
        #[serde(with = "crate::secret::epoch_key")]
        recv_key: EpochKey,
        /// The peer restarted: every key of the old session is void, erase them first.
        restart: bool,
    },
    /// netd's initiation `ni` completed: switch sending to `send_key` at once, install
    /// `recv_key`, and confirm with a packet under `send_key`.
    SessionKeys {
        /// The initiation's nonce.
        ni: Nonce,
        /// The first send key of the new session.
        #[serde(with = "crate::secret::epoch_key")]
        send_key: EpochKey,
        /// The responder's first new receive key.
        #[serde(with = "crate::secret::epoch_key")]
        recv_key: EpochKey,
        /// The peer restarted: every key of the old session is void, erase them first.
        restart: bool,
    },
    /// The next send key.
    SendKey {
        /// The key.
        #[serde(with = "crate::secret::epoch_key")]
        key: EpochKey,
        /// The first key of a new session (the responder's switch after confirmation).
        session_start: bool,
    },
    /// The next receive key, to install before the peer needs it.
    RecvKey(#[serde(with = "crate::secret::epoch_key")] EpochKey),
    /// keyd refused a handshake message for `reason`; netd counts it and carries on.
    HandshakeFailed {
        /// The nonce of the handshake concerned.
        ni: Nonce,
        /// Why.
        reason: FailReason,
    },
    /// The session reached its Diffie-Hellman renewal time: start a new handshake.
    RenewalDue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cross_the_channel_intact() {
        use crate::frame::{Ancillary, pair};
        use yavipin_proto::TrafficSecret;
        let (mut keyd, mut netd) = pair(Ancillary::None).expect("pair");
        let key = |e: u8| EpochKey { epoch: Epoch(e.into()), secret: TrafficSecret::new([e; 32]) };
        keyd.send(&KeydToNetd::SessionKeys { ni: [1; 16], send_key: key(3), recv_key: key(4), restart: false })
            .expect("send");
        keyd.send(&KeydToNetd::RecvKey(key(5))).expect("send");
        match netd.recv::<KeydToNetd>().expect("recv").message {
            KeydToNetd::SessionKeys { send_key, recv_key, .. } => {
                assert_eq!((send_key.epoch, send_key.secret.expose()), (Epoch(3), &[3; 32]));
                assert_eq!((recv_key.epoch, recv_key.secret.expose()), (Epoch(4), &[4; 32]));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            matches!(netd.recv::<KeydToNetd>().expect("recv").message, KeydToNetd::RecvKey(k) if k.epoch == Epoch(5))
        );
        netd.send(&NetdToKeyd::SendKeyWanted { current: Epoch(9) }).expect("send");
        assert!(matches!(
            keyd.recv::<NetdToKeyd>().expect("recv").message,
            NetdToKeyd::SendKeyWanted { current: Epoch(9) }
        ));
    }

    #[test]
    fn reason_names_are_distinct() {
        let names: std::collections::HashSet<_> = FailReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), FailReason::ALL.len());
    }
}
