//! `yavipin show`: a running tunnel's state, asked from yavipind over its control socket.
//!
//! The daemon does not open a control socket yet. This subcommand already validates its
//! arguments and connects, so that it fails for the true reason (no socket, no permission)
//! and never shows figures it did not get from the daemon.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// Where yavipind's control sockets are: one per tunnel, named after the device.
pub(crate) const RUN_DIR: &str = "/run/yavipin";

/// The device shown when none is named (the configuration's default device name).
pub(crate) const DEFAULT_DEVICE: &str = "yavipin0";

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
    /// The socket exists but may only be used by root.
    #[error("cannot connect to {}: {source} (the control socket is root's: run as root)", path.display())]
    Permission {
        /// The socket path.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// Any other failure to connect.
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// Something listens, but this version has no status protocol to speak with it.
    #[error(
        "{} accepted the connection, but this version of yavipin does not know the daemon's \
         status protocol; nothing to show",
        path.display()
    )]
    NoProtocol {
        /// The socket path.
        path: PathBuf,
    },
}

/// Checks a device name with the configuration's rules (1 to 15 characters: letters,
/// digits, `_`, `.`, `-`; not `.` or `..`), which also keeps the socket path inside
/// [`RUN_DIR`].
pub(crate) fn parse_device(name: &str) -> Result<String, String> {
    let valid_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if name.is_empty() || name.len() > 15 || !valid_chars || name == "." || name == ".." {
        return Err(format!(
            "`{name}` is not a device name (1 to 15 characters: letters, digits, `_`, `.`, `-`), \
             e.g. {DEFAULT_DEVICE}"
        ));
    }
    Ok(name.to_owned())
}

/// Connects to `device`'s control socket. Fails until the daemon has one.
pub(crate) fn run(device: &str, _json: bool) -> Result<(), ShowError> {
    let path = PathBuf::from(format!("{RUN_DIR}/{device}.sock"));
    match UnixStream::connect(&path) {
        // Connected: there is a listener, but no protocol to ask it anything with.
        Ok(stream) => {
            drop(stream);
            Err(ShowError::NoProtocol { path })
        }
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
            Err(ShowError::NoSocket { path, device: device.to_owned() })
        }
        Err(source) if source.kind() == io::ErrorKind::PermissionDenied => Err(ShowError::Permission { path, source }),
        Err(source) => Err(ShowError::Connect { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_cannot_leave_the_run_directory() {
        for good in ["yavipin0", "home", "a", "tun-1.b_c", "fifteen_chars_x"] {
            assert_eq!(parse_device(good).as_deref(), Ok(good));
        }
        for bad in ["", ".", "..", "../x", "a/b", "sixteen_chars_xx", "sp ace", "é"] {
            assert!(parse_device(bad).is_err(), "{bad:?}");
        }
    }
}
