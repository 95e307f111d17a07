//! The empty root's rules, checked in-process on `ensure_empty_root` (no privilege change).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use nix::sys::stat::{Mode, umask};
use yavipin_sandbox::{EmptyRootError, ensure_empty_root};

use crate::full::TestDir;
use crate::{Outcome, Test, is_root, need_root, test, with};

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

pub(crate) fn tests() -> Vec<Test> {
    vec![
        test("empty_root_relative_path_is_refused", empty_root_relative_path_is_refused),
        test("empty_root_not_owned_by_root_is_refused", empty_root_not_owned_by_root_is_refused),
        test("empty_root_missing_is_created_0755_root_root", empty_root_missing_is_created_0755_root_root),
        test("empty_root_not_empty_is_refused", empty_root_not_empty_is_refused),
        test("empty_root_group_or_world_writable_is_refused", empty_root_group_or_world_writable_is_refused),
        test("empty_root_with_a_writable_ancestor_is_refused", empty_root_with_a_writable_ancestor_is_refused),
        test("empty_root_that_is_a_file_is_refused", empty_root_that_is_a_file_is_refused),
        test("empty_root_symlink_is_resolved_and_checked", empty_root_symlink_is_resolved_and_checked),
    ]
}

fn empty_root_relative_path_is_refused() -> Outcome {
    let err = ensure_empty_root(Path::new("run/yavipin/empty")).expect_err("relative");
    assert!(matches!(err, EmptyRootError::NotAbsolute(_)), "{err}");
    Outcome::Passed
}

fn empty_root_not_owned_by_root_is_refused() -> Outcome {
    let (base, dir) = if is_root() {
        let base = TestDir::new();
        let dir = base.path.join("nobody");
        fs::create_dir(&dir).expect("mkdir");
        chmod(&dir, 0o755);
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
        (Some(base), dir)
    } else {
        // Not root: any directory this process creates is its own.
        let dir = std::env::temp_dir().join(format!("yavipin-sandbox-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        (None, dir)
    };
    let err = ensure_empty_root(&dir).expect_err("not root-owned");
    if base.is_none() {
        let _ = fs::remove_dir(&dir);
    }
    assert!(matches!(err, EmptyRootError::NotRootOwned { .. }), "{err}");
    Outcome::Passed
}

fn empty_root_missing_is_created_0755_root_root() -> Outcome {
    with(need_root(), |()| {
        let base = TestDir::new();
        let dir = base.path.join("missing/parent/empty");
        // A strict umask must not leak into the directory's mode.
        let old = umask(Mode::from_bits_truncate(0o077));
        let result = ensure_empty_root(&dir);
        umask(old);
        let root = result.expect("created and accepted");
        assert_eq!(root.path(), dir);
        let meta = fs::metadata(&dir).expect("exists");
        assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o755, 0, 0));
        // An existing, good directory is accepted as it is.
        ensure_empty_root(&dir).expect("accepted again");
    })
}

fn empty_root_not_empty_is_refused() -> Outcome {
    with(need_root(), |()| {
        let base = TestDir::new();
        let dir = base.path.join("full");
        fs::create_dir(&dir).expect("mkdir");
        chmod(&dir, 0o755);
        fs::create_dir(dir.join("sub")).expect("mkdir sub");
        let err = ensure_empty_root(&dir).expect_err("not empty");
        assert!(matches!(&err, EmptyRootError::NotEmpty { entry, .. } if entry == "sub"), "{err}");
        fs::remove_dir(dir.join("sub")).expect("rmdir");
        fs::write(dir.join(".hidden"), b"").expect("write");
        let err = ensure_empty_root(&dir).expect_err("not empty");
        assert!(matches!(err, EmptyRootError::NotEmpty { .. }), "{err}");
    })
}

fn empty_root_group_or_world_writable_is_refused() -> Outcome {
    with(need_root(), |()| {
        let base = TestDir::new();
        let dir = base.path.join("writable");
        fs::create_dir(&dir).expect("mkdir");
        for mode in [0o775, 0o757, 0o1777] {
            chmod(&dir, mode);
            let err = ensure_empty_root(&dir).expect_err("writable");
            assert!(matches!(err, EmptyRootError::Writable { .. }), "{mode:o}: {err}");
        }
    })
}

fn empty_root_with_a_writable_ancestor_is_refused() -> Outcome {
    with(need_root(), |()| {
        let base = TestDir::new();
        let parent = base.path.join("open");
        let dir = parent.join("empty");
        fs::create_dir_all(&dir).expect("mkdir");
        chmod(&dir, 0o755);
        chmod(&parent, 0o777);
        let err = ensure_empty_root(&dir).expect_err("writable parent");
        assert!(matches!(&err, EmptyRootError::Writable { path, .. } if *path == parent), "{err}");
    })
}

fn empty_root_that_is_a_file_is_refused() -> Outcome {
    with(need_root(), |()| {
        let base = TestDir::new();
        let file = base.path.join("file");
        fs::write(&file, b"").expect("write");
        chmod(&file, 0o644);
        let err = ensure_empty_root(&file).expect_err("a file");
        assert!(matches!(err, EmptyRootError::NotADirectory(_)), "{err}");
    })
}

fn empty_root_symlink_is_resolved_and_checked() -> Outcome {
    with(need_root(), |()| {
        let base = TestDir::new();
        let good = base.path.join("good");
        fs::create_dir(&good).expect("mkdir");
        chmod(&good, 0o755);
        let link = base.path.join("link");
        symlink(&good, &link).expect("symlink");
        let root = ensure_empty_root(&link).expect("a link to a good directory");
        assert_eq!(root.path(), good, "the canonical path is used");
        let bad = base.path.join("bad");
        fs::create_dir(&bad).expect("mkdir");
        chmod(&bad, 0o777);
        let link = base.path.join("badlink");
        symlink(&bad, &link).expect("symlink");
        let err = ensure_empty_root(&link).expect_err("a link to a writable directory");
        assert!(matches!(err, EmptyRootError::Writable { .. }), "{err}");
    })
}
