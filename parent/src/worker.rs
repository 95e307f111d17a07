//! Entry point of a re-executed worker: takes over the inherited channel descriptors and
//! hands them to the role's I/O shell, which jails the process before its event loop.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::stat::{SFlag, fstat};

use crate::spawn::WorkerRole;

/// Takes ownership of an inherited descriptor after checking it is an open socket.
fn inherited_socket(raw: RawFd) -> Result<OwnedFd, String> {
    // SAFETY: fcntl(F_GETFD) and fstat only query the descriptor; on a closed number they
    // fail with EBADF and nothing is wrapped.
    #[allow(unsafe_code)]
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    fcntl(borrowed, FcntlArg::F_GETFD).map_err(|e| format!("channel {raw}: {e}"))?;
    let stat = fstat(borrowed).map_err(|e| format!("channel {raw}: {e}"))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(format!("channel {raw}: not a socket"));
    }
    // SAFETY: the parent passed this descriptor to this fresh process by number; it is
    // open (checked above), and nothing else in this process owns it.
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Runs the worker `role` on the inherited `channels` (towards the parent first, then
/// towards the other worker; the script runner has only the first).
pub fn run(role: WorkerRole, user: &str, channels: &[RawFd]) -> ExitCode {
    let channels: Result<Vec<OwnedFd>, String> = channels.iter().map(|&fd| inherited_socket(fd)).collect();
    let result = match (role, channels) {
        (_, Err(e)) => Err(e),
        (WorkerRole::Netd, Ok(channels)) => yavipin_netd::shell::run(channels, user).map_err(|e| e.to_string()),
        (WorkerRole::Keyd, Ok(channels)) => yavipin_keyd::shell::run(channels, user).map_err(|e| e.to_string()),
        (WorkerRole::Scripts, Ok(channels)) => match <[OwnedFd; 1]>::try_from(channels) {
            Ok([channel]) => crate::scripts::run(channel).map_err(|e| e.to_string()),
            Err(channels) => Err(format!("{} channels, expected 1", channels.len())),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
