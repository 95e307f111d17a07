//! netd, the network worker: all per-packet cryptography of a yavipin tunnel.
//!
//! This crate holds the sans-IO cores; the I/O shell that drives them from the tun device
//! and the UDP socket is a thin loop around them.

#![forbid(unsafe_code)]

pub mod compress;
pub mod counters;
pub mod dataplane;
pub mod replay;
pub mod suite;

pub use counters::{Counters, DropReason, SealError, Traffic};
pub use dataplane::{DataConfig, DataPlane, Delivery, Event, Inner, KeyError, Opened, RenewReason};
pub use suite::{Classic, Suite};
