//! netd, the network worker: all per-packet cryptography of a yavipin tunnel, and the
//! handshake steps that need no long-lived secret (cookies, retransmission, nonce
//! tie-breaks); keyd holds the keys and does the rest.
//!
//! This crate holds the sans-IO cores; the I/O shell that drives them from the tun device
//! and the UDP socket is a thin loop around them.

#![forbid(unsafe_code)]

pub mod compress;
pub mod control;
pub mod cookie;
pub mod counters;
pub mod dataplane;
pub mod handshake;
#[cfg(feature = "test-keylog")]
mod keylog;
pub mod liveness;
pub mod pmtu;
pub mod replay;
pub mod shell;
pub mod status;
pub mod suite;
#[cfg(test)]
mod test_random;
pub mod tunnel;

pub use counters::{Counters, DropReason, SealError, Traffic};
pub use dataplane::{DataConfig, DataPlane, Delivery, Event, Inner, KeyError, Opened, RenewReason};
pub use handshake::{Handshake, HandshakeConfig, HandshakeCounters, HandshakeDrop};
pub use liveness::{LivenessConfig, NudState};
pub use pmtu::{PmtuConfig, PmtuState};
pub use suite::{Classic, Suite};
pub use tunnel::{
    Delivered, DownReason, Outgoing, SendError, Transmit, Tunnel, TunnelConfig, TunnelCounters, TunnelError,
    TunnelEvent, TunnelStatus,
};
