//! yavipind's privileged parent: configuration, key file, tun device and UDP socket, and
//! the supervision of the netd and keyd workers.

#![deny(unsafe_code)]

pub mod config;
pub mod control;
pub mod daemon;
pub mod files;
pub mod keyfile;
pub mod logging;
pub mod monitor;
pub mod netlink;
pub mod scripts;
pub mod spawn;
pub mod tundev;
pub mod worker;
