//! The command line itself: help that teaches, usage errors, `yavipin show` failing
//! honestly where no daemon runs, and the shell completions.

mod common;

use common::{run, text};

/// The subcommands, as `yavipin --help` lists them (without clap's own `help`).
fn subcommands() -> Vec<String> {
    let out = run(["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    let list = help.split("Commands:\n").nth(1).expect("a Commands: section");
    list.lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_subcommands_are_genkey_check_show_and_completion() {
    assert_eq!(subcommands(), ["genkey", "check", "show", "completion"]);
}

#[test]
fn every_help_teaches_with_an_example() {
    let out = run(["--help"]);
    let help = text(&out.stdout);
    assert!(help.contains("Example"), "{help}");
    assert!(help.contains("    yavipin genkey /etc/yavipin/home.key"), "{help}");
    for command in subcommands() {
        let out = run([command.as_str(), "--help"]);
        assert!(out.status.success(), "{command}");
        let help = text(&out.stdout);
        assert!(help.contains("Example:\n"), "{command} --help has no example:\n{help}");
        let example = help.split("Example:\n").nth(1).unwrap_or_default();
        assert!(example.lines().any(|l| l.starts_with(&format!("    yavipin {command}"))), "{command}:\n{help}");
        // Hand-wrapped: clap prints long help as it is.
        for line in help.lines() {
            assert!(line.chars().count() <= 100, "{command} --help: line too long: {line}");
        }
        // The short help is one line per item and still names the command's purpose.
        let short = text(&run([command.as_str(), "-h"]).stdout);
        assert!(short.lines().next().is_some_and(|l| l.len() > 20), "{command} -h:\n{short}");
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run::<[&str; 0], &str>([]).status.code(), Some(2), "no command prints the usage");
    assert_eq!(run(["frobnicate"]).status.code(), Some(2));
    assert_eq!(run(["genkey"]).status.code(), Some(2));
    assert_eq!(run(["check"]).status.code(), Some(2));
    assert_eq!(run(["genkey", "a", "b"]).status.code(), Some(2));
}

#[test]
fn show_fails_honestly_without_a_control_socket() {
    // No daemon runs for this device, so there is no socket to connect to.
    for args in [&["show", "yvtest9"][..], &["show", "--json", "yvtest9"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "no made-up output: {}", text(&out.stdout));
        assert_eq!(
            text(&out.stderr),
            "yavipin show: no control socket at /run/yavipin/yvtest9.sock (is yavipind running for yvtest9?)\n"
        );
    }
}

#[test]
fn show_refuses_names_that_leave_the_run_directory_and_mixed_formats() {
    for bad in ["../../etc/x", "a/b", "", "..", "sixteen_chars_xx"] {
        let out = run(["show", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(text(&out.stderr).contains("is not a device name"), "{bad:?}: {}", text(&out.stderr));
    }
    for formats in [["--json", "--short"], ["--json", "--metrics"], ["--short", "--metrics"]] {
        let out = run(["show", formats[0], formats[1]]);
        assert_eq!(out.status.code(), Some(2), "{formats:?}");
        assert!(text(&out.stderr).contains("cannot be used with"), "{formats:?}: {}", text(&out.stderr));
    }
}

#[test]
fn show_without_a_device_shows_every_running_tunnel_even_none() {
    // Whatever runs on this machine, the listing is a JSON array of statuses.
    let out = run(["show", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let running: Vec<yavipin_parent::control::TunnelStatus> =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    if !running.is_empty() {
        eprintln!("SKIPPED: tunnels are running here, so the empty listing is not checked: {running:?}");
        return;
    }
    // None: nothing on standard output, a note on standard error, and no failure.
    for args in [&["show"][..], &["show", "--short"]] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        assert!(text(&out.stderr).contains("no tunnel is running"), "{args:?}: {}", text(&out.stderr));
    }
    assert_eq!(text(&run(["show", "--json"]).stdout), "[]\n");
}
