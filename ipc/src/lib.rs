//! Messages between yavipind's parent, netd, keyd and the script runner, and their framing.

#![deny(unsafe_code)]

pub mod control;
pub mod frame;
pub mod netd_keyd;
pub mod reasons;
pub mod scripts;
pub mod secret;

pub use netd_keyd::{FailReason, KeydToNetd, NetdToKeyd};
