//! `yavipin check`: accepts a valid configuration with a real key file, and refuses bad
//! configurations, key files and accounts with a message naming the file (and, for the
//! configuration, the line, column and key).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{is_root, repo, run, text};

/// A tunnel directory holding a key made by `yavipin genkey`.
struct Tunnel {
    dir: tempfile::TempDir,
    key: PathBuf,
}

impl Tunnel {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("home.key");
        let out = run(["genkey".as_ref(), key.as_os_str()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        Self { dir, key }
    }

    /// docs/example.toml, pointed at this tunnel's key and at an account that exists on
    /// every Debian system (`nobody`), with `edit` applied.
    fn config(&self, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
        let example = fs::read_to_string(repo().join("docs/example.toml")).expect("example");
        assert!(example.contains("key_file = \"/etc/yavipin/home.key\"\n"), "example changed: update this test");
        assert!(example.contains("#user = \"yavipin\"\n"), "example changed: update this test");
        let text = example
            .replace(
                "key_file = \"/etc/yavipin/home.key\"",
                &format!("key_file = {:?}", self.key.display().to_string()),
            )
            .replace("#user = \"yavipin\"", "user = \"nobody\"");
        let path = self.dir.path().join(name);
        fs::write(&path, edit(text)).expect("write config");
        path
    }
}

fn check(config: &Path) -> Output {
    run(["check".as_ref(), config.as_os_str()])
}

/// Asserts that `check` failed with exit status 1 and a message containing every
/// fragment, and returns the message.
fn refused(config: &Path, fragments: &[&str]) -> String {
    let out = check(config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(stderr.starts_with("yavipin check: "), "{stderr}");
    for fragment in fragments {
        assert!(stderr.contains(fragment), "missing {fragment:?} in: {stderr}");
    }
    stderr
}

#[test]
fn accepts_the_example_configuration_with_a_generated_key() {
    let tunnel = Tunnel::new();
    let config = tunnel.config("home.toml", |t| t);
    if !is_root() {
        refused(&config, &["owned by uid", "must be owned by root"]);
        eprintln!("SKIPPED: accepting a valid configuration needs root (the key file must be root-owned)");
        return;
    }
    let out = check(&config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    assert!(stdout.starts_with(&format!("{}: configuration and key file are valid", config.display())), "{stdout}");
    assert!(stdout.contains("device yavipin0") && stdout.contains("initiates towards 192.0.2.10:5555"), "{stdout}");
}

#[test]
fn configuration_errors_name_file_line_column_and_key() {
    let tunnel = Tunnel::new();
    let at = |config: &Path, line: usize, column: usize| format!("{}:{line}:{column}: ", config.display());

    // An unknown key: the error lists the keys that table accepts.
    let config = tunnel.config("unknown.toml", |t| t.replace("#mtu = 1435", "mtuu = 1435"));
    let line = 1 + fs::read_to_string(&config).expect("read").lines().position(|l| l == "mtuu = 1435").expect("line");
    refused(&config, &[&at(&config, line, 1), "unknown field `mtuu`", "expected one of", "`mtu`"]);

    // A value out of range.
    let config = tunnel.config("group.toml", |t| t.replace("#group = 14", "group = 5"));
    let line = 1 + fs::read_to_string(&config).expect("read").lines().position(|l| l == "group = 5").expect("line");
    refused(&config, &[&format!("{}:{line}:", config.display()), "group: 5 is not supported"]);

    // A missing required key.
    let config = tunnel.config("missing.toml", |t| t.replace("addresses = [", "#addresses = ["));
    refused(&config, &[&config.display().to_string(), "missing field `addresses`"]);

    // A syntax error.
    let config = tunnel.config("syntax.toml", |t| t.replace("[session]", "[session"));
    let line = 1 + fs::read_to_string(&config).expect("read").lines().position(|l| l == "[session").expect("line");
    refused(&config, &[&format!("{}:{line}:", config.display()), "unclosed table"]);

    // A configuration that does not exist.
    let missing = tunnel.dir.path().join("nonexistent.toml");
    refused(&missing, &[&format!("{}: ", missing.display()), "No such file"]);
}

#[test]
fn key_file_errors_name_the_key_file_and_the_fix() {
    let tunnel = Tunnel::new();
    let absent = tunnel.dir.path().join("absent.key");
    let config =
        tunnel.config("absent.toml", |t| t.replace(&tunnel.key.display().to_string(), &absent.display().to_string()));
    refused(&config, &[&format!("key file {}", absent.display()), "No such file"]);

    if !is_root() {
        eprintln!("SKIPPED: key file mode and content checks need root (ownership is checked first)");
        return;
    }
    fs::set_permissions(&tunnel.key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = tunnel.config("open.toml", |t| t);
    refused(&config, &[&format!("key file {}", tunnel.key.display()), "mode 0644", "chmod 600"]);

    fs::set_permissions(&tunnel.key, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(&tunnel.key, "not a key\n").expect("write");
    refused(&config, &["64 hexadecimal digits", "yavipin genkey"]);
}

#[test]
fn account_errors_say_how_to_create_the_account() {
    if !is_root() {
        eprintln!("SKIPPED: the account is checked after the key file, which needs root");
        return;
    }
    let tunnel = Tunnel::new();
    let config = tunnel.config("nouser.toml", |t| t.replace("user = \"nobody\"", "user = \"yavipin-no-such\""));
    refused(&config, &[&config.display().to_string(), "\"yavipin-no-such\" does not exist", "useradd --system"]);
    let config = tunnel.config("root.toml", |t| t.replace("user = \"nobody\"", "user = \"root\""));
    refused(&config, &["has uid 0", "unprivileged account"]);
}
