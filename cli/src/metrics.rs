//! `yavipin show --metrics`: the tunnels' counters in the Prometheus text exposition format
//! (version 0.0.4), for `node_exporter`'s textfile collector or any scraper that reads a file.
//!
//! One metric family per counter or gauge, each with its `# HELP` and `# TYPE` lines and
//! then one sample per tunnel, labelled with the tunnel's `device`; counts by reason carry
//! a `reason` label as well. A family is printed once whatever the number of tunnels, as
//! the format requires. Values the daemon does not know yet (the path MTU before discovery
//! found it, the age of a handshake that never happened) have no sample rather than a
//! made-up one.

use std::fmt::Write as _;

use yavipin_parent::control::TunnelStatus;

use crate::show;

/// What a family measures.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Only goes up, from the daemon's start.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// Where a family's samples come from.
#[derive(Debug, Clone, Copy)]
enum Values {
    /// One value per tunnel; `None` when the daemon does not know it.
    Single(fn(&TunnelStatus) -> Option<u64>),
    /// Values by the label named here: label value and count.
    Labelled(&'static str, fn(&TunnelStatus) -> Vec<(String, u64)>),
}

/// One metric family.
#[derive(Debug)]
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    values: Values,
}

fn reachability(status: &TunnelStatus) -> Vec<(String, u64)> {
    vec![(show::reachability(&status.netd).to_owned(), 1)]
}

fn drops(status: &TunnelStatus) -> Vec<(String, u64)> {
    show::drops(&status.netd)
}

fn refusals(status: &TunnelStatus) -> Vec<(String, u64)> {
    show::refusals(&status.netd)
}

fn keyd_failures(status: &TunnelStatus) -> Vec<(String, u64)> {
    show::keyd_failures(&status.keyd)
}

/// Every family, in output order.
const FAMILIES: &[Family] = &[
    Family {
        name: "yavipin_tunnel_up",
        kind: Kind::Gauge,
        help: "Whether a session with the peer is established (1) or not (0).",
        values: Values::Single(|s| Some(u64::from(s.netd.up))),
    },
    Family {
        name: "yavipin_peer_reachability",
        kind: Kind::Gauge,
        help: "The peer's reachability state (RFC 4861 NUD): 1 for the current state.",
        values: Values::Labelled("state", reachability),
    },
    Family {
        name: "yavipin_last_handshake_age_seconds",
        kind: Kind::Gauge,
        help: "Seconds since the last completed handshake.",
        values: Values::Single(|s| s.netd.last_handshake_secs),
    },
    Family {
        name: "yavipin_path_mtu_bytes",
        kind: Kind::Gauge,
        help: "Largest datagram known to reach the peer (path-MTU discovery).",
        values: Values::Single(|s| s.netd.path_mtu.map(u64::from)),
    },
    Family {
        name: "yavipin_received_packets_total",
        kind: Kind::Counter,
        help: "Inner packets received from the peer.",
        values: Values::Single(|s| Some(s.netd.received.packets)),
    },
    Family {
        name: "yavipin_received_bytes_total",
        kind: Kind::Counter,
        help: "Inner bytes received from the peer.",
        values: Values::Single(|s| Some(s.netd.received.bytes)),
    },
    Family {
        name: "yavipin_sent_packets_total",
        kind: Kind::Counter,
        help: "Inner packets sent to the peer.",
        values: Values::Single(|s| Some(s.netd.sent.packets)),
    },
    Family {
        name: "yavipin_sent_bytes_total",
        kind: Kind::Counter,
        help: "Inner bytes sent to the peer.",
        values: Values::Single(|s| Some(s.netd.sent.bytes)),
    },
    Family {
        name: "yavipin_compressed_packets_total",
        kind: Kind::Counter,
        help: "Packets sent compressed.",
        values: Values::Single(|s| Some(s.netd.compressed.packets)),
    },
    Family {
        name: "yavipin_compression_saved_bytes_total",
        kind: Kind::Counter,
        help: "Bytes compression saved on the packets sent.",
        values: Values::Single(|s| Some(s.netd.compressed.bytes)),
    },
    Family {
        name: "yavipin_dropped_packets_total",
        kind: Kind::Counter,
        help: "Received datagrams dropped, by reason.",
        values: Values::Labelled("reason", drops),
    },
    Family {
        name: "yavipin_unsent_packets_total",
        kind: Kind::Counter,
        help: "Packets from the tun device not sent, by reason.",
        values: Values::Labelled("reason", refusals),
    },
    Family {
        name: "yavipin_handshakes_initiated_total",
        kind: Kind::Counter,
        help: "Sessions completed as initiator.",
        values: Values::Single(|s| Some(s.netd.initiated)),
    },
    Family {
        name: "yavipin_handshakes_responded_total",
        kind: Kind::Counter,
        help: "Sessions confirmed as responder.",
        values: Values::Single(|s| Some(s.netd.responded)),
    },
    Family {
        name: "yavipin_cookie_replies_total",
        kind: Kind::Counter,
        help: "Cookie replies sent to handshake requests without a valid cookie.",
        values: Values::Single(|s| Some(s.netd.cookie_replies)),
    },
    Family {
        name: "yavipin_keyd_sessions_total",
        kind: Kind::Counter,
        help: "Sessions keyd established.",
        values: Values::Single(|s| Some(s.keyd.sessions)),
    },
    Family {
        name: "yavipin_keyd_exponentiations_total",
        kind: Kind::Counter,
        help: "Modular exponentiations keyd performed.",
        values: Values::Single(|s| Some(s.keyd.modexps)),
    },
    Family {
        name: "yavipin_keyd_keys_handed_out_total",
        kind: Kind::Counter,
        help: "Send and receive keys keyd handed to netd.",
        values: Values::Single(|s| Some(s.keyd.keys_handed_out)),
    },
    Family {
        name: "yavipin_keyd_refused_total",
        kind: Kind::Counter,
        help: "Handshake messages keyd refused, by reason.",
        values: Values::Labelled("reason", keyd_failures),
    },
];

/// A label value as the format writes it between double quotes.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The tunnels' counters, every family once.
pub(crate) fn render(statuses: &[TunnelStatus]) -> String {
    let mut out = String::new();
    for family in FAMILIES {
        let kind = match family.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        for status in statuses {
            let device = escape_label(&status.device);
            match family.values {
                Values::Single(value) => {
                    if let Some(value) = value(status) {
                        let _ = writeln!(out, "{}{{device=\"{device}\"}} {value}", family.name);
                    }
                }
                Values::Labelled(label, values) => {
                    for (label_value, value) in values(status) {
                        let label_value = escape_label(&label_value);
                        let _ =
                            writeln!(out, "{}{{device=\"{device}\",{label}=\"{label_value}\"}} {value}", family.name);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use yavipin_ipc::FailReason;
    use yavipin_ipc::control::{Count, KeydStatus, NetdStatus};
    use yavipin_ipc::reasons::{DatagramDrop, DropReason, HandshakeDrop, NudState, SealError};
    use yavipin_tests::exposition::{has_help, parse, promtool, promtool_check, value};

    fn status(device: &str) -> TunnelStatus {
        TunnelStatus {
            device: device.into(),
            listen: "[::]:5555".parse().expect("address"),
            netd: NetdStatus {
                up: true,
                reachability: NudState::Reachable,
                path_mtu: Some(1500),
                sent: Count { packets: 10, bytes: 1000 },
                received: Count { packets: 9, bytes: 900 },
                drops: vec![
                    (DatagramDrop::Data(DropReason::BadMac), 3),
                    (DatagramDrop::Handshake(HandshakeDrop::BadCookie), 4),
                ],
                ..NetdStatus::default()
            },
            keyd: KeydStatus {
                sessions: 1,
                modexps: 2,
                failures: vec![(FailReason::BadAuth, 1)],
                ..KeydStatus::default()
            },
        }
    }

    #[test]
    fn every_family_is_documented_typed_and_printed_once_for_all_tunnels() {
        let text = render(&[status("home0"), status("work0")]);
        let scrape = parse(&text);
        for family in FAMILIES {
            assert_eq!(
                text.lines().filter(|l| l.starts_with(&format!("# TYPE {} ", family.name))).count(),
                1,
                "{}",
                family.name
            );
            assert!(has_help(&scrape, family.name), "no HELP for {}", family.name);
            assert!(family.name.starts_with("yavipin_"), "{}", family.name);
            assert_eq!(family.name.ends_with("_total"), matches!(family.kind, Kind::Counter), "{}", family.name);
        }
        // A family's samples follow its TYPE line, before the next family begins.
        let mut current = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split_whitespace().next().expect("name");
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&format!("{current}{{")), "{line} outside its family {current}");
            }
        }
        for device in ["home0", "work0"] {
            let d = ("device", device);
            assert_eq!(value(&scrape, "yavipin_tunnel_up", &[d]), Some(1.0));
            assert_eq!(value(&scrape, "yavipin_peer_reachability", &[d, ("state", "reachable")]), Some(1.0));
            assert_eq!(value(&scrape, "yavipin_sent_packets_total", &[d]), Some(10.0));
            assert_eq!(value(&scrape, "yavipin_received_bytes_total", &[d]), Some(900.0));
            assert_eq!(value(&scrape, "yavipin_path_mtu_bytes", &[d]), Some(1500.0));
            assert_eq!(value(&scrape, "yavipin_dropped_packets_total", &[d, ("reason", "data/bad-mac")]), Some(3.0));
            assert_eq!(
                value(&scrape, "yavipin_dropped_packets_total", &[d, ("reason", "handshake/bad-cookie")]),
                Some(4.0)
            );
            assert_eq!(value(&scrape, "yavipin_keyd_refused_total", &[d, ("reason", "bad-auth")]), Some(1.0));
            assert_eq!(value(&scrape, "yavipin_keyd_exponentiations_total", &[d]), Some(2.0));
            // Never happened: no sample, rather than a made-up age.
            assert_eq!(value(&scrape, "yavipin_last_handshake_age_seconds", &[d]), None);
        }
    }

    #[test]
    fn promtool_accepts_the_output_without_a_lint_warning() {
        let Some(promtool) = promtool() else {
            eprintln!("SKIPPED: promtool not found (set PROMTOOL; .ci/run shows how CI gets it)");
            return;
        };
        let mut all = status("home0");
        all.netd.last_handshake_secs = Some(3);
        all.netd.refused = vec![(SealError::NoKey, 2)];
        all.netd.compressed = Count { packets: 1, bytes: 10 };
        let text = render(&[all, status("work0")]);
        assert!(promtool_check(&promtool, &text).is_ok(), "{:?}", promtool_check(&promtool, &text));
        // And it does object to a broken exposition or a badly named counter, so the check
        // above means something.
        let broken = text.replacen("{device=\"home0\"}", "{device=\"home0\"", 1);
        assert!(promtool_check(&promtool, &broken).is_err(), "promtool took an unclosed label set");
        let misnamed = text.replace("yavipin_sent_bytes_total", "yavipin_sent_bytes");
        let said = promtool_check(&promtool, &misnamed).expect_err("promtool took a counter without _total");
        assert!(said.contains("_total"), "{said}");
    }

    #[test]
    fn no_tunnel_gives_the_families_without_samples() {
        let text = render(&[]);
        assert_eq!(text.lines().count(), 2 * FAMILIES.len(), "{text}");
        assert!(parse(&text).samples.is_empty());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let text = render(&[status("home0")]);
        assert!(
            text.contains("yavipin_dropped_packets_total{device=\"home0\",reason=\"handshake/bad-cookie\"} 4\n"),
            "{text}"
        );
    }
}
