//! `yavipin check`: exactly what `yavipind --check -c FILE` does (the same function): the
//! configuration, then the key file it names, then the worker account, in that order.

use std::path::Path;

use yavipin_parent::daemon::{self, DaemonError};

/// Validates `file` and prints one line saying what it describes.
pub(crate) fn run(file: &Path) -> Result<(), DaemonError> {
    let config = daemon::check(file)?;
    let role = match config.transport.peer {
        Some(peer) => format!("initiates towards {peer}"),
        None => "only responds".to_owned(),
    };
    println!(
        "{}: configuration and key file are valid (device {}, listen {}, {role}, workers run as {})",
        file.display(),
        config.interface.name,
        config.transport.listen,
        config.user
    );
    Ok(())
}
