//! The empty directory the workers chroot into.
//!
//! Rules, as OpenSSH's `ChrootDirectory`: the path is absolute, every component of its canonical
//! form is a root-owned directory that neither group nor others may write, and the directory
//! itself is empty. A missing directory is created 0755 root:root (its missing parents 0755 too).
//! The directory is opened once, checked through that descriptor, and the chroot goes through
//! the same descriptor, so what was checked is what the worker is locked into.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, fstat};

/// Why the empty root was refused.
#[derive(Debug, thiserror::Error)]
pub enum EmptyRootError {
    /// Relative paths depend on the working directory.
    #[error("empty root {0}: the path must be absolute")]
    NotAbsolute(PathBuf),
    /// Creating, resolving or reading the directory failed.
    #[error("empty root {path}: {action}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: io::Error,
    },
    /// A component is not a directory.
    #[error("empty root {0}: not a directory")]
    NotADirectory(PathBuf),
    /// A component is not owned by root.
    #[error("empty root {path}: owned by uid {uid}, must be owned by root")]
    NotRootOwned {
        /// The offending component.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A component is writable by group or others.
    #[error("empty root {path}: mode {mode:04o} is group- or world-writable")]
    Writable {
        /// The offending component.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The directory has entries.
    #[error("empty root {path}: not empty (holds {entry:?})")]
    NotEmpty {
        /// The directory.
        path: PathBuf,
        /// One of its entries.
        entry: String,
    },
    /// The directory changed between the checks and opening it.
    #[error("empty root {0}: replaced while it was being checked")]
    Replaced(PathBuf),
}

/// A checked empty root: its canonical path and an open descriptor on it.
#[derive(Debug)]
pub struct EmptyRoot {
    path: PathBuf,
    fd: OwnedFd,
    dev: u64,
    ino: u64,
}

impl EmptyRoot {
    /// Canonical path of the directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Device and inode of the directory.
    pub fn id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// Creates `path` if it is missing, then checks it can serve as the workers' empty root.
pub fn ensure_empty_root(path: &Path) -> Result<EmptyRoot, EmptyRootError> {
    if !path.is_absolute() {
        return Err(EmptyRootError::NotAbsolute(path.to_owned()));
    }
    match fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(path)?,
        Err(e) => return Err(io_err(path, "stat")(e)),
    }

    let canonical = fs::canonicalize(path).map_err(io_err(path, "resolve"))?;
    for component in canonical.ancestors() {
        let meta = fs::symlink_metadata(component).map_err(io_err(component, "stat"))?;
        check_dir(component, meta.is_dir(), meta.uid(), meta.mode())?;
    }
    let leaf = fs::symlink_metadata(&canonical).map_err(io_err(&canonical, "stat"))?;

    let fd =
        open(&canonical, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| io_err(&canonical, "open")(e.into()))?;
    let st = fstat(&fd).map_err(|e| io_err(&canonical, "fstat")(e.into()))?;
    let (dev, ino) = (st.st_dev, st.st_ino);
    if (dev, ino) != (leaf.dev(), leaf.ino()) {
        return Err(EmptyRootError::Replaced(canonical));
    }
    check_dir(&canonical, st.st_mode & libc::S_IFMT == libc::S_IFDIR, st.st_uid, st.st_mode)?;

    let mut dir = Dir::openat(&fd, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| io_err(&canonical, "open for listing")(e.into()))?;
    for entry in dir.iter() {
        let entry = entry.map_err(|e: Errno| io_err(&canonical, "list")(e.into()))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Err(EmptyRootError::NotEmpty {
                path: canonical,
                entry: String::from_utf8_lossy(name).into_owned(),
            });
        }
    }

    Ok(EmptyRoot { path: canonical, fd, dev, ino })
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> EmptyRootError {
    let path = path.to_owned();
    move |source| EmptyRootError::Io { path, action, source }
}

fn check_dir(path: &Path, is_dir: bool, uid: u32, mode: u32) -> Result<(), EmptyRootError> {
    if !is_dir {
        return Err(EmptyRootError::NotADirectory(path.to_owned()));
    }
    if uid != 0 {
        return Err(EmptyRootError::NotRootOwned { path: path.to_owned(), uid });
    }
    if mode & 0o022 != 0 {
        return Err(EmptyRootError::Writable { path: path.to_owned(), mode: mode & 0o7777 });
    }
    Ok(())
}

/// Creates the missing directory 0755 root:root. Both workers may race here: the loser sees
/// `AlreadyExists` and only checks.
fn create(path: &Path) -> Result<(), EmptyRootError> {
    let io_err = |action| move |source| EmptyRootError::Io { path: path.to_owned(), action, source };
    if let Some(parent) = path.parent() {
        DirBuilder::new().recursive(true).mode(0o755).create(parent).map_err(io_err("create parent"))?;
    }
    match DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io_err("create")(e)),
    }
    // The umask may have removed bits and a setgid parent may have chosen the group: set both.
    std::os::unix::fs::chown(path, Some(0), Some(0)).map_err(io_err("chown root:root"))?;
    fs::set_permissions(path, Permissions::from_mode(0o755)).map_err(io_err("chmod 0755"))
}
