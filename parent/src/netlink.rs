//! The tun device's link configuration: addresses, link state and MTU, set by the parent
//! itself over one rtnetlink socket (`NETLINK_ROUTE`), never by starting a program.
//!
//! Four requests of the kernel's fixed ABI (`linux/rtnetlink.h`, `if_link.h`, `if_addr.h`)
//! are all the parent sends, each answered by an acknowledgement it waits for: set the link
//! up or down (`RTM_NEWLINK`, `IFF_UP` in `ifi_change`), set the MTU (`RTM_NEWLINK` with
//! `IFLA_MTU`), and assign an address (`RTM_NEWADDR` with `IFA_LOCAL` and `IFA_ADDRESS`,
//! `NLM_F_REPLACE` so that assigning again is harmless, and `IFA_F_NODAD` for IPv6: there
//! is nobody else on the link to detect). They are built by hand here: four fixed layouts
//! did not justify the general netlink crates and their dependencies, and nothing here
//! needs `unsafe`. The kernel's answers are read with bounds checks all the same.
//!
//! The socket is opened during setup, before the parent confines itself: afterwards its
//! seccomp filter lets it send and receive on descriptors it has, but create none.
//! Setting the link down makes the kernel drop the device's IPv6 addresses (unless
//! `keep_addr_on_down` is set, which the service's read-only `/proc/sys` rules out), so
//! [`Device::set_up`] assigns the addresses again before it sets the link up.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use ipnet::IpNet;
use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket};

const NLMSG_HDR_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const IFF_UP: u32 = 0x1;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x2;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// Room for an acknowledgement: an error message quotes the request (at most 64 bytes
/// here) after its own header and error number.
const REPLY_BUF: usize = 1024;

/// Why the device could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The device does not exist.
    #[error("device {name}: {source}")]
    NoDevice {
        /// Its name.
        name: String,
        /// What the lookup said.
        source: Errno,
    },
    /// The netlink socket could not be opened or used.
    #[error("netlink socket: {0}")]
    Socket(Errno),
    /// The kernel refused a request.
    #[error("{device}: {what}: {source}")]
    Refused {
        /// The device.
        device: String,
        /// The request.
        what: String,
        /// The kernel's error.
        source: Errno,
    },
    /// The kernel's answer was not an acknowledgement of the request.
    #[error("netlink: unexpected answer to {0}")]
    BadReply(String),
}

/// The tun device, as far as its link configuration goes.
#[derive(Debug)]
pub struct Device {
    name: String,
    index: u32,
    socket: OwnedFd,
    seq: u32,
    addresses: Vec<IpNet>,
}

/// A netlink message: header, fixed part, attributes; lengths filled in by [`Self::finish`].
struct Message(Vec<u8>);

impl Message {
    fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        bytes.extend_from_slice(&seq.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        Self(bytes)
    }

    fn put(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// A routing attribute, padded to 4 bytes.
    fn attribute(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        self.put(&len.to_ne_bytes()).put(&kind.to_ne_bytes()).put(payload);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// `struct ifinfomsg` for `index` changing only `IFF_UP`, or nothing (`change` 0).
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[4..8].copy_from_slice(&index.to_ne_bytes());
    bytes[8..12].copy_from_slice(&flags.to_ne_bytes());
    bytes[12..16].copy_from_slice(&change.to_ne_bytes());
    bytes
}

/// The request setting the link up or down.
fn link_request(seq: u32, index: u32, up: bool) -> Vec<u8> {
    let mut message = Message::new(RTM_NEWLINK, 0, seq);
    message.put(&ifinfomsg(index, if up { IFF_UP } else { 0 }, IFF_UP));
    message.finish()
}

/// The request setting the MTU.
fn mtu_request(seq: u32, index: u32, mtu: u16) -> Vec<u8> {
    let mut message = Message::new(RTM_NEWLINK, 0, seq);
    message.put(&ifinfomsg(index, 0, 0)).attribute(IFLA_MTU, &u32::from(mtu).to_ne_bytes());
    message.finish()
}

/// The request assigning `address` (replacing it if it is there).
fn address_request(seq: u32, index: u32, address: IpNet) -> Vec<u8> {
    let (family, flags, bytes): (u8, u8, Vec<u8>) = match address.addr() {
        IpAddr::V4(ip) => (AF_INET, 0, ip.octets().to_vec()),
        IpAddr::V6(ip) => (AF_INET6, IFA_F_NODAD, ip.octets().to_vec()),
    };
    let mut message = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq);
    // struct ifaddrmsg: family, prefix length, flags, scope (universe), index.
    message.put(&[family, address.prefix_len(), flags, 0]).put(&index.to_ne_bytes());
    message.attribute(IFA_LOCAL, &bytes).attribute(IFA_ADDRESS, &bytes);
    message.finish()
}

/// The kernel's answer to request `seq`: `Ok` for an acknowledgement, the error it
/// reports, or `None` if `reply` holds no answer to `seq`.
fn acknowledgement(reply: &[u8], seq: u32) -> Option<Result<(), Errno>> {
    let mut rest = reply;
    while rest.len() >= NLMSG_HDR_LEN {
        let word = |at: usize| u32::from_ne_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
        let len = usize::try_from(word(0)).ok()?;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < NLMSG_HDR_LEN || len > rest.len() {
            return None;
        }
        if kind == NLMSG_ERROR && word(8) == seq && len >= NLMSG_HDR_LEN + 4 {
            let error = i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]);
            return Some(if error == 0 { Ok(()) } else { Err(Errno::from_raw(error.saturating_neg())) });
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    None
}

impl Device {
    /// Opens the netlink socket for the existing device `name`, whose addresses are
    /// `addresses`.
    pub fn open(name: &str, addresses: &[IpNet]) -> Result<Self, LinkError> {
        let index = nix::net::if_::if_nametoindex(name)
            .map_err(|source| LinkError::NoDevice { name: name.to_owned(), source })?;
        let socket = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute)
            .map_err(LinkError::Socket)?;
        Ok(Self { name: name.to_owned(), index, socket, seq: 0, addresses: addresses.to_vec() })
    }

    /// The netlink socket's descriptor (the parent keeps it through its confinement).
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }

    /// Assigns the device's addresses (again).
    pub fn assign_addresses(&mut self) -> Result<(), LinkError> {
        for address in self.addresses.clone() {
            let seq = self.next_seq();
            self.request(&address_request(seq, self.index, address), seq, || format!("address {address}"))?;
        }
        Ok(())
    }

    /// Sets the link up (its addresses assigned first) or down.
    pub fn set_up(&mut self, up: bool) -> Result<(), LinkError> {
        if up {
            self.assign_addresses()?;
        }
        let seq = self.next_seq();
        self.request(&link_request(seq, self.index, up), seq, || format!("link {}", if up { "up" } else { "down" }))
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, mtu: u16) -> Result<(), LinkError> {
        let seq = self.next_seq();
        self.request(&mtu_request(seq, self.index, mtu), seq, || format!("mtu {mtu}"))
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `request` to the kernel and waits for its acknowledgement.
    fn request(&self, request: &[u8], seq: u32, what: impl Fn() -> String) -> Result<(), LinkError> {
        let fd = self.socket.as_raw_fd();
        sendto(fd, request, &NetlinkAddr::new(0, 0), MsgFlags::empty()).map_err(LinkError::Socket)?;
        let mut reply = [0u8; REPLY_BUF];
        loop {
            let len = match recv(fd, &mut reply, MsgFlags::empty()) {
                Ok(len) => len,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(LinkError::Socket(e)),
            };
            match acknowledgement(&reply[..len], seq) {
                Some(Ok(())) => return Ok(()),
                Some(Err(source)) => {
                    return Err(LinkError::Refused { device: self.name.clone(), what: what(), source });
                }
                // An answer to an earlier request that gave up: read on.
                None if len >= NLMSG_HDR_LEN => {}
                None => return Err(LinkError::BadReply(what())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(bytes: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([bytes[at], bytes[at + 1]])
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }

    #[test]
    fn requests_have_the_kernel_layout() {
        let up = link_request(7, 42, true);
        assert_eq!(up.len(), 32);
        assert_eq!(
            (u32_at(&up, 0), u16_at(&up, 4), u16_at(&up, 6), u32_at(&up, 8)),
            (32, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 7)
        );
        assert_eq!((u32_at(&up, 20), u32_at(&up, 24), u32_at(&up, 28)), (42, IFF_UP, IFF_UP));
        let down = link_request(8, 42, false);
        assert_eq!((u32_at(&down, 24), u32_at(&down, 28)), (0, IFF_UP));

        let mtu = mtu_request(9, 42, 1400);
        assert_eq!(mtu.len(), 40);
        assert_eq!((u32_at(&mtu, 24), u32_at(&mtu, 28)), (0, 0), "nothing but the MTU changes");
        assert_eq!((u16_at(&mtu, 32), u16_at(&mtu, 34), u32_at(&mtu, 36)), (8, IFLA_MTU, 1400));

        let v4 = address_request(10, 42, "10.99.0.1/30".parse().expect("net"));
        assert_eq!(v4.len(), 16 + 8 + 8 + 8);
        assert_eq!(u16_at(&v4, 6), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
        assert_eq!(&v4[16..20], &[AF_INET, 30, 0, 0]);
        assert_eq!(u32_at(&v4, 20), 42);
        assert_eq!((u16_at(&v4, 24), u16_at(&v4, 26), &v4[28..32]), (8, IFA_LOCAL, &[10, 99, 0, 1][..]));
        assert_eq!((u16_at(&v4, 32), u16_at(&v4, 34), &v4[36..40]), (8, IFA_ADDRESS, &[10, 99, 0, 1][..]));
        let v6 = address_request(11, 42, "fd01::1/64".parse().expect("net"));
        assert_eq!(v6.len(), 16 + 8 + 20 + 20);
        assert_eq!(&v6[16..20], &[AF_INET6, 64, IFA_F_NODAD, 0]);
    }

    fn error_message(seq: u32, error: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&error.to_ne_bytes());
        m.extend_from_slice(&[0; 16]);
        m
    }

    #[test]
    fn acknowledgements_are_matched_and_bounded() {
        assert_eq!(acknowledgement(&error_message(5, 0), 5), Some(Ok(())));
        assert_eq!(acknowledgement(&error_message(5, -1), 5), Some(Err(Errno::EPERM)));
        assert_eq!(acknowledgement(&error_message(4, 0), 5), None, "another request's answer");
        let mut two = error_message(4, 0);
        two.extend(error_message(5, -17));
        assert_eq!(acknowledgement(&two, 5), Some(Err(Errno::EEXIST)));
        // Truncated and lying lengths are not an acknowledgement, and do not panic.
        for bad in [&error_message(5, 0)[..10], &[0xff; 20][..], &[0; 16][..], &[]] {
            assert_eq!(acknowledgement(bad, 5), None);
        }
    }

    /// Against the kernel: a tun device in a network namespace of its own, which needs root.
    #[test]
    fn the_kernel_takes_the_requests() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: the_kernel_takes_the_requests needs root (a network namespace)");
            return;
        }
        let run = |args: &[&str]| {
            let out = std::process::Command::new("ip").args(args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let ns = format!("yvnl{}", std::process::id());
        run(&["netns", "add", &ns]);
        let result = std::panic::catch_unwind(|| {
            run(&["-n", &ns, "tuntap", "add", "dev", "yvnl0", "mode", "tun"]);
            // This test thread enters the namespace; the test binary's other threads stay.
            let handle = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
            nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let addresses = ["10.99.0.1/30".parse().expect("net"), "fd99::1/64".parse().expect("net")];
            let mut device = Device::open("yvnl0", &addresses).expect("open");
            device.set_mtu(1300).expect("mtu");
            device.set_up(true).expect("up");
            device.set_up(false).expect("down");
            device.set_up(true).expect("up again");
            assert!(matches!(Device::open("yvnl-none", &[]), Err(LinkError::NoDevice { .. })));
        });
        let shown = run(&["-n", &ns, "address", "show", "dev", "yvnl0"]);
        run(&["netns", "del", &ns]);
        assert!(result.is_ok(), "requests failed");
        assert!(shown.contains("mtu 1300") && shown.contains(",UP>"), "{shown}");
        // After down and up again, IPv6 included.
        assert!(shown.contains("inet 10.99.0.1/30") && shown.contains("inet6 fd99::1/64"), "{shown}");
    }
}
