//! Messages between yavipind's parent, netd and keyd, and their framing.

#![deny(unsafe_code)]

pub mod control;
pub mod frame;
pub mod netd_keyd;
pub mod reasons;
pub mod secret;

pub use netd_keyd::{FailReason, KeydToNetd, NetdToKeyd};
