//! The tunnel configuration file (TOML).
//!
//! Minimal by design, as the original: the key file, the tunnel's inner addresses, and the
//! peer's address on the side that initiates. Everything else has a default. Unknown keys
//! are refused, and every error names the file, the line and the field.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use yavipin_proto::handshake::Group;

/// Bytes a data packet adds above UDP (flags, sequence number, tag).
pub const TUNNEL_OVERHEAD: u16 = 17;
const UDP_HEADER: u16 = 8;
const IPV4_HEADER: u16 = 20;
const IPV6_HEADER: u16 = 40;
/// Underlay MTU assumed until path-MTU discovery says otherwise (Ethernet).
const UNDERLAY_MTU: u16 = 1500;
/// IPv6 requires every link to carry 1280-byte packets (RFC 8200 §5).
const IPV6_MIN_MTU: u16 = 1280;

/// A parsed, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// File holding the 256-bit pre-shared key, 64 hexadecimal digits.
    pub key_file: PathBuf,
    /// Number naming the pre-shared key on the wire, so both sides agree on which key.
    #[serde(default = "default_key_id")]
    pub key_id: u32,
    /// Account the workers run as.
    #[serde(default = "default_user")]
    pub user: String,
    /// The tun device.
    pub interface: Interface,
    /// The UDP underlay.
    #[serde(default)]
    pub transport: Transport,
    /// Key exchange and renewal.
    #[serde(default)]
    pub session: Session,
    /// Peer reachability, NAT keepalives.
    #[serde(default)]
    pub liveness: Liveness,
    /// Commands run when the tunnel goes up or down.
    #[serde(default)]
    pub scripts: Scripts,
}

/// The tun device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// Device name.
    #[serde(default = "default_device", deserialize_with = "device_name")]
    pub name: String,
    /// Inner addresses with prefix length, at least one.
    #[serde(deserialize_with = "addresses")]
    pub addresses: Vec<IpNet>,
    /// Device MTU; by default the underlay's 1500 minus the tunnel's overhead.
    #[serde(default, deserialize_with = "mtu")]
    pub mtu: Option<u16>,
}

/// The UDP underlay.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transport {
    /// Local address and port; port 0 picks a random port (a pure initiator needs no fixed
    /// one). IP literals only: the daemon does no name resolution.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The peer's address and port. Present: this side initiates. Absent: it only
    /// responds and learns the peer's endpoint from an authenticated handshake.
    #[serde(default)]
    pub peer: Option<SocketAddr>,
}

impl Default for Transport {
    fn default() -> Self {
        Self { listen: default_listen(), peer: None }
    }
}

/// Key exchange and renewal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Diffie-Hellman group: 14 (2048-bit MODP) or 15 (3072-bit MODP).
    #[serde(default = "default_group", deserialize_with = "group")]
    pub group: Group,
    /// Seconds between hash-chain key renewals.
    #[serde(default = "default_rekey", deserialize_with = "rekey_seconds")]
    pub rekey_seconds: u32,
    /// Seconds between Diffie-Hellman renewals (forward secrecy).
    #[serde(default = "default_dh_renewal", deserialize_with = "dh_renewal_seconds")]
    pub dh_renewal_seconds: u32,
    /// Per-packet deflate. Off by default: it leaks content through lengths (VORACLE).
    #[serde(default)]
    pub compression: bool,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            group: default_group(),
            rekey_seconds: default_rekey(),
            dh_renewal_seconds: default_dh_renewal(),
            compression: false,
        }
    }
}

/// Peer reachability detection (after RFC 2461 section 7.3) and NAT keepalives. Times in
/// seconds, fractions allowed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Liveness {
    /// How long the peer counts as reachable after it proved so (randomised ×0.5–1.5).
    #[serde(default = "default_reachable_time", deserialize_with = "reachable_time")]
    pub reachable_time: f64,
    /// Time between two reachability probes.
    #[serde(default = "default_retrans_timer", deserialize_with = "retrans_timer")]
    pub retrans_timer: f64,
    /// Wait before the first probe after the peer's reachability went stale.
    #[serde(default = "default_delay_first_probe", deserialize_with = "delay_first_probe_time")]
    pub delay_first_probe_time: f64,
    /// Unanswered probes after which the peer is unreachable.
    #[serde(default = "default_max_unicast_solicit", deserialize_with = "max_unicast_solicit")]
    pub max_unicast_solicit: u32,
    /// Seconds of silence after which a keepalive goes out, so NAT bindings stay; 0 turns
    /// keepalives off.
    #[serde(default = "default_keepalive", deserialize_with = "keepalive_seconds")]
    pub keepalive_seconds: u32,
}

impl Eq for Liveness {}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            reachable_time: default_reachable_time(),
            retrans_timer: default_retrans_timer(),
            delay_first_probe_time: default_delay_first_probe(),
            max_unicast_solicit: default_max_unicast_solicit(),
            keepalive_seconds: default_keepalive(),
        }
    }
}

/// Commands the parent runs, as root, when the tunnel goes up or down.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scripts {
    /// Run when the tunnel comes up (absolute path).
    #[serde(default, deserialize_with = "script_path")]
    pub up: Option<PathBuf>,
    /// Run when the tunnel goes down (absolute path).
    #[serde(default, deserialize_with = "script_path")]
    pub down: Option<PathBuf>,
    /// A script still running after this many seconds is killed.
    #[serde(default = "default_script_timeout", deserialize_with = "script_timeout")]
    pub timeout_seconds: u32,
}

impl Default for Scripts {
    fn default() -> Self {
        Self { up: None, down: None, timeout_seconds: default_script_timeout() }
    }
}

fn default_reachable_time() -> f64 {
    30.0
}
fn default_retrans_timer() -> f64 {
    1.0
}
fn default_delay_first_probe() -> f64 {
    5.0
}
fn default_max_unicast_solicit() -> u32 {
    3
}
fn default_keepalive() -> u32 {
    25
}
fn default_script_timeout() -> u32 {
    10
}

/// Seconds given as an integer or a decimal number, within `range`.
fn seconds<'de, D: serde::Deserializer<'de>>(
    d: D,
    field: &str,
    range: core::ops::RangeInclusive<f64>,
) -> Result<f64, D::Error> {
    struct Seconds;
    impl serde::de::Visitor<'_> for Seconds {
        type Value = f64;
        fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("a number of seconds")
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f64, E> {
            #[allow(clippy::cast_precision_loss)]
            Ok(v as f64)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f64, E> {
            #[allow(clippy::cast_precision_loss)]
            Ok(v as f64)
        }
    }
    let value = d.deserialize_any(Seconds)?;
    if !range.contains(&value) {
        return Err(invalid(format!("{field}: {value} is outside {}..={} seconds", range.start(), range.end())));
    }
    Ok(value)
}

fn reachable_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    seconds(d, "reachable_time", 1.0..=3600.0)
}

fn retrans_timer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    seconds(d, "retrans_timer", 0.1..=60.0)
}

fn delay_first_probe_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    seconds(d, "delay_first_probe_time", 0.1..=600.0)
}

fn max_unicast_solicit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    if !(1..=20).contains(&n) {
        return Err(invalid(format!("max_unicast_solicit: {n} is outside 1..=20")));
    }
    Ok(n)
}

fn keepalive_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    if n > 3600 {
        return Err(invalid(format!("keepalive_seconds: {n} is outside 0..=3600")));
    }
    Ok(n)
}

fn script_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = PathBuf::deserialize(d)?;
    if !path.is_absolute() {
        return Err(invalid(format!("script: `{}` is not an absolute path", path.display())));
    }
    Ok(Some(path))
}

fn script_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    if !(1..=300).contains(&n) {
        return Err(invalid(format!("timeout_seconds: {n} is outside 1..=300")));
    }
    Ok(n)
}

fn default_key_id() -> u32 {
    1
}
fn default_user() -> String {
    "yavipin".into()
}
fn default_device() -> String {
    "yavipin0".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([0u16; 8], 0))
}
fn default_group() -> Group {
    Group::Modp2048
}
fn default_rekey() -> u32 {
    120
}
fn default_dh_renewal() -> u32 {
    600
}

fn invalid<E: serde::de::Error>(message: impl core::fmt::Display) -> E {
    E::custom(message)
}

fn device_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    // IFNAMSIZ is 16 including the terminating NUL.
    if name.is_empty() || name.len() > 15 || !valid_chars || name == "." || name == ".." {
        return Err(invalid(format!(
            "name: `{name}` is not a valid interface name (1 to 15 characters: letters, digits, `_`, `.`, `-`)"
        )));
    }
    Ok(name)
}

fn addresses<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    if list.is_empty() {
        return Err(invalid("addresses: at least one inner address is needed, e.g. [\"10.99.0.1/30\"]"));
    }
    list.iter()
        .map(|s| {
            s.parse::<IpNet>().map_err(|_| {
                invalid(format!("addresses: `{s}` is not an address with prefix length, e.g. \"10.99.0.1/30\""))
            })
        })
        .collect()
}

fn mtu<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let mtu = u16::deserialize(d)?;
    if !(576..=9000).contains(&mtu) {
        return Err(invalid(format!("mtu: {mtu} is outside 576..=9000")));
    }
    Ok(Some(mtu))
}

fn group<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Group, D::Error> {
    let id = u8::deserialize(d)?;
    Group::from_id(id)
        .ok_or_else(|| invalid(format!("group: {id} is not supported; use 14 (2048-bit MODP) or 15 (3072-bit MODP)")))
}

fn rekey_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = u32::deserialize(d)?;
    if !(10..=3600).contains(&s) {
        return Err(invalid(format!("rekey_seconds: {s} is outside 10..=3600")));
    }
    Ok(s)
}

fn dh_renewal_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = u32::deserialize(d)?;
    if !(60..=86_400).contains(&s) {
        return Err(invalid(format!("dh_renewal_seconds: {s} is outside 60..=86400")));
    }
    Ok(s)
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Syntax error, unknown key, missing field or invalid value.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line of the offending text (0 when the whole file is concerned).
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, naming the field.
        message: String,
    },
}

impl Config {
    /// Reads and validates `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.to_owned(), source })?;
        Self::parse(file, &text)
    }

    /// Parses and validates `text`, attributing errors to `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |span| line_column(text, span.start));
            ConfigError::Invalid { file: file.to_owned(), line, column, message: e.message().trim().to_owned() }
        })?;
        config.check_consistency().map_err(|(key, message)| {
            let (line, column) = locate_key(text, key);
            ConfigError::Invalid { file: file.to_owned(), line, column, message }
        })?;
        Ok(config)
    }

    /// Checks that involve more than one field. Returns the key to point at and why.
    fn check_consistency(&self) -> Result<(), (&'static str, String)> {
        if self.session.dh_renewal_seconds < self.session.rekey_seconds {
            return Err((
                "dh_renewal_seconds",
                format!(
                    "dh_renewal_seconds: {} is shorter than rekey_seconds ({}); a Diffie-Hellman renewal already renews the keys",
                    self.session.dh_renewal_seconds, self.session.rekey_seconds
                ),
            ));
        }
        let has_ipv6 = self.interface.addresses.iter().any(|a| matches!(a, IpNet::V6(_)));
        if has_ipv6 && self.tun_mtu() < IPV6_MIN_MTU {
            return Err((
                "mtu",
                format!("mtu: {} is below 1280, the minimum for IPv6 inner addresses", self.tun_mtu()),
            ));
        }
        if let Some(peer) = self.transport.peer {
            if peer.port() == 0 || peer.ip().is_unspecified() {
                return Err(("peer", format!("peer: {peer} is not a reachable address and port")));
            }
            if peer.is_ipv6() && self.transport.listen.is_ipv4()
                || peer.is_ipv4() && listen_is_v6_only(self.transport.listen)
            {
                return Err((
                    "peer",
                    format!("peer: {peer} cannot be reached from listen address {}", self.transport.listen),
                ));
            }
        }
        Ok(())
    }

    /// The tun device's MTU: configured, or the underlay's 1500 minus IP, UDP and tunnel
    /// headers (IPv6 sizes unless the peer is known to be IPv4).
    pub fn tun_mtu(&self) -> u16 {
        self.interface.mtu.unwrap_or_else(|| {
            let ip_header = match self.transport.peer.map(|p| p.ip()) {
                Some(IpAddr::V4(_)) => IPV4_HEADER,
                _ => IPV6_HEADER,
            };
            UNDERLAY_MTU - ip_header - UDP_HEADER - TUNNEL_OVERHEAD
        })
    }
}

impl Config {
    /// The lowest MTU the tun device may be given when path-MTU discovery reports a smaller
    /// one: 1280 when the tunnel carries IPv6, which the kernel would answer by removing the
    /// IPv6 addresses (RFC 8200 requires 1280), else IPv4's 576.
    pub fn mtu_floor(&self) -> u16 {
        let has_ipv6 = self.interface.addresses.iter().any(|a| matches!(a, IpNet::V6(_)));
        if has_ipv6 { IPV6_MIN_MTU } else { 576 }
    }
}

/// An IPv6 listen address other than the unspecified `[::]` (which is dual-stack) cannot
/// reach IPv4 peers.
fn listen_is_v6_only(listen: SocketAddr) -> bool {
    match listen.ip() {
        IpAddr::V6(ip) => !ip.is_unspecified() && ip.to_ipv4_mapped().is_none(),
        IpAddr::V4(_) => false,
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, str::len) + 1;
    (line, column)
}

/// Where `key = ...` stands, for errors about a value that passed its own checks.
fn locate_key(text: &str, key: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(i, line)| {
            let trimmed = line.trim_start();
            let rest = trimmed.strip_prefix(key)?;
            rest.trim_start().starts_with('=').then(|| (i + 1, line.len() - trimmed.len() + 1))
        })
        .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
key_file = "/etc/yavipin/home.key"

[interface]
addresses = ["10.99.0.1/30"]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), text)
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("must be refused").to_string()
    }

    #[test]
    fn minimal_config_gets_the_defaults() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.key_id, 1);
        assert_eq!(c.user, "yavipin");
        assert_eq!(c.interface.name, "yavipin0");
        assert_eq!(c.transport.listen, "[::]:0".parse().expect("addr"));
        assert_eq!(c.transport.peer, None);
        assert_eq!(c.session, Session::default());
        assert!(!c.session.compression);
        // 1500 - 40 (IPv6) - 8 (UDP) - 17.
        assert_eq!(c.tun_mtu(), 1435);
    }

    #[test]
    fn initiator_towards_ipv4_gets_the_ipv4_mtu() {
        let c = parse(&format!("{MINIMAL}\n[transport]\npeer = \"192.0.2.7:5555\"\n")).expect("valid");
        assert_eq!(c.tun_mtu(), 1455);
        assert_eq!(c.transport.peer, Some("192.0.2.7:5555".parse().expect("addr")));
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../docs/example.toml");
        let c = parse(text).expect("the shipped example is valid");
        assert!(c.transport.peer.is_some());
    }

    #[test]
    fn unknown_keys_are_refused_with_line_and_name() {
        let e = error(&format!("{MINIMAL}mtuu = 1400\n"));
        assert!(e.starts_with("t.toml:6:1: "), "{e}");
        assert!(e.contains("mtuu"), "{e}");
        let e = error("key_file = \"k\"\nfoo = 1\n[interface]\naddresses = [\"10.0.0.1/8\"]\n");
        assert!(e.starts_with("t.toml:2:1:") && e.contains("unknown field `foo`"), "{e}");
    }

    #[test]
    fn missing_fields_are_named() {
        assert!(error("[interface]\naddresses = [\"10.0.0.1/8\"]\n").contains("key_file"));
        assert!(error("key_file = \"k\"\n").contains("interface"));
        assert!(error("key_file = \"k\"\n[interface]\n").contains("addresses"));
    }

    #[test]
    fn invalid_values_point_at_their_line() {
        let cases = [
            ("[session]\ngroup = 5\n", "group: 5 is not supported", 8),
            ("[session]\nrekey_seconds = 1\n", "rekey_seconds: 1 is outside", 8),
            ("[transport]\npeer = \"example.com:1\"\n", "", 8),
            ("[transport]\npeer = \"192.0.2.1:0\"\n", "peer: 192.0.2.1:0 is not a reachable", 8),
        ];
        for (extra, expected, line) in cases {
            let e = error(&format!("{MINIMAL}\n{extra}"));
            assert!(e.contains(expected), "{e}");
            assert!(e.starts_with(&format!("t.toml:{line}:")), "{e}");
        }
        let e = error("key_file = \"k\"\n[interface]\naddresses = [\"10.0.0.1\"]\n");
        assert!(e.starts_with("t.toml:3:") && e.contains("`10.0.0.1` is not an address with prefix length"), "{e}");
        let e = error("key_file = \"k\"\n[interface]\nname = \"a/b\"\naddresses = [\"10.0.0.1/8\"]\n");
        assert!(e.contains("not a valid interface name"), "{e}");
        let e = error("key_file = \"k\"\n[interface]\naddresses = []\n");
        assert!(e.contains("at least one inner address"), "{e}");
    }

    #[test]
    fn cross_field_checks() {
        let e = error(&format!("{MINIMAL}\n[session]\nrekey_seconds = 900\ndh_renewal_seconds = 600\n"));
        assert!(e.starts_with("t.toml:9:1:") && e.contains("shorter than rekey_seconds"), "{e}");
        let e = error("key_file = \"k\"\n[interface]\naddresses = [\"fd00::1/64\"]\nmtu = 1000\n");
        assert!(e.starts_with("t.toml:4:1:") && e.contains("1280"), "{e}");
        let e = error(&format!("{MINIMAL}\n[transport]\nlisten = \"0.0.0.0:5555\"\npeer = \"[2001:db8::1]:5555\"\n"));
        assert!(e.contains("cannot be reached"), "{e}");
    }

    #[test]
    fn the_mtu_floor_follows_the_inner_addresses() {
        assert_eq!(parse(MINIMAL).expect("valid").mtu_floor(), 576);
        let c = parse("key_file = \"k\"\n[interface]\naddresses = [\"fd00::1/64\"]\n").expect("valid");
        assert_eq!(c.mtu_floor(), 1280);
    }

    #[test]
    fn liveness_and_scripts() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.liveness, Liveness::default());
        assert_eq!(c.scripts, Scripts::default());
        assert_eq!(c.scripts.timeout_seconds, 10);
        let c = parse(&format!(
            "{MINIMAL}[liveness]\nreachable_time = 2\nretrans_timer = 0.5\nkeepalive_seconds = 0\n[scripts]\nup = \"/etc/yavipin/up\"\n"
        ))
        .expect("valid");
        assert!((c.liveness.reachable_time - 2.0).abs() < f64::EPSILON);
        assert!((c.liveness.retrans_timer - 0.5).abs() < f64::EPSILON);
        assert_eq!(c.liveness.keepalive_seconds, 0);
        assert_eq!(c.scripts.up.as_deref(), Some(Path::new("/etc/yavipin/up")));
        let e = error(&format!("{MINIMAL}[liveness]\nretrans_timer = 0.01\n"));
        assert!(e.starts_with("t.toml:7:") && e.contains("retrans_timer: 0.01 is outside"), "{e}");
        let e = error(&format!("{MINIMAL}[scripts]\ndown = \"down.sh\"\n"));
        assert!(e.contains("not an absolute path"), "{e}");
    }

    #[test]
    fn garbage_is_a_syntax_error_not_a_panic() {
        for text in ["\u{0}", "[[[", "key_file = ", "= 3", "\"unterminated", "[interface]\naddresses = [1, 2]"] {
            let e = error(text);
            assert!(e.starts_with("t.toml:"), "{e}");
        }
    }
}
