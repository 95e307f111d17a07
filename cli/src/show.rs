//! `yavipin show`: a running tunnel's state, asked from yavipind over its control socket
//! (`/run/yavipin/DEVICE.sock`, root and group `yavipin` only). One request, `status`; one
//! JSON answer, printed as is with `--json` or as text.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use yavipin_parent::control::{ErrorReply, RequestError, STATUS_REQUEST, TunnelStatus, socket_path};

/// The device shown when none is named (the configuration's default device name).
pub(crate) const DEFAULT_DEVICE: &str = "yavipin0";

/// Longest answer accepted.
const MAX_REPLY: u64 = 1 << 20;

/// Why no state was shown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShowError {
    /// Nothing listens there.
    #[error("no control socket at {} (is yavipind running for {device}?)", path.display())]
    NoSocket {
        /// The socket path.
        path: PathBuf,
        /// The device.
        device: String,
    },
    /// The socket exists but this user may not use it.
    #[error("cannot connect to {}: {source} (the control socket is for root and the yavipin group)", path.display())]
    Permission {
        /// The socket path.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// Any other failure to connect or talk.
    #[error("{}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// The daemon answered with an error.
    #[error("yavipind: {0}")]
    Daemon(RequestError),
    /// The answer is not what a daemon of this version sends.
    #[error("unexpected answer from {}: {detail}", path.display())]
    BadReply {
        /// The socket path.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

/// Checks a device name with the configuration's rules (1 to 15 characters: letters,
/// digits, `_`, `.`, `-`; not `.` or `..`), which also keeps the socket path inside
/// the run directory.
pub(crate) fn parse_device(name: &str) -> Result<String, String> {
    let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if name.is_empty() || name.len() > 15 || !valid_chars || name == "." || name == ".." {
        return Err(format!(
            "`{name}` is not a device name (1 to 15 characters: letters, digits, `_`, `.`, `-`), \
             e.g. {DEFAULT_DEVICE}"
        ));
    }
    Ok(name.to_owned())
}

/// Asks `device`'s daemon for its state and prints it.
pub(crate) fn run(device: &str, json: bool) -> Result<(), ShowError> {
    let path = socket_path(device);
    let mut stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
            return Err(ShowError::NoSocket { path, device: device.to_owned() });
        }
        Err(source) if source.kind() == io::ErrorKind::PermissionDenied => {
            return Err(ShowError::Permission { path, source });
        }
        Err(source) => return Err(ShowError::Io { path, source }),
    };
    let io_error = |source| ShowError::Io { path: path.clone(), source };
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(io_error)?;
    stream.write_all(STATUS_REQUEST).map_err(io_error)?;
    let mut reply = String::new();
    stream.take(MAX_REPLY).read_to_string(&mut reply).map_err(io_error)?;
    if let Ok(status) = serde_json::from_str::<TunnelStatus>(&reply) {
        if json {
            print!("{reply}");
        } else {
            print!("{}", render(&status));
        }
        return Ok(());
    }
    match serde_json::from_str::<ErrorReply>(&reply) {
        Ok(error) => Err(ShowError::Daemon(error.error)),
        Err(e) => Err(ShowError::BadReply { path, detail: e.to_string() }),
    }
}

fn bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", f / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", f / 1_048_576.0),
        _ => format!("{:.2} GiB", f / 1_073_741_824.0),
    }
}

/// Width of the label column of [`render`]: the longest label, "refused by keyd".
const LABEL_WIDTH: usize = 15;

/// The state as text, in the manner of `wg show`.
fn render(status: &TunnelStatus) -> String {
    use std::fmt::Write as _;
    let netd = &status.netd;
    let keyd = &status.keyd;
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "  {label:<LABEL_WIDTH$} {value}");
    };
    let opt = |value: Option<String>| value.unwrap_or_else(|| "unknown".into());
    let header = format!("interface: {}\n", status.device);
    line("listen", status.listen.to_string());
    line("peer", netd.peer.map_or_else(|| "not known yet".into(), |p| p.to_string()));
    line("tunnel", if netd.up { "up".into() } else { "down".into() });
    line("reachability", netd.reachability.name().to_owned());
    line("last handshake", opt(netd.last_handshake_secs.map(|s| format!("{s} s ago"))));
    line(
        "key epoch",
        format!(
            "send {}, receive {}",
            opt(netd.send_epoch.map(|e| e.to_string())),
            if netd.recv_epochs.is_empty() {
                "none".to_owned()
            } else {
                netd.recv_epochs.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
            }
        ),
    );
    line("path mtu", opt(netd.path_mtu.map(|m| m.to_string())));
    line(
        "transfer",
        format!(
            "{} received ({} packets), {} sent ({} packets)",
            bytes(netd.received.bytes),
            netd.received.packets,
            bytes(netd.sent.bytes),
            netd.sent.packets
        ),
    );
    let compression = if netd.compressed.packets == 0 {
        "none".to_owned()
    } else {
        #[allow(clippy::cast_precision_loss)]
        let saved = netd.compressed.bytes as f64 / netd.sent.bytes.max(1) as f64;
        format!("{} packets, {} saved ({:.1} %)", netd.compressed.packets, bytes(netd.compressed.bytes), 100.0 * saved)
    };
    line("compression", compression);
    line("drops", counts(&netd.drops, |r| r.to_string()));
    line("not sent", counts(&netd.refused, |r| r.name().to_owned()));
    line(
        "handshakes",
        format!(
            "{} initiated, {} responded, {} cookie replies; keyd: {} sessions, {} exponentiations, {} keys handed out",
            netd.initiated, netd.responded, netd.cookie_replies, keyd.sessions, keyd.modexps, keyd.keys_handed_out
        ),
    );
    line("refused by keyd", counts(&keyd.failures, |r| r.name().to_owned()));
    header + &out
}

/// Counts by reason as `name count, name count`, or `none`: the reasons get their names
/// here, where they are shown.
fn counts<R: Copy>(items: &[(R, u64)], name: impl Fn(R) -> String) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items.iter().map(|&(reason, n)| format!("{} {n}", name(reason))).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_set_apart_from_its_value() {
        use yavipin_ipc::FailReason;
        use yavipin_ipc::control::{KeydStatus, NetdStatus};
        use yavipin_ipc::reasons::{DatagramDrop, DropReason, SealError};
        let status = TunnelStatus {
            device: "yavipin0".into(),
            listen: "0.0.0.0:5555".parse().expect("address"),
            netd: NetdStatus {
                drops: vec![(DatagramDrop::Data(DropReason::BadMac), 3)],
                refused: vec![(SealError::NoKey, 2)],
                ..NetdStatus::default()
            },
            keyd: KeydStatus { failures: vec![(FailReason::BadAuth, 1)], ..KeydStatus::default() },
        };
        let text = render(&status);
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(rows.len(), 13, "{text}");
        for row in rows {
            let (label, value) = row.split_at(2 + LABEL_WIDTH);
            assert!(label.starts_with("  ") && label.len() == 2 + LABEL_WIDTH, "{row:?}");
            assert!(value.starts_with(' ') && !value.trim().is_empty(), "no gap or no value: {row:?}");
        }
        assert!(text.contains("  refused by keyd bad-auth 1\n"), "{text}");
        assert!(text.contains("  drops           data/bad-mac 3\n"), "{text}");
        assert!(text.contains("  not sent        no-key 2\n"), "{text}");
        assert!(text.contains("  reachability    incomplete\n"), "{text}");
    }

    #[test]
    fn device_names_cannot_leave_the_run_directory() {
        for good in ["yavipin0", "home", "a", "tun-1.b_c", "fifteen_chars_x"] {
            assert_eq!(parse_device(good).as_deref(), Ok(good));
        }
        for bad in ["", ".", "..", "../x", "a/b", "sixteen_chars_xx", "sp ace", "é"] {
            assert!(parse_device(bad).is_err(), "{bad:?}");
        }
    }
}
