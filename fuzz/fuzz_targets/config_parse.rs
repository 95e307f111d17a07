//! The parent's two parsers of local files: `Config::parse` (the TOML tunnel
//! configuration) on arbitrary UTF-8, and `parse_psk` (the key file) on arbitrary bytes.
//!
//! - nothing panics, whatever the text (the parent runs as root: a crash there is a denial
//!   of service at best);
//! - an accepted configuration satisfies every documented constraint: group 14 or 15,
//!   `rekey_seconds` within 10..=3600 and not above `dh_renewal_seconds` (60..=86400), at
//!   least one inner address, an interface name of 1 to 15 safe characters, an MTU within
//!   576..=9000 and at least 1280 with IPv6 inside, a peer with a port and an address;
//!   parsing the same text again gives the same configuration;
//! - a refusal names the file and a position inside the text (or none at all);
//! - a key file is accepted exactly when it holds 64 hexadecimal digits and at most one
//!   final newline, and the key is those digits.

#![no_main]

use std::path::Path;

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use yavipin_parent::config::{Config, ConfigError};
use yavipin_parent::keyfile::{PSK_LEN, parse_psk};

const FILE: &str = "fuzz.toml";

fn check_config(text: &str) {
    let path = Path::new(FILE);
    match Config::parse(path, text) {
        Ok(config) => {
            let session = &config.session;
            assert!(matches!(session.group.id(), 14 | 15), "group {:?}", session.group);
            assert!((10..=3600).contains(&session.rekey_seconds));
            assert!((60..=86_400).contains(&session.dh_renewal_seconds));
            assert!(session.rekey_seconds <= session.dh_renewal_seconds, "rekey longer than the DH renewal");
            let interface = &config.interface;
            assert!(!interface.addresses.is_empty(), "no inner address");
            let name = interface.name.as_bytes();
            assert!(!name.is_empty() && name.len() <= 15, "interface name of {} bytes", name.len());
            assert!(name.iter().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b)));
            assert!(interface.name != "." && interface.name != "..");
            if let Some(mtu) = interface.mtu {
                assert!((576..=9000).contains(&mtu));
            }
            let mtu = config.tun_mtu();
            if interface.addresses.iter().any(|a| matches!(a, IpNet::V6(_))) {
                assert!(mtu >= 1280, "IPv6 inside a {mtu}-byte MTU");
            }
            if let Some(peer) = config.transport.peer {
                assert!(peer.port() != 0 && !peer.ip().is_unspecified());
            }
            let again = Config::parse(path, text).expect("the same text parses twice");
            assert_eq!(config, again, "parsing is not deterministic");
        }
        Err(ConfigError::Invalid { file, line, column, message }) => {
            assert_eq!(file, path);
            assert!(!message.is_empty());
            assert_eq!(line == 0, column == 0, "half a position: {line}:{column}");
            let lines = text.matches('\n').count() + 1;
            assert!(line <= lines, "line {line} of a {lines}-line text");
            let shown = Config::parse(path, text).expect_err("refused twice").to_string();
            assert!(shown.starts_with(&format!("{FILE}:{line}:{column}: ")), "{shown}");
        }
        Err(ConfigError::Read { .. }) => panic!("parse does not read files"),
    }
}

fn check_psk(bytes: &[u8]) {
    let digits = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let valid = digits.len() == 2 * PSK_LEN && digits.iter().all(u8::is_ascii_hexdigit);
    match parse_psk(bytes) {
        Some(key) => {
            assert!(valid, "accepted a key file that is not 64 hexadecimal digits");
            let hex: Vec<u8> =
                key.iter().flat_map(|b| [b >> 4, b & 15]).map(|d| b"0123456789abcdef"[usize::from(d)]).collect();
            assert_eq!(hex, digits.to_ascii_lowercase(), "the key is not the digits");
        }
        None => assert!(!valid, "refused a valid key file"),
    }
}

fuzz_target!(|bytes: &[u8]| {
    check_psk(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        check_config(text);
    }
});
