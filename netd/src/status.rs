//! The tunnel's state and counters as the parent's status query sees them: plain numbers
//! and typed reasons, built from the cores' public accessors. No key material can appear here: the
//! types it reads from expose none.

use std::time::Instant;

use yavipin_ipc::control::{Count, NetdStatus};
use yavipin_ipc::reasons::DatagramDrop;
use yavipin_proto::Random;

use crate::counters::{DropReason, SealError, Traffic};
use crate::handshake::HandshakeDrop;
use crate::tunnel::Tunnel;

fn count(traffic: Traffic) -> Count {
    Count { packets: traffic.packets, bytes: traffic.bytes }
}

/// A snapshot of `tunnel` at `now`.
pub fn snapshot<R: Random>(tunnel: &Tunnel<R>, now: Instant) -> NetdStatus {
    let data = tunnel.data();
    let counters = data.counters();
    let handshake = tunnel.handshake().counters();
    let drops = DropReason::ALL
        .iter()
        .map(|&r| (DatagramDrop::Data(r), counters.dropped(r)))
        .chain(HandshakeDrop::ALL.iter().map(|&r| (DatagramDrop::Handshake(r), handshake.dropped(r))))
        .filter(|(_, n)| *n > 0)
        .collect();
    let refused = SealError::ALL.iter().map(|&e| (e, counters.refused(e))).filter(|(_, n)| *n > 0).collect();
    NetdStatus {
        up: tunnel.is_up(),
        peer: tunnel.peer(),
        reachability: tunnel.reachability(),
        path_mtu: tunnel.path_mtu(),
        last_handshake_secs: tunnel.status().last_handshake.map(|t| now.saturating_duration_since(t).as_secs()),
        send_epoch: data.send_epoch().map(|e| e.epoch.0),
        recv_epochs: data.recv_epochs().iter().map(|e| e.epoch.0).collect(),
        sent: count(counters.sent),
        received: count(counters.received),
        compressed: count(counters.compressed),
        drops,
        refused,
        initiated: tunnel.counters().initiated,
        responded: tunnel.counters().responded,
        cookie_replies: handshake.cookie_replies,
    }
}
