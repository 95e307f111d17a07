//! Ownership and mode checks for the files the daemon reads or runs as root: the
//! configuration, the key file and the up and down scripts.
//!
//! In the manner of OpenSSH's `StrictModes`: the file, after symbolic links are resolved,
//! and every directory above it up to `/` must be owned by root and not writable by group or
//! others, because whoever could change any of them could change what root reads or runs.
//! A directory with the sticky bit (such as `/tmp`) owned by root is accepted although it is
//! writable by all: nobody but root can rename or remove root's entries in it. A script must
//! also be a regular, executable file. Every refusal names the file, the offending path and
//! the command that fixes it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a file is for, as errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The configuration file.
    Config,
    /// The pre-shared key file.
    KeyFile,
    /// The up script.
    UpScript,
    /// The down script.
    DownScript,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Config => "configuration file",
            Self::KeyFile => "key file",
            Self::UpScript => "up script",
            Self::DownScript => "down script",
        }
    }

    fn is_script(self) -> bool {
        matches!(self, Self::UpScript | Self::DownScript)
    }
}

/// Why a file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It, or a directory above it, cannot be examined.
    #[error("{} {}: {source}", kind.name(), file.display())]
    Unreadable {
        /// What the file is for.
        kind: Kind,
        /// The file.
        file: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Not a regular file.
    #[error("{} {}: not a regular file", kind.name(), file.display())]
    NotRegular {
        /// What the file is for.
        kind: Kind,
        /// The file.
        file: PathBuf,
    },
    /// The file or a directory above it belongs to someone else than root.
    #[error(
        "{} {}: {} is owned by uid {uid}, must be owned by root (chown root {})",
        kind.name(), file.display(), path.display(), path.display()
    )]
    NotRootOwned {
        /// What the file is for.
        kind: Kind,
        /// The file.
        file: PathBuf,
        /// The file itself or the directory at fault.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// The file or a directory above it is writable by group or others.
    #[error(
        "{} {}: {} has mode {mode:04o}, writable by group or others (chmod go-w {})",
        kind.name(), file.display(), path.display(), path.display()
    )]
    Writable {
        /// What the file is for.
        kind: Kind,
        /// The file.
        file: PathBuf,
        /// The file itself or the directory at fault.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A script its owner cannot execute.
    #[error("{} {}: not executable (chmod 755 {})", kind.name(), file.display(), file.display())]
    NotExecutable {
        /// What the file is for.
        kind: Kind,
        /// The file.
        file: PathBuf,
    },
}

/// Checks `file`, used as `kind`, and every directory above it.
pub fn check(kind: Kind, file: &Path) -> Result<(), FileError> {
    let unreadable = |source| FileError::Unreadable { kind, file: file.to_owned(), source };
    let real = std::fs::canonicalize(file).map_err(unreadable)?;
    let meta = std::fs::metadata(&real).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular { kind, file: file.to_owned() });
    }
    for path in real.ancestors() {
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        if meta.uid() != 0 {
            return Err(FileError::NotRootOwned {
                kind,
                file: file.to_owned(),
                path: path.to_owned(),
                uid: meta.uid(),
            });
        }
        let mode = meta.permissions().mode();
        let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky_dir {
            return Err(FileError::Writable {
                kind,
                file: file.to_owned(),
                path: path.to_owned(),
                mode: mode & 0o7777,
            });
        }
    }
    if kind.is_script() && meta.permissions().mode() & 0o100 == 0 {
        return Err(FileError::NotExecutable { kind, file: file.to_owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, Permissions};

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// Every refusal, with the message an operator reads.
    #[test]
    fn each_refusal_names_the_file_the_culprit_and_the_fix() {
        if !is_root() {
            eprintln!("SKIPPED: ownership checks need root (files made here belong to the caller)");
            let dir = tempfile::tempdir().expect("tempdir");
            let file = dir.path().join("c.toml");
            fs::write(&file, "x").expect("write");
            let e = check(Kind::Config, &file).expect_err("not root's").to_string();
            assert!(e.contains("must be owned by root"), "{e}");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        let write = |name: &str, mode: u32| {
            let path = base.join(name);
            fs::write(&path, "#!/bin/sh\n").expect("write");
            fs::set_permissions(&path, Permissions::from_mode(mode)).expect("chmod");
            path
        };
        let good = write("good.toml", 0o600);
        check(Kind::Config, &good).expect("root's, 0600, in a root-owned directory under the sticky /tmp");
        let script = write("up", 0o755);
        check(Kind::UpScript, &script).expect("an executable script");

        let e = check(Kind::Config, &write("open.toml", 0o666)).expect_err("world-writable").to_string();
        assert!(e.starts_with(&format!("configuration file {}/open.toml: ", base.display())), "{e}");
        assert!(e.contains("has mode 0666, writable by group or others") && e.contains("(chmod go-w "), "{e}");
        let e = check(Kind::DownScript, &write("group", 0o775)).expect_err("group-writable").to_string();
        assert!(e.starts_with("down script ") && e.contains("mode 0775"), "{e}");
        let e = check(Kind::UpScript, &write("plain", 0o644)).expect_err("not executable").to_string();
        assert!(e.contains("not executable (chmod 755 "), "{e}");
        let e = check(Kind::Config, base).expect_err("a directory").to_string();
        assert!(e.ends_with("not a regular file"), "{e}");
        let e = check(Kind::Config, &base.join("absent.toml")).expect_err("missing").to_string();
        assert!(e.contains("No such file"), "{e}");

        let other = write("other.toml", 0o600);
        nix::unistd::chown(&other, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
        let e = check(Kind::Config, &other).expect_err("not root's").to_string();
        assert!(e.contains("is owned by uid 65534, must be owned by root (chown root "), "{e}");

        // A directory on the way: writable by others, then owned by someone else.
        let sub = base.join("sub");
        fs::create_dir(&sub).expect("mkdir");
        let inside = sub.join("c.toml");
        fs::write(&inside, "x").expect("write");
        fs::set_permissions(&sub, Permissions::from_mode(0o777)).expect("chmod");
        let e = check(Kind::Config, &inside).expect_err("open directory").to_string();
        assert!(e.contains(&format!("{} has mode 0777", sub.display())), "{e}");
        assert!(e.contains(&format!("(chmod go-w {})", sub.display())), "{e}");
        fs::set_permissions(&sub, Permissions::from_mode(0o755)).expect("chmod");
        nix::unistd::chown(&sub, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
        let e = check(Kind::KeyFile, &inside).expect_err("someone else's directory").to_string();
        assert!(e.starts_with("key file ") && e.contains(&format!("{} is owned by uid 65534", sub.display())), "{e}");

        // A symbolic link is judged by where it leads.
        let link = base.join("link.toml");
        std::os::unix::fs::symlink(&inside, &link).expect("symlink");
        let e = check(Kind::Config, &link).expect_err("leads to someone else's directory").to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
    }
}
