//! The unit's capability bounding set and `NoNewPrivileges=` against the workers' jail: a
//! process started as root with exactly the unit's bounding set and `no_new_privs` (what
//! systemd gives yavipind, and yavipind passes on to the workers it re-executes) completes
//! the whole jail as netd and as keyd; without any one of the capabilities the jail uses,
//! it fails. So the unit neither forgets a capability the workers need nor grants one for
//! them they do not.
//!
//! The jail needs a single-threaded process, hence this test's own `main` (no libtest
//! threads): the runner re-executes this binary under setpriv(1) for each case, and the
//! child jails itself and reports. Needs root and setpriv; skipped loudly otherwise.
//! Scratch files go to a directory under /run (the jail wants a root-owned path, as the
//! sandbox tests do), removed at the end.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};

use common::{have, is_root, repo, text};
use yavipin_sandbox::{JailSpec, Role};

const CHILD_ROLE: &str = "YAVIPIN_UNIT_JAIL_ROLE";
const CHILD_USER: &str = "YAVIPIN_UNIT_JAIL_USER";
const CHILD_ROOT: &str = "YAVIPIN_UNIT_JAIL_ROOT";
const JAILED: &str = "jailed";

/// The capabilities the workers' jail itself uses (chroot, bounding set, ids); the unit's
/// other capabilities are the parent's.
const WORKER_CAPABILITIES: [&str; 4] = ["CAP_SYS_CHROOT", "CAP_SETPCAP", "CAP_SETUID", "CAP_SETGID"];

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(CHILD_ROLE) {
        return child(&role);
    }
    println!("\nrunning the workers' jail under the unit's capabilities");
    if !is_root() {
        println!("SKIPPED: the jail under the unit's capabilities needs root\n\ntest result: ok (skipped)");
        return ExitCode::SUCCESS;
    }
    if !have("setpriv") {
        println!("SKIPPED: setpriv is not installed (apt-get install util-linux)\n\ntest result: ok (skipped)");
        return ExitCode::SUCCESS;
    }
    let scratch = Scratch::new();
    let result = std::panic::catch_unwind(|| run(&scratch.path));
    drop(scratch);
    if result.is_ok() {
        println!("\ntest result: ok");
        ExitCode::SUCCESS
    } else {
        println!("\ntest result: FAILED");
        ExitCode::FAILURE
    }
}

/// The unit's settings that decide what the daemon may do: its bounding set and whether
/// `no_new_privs` is set.
fn unit_privileges() -> (BTreeSet<String>, bool) {
    let unit = fs::read_to_string(repo().join("packaging/systemd/yavipind@.service")).expect("unit");
    let value =
        |key: &str| unit.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::trim).map(str::to_owned);
    let bounding = value("CapabilityBoundingSet").expect("the unit sets CapabilityBoundingSet=");
    let no_new_privs = value("NoNewPrivileges").is_some_and(|v| v == "yes");
    (bounding.split_whitespace().map(str::to_owned).collect(), no_new_privs)
}

fn run(scratch: &Path) {
    let (bounding, no_new_privs) = unit_privileges();
    assert!(no_new_privs, "the unit sets NoNewPrivileges=yes; this test checks the jail works under it");
    let user = if nix::unistd::User::from_name("yavipin").ok().flatten().is_some() { "yavipin" } else { "nobody" };
    println!("bounding set {bounding:?}, no_new_privs, user {user}");

    for role in ["netd", "keyd"] {
        let out = jail_under(&bounding, role, user, scratch);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success() && stdout.trim() == JAILED,
            "{role}: the jail fails under the unit's capabilities: {stdout}{stderr}"
        );
        println!("test {role}_is_jailed_with_the_units_capabilities ... ok");
    }
    for missing in WORKER_CAPABILITIES {
        assert!(bounding.contains(missing), "{missing} is needed by the workers' jail but not in the unit");
        let fewer: BTreeSet<String> = bounding.iter().filter(|c| *c != missing).cloned().collect();
        for role in ["netd", "keyd"] {
            let out = jail_under(&fewer, role, user, scratch);
            assert!(
                !out.status.success() && text(&out.stderr).contains("jail step"),
                "{role} was jailed without {missing}: is it still needed? {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        println!("test the_jail_fails_without_{} ... ok", missing.to_lowercase());
    }
}

/// Runs this binary as a `role` child under setpriv: root, with `bounding` as the bounding
/// set (hence permitted and effective after exec), no inheritable or ambient capability,
/// and `no_new_privs`.
fn jail_under(bounding: &BTreeSet<String>, role: &str, user: &str, scratch: &Path) -> Output {
    let caps: Vec<String> =
        bounding.iter().map(|c| format!("+{}", c.strip_prefix("CAP_").expect("CAP_ name").to_lowercase())).collect();
    let empty_root = scratch.join(format!("empty-{role}"));
    Command::new("setpriv")
        .arg("--no-new-privs")
        .arg("--inh-caps=-all")
        .arg("--ambient-caps=-all")
        .arg(format!("--bounding-set=-all,{}", caps.join(",")))
        .arg("--")
        .arg(std::env::current_exe().expect("own path"))
        .env_clear()
        .env(CHILD_ROLE, role)
        .env(CHILD_USER, user)
        .env(CHILD_ROOT, &empty_root)
        .output()
        .expect("run setpriv")
}

/// The child: the worker's jail, exactly as a worker calls it, then a report.
fn child(role: &str) -> ExitCode {
    let role = match role {
        "netd" => Role::Netd,
        "keyd" => Role::Keyd,
        other => {
            eprintln!("unknown role {other}");
            return ExitCode::from(2);
        }
    };
    let (Ok(user), Some(root)) = (std::env::var(CHILD_USER), std::env::var_os(CHILD_ROOT)) else {
        eprintln!("{CHILD_USER} and {CHILD_ROOT} must be set");
        return ExitCode::from(2);
    };
    let spec = JailSpec { user, empty_root: PathBuf::from(root), ..JailSpec::new(&[]) };
    match yavipin_sandbox::jail(role, &spec) {
        Ok(_jailed) => {
            println!("{JAILED}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A root-owned 0755 directory under /run for the empty roots, removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let path = PathBuf::from(format!("/run/yavipin-unit-test-{}", std::process::id()));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        Self { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
