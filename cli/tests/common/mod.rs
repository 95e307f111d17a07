//! Helpers shared by the integration tests: where the binaries and the repository are.

// Each test file uses its own subset of these.
#![allow(dead_code, unreachable_pub)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `yavipin` binary under test.
pub fn yavipin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_yavipin"))
}

/// The `yavipind` binary of the same build, next to `yavipin` in the target directory.
/// `cargo test --workspace` (and `./test.sh`) build it; `cargo test -p yavipin-cli` alone
/// does not, since this crate only uses yavipin-parent as a library.
pub fn yavipind() -> PathBuf {
    let path = yavipin().with_file_name("yavipind");
    assert!(
        path.is_file(),
        "{} is missing: build it first with `cargo build -p yavipin-parent` \
         (`cargo test --workspace` and ./test.sh do)",
        path.display()
    );
    path
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_owned()
}

/// Whether the tests run as root (the key file checks need root-owned files).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `yavipin` with `args`.
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(yavipin()).args(args).output().expect("run yavipin")
}

/// Standard output and error as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `program` can be run from PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
