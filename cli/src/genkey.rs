//! `yavipin genkey`: a new pre-shared key, in the key file format yavipind reads
//! (`yavipin_parent::keyfile`): 64 lowercase hexadecimal digits and a newline.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use yavipin_parent::keyfile::PSK_LEN;
use zeroize::Zeroizing;

/// The key as written: two hexadecimal digits per byte and a newline.
const TEXT_LEN: usize = 2 * PSK_LEN + 1;

/// Why no key was written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GenkeyError {
    /// The operating system's random source failed; no key is better than a weak one.
    #[error("cannot read the operating system's random source: {0}")]
    Random(getrandom::Error),
    /// The file exists: a key is never overwritten.
    #[error(
        "{file} already exists; refusing to overwrite a key. To replace it, remove it first \
         (the peer then needs the new key too)"
    )]
    Exists {
        /// The file.
        file: PathBuf,
    },
    /// The file could not be created.
    #[error("cannot create {file}: {source}{hint}")]
    Create {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        source: io::Error,
        /// How to fix the most common causes.
        hint: &'static str,
    },
    /// Writing the key failed after the file was created.
    #[error("cannot write {file}: {source}; {cleanup}")]
    Write {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        source: io::Error,
        /// What became of the incomplete file.
        cleanup: String,
    },
    /// Writing to standard output failed.
    #[error("cannot write the key to standard output: {0}")]
    Stdout(io::Error),
}

/// Generates a key into `file`, or to standard output when `file` is `-`.
pub(crate) fn run(file: &OsStr) -> Result<(), GenkeyError> {
    let text = new_key_text()?;
    if file == "-" {
        let mut out = io::stdout().lock();
        return out.write_all(text.as_slice()).and_then(|()| out.flush()).map_err(GenkeyError::Stdout);
    }
    let file = Path::new(file);
    write_new_file(file, text.as_slice())?;
    println!("{}: new 256-bit key written, mode 0600; copy it to the peer over a secure channel", file.display());
    match std::fs::symlink_metadata(file) {
        Ok(meta) if meta.uid() != 0 => eprintln!(
            "yavipin genkey: note: {} is owned by uid {}, but yavipind accepts only a key file owned by root \
             (chown root: {})",
            file.display(),
            meta.uid(),
            file.display()
        ),
        _ => {}
    }
    Ok(())
}

/// A fresh key from the OS random source, as hexadecimal text with a final newline.
fn new_key_text() -> Result<Zeroizing<[u8; TEXT_LEN]>, GenkeyError> {
    let mut key = Zeroizing::new([0u8; PSK_LEN]);
    getrandom::fill(key.as_mut_slice()).map_err(GenkeyError::Random)?;
    let mut text = Zeroizing::new([0u8; TEXT_LEN]);
    for (pair, byte) in text.chunks_exact_mut(2).zip(key.iter()) {
        pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
        pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
    }
    text[TEXT_LEN - 1] = b'\n';
    Ok(text)
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Creates `file` (which must not exist, not even as a dangling symbolic link) with mode
/// 0600 and writes `text` to it. On a write error the incomplete file is removed.
fn write_new_file(file: &Path, text: &[u8]) -> Result<(), GenkeyError> {
    // O_CREAT | O_EXCL: fails if anything exists at the path, symbolic links included, so
    // neither an existing key nor a link planted by someone else is ever written through.
    // The mode is given at creation, so the file is never more open than 0600.
    let mut handle = OpenOptions::new().write(true).create_new(true).mode(0o600).open(file).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            GenkeyError::Exists { file: file.to_owned() }
        } else {
            let hint = match source.kind() {
                io::ErrorKind::NotFound => " (does the directory exist? create it with `mkdir -m 0700 DIR`)",
                io::ErrorKind::PermissionDenied => " (key files belong in a root-only directory: run as root)",
                _ => "",
            };
            GenkeyError::Create { file: file.to_owned(), source, hint }
        }
    })?;
    write_key(&mut handle, text).map_err(|source| {
        drop(handle);
        let cleanup = match std::fs::remove_file(file) {
            Ok(()) => "the incomplete file was removed".to_owned(),
            Err(e) => format!("the incomplete file could not be removed ({e}): remove it by hand"),
        };
        GenkeyError::Write { file: file.to_owned(), source, cleanup }
    })
}

fn write_key(handle: &mut File, text: &[u8]) -> io::Result<()> {
    // The umask may have removed the owner's bits (umask 0277 leaves 0400, 0777 leaves
    // nothing): set exactly 0600. This only ever adds the owner's read and write.
    handle.set_permissions(Permissions::from_mode(0o600))?;
    handle.write_all(text)?;
    // On disk before we report success: a key that vanishes in a crash after the peer got
    // its copy would be a confusing outage.
    handle.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_is_lowercase_hex_and_parses() {
        let text = new_key_text().expect("random source");
        assert_eq!(text[TEXT_LEN - 1], b'\n');
        assert!(text[..TEXT_LEN - 1].iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
        let key = yavipin_parent::keyfile::parse_psk(text.as_slice()).expect("the daemon's parser accepts it");
        // The digits encode exactly the key bytes.
        let mut again = Zeroizing::new([0u8; TEXT_LEN]);
        for (pair, byte) in again.chunks_exact_mut(2).zip(key.iter()) {
            pair.copy_from_slice(format!("{byte:02x}").as_bytes());
        }
        again[TEXT_LEN - 1] = b'\n';
        assert_eq!(again.as_slice(), text.as_slice());
    }
}
