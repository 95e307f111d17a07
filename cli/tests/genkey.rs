//! `yavipin genkey`: format, mode, refusal to overwrite, randomness, and acceptance by the
//! daemon's own key file loader.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Output};

use common::{is_root, run, text, yavipin};

fn is_key_text(bytes: &[u8]) -> bool {
    bytes.len() == 65
        && bytes[64] == b'\n'
        && bytes[..64].iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Runs `yavipin genkey file` under `umask`, through the shell (the test process's own
/// umask is shared by every test thread, so it is not changed here).
fn genkey_with_umask(umask: &str, file: &Path) -> Output {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" genkey \"$1\""))
        .arg(yavipin())
        .arg(file)
        .output()
        .expect("run sh")
}

#[test]
fn writes_64_lowercase_hex_digits_and_a_newline_with_mode_0600_whatever_the_umask() {
    let dir = tempfile::tempdir().expect("tempdir");
    for umask in ["000", "022", "077", "277", "777"] {
        let file = dir.path().join(format!("umask-{umask}.key"));
        let out = genkey_with_umask(umask, &file);
        assert!(out.status.success(), "umask {umask}: {}", text(&out.stderr));
        let content = fs::read(&file).expect("read key");
        assert!(is_key_text(&content), "umask {umask}: {:?}", text(&content));
        let mode = fs::symlink_metadata(&file).expect("stat").mode() & 0o7777;
        assert_eq!(mode, 0o600, "umask {umask}: mode {mode:04o}");
        assert!(text(&out.stdout).contains("new 256-bit key written"), "{}", text(&out.stdout));
    }
}

#[test]
fn dash_writes_the_key_to_standard_output_only() {
    let out = run(["genkey", "-"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(is_key_text(&out.stdout), "{:?}", text(&out.stdout));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn two_keys_differ() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.key"), dir.path().join("b.key"));
    assert!(run([&a]).status.code() == Some(2), "a bare path is not a command");
    assert!(run(["genkey".as_ref(), a.as_os_str()]).status.success());
    assert!(run(["genkey".as_ref(), b.as_os_str()]).status.success());
    let (ka, kb) = (fs::read(&a).expect("a"), fs::read(&b).expect("b"));
    assert_ne!(ka, kb);
    let (sa, sb) = (run(["genkey", "-"]).stdout, run(["genkey", "-"]).stdout);
    assert_ne!(sa, sb);
    assert!(sa != ka && sa != kb);
}

#[test]
fn refuses_to_overwrite_and_leaves_the_existing_file_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("home.key");
    fs::write(&file, b"precious\n").expect("write");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).expect("chmod");
    let before = fs::symlink_metadata(&file).expect("stat");

    let out = run(["genkey".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("yavipin genkey: "), "{stderr}");
    assert!(stderr.contains(&format!("{} already exists", file.display())), "{stderr}");
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert!(out.stdout.is_empty());

    assert_eq!(fs::read(&file).expect("read"), b"precious\n");
    let after = fs::symlink_metadata(&file).expect("stat");
    assert_eq!((after.mode(), after.ino(), after.mtime()), (before.mode(), before.ino(), before.mtime()));
}

#[test]
fn never_writes_through_a_symbolic_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("elsewhere");
    let link = dir.path().join("home.key");
    symlink(&target, &link).expect("symlink");
    let out = run(["genkey".as_ref(), link.as_os_str()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("already exists"), "{}", text(&out.stderr));
    assert!(!target.exists(), "the dangling link's target must not be created");
    assert!(fs::symlink_metadata(&link).expect("link").file_type().is_symlink());
}

#[test]
fn a_missing_directory_is_named_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("no-such-dir").join("home.key");
    let out = run(["genkey".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("cannot create {}", file.display())), "{stderr}");
    assert!(stderr.contains("does the directory exist?"), "{stderr}");
    assert!(!file.exists());
}

#[test]
fn the_daemon_accepts_the_generated_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("home.key");
    let out = run(["genkey".as_ref(), file.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let content = fs::read(&file).expect("read");
    let parsed = yavipin_parent::keyfile::parse_psk(&content).expect("the daemon's parser accepts the content");
    if !is_root() {
        assert!(text(&out.stderr).contains("accepts only a key file owned by root"), "{}", text(&out.stderr));
        eprintln!("SKIPPED: loading the key file with load_psk needs root (it must be root-owned)");
        return;
    }
    assert!(out.stderr.is_empty(), "no ownership note for root: {}", text(&out.stderr));
    let loaded = yavipin_parent::keyfile::load_psk(&file).expect("load_psk accepts the key file");
    assert_eq!(*loaded, *parsed);
}
