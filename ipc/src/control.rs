//! The parent's channels: parent ↔ netd and parent ↔ keyd, one enum per direction.
//!
//! The parent starts each worker, which jails itself at once; then the parent sends it
//! exactly one `Init` (netd's carries the tun device and the UDP socket as descriptors;
//! keyd's carries the pre-shared key, which so only ever reaches a locked, undumpable
//! process), and from then on only asks it to stop. Workers report readiness, tunnel state changes and
//! status. Anything else, or anything out of order, ends the receiving process.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use yavipin_proto::handshake::Group;
use yavipin_proto::keys::Psk;

use crate::FailReason;
use crate::reasons::{DatagramDrop, DownReason, NudState, SealError};
use crate::secret;

/// The Diffie-Hellman group as its RFC 3526 number; a number that names no supported group
/// does not decode.
mod group {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use yavipin_proto::handshake::Group;

    // serde's `with` passes a reference.
    #[allow(clippy::trivially_copy_pass_by_ref)]
    pub(super) fn serialize<S: Serializer>(group: &Group, serializer: S) -> Result<S::Ok, S::Error> {
        group.id().serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Group, D::Error> {
        let id = u8::deserialize(deserializer)?;
        Group::from_id(id).ok_or_else(|| D::Error::custom(format_args!("group {id} is not supported")))
    }
}

/// What netd needs to run the tunnel. The tun device and the UDP socket travel with the
/// message as descriptors, in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetdInit {
    /// Tun device name, for logs.
    pub device: String,
    /// The address the UDP socket is bound to (part of every cookie). Sent rather than
    /// asked of the socket: the jailed worker has no `getsockname`.
    pub local: SocketAddr,
    /// The peer, for the side that initiates.
    pub peer: Option<SocketAddr>,
    /// Pre-shared key id.
    pub key_id: u32,
    /// Diffie-Hellman group.
    #[serde(with = "group")]
    pub group: Group,
    /// Largest inner packet.
    pub max_inner_len: u16,
    /// Per-packet deflate.
    pub compression: bool,
    /// Seconds between hash-chain renewals. (Diffie-Hellman renewals are keyd's to time.)
    pub rekey_seconds: u32,
    /// Peer reachability detection and keepalives.
    pub liveness: LivenessSettings,
}

/// Reachability detection (RFC 2461 section 7.3 style) and NAT keepalive settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivenessSettings {
    /// `REACHABLE_TIME`, in milliseconds.
    pub reachable_time_ms: u32,
    /// `RETRANS_TIMER`, in milliseconds.
    pub retrans_timer_ms: u32,
    /// `DELAY_FIRST_PROBE_TIME`, in milliseconds.
    pub delay_first_probe_ms: u32,
    /// `MAX_UNICAST_SOLICIT`.
    pub max_unicast_solicit: u32,
    /// Keepalive interval in seconds; 0 turns keepalives off.
    pub keepalive_seconds: u32,
}

/// Parent to netd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentToNetd {
    /// The first message, with two descriptors: tun device, UDP socket.
    Init(NetdInit),
    /// Send the shutdown notice to the peer and exit.
    Shutdown,
    /// Answer with [`NetdToParent::Status`].
    Status,
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// What netd reports about the tunnel: plain counters and state, never key material.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetdStatus {
    /// A session is established.
    pub up: bool,
    /// The peer's endpoint, once known.
    pub peer: Option<SocketAddr>,
    /// Reachability of the peer (NUD state).
    pub reachability: NudState,
    /// Largest datagram known to reach the peer, when path-MTU discovery found it.
    pub path_mtu: Option<u16>,
    /// Seconds since the last completed handshake.
    pub last_handshake_secs: Option<u64>,
    /// The send key's epoch.
    pub send_epoch: Option<u32>,
    /// Epochs with a receive key installed.
    pub recv_epochs: Vec<u32>,
    /// Inner packets sent.
    pub sent: Count,
    /// Inner packets received.
    pub received: Count,
    /// Packets sent compressed, and the bytes compression saved.
    pub compressed: Count,
    /// Received datagrams dropped, by reason (data packets and handshake messages); only
    /// reasons with a count.
    pub drops: Vec<(DatagramDrop, u64)>,
    /// Tun packets not sent, by reason; only reasons with a count.
    pub refused: Vec<(SealError, u64)>,
    /// Sessions completed as initiator.
    pub initiated: u64,
    /// Sessions confirmed as responder.
    pub responded: u64,
    /// Cookie replies sent.
    pub cookie_replies: u64,
}

/// netd to parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetdToParent {
    /// The answer to [`ParentToNetd::Status`].
    Status(NetdStatus),
    /// Jailed and running.
    Ready,
    /// A session with the peer is established: set the link up.
    TunnelUp {
        /// The peer's endpoint.
        peer: SocketAddr,
    },
    /// The session is gone: set the link down.
    TunnelDown {
        /// Why.
        reason: DownReason,
    },
    /// Path-MTU discovery found a new size: set the tun device's MTU to `inner_mtu`.
    Mtu {
        /// Largest IP packet that reaches the peer.
        path_mtu: u16,
        /// Largest tun packet that fits in it.
        inner_mtu: u16,
    },
}

/// What keyd needs. The pre-shared key is the most sensitive thing that ever crosses a
/// channel: it goes to keyd alone, once, and the frame buffers are erased after use.
/// `Debug` shows `Psk(..)`, never the key.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeydInit {
    /// Pre-shared key id.
    pub key_id: u32,
    /// The pre-shared key.
    #[serde(with = "secret::psk")]
    pub psk: Psk,
    /// Diffie-Hellman group.
    #[serde(with = "group")]
    pub group: Group,
    /// Seconds between Diffie-Hellman renewals. (Hash-chain steps are netd's to time.)
    pub dh_renewal_seconds: u32,
}

/// Parent to keyd.
#[derive(Debug, Serialize, Deserialize)]
pub enum ParentToKeyd {
    /// The first message.
    Init(KeydInit),
    /// Erase everything and exit.
    Shutdown,
    /// Answer with [`KeydToParent::Status`].
    Status,
}

/// What keyd reports: counters only, never key material.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeydStatus {
    /// Sessions established.
    pub sessions: u64,
    /// Modular exponentiations performed.
    pub modexps: u64,
    /// Send keys and receive keys handed to netd.
    pub keys_handed_out: u64,
    /// Handshake messages refused, by reason; only reasons with a count.
    pub failures: Vec<(FailReason, u64)>,
}

/// keyd to parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeydToParent {
    /// Jailed and running.
    Ready,
    /// The answer to [`ParentToKeyd::Status`].
    Status(KeydStatus),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Ancillary, pair};
    use std::os::fd::AsFd;

    #[test]
    fn keyd_init_carries_the_key_and_never_prints_it() {
        let (mut parent, mut keyd) = pair(Ancillary::None).expect("pair");
        let init =
            KeydInit { key_id: 7, psk: Psk::new(&mut [0xc3; 32]), group: Group::Modp2048, dh_renewal_seconds: 600 };
        let shown = format!("{init:?}");
        assert!(shown.contains("Psk(..)") && !shown.contains("195"), "{shown}");
        parent.send(&ParentToKeyd::Init(init)).expect("send");
        match keyd.recv::<ParentToKeyd>().expect("recv").message {
            ParentToKeyd::Init(got) => {
                assert_eq!(got.psk.expose(), &[0xc3; 32]);
                assert_eq!(got.key_id, 7);
            }
            ParentToKeyd::Shutdown | ParentToKeyd::Status => panic!("wrong message"),
        }
    }

    #[test]
    fn netd_init_carries_two_descriptors() {
        let (mut netd, mut parent) = pair(Ancillary::Descriptors).expect("pair");
        let a = tempfile::tempfile().expect("file");
        let b = tempfile::tempfile().expect("file");
        let init = NetdInit {
            device: "yavipin0".into(),
            local: "[::]:5555".parse().expect("addr"),
            peer: Some("192.0.2.1:5555".parse().expect("addr")),
            key_id: 1,
            group: Group::Modp3072,
            max_inner_len: 1435,
            compression: false,
            rekey_seconds: 120,
            liveness: LivenessSettings {
                reachable_time_ms: 30_000,
                retrans_timer_ms: 1000,
                delay_first_probe_ms: 5000,
                max_unicast_solicit: 3,
                keepalive_seconds: 25,
            },
        };
        parent.send_with_fds(&ParentToNetd::Init(init.clone()), &[a.as_fd(), b.as_fd()]).expect("send");
        let got = netd.recv::<ParentToNetd>().expect("recv");
        assert_eq!(got.message, ParentToNetd::Init(init));
        assert_eq!(got.fds.len(), 2);
    }

    #[test]
    fn an_unsupported_group_does_not_decode() {
        let init = KeydInit { key_id: 7, psk: Psk::new(&mut [1; 32]), group: Group::Modp2048, dh_renewal_seconds: 600 };
        let mut bytes = postcard::to_allocvec(&ParentToKeyd::Init(init)).expect("encode");
        // Variant, key id (varint 7), 32 key bytes, then the group's number.
        assert_eq!(bytes[2 + 32], 14);
        bytes[2 + 32] = 15;
        assert!(
            matches!(crate::frame::decode::<ParentToKeyd>(&bytes), Ok(ParentToKeyd::Init(i)) if i.group == Group::Modp3072)
        );
        for id in [0, 2, 5, 13, 16, 255] {
            bytes[2 + 32] = id;
            assert!(crate::frame::decode::<ParentToKeyd>(&bytes).is_err(), "group {id} decoded");
        }
    }
}
