//! The pre-shared key file: 64 hexadecimal digits (256 bits), optionally followed by one
//! newline, in a regular file owned by root and readable by nobody else.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Length of the pre-shared key in bytes.
pub const PSK_LEN: usize = 32;

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Could not be opened or read (missing, a symbolic link, no permission, ...).
    #[error("key file {file}: {source}")]
    Open {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Not a regular file.
    #[error("key file {file}: not a regular file")]
    NotRegular {
        /// The file.
        file: PathBuf,
    },
    /// Owned by someone other than root: whoever owns it can change the key.
    #[error("key file {file}: owned by uid {uid}, must be owned by root (chown root: {file})")]
    NotRootOwned {
        /// The file.
        file: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// Readable or writable by group or others.
    #[error(
        "key file {file}: mode {mode:04o} gives access to group or others, must be 0600 or 0400 (chmod 600 {file})"
    )]
    TooOpen {
        /// The file.
        file: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not 64 hexadecimal digits.
    #[error(
        "key file {file}: must hold exactly 64 hexadecimal digits (a 256-bit key) and at most a final newline; generate one with `yavipin genkey {file}`"
    )]
    BadContent {
        /// The file.
        file: PathBuf,
    },
}

/// Reads the pre-shared key from `file`, refusing files others could read or change.
pub fn load_psk(file: &Path) -> Result<Zeroizing<[u8; PSK_LEN]>, KeyFileError> {
    let open_error = |source| KeyFileError::Open { file: file.to_owned(), source };
    // O_NOFOLLOW: a symbolic link planted in place of the key file is refused, not followed.
    let mut handle =
        File::options().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(file).map_err(open_error)?;
    let meta = handle.metadata().map_err(open_error)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotRegular { file: file.to_owned() });
    }
    if meta.uid() != 0 {
        return Err(KeyFileError::NotRootOwned { file: file.to_owned(), uid: meta.uid() });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(KeyFileError::TooOpen { file: file.to_owned(), mode: meta.mode() & 0o7777 });
    }
    // Read one byte more than a valid file can hold, so longer files are caught.
    let mut text = Zeroizing::new([0u8; 2 * PSK_LEN + 2]);
    let mut len = 0;
    loop {
        let n = handle.read(&mut text[len..]).map_err(open_error)?;
        if n == 0 || len + n == text.len() {
            len += n;
            break;
        }
        len += n;
    }
    parse_psk(&text[..len]).ok_or_else(|| KeyFileError::BadContent { file: file.to_owned() })
}

/// Decodes 64 hexadecimal digits and an optional final newline.
pub fn parse_psk(text: &[u8]) -> Option<Zeroizing<[u8; PSK_LEN]>> {
    let digits = text.strip_suffix(b"\n").unwrap_or(text);
    if digits.len() != 2 * PSK_LEN {
        return None;
    }
    let mut key = Zeroizing::new([0u8; PSK_LEN]);
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(key)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";

    fn write(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn parses_hex_with_optional_newline() {
        let expected: Vec<u8> = (0..32).collect();
        assert_eq!(parse_psk(KEY_HEX.as_bytes()).expect("valid").as_slice(), expected);
        assert_eq!(parse_psk(format!("{KEY_HEX}\n").as_bytes()).expect("valid").as_slice(), expected);
        for bad in [
            &KEY_HEX.as_bytes()[..63],
            format!("{KEY_HEX}0").as_bytes(),
            format!("{KEY_HEX}\n\n").as_bytes(),
            format!(" {}", &KEY_HEX[1..]).as_bytes(),
            KEY_HEX.replace('0', "g").as_bytes(),
            b"",
        ] {
            assert!(parse_psk(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn file_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = write(dir.path(), "good", KEY_HEX.as_bytes(), 0o600);
        let open = write(dir.path(), "open", KEY_HEX.as_bytes(), 0o644);
        let long = write(dir.path(), "long", &[b'a'; 4096], 0o600);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&good, &link).expect("symlink");

        assert!(matches!(load_psk(&dir.path().join("missing")), Err(KeyFileError::Open { .. })));
        assert!(matches!(load_psk(&link), Err(KeyFileError::Open { .. })), "symlinks are not followed");
        assert!(matches!(load_psk(dir.path()), Err(KeyFileError::NotRegular { .. })));
        if !is_root() {
            eprintln!("SKIPPED: key file ownership checks need root (files here are not root-owned)");
            return;
        }
        assert!(load_psk(&good).is_ok());
        let e = load_psk(&open).expect_err("0644 refused");
        assert!(e.to_string().contains("mode 0644"), "{e}");
        assert!(matches!(load_psk(&long), Err(KeyFileError::BadContent { .. })));
        nix::unistd::chown(&good, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
        let e = load_psk(&good).expect_err("not root-owned");
        assert!(e.to_string().contains("owned by uid 65534"), "{e}");
    }
}
