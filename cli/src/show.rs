//! `yavipin show`: the state of running tunnels, asked from each yavipind over its control
//! socket (`/run/yavipin/DEVICE.sock`, root and group `yavipin` only). One request,
//! `status`; one JSON answer per tunnel, printed as text (a block, or with `--short` a
//! line, per tunnel), as JSON, or as Prometheus metrics ([`crate::metrics`]).
//!
//! Without a device every tunnel is shown: the sockets found in the run directory. A socket
//! nobody answers on belongs to no running tunnel (a daemon that stopped, or crashed and
//! left its socket behind) and is passed over, as is a daemon that stops while asked.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use yavipin_ipc::control::{KeydStatus, NetdStatus};
use yavipin_parent::control::{ErrorReply, RUN_DIR, RequestError, STATUS_REQUEST, TunnelStatus, socket_path};

/// An example device name, for messages (the configuration's default device name).
const EXAMPLE_DEVICE: &str = "yavipin0";

/// Longest answer accepted.
const MAX_REPLY: u64 = 1 << 20;

/// How the state is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// A block of labelled lines per tunnel, in the manner of `wg show`.
    Text,
    /// One line per tunnel.
    Short,
    /// The daemon's JSON object; an array of them when every tunnel is shown.
    Json,
    /// The Prometheus text exposition format.
    Metrics,
}

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
    /// The daemon closed the connection without answering: it is stopping.
    #[error("yavipind for {device} stopped before it answered")]
    Gone {
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
    /// Any other failure to connect or talk, or to list the run directory.
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
    /// Some of the running tunnels could not be shown (each was reported already).
    #[error("{failed} of {running} tunnels could not be shown")]
    Incomplete {
        /// Tunnels that failed.
        failed: usize,
        /// Tunnels found running.
        running: usize,
    },
}

impl ShowError {
    /// Whether the error only says that no daemon runs for the device (any more).
    fn is_not_running(&self) -> bool {
        matches!(self, Self::NoSocket { .. } | Self::Gone { .. })
    }
}

/// Checks a device name with the configuration's rules (1 to 15 characters: letters,
/// digits, `_`, `.`, `-`; not `.` or `..`), which also keeps the socket path inside
/// the run directory.
pub(crate) fn parse_device(name: &str) -> Result<String, String> {
    let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if name.is_empty() || name.len() > 15 || !valid_chars || name == "." || name == ".." {
        return Err(format!(
            "`{name}` is not a device name (1 to 15 characters: letters, digits, `_`, `.`, `-`), \
             e.g. {EXAMPLE_DEVICE}"
        ));
    }
    Ok(name.to_owned())
}

/// Shows `device`'s tunnel, or every running tunnel when `device` is `None`.
pub(crate) fn run(device: Option<&str>, format: Format) -> Result<(), ShowError> {
    let Some(device) = device else {
        return run_all(Path::new(RUN_DIR), format);
    };
    let (status, reply) = query(device, &socket_path(device))?;
    let out = match format {
        Format::Json => reply,
        Format::Text | Format::Short | Format::Metrics => render(format, &[status]),
    };
    print!("{out}");
    Ok(())
}

/// Shows every tunnel whose control socket is in `run_dir`.
fn run_all(run_dir: &Path, format: Format) -> Result<(), ShowError> {
    let devices = devices_in(run_dir).map_err(|source| ShowError::Io { path: run_dir.to_owned(), source })?;
    let mut statuses = Vec::new();
    let mut failed = 0;
    for device in &devices {
        match query(device, &run_dir.join(format!("{device}.sock"))) {
            Ok((status, _)) => statuses.push(status),
            Err(e) if e.is_not_running() => {}
            Err(e) => {
                eprintln!("yavipin show: {device}: {e}");
                failed += 1;
            }
        }
    }
    if statuses.is_empty() && failed == 0 && format != Format::Json {
        eprintln!("yavipin show: no tunnel is running (no control socket answers in {})", run_dir.display());
    }
    print!("{}", render(format, &statuses));
    if failed > 0 {
        return Err(ShowError::Incomplete { failed, running: statuses.len() + failed });
    }
    Ok(())
}

/// The devices that have a control socket in `run_dir`, sorted. A missing directory means
/// no tunnel has run since boot. Files that are not sockets, or whose names are not device
/// names, are no control sockets.
fn devices_in(run_dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(run_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut devices = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(device) = name.to_str().and_then(|n| n.strip_suffix(".sock")) else { continue };
        if entry.file_type()?.is_socket() && parse_device(device).is_ok() {
            devices.push(device.to_owned());
        }
    }
    devices.sort();
    Ok(devices)
}

/// Asks the daemon listening on `path` for `device`'s state: the status and the answer as
/// received.
fn query(device: &str, path: &Path) -> Result<(TunnelStatus, String), ShowError> {
    let path = path.to_owned();
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
    let gone = || ShowError::Gone { device: device.to_owned() };
    let io_error = |source: io::Error| match source.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => gone(),
        _ => ShowError::Io { path: path.clone(), source },
    };
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(io_error)?;
    stream.write_all(STATUS_REQUEST).map_err(io_error)?;
    let mut reply = String::new();
    stream.take(MAX_REPLY).read_to_string(&mut reply).map_err(io_error)?;
    if reply.is_empty() {
        return Err(gone());
    }
    if let Ok(status) = serde_json::from_str::<TunnelStatus>(&reply) {
        return Ok((status, reply));
    }
    match serde_json::from_str::<ErrorReply>(&reply) {
        Ok(error) => Err(ShowError::Daemon(error.error)),
        Err(e) => Err(ShowError::BadReply { path, detail: e.to_string() }),
    }
}

/// `statuses` as text, short lines, a JSON array or metrics.
fn render(format: Format, statuses: &[TunnelStatus]) -> String {
    match format {
        Format::Text => statuses.iter().map(render_block).collect::<Vec<_>>().join("\n"),
        Format::Short => statuses.iter().map(render_line).collect(),
        Format::Metrics => crate::metrics::render(statuses),
        Format::Json => serde_json::to_string(statuses).expect("a status always serializes") + "\n",
    }
}

// ---- The fields whose types are closed sets: read through these functions only ----

/// The peer's reachability (NUD state), when liveness tracking knows it.
pub(crate) fn reachability(netd: &NetdStatus) -> &'static str {
    netd.reachability.name()
}

/// Received datagrams dropped: reason and count, for the reasons that occurred. The reasons
/// get their names here, where they are shown.
pub(crate) fn drops(netd: &NetdStatus) -> Vec<(String, u64)> {
    netd.drops.iter().map(|(reason, n)| (reason.to_string(), *n)).collect()
}

/// Tun packets not sent: reason and count.
pub(crate) fn refusals(netd: &NetdStatus) -> Vec<(String, u64)> {
    netd.refused.iter().map(|(reason, n)| (reason.name().to_owned(), *n)).collect()
}

/// Handshake messages keyd refused: reason and count.
pub(crate) fn keyd_failures(keyd: &KeydStatus) -> Vec<(String, u64)> {
    keyd.failures.iter().map(|(reason, n)| (reason.name().to_owned(), *n)).collect()
}

// ---- Text ----

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

fn or_unknown(value: Option<String>) -> String {
    value.unwrap_or_else(|| "unknown".into())
}

fn peer(netd: &NetdStatus) -> String {
    netd.peer.map_or_else(|| "not known yet".into(), |p| p.to_string())
}

fn tunnel_state(netd: &NetdStatus) -> &'static str {
    if netd.up { "up" } else { "down" }
}

fn last_handshake(netd: &NetdStatus) -> String {
    or_unknown(netd.last_handshake_secs.map(|s| format!("{s} s ago")))
}

/// Width of the label column of [`render_block`]: the longest label, "refused by keyd".
const LABEL_WIDTH: usize = 15;

/// One tunnel's state as a block of labelled lines, in the manner of `wg show`.
fn render_block(status: &TunnelStatus) -> String {
    let netd = &status.netd;
    let keyd = &status.keyd;
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "  {label:<LABEL_WIDTH$} {value}");
    };
    let header = format!("interface: {}\n", status.device);
    line("listen", status.listen.to_string());
    line("peer", peer(netd));
    line("tunnel", tunnel_state(netd).into());
    line("reachability", reachability(netd).to_owned());
    line("last handshake", last_handshake(netd));
    line(
        "key epoch",
        format!(
            "send {}, receive {}",
            or_unknown(netd.send_epoch.map(|e| e.to_string())),
            if netd.recv_epochs.is_empty() {
                "none".to_owned()
            } else {
                netd.recv_epochs.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
            }
        ),
    );
    line("path mtu", or_unknown(netd.path_mtu.map(|m| m.to_string())));
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
    let list = |items: &[(String, u64)]| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.iter().map(|(name, n)| format!("{name} {n}")).collect::<Vec<_>>().join(", ")
        }
    };
    line("drops", list(&drops(netd)));
    line("not sent", list(&refusals(netd)));
    line(
        "handshakes",
        format!(
            "{} initiated, {} responded, {} cookie replies; keyd: {} sessions, {} exponentiations, {} keys handed out",
            netd.initiated, netd.responded, netd.cookie_replies, keyd.sessions, keyd.modexps, keyd.keys_handed_out
        ),
    );
    line("refused by keyd", list(&keyd_failures(keyd)));
    header + &out
}

/// One tunnel's state on one line: device, state, peer, reachability, last handshake,
/// traffic each way and the number of drops.
fn render_line(status: &TunnelStatus) -> String {
    let netd = &status.netd;
    let dropped: u64 = drops(netd).iter().map(|(_, n)| n).sum();
    format!(
        "{:<15} {:<4} peer {}, {}, handshake {}, received {}, sent {}, dropped {dropped}\n",
        status.device,
        tunnel_state(netd),
        peer(netd),
        reachability(netd),
        last_handshake(netd),
        bytes(netd.received.bytes),
        bytes(netd.sent.bytes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use yavipin_ipc::FailReason;
    use yavipin_ipc::reasons::{DatagramDrop, DropReason, NudState, SealError};

    fn status(device: &str) -> TunnelStatus {
        TunnelStatus {
            device: device.into(),
            listen: "0.0.0.0:5555".parse().expect("address"),
            netd: NetdStatus {
                up: true,
                peer: Some("192.0.2.7:5555".parse().expect("address")),
                reachability: NudState::Reachable,
                last_handshake_secs: Some(12),
                drops: vec![(DatagramDrop::Data(DropReason::BadMac), 3), (DatagramDrop::Data(DropReason::Replayed), 2)],
                refused: vec![(SealError::NoKey, 2)],
                ..NetdStatus::default()
            },
            keyd: KeydStatus { failures: vec![(FailReason::BadAuth, 1)], ..KeydStatus::default() },
        }
    }

    #[test]
    fn every_label_is_set_apart_from_its_value() {
        let text = render_block(&status("yavipin0"));
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(rows.len(), 13, "{text}");
        for row in rows {
            let (label, value) = row.split_at(2 + LABEL_WIDTH);
            assert!(label.starts_with("  ") && label.len() == 2 + LABEL_WIDTH, "{row:?}");
            assert!(value.starts_with(' ') && !value.trim().is_empty(), "no gap or no value: {row:?}");
        }
        assert!(text.contains("  refused by keyd bad-auth 1\n"), "{text}");
        assert!(text.contains("  drops           data/bad-mac 3, data/replayed 2\n"), "{text}");
        assert!(text.contains("  not sent        no-key 2\n"), "{text}");
        assert!(text.contains("  reachability    reachable\n"), "{text}");
    }

    #[test]
    fn blocks_are_separated_by_a_blank_line_and_short_lines_are_one_per_tunnel() {
        let both = [status("home0"), status("work0")];
        let text = render(Format::Text, &both);
        assert_eq!(text, render_block(&both[0]) + "\n" + &render_block(&both[1]));
        let short = render(Format::Short, &both);
        assert_eq!(short.lines().count(), 2, "{short}");
        assert_eq!(
            short.lines().next(),
            Some(
                "home0           up   peer 192.0.2.7:5555, reachable, handshake 12 s ago, \
                 received 0 B, sent 0 B, dropped 5"
            )
        );
        let down = TunnelStatus { netd: NetdStatus::default(), ..status("x") };
        assert_eq!(
            render_line(&down),
            "x               down peer not known yet, incomplete, handshake unknown, \
             received 0 B, sent 0 B, dropped 0\n"
        );
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

    #[test]
    fn only_sockets_with_device_names_are_control_sockets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let _b = UnixListener::bind(d.join("b0.sock")).expect("bind");
        let _a = UnixListener::bind(d.join("a0.sock")).expect("bind");
        let _long = UnixListener::bind(d.join("sixteen_chars_xx.sock")).expect("bind");
        let _other = UnixListener::bind(d.join("c0.socket")).expect("bind");
        std::fs::write(d.join("file0.sock"), "").expect("write");
        std::fs::create_dir(d.join("empty")).expect("mkdir");
        assert_eq!(devices_in(d).expect("list"), ["a0", "b0"]);
        assert_eq!(devices_in(&d.join("absent")).expect("a missing directory"), Vec::<String>::new());
    }

    #[test]
    fn sockets_nobody_answers_on_are_no_running_tunnels() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Bound, then closed: the file stays, as after a crash.
        drop(UnixListener::bind(dir.path().join("stale0.sock")).expect("bind"));
        assert_eq!(devices_in(dir.path()).expect("list"), ["stale0"]);
        let error = query("stale0", &dir.path().join("stale0.sock")).expect_err("nobody answers");
        assert!(error.is_not_running(), "{error}");
        // A daemon that accepts and closes without answering is stopping.
        let listener = UnixListener::bind(dir.path().join("closing0.sock")).expect("bind");
        let closer = std::thread::spawn(move || drop(listener.accept().expect("accept")));
        let error = query("closing0", &dir.path().join("closing0.sock")).expect_err("no answer");
        closer.join().expect("join");
        assert!(matches!(error, ShowError::Gone { .. }), "{error}");
        // Either way, showing every tunnel passes over them and succeeds.
        run_all(dir.path(), Format::Short).expect("nothing is running, which is no error");
    }

    #[test]
    fn a_tunnel_that_answers_nonsense_fails_the_listing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = UnixListener::bind(dir.path().join("odd0.sock")).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut client, _) = listener.accept().expect("accept");
            let mut request = [0u8; STATUS_REQUEST.len()];
            client.read_exact(&mut request).expect("request");
            client.write_all(b"{\"no\": \"status\"}\n").expect("answer");
        });
        let error = run_all(dir.path(), Format::Json).expect_err("a bad answer");
        server.join().expect("join");
        assert!(matches!(error, ShowError::Incomplete { failed: 1, running: 1 }), "{error}");
    }
}
