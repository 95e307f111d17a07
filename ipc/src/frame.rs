//! Framing of IPC messages over `AF_UNIX`/`SOCK_SEQPACKET` socketpairs.
//!
//! One message is one datagram, so the kernel keeps the boundaries; the receive buffer is
//! fixed at [`MAX_FRAME`] bytes and a longer datagram is detected (`MSG_TRUNC`) and refused
//! before anything is decoded or allocated. A frame must decode completely: postcard must
//! consume every byte. Ancillary data is refused on every channel except the one on which
//! the parent passes file descriptors to netd. Every error here is fatal for the receiving
//! process: a peer that sends a bad frame is broken or hostile.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, sendmsg, socketpair,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// Largest frame on any channel. Handshake messages, the largest payloads, stay under 600
/// bytes.
pub const MAX_FRAME: usize = 4096;
/// At most this many descriptors per frame (netd receives the tun device and the socket).
const MAX_FDS: usize = 2;

/// Why a frame was refused or could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the channel.
    #[error("channel closed by peer")]
    Closed,
    /// The system call failed.
    #[error("channel I/O: {0}")]
    Io(#[from] nix::Error),
    /// Longer than [`MAX_FRAME`].
    #[error("frame longer than {MAX_FRAME} bytes")]
    Oversize,
    /// Not a valid encoding of the expected message type.
    #[error("undecodable frame: {0}")]
    Decode(postcard::Error),
    /// Decoded, but bytes were left over.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// Descriptors or other ancillary data on a channel that carries none, or more than
    /// expected.
    #[error("unexpected ancillary data")]
    UnexpectedAncillary,
    /// The message could not be encoded (a bug: every message type is bounded).
    #[error("message does not fit a frame: {0}")]
    Encode(postcard::Error),
}

/// Decodes one frame, refusing trailing bytes. Pure: the fuzz targets call it directly.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    if frame.len() > MAX_FRAME {
        return Err(FrameError::Oversize);
    }
    let (message, rest) = postcard::take_from_bytes(frame).map_err(FrameError::Decode)?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing(rest.len()));
    }
    Ok(message)
}

/// Whether a channel may carry file descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ancillary {
    /// netd's end of its channel to the parent: descriptors come in.
    Descriptors,
    /// The parent's end of that channel: descriptors go out, none is accepted in.
    SendDescriptors,
    /// Every other channel.
    None,
}

/// One end of a channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
    ancillary: Ancillary,
    /// Buffers are zeroed after use: key material crosses some channels.
    buf: Zeroizing<Vec<u8>>,
}

/// A received message and any descriptors that came with it.
#[derive(Debug)]
pub struct Received<T> {
    /// The message.
    pub message: T,
    /// Descriptors passed with it (only on a [`Ancillary::Descriptors`] channel).
    pub fds: Vec<OwnedFd>,
}

/// Creates a connected pair of channel ends, close-on-exec. With
/// [`Ancillary::Descriptors`], the first end receives descriptors and the second sends them
/// ([`Ancillary::SendDescriptors`]).
pub fn pair(ancillary: Ancillary) -> Result<(Channel, Channel), FrameError> {
    let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
    let sender = match ancillary {
        Ancillary::Descriptors | Ancillary::SendDescriptors => Ancillary::SendDescriptors,
        Ancillary::None => Ancillary::None,
    };
    let receiver = if sender == Ancillary::SendDescriptors { Ancillary::Descriptors } else { Ancillary::None };
    Ok((Channel::new(a, receiver), Channel::new(b, sender)))
}

impl Channel {
    /// Wraps a connected `SOCK_SEQPACKET` socket (for instance one inherited on fd 3).
    pub fn new(fd: OwnedFd, ancillary: Ancillary) -> Self {
        Self { fd, ancillary, buf: Zeroizing::new(vec![0; MAX_FRAME + 1]) }
    }

    /// Sends `message` as one frame.
    pub fn send<T: Serialize>(&mut self, message: &T) -> Result<(), FrameError> {
        self.send_with_fds(message, &[])
    }

    /// Sends `message` with descriptors. Only the parent calls this, towards netd.
    pub fn send_with_fds<T: Serialize>(&mut self, message: &T, fds: &[BorrowedFd<'_>]) -> Result<(), FrameError> {
        if !fds.is_empty() && self.ancillary != Ancillary::SendDescriptors || fds.len() > MAX_FDS {
            return Err(FrameError::UnexpectedAncillary);
        }
        let len = postcard::to_slice(message, &mut self.buf[..MAX_FRAME]).map_err(FrameError::Encode)?.len();
        let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &[ControlMessage::ScmRights(&raw)] };
        let sent =
            sendmsg::<()>(self.fd.as_raw_fd(), &[IoSlice::new(&self.buf[..len])], cmsgs, MsgFlags::MSG_NOSIGNAL, None);
        self.buf[..len].fill(0);
        if sent? != len {
            return Err(FrameError::Io(nix::Error::EMSGSIZE));
        }
        Ok(())
    }

    /// Receives one frame and decodes it. Blocks unless the socket is non-blocking.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<Received<T>, FrameError> {
        let mut cmsg_space = nix::cmsg_space!([i32; MAX_FDS]);
        let (len, truncated, fds, stray) = {
            let mut iov = [IoSliceMut::new(&mut self.buf[..])];
            let msg = recvmsg::<()>(self.fd.as_raw_fd(), &mut iov, Some(&mut cmsg_space), MsgFlags::MSG_CMSG_CLOEXEC)?;
            let truncated = msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
            let mut fds = Vec::new();
            let mut stray = false;
            for cmsg in msg.cmsgs()? {
                match cmsg {
                    ControlMessageOwned::ScmRights(received) => {
                        // Own every descriptor at once, so even a refused frame leaks none.
                        fds.extend(received.into_iter().map(|raw| {
                            // The kernel just installed these descriptors for us; nothing
                            // else refers to them.
                            owned_from_received(raw)
                        }));
                    }
                    _ => stray = true,
                }
            }
            (msg.bytes, truncated, fds, stray)
        };
        let frame = &self.buf[..len.min(MAX_FRAME)];
        let result = if len == 0 && fds.is_empty() {
            Err(FrameError::Closed)
        } else if truncated || len > MAX_FRAME {
            Err(FrameError::Oversize)
        } else if stray || (!fds.is_empty() && self.ancillary != Ancillary::Descriptors) || fds.len() > MAX_FDS {
            Err(FrameError::UnexpectedAncillary)
        } else {
            decode(frame)
        };
        self.buf[..len.min(MAX_FRAME + 1)].fill(0);
        result.map(|message| Received { message, fds })
    }

    /// The socket, for polling.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Gives the socket up (to pass it to a child process).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

fn owned_from_received(raw: i32) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `raw` was installed in this process by the kernel for this SCM_RIGHTS message
    // and is owned by nothing else yet; wrapping it makes sure it is closed exactly once.
    #[allow(unsafe_code)]
    unsafe {
        OwnedFd::from_raw_fd(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    enum Msg {
        Ping(u32),
        Blob(Vec<u8>),
    }

    #[test]
    fn round_trip() {
        let (mut a, mut b) = pair(Ancillary::None).expect("pair");
        a.send(&Msg::Ping(7)).expect("send");
        a.send(&Msg::Blob(vec![1; 1000])).expect("send");
        assert_eq!(b.recv::<Msg>().expect("recv").message, Msg::Ping(7));
        assert_eq!(b.recv::<Msg>().expect("recv").message, Msg::Blob(vec![1; 1000]));
        drop(a);
        assert!(matches!(b.recv::<Msg>(), Err(FrameError::Closed)));
    }

    #[test]
    fn oversize_garbage_and_trailing_bytes_are_refused() {
        let (a, mut b) = pair(Ancillary::None).expect("pair");
        let raw = |bytes: &[u8]| {
            nix::sys::socket::send(a.as_fd().as_raw_fd(), bytes, MsgFlags::empty()).expect("send");
        };
        raw(&vec![0; MAX_FRAME + 1]);
        assert!(matches!(b.recv::<Msg>(), Err(FrameError::Oversize)));
        raw(&[9, 9, 9]);
        assert!(matches!(b.recv::<Msg>(), Err(FrameError::Decode(_))));
        let mut ok = postcard::to_allocvec(&Msg::Ping(1)).expect("encode");
        ok.push(0);
        raw(&ok);
        assert!(matches!(b.recv::<Msg>(), Err(FrameError::Trailing(1))));
        // A message that claims a huge vector is refused without allocating it.
        raw(&[1, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(b.recv::<Msg>(), Err(FrameError::Decode(_))));
    }

    #[test]
    fn descriptors_only_where_allowed() {
        let file = tempfile::tempfile().expect("file");
        let (mut b, mut a) = pair(Ancillary::Descriptors).expect("pair");
        a.send_with_fds(&Msg::Ping(1), &[file.as_fd()]).expect("send");
        let got = b.recv::<Msg>().expect("recv");
        assert_eq!(got.fds.len(), 1);
        // Not the other way: the sending end accepts none.
        assert!(matches!(b.send_with_fds(&Msg::Ping(1), &[file.as_fd()]), Err(FrameError::UnexpectedAncillary)));
        let bytes = postcard::to_allocvec(&Msg::Ping(2)).expect("encode");
        let raw = [file.as_raw_fd()];
        sendmsg::<()>(
            b.as_fd().as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .expect("sendmsg");
        assert!(matches!(a.recv::<Msg>(), Err(FrameError::UnexpectedAncillary)));

        let (mut c, mut d) = pair(Ancillary::None).expect("pair");
        assert!(matches!(c.send_with_fds(&Msg::Ping(1), &[file.as_fd()]), Err(FrameError::UnexpectedAncillary)));
        // A hostile sender bypassing the check: the receiver refuses the frame.
        let raw = [file.as_raw_fd()];
        let bytes = postcard::to_allocvec(&Msg::Ping(1)).expect("encode");
        sendmsg::<()>(
            c.as_fd().as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .expect("sendmsg");
        assert!(matches!(d.recv::<Msg>(), Err(FrameError::UnexpectedAncillary)));
    }
}
