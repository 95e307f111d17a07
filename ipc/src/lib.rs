//! Messages between yavipind's parent, netd and keyd, and their framing.

#![deny(unsafe_code)]

pub mod frame;
