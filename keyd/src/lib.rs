//! keyd, the key holder: cookie-protected, PSK-authenticated Diffie-Hellman and the
//! hash-chain key schedule, as a sans-IO monitor ([`KeyDaemon`]) that netd talks to through
//! [`yavipin_ipc::NetdToKeyd`] and [`yavipin_ipc::KeydToNetd`].
//!
//! keyd holds every long-lived secret of a tunnel: `K_auth` (derived from the pre-shared
//! key), the Diffie-Hellman private values and the hash-chain states. netd only ever
//! receives per-epoch traffic secrets.

#![forbid(unsafe_code)]

pub mod daemon;
pub mod dh;
pub mod schedule;
pub mod shell;

pub use daemon::{KeyDaemon, KeydConfig, KeydCounters, KeydError};
pub use dh::Dh;
pub use schedule::{AuthKey, KEY_LEN};
