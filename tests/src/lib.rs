//! Test harness shared by yavipin's cross-crate tests: the two-peer simulator and the
//! endpoints that run the protocol cores inside it, real hosts in network namespaces, and
//! a reader of the metrics format.

#![forbid(unsafe_code)]

pub mod attacker;
pub mod data_peer;
pub mod exposition;
pub mod netns;
pub mod node;
pub mod sim;
