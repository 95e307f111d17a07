//! The adversary of the end-to-end attack tests, on the path of [`crate::netns::Routed`]:
//! packet capture (`AF_PACKET`), injection of IPv4 datagrams with any
//! source address (raw sockets, `IP_HDRINCL`), and what is needed to watch the victims from
//! outside: tun-device counters, resident memory, and a scan of a process's memory.
//!
//! Everything here needs root, like [`crate::netns`]. No external program is used: capture and
//! injection are plain sockets created inside the namespace concerned (a thread joins the
//! namespace, opens the socket, and the socket stays bound to that namespace).

use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{
    AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, recvfrom, sendto, setsockopt,
    socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

use crate::netns::Netns;
use crate::sim::SimRng;

/// Runs `f` on a thread that joined the network namespace `ns`: sockets and interface
/// indexes it obtains belong to `ns`. The calling thread keeps its own namespace.
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", ns.name());
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
                f()
            })
            .join()
            .expect("namespace thread")
    })
}

/// Packets the kernel says an interface received (for a tun device: packets the daemon
/// wrote to it, that is, delivered out of the tunnel).
pub fn rx_packets(ns: &Netns, device: &str) -> u64 {
    let out = ns.run("cat", &[&format!("/sys/class/net/{device}/statistics/rx_packets")]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("rx_packets of {device}: {out:?}"))
}

/// A UDP counter of `/proc/net/snmp` inside `ns` (`InDatagrams`, `RcvbufErrors`, ...).
pub fn udp_counter(ns: &Netns, name: &str) -> u64 {
    let out = ns.run("cat", &["/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { panic!("no Udp lines in /proc/net/snmp") };
    let index = names.split_whitespace().position(|n| n == name).unwrap_or_else(|| panic!("no Udp counter {name}"));
    values.split_whitespace().nth(index).and_then(|v| v.parse().ok()).expect("a number")
}

// Packets -----------------------------------------------------------------------------

/// A UDP datagram inside an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp<'a> {
    /// Source.
    pub src: SocketAddrV4,
    /// Destination.
    pub dst: SocketAddrV4,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// Reads an IPv4 packet carrying UDP (not a fragment after the first).
pub fn parse_udp(ip: &[u8]) -> Option<Udp<'_>> {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let header = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 || total < header + 8 {
        return None;
    }
    let udp = &ip[header..total];
    let addr =
        |a: &[u8], p: &[u8]| SocketAddrV4::new(Ipv4Addr::new(a[0], a[1], a[2], a[3]), u16::from_be_bytes([p[0], p[1]]));
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]])).clamp(8, udp.len());
    Some(Udp { src: addr(&ip[12..16], &udp[0..2]), dst: addr(&ip[16..20], &udp[2..4]), payload: &udp[8..len] })
}

/// Whether an IPv4 packet is ICMP.
pub fn is_icmp(ip: &[u8]) -> bool {
    ip.len() >= 20 && ip[0] >> 4 == 4 && ip[9] == 1
}

fn checksum_add(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn checksum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).expect("folded")
}

/// An IPv4 packet carrying `payload` from `src` to `dst`, with a correct UDP checksum.
/// The kernel fills in the IP header checksum and identification.
pub fn build_udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(28 + payload.len());
    let total = u16::try_from(28 + payload.len()).expect("fits an IPv4 packet");
    packet.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&src.ip().octets());
    packet.extend_from_slice(&dst.ip().octets());
    packet.extend_from_slice(&src.port().to_be_bytes());
    packet.extend_from_slice(&dst.port().to_be_bytes());
    packet.extend_from_slice(&(total - 20).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    set_udp_checksum(&mut packet);
    packet
}

/// Recomputes the UDP checksum of an IPv4/UDP packet built by [`build_udp`] (after its
/// addresses, ports or payload changed).
pub fn set_udp_checksum(packet: &mut [u8]) {
    packet[26..28].fill(0);
    let udp_len = packet.len() - 20;
    let mut sum = checksum_add(0, &packet[12..20]);
    sum += 17 + u32::try_from(udp_len).expect("small");
    sum = checksum_add(sum, &packet[20..]);
    let checksum = match checksum_fold(sum) {
        0 => 0xffff,
        c => c,
    };
    packet[26..28].copy_from_slice(&checksum.to_be_bytes());
}

/// Random attack traffic: the simulator's generator, seeded from the kernel.
pub fn noise() -> SimRng {
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).expect("random seed");
    SimRng::new(u64::from_ne_bytes(seed))
}

// Injection ---------------------------------------------------------------------------

/// A raw IPv4 socket in a namespace: sends whole IPv4 packets, source address included.
#[derive(Debug)]
pub struct Injector {
    fd: OwnedFd,
}

impl Injector {
    /// A raw socket (`IPPROTO_RAW`, so `IP_HDRINCL`) in `ns`.
    pub fn new(ns: &Netns) -> Self {
        let fd = in_netns(ns, || {
            socket(AddressFamily::Inet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Raw).expect("raw socket")
        });
        let _ = setsockopt(&fd, sockopt::SndBufForce, &(8 << 20));
        Self { fd }
    }

    /// Sends an IPv4 packet as it is (to the destination in its header). False if the
    /// kernel refused it (a full queue: the packet is lost, as on a congested link).
    pub fn send_ip(&self, packet: &[u8]) -> bool {
        let dst = SocketAddrV4::new(Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]), 0);
        sendto(self.fd.as_raw_fd(), packet, &SockaddrIn::from(dst), MsgFlags::empty()).is_ok()
    }

    /// Sends `payload` in a UDP datagram from `src` (any address) to `dst`.
    pub fn send_udp(&self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> bool {
        self.send_ip(&build_udp(src, dst, payload))
    }
}

/// An ordinary UDP socket bound to `addr` inside `ns`.
pub fn udp_socket(ns: &Netns, addr: SocketAddr) -> UdpSocket {
    in_netns(ns, || UdpSocket::bind(addr).expect("bind UDP socket"))
}

// Capture -----------------------------------------------------------------------------

/// A captured packet: the network-layer bytes (IPv4 here) and where it was seen.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The interface it crossed.
    pub ifindex: usize,
    /// Sent by this host rather than received.
    pub outgoing: bool,
    /// When it was read.
    pub at: Instant,
    /// The packet, from its network header on.
    pub bytes: Vec<u8>,
}

/// `PACKET_OUTGOING` in `sockaddr_ll.sll_pkttype`.
const PACKET_OUTGOING: u8 = 4;

/// A packet capture on some interfaces of a namespace, running until [`Capture::finish`].
/// Only packets `keep` accepts are stored.
#[derive(Debug)]
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Captured>>>,
    /// The interface indexes captured, in the order their names were given.
    pub ifindexes: Vec<usize>,
}

impl Capture {
    /// Starts capturing on `interfaces` of `ns` (all of them if empty). Packets are queued
    /// from the moment this returns.
    pub fn start(ns: &Netns, interfaces: &[&str], keep: impl Fn(&Captured) -> bool + Send + 'static) -> Self {
        let names: Vec<String> = interfaces.iter().map(|s| (*s).to_owned()).collect();
        let (fd, ifindexes) = in_netns(ns, move || {
            let fd = socket(AddressFamily::Packet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, SockProtocol::EthAll)
                .expect("packet socket");
            let indexes: Vec<usize> = names
                .iter()
                .map(|n| {
                    usize::try_from(nix::net::if_::if_nametoindex(n.as_str()).unwrap_or_else(|e| panic!("{n}: {e}")))
                        .expect("index")
                })
                .collect();
            (fd, indexes)
        });
        setsockopt(&fd, sockopt::RcvBufForce, &(64 << 20)).expect("capture buffer");
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::milliseconds(50)).expect("capture timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let filter = ifindexes.clone();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut packets = Vec::new();
                let mut buf = vec![0u8; 65_536];
                // Drain what is queued even after the stop request, so nothing already
                // received is lost.
                loop {
                    match recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf) {
                        Ok((len, Some(addr))) => {
                            if !filter.is_empty() && !filter.contains(&addr.ifindex()) {
                                continue;
                            }
                            let packet = Captured {
                                ifindex: addr.ifindex(),
                                outgoing: addr.pkttype() == PACKET_OUTGOING,
                                at: Instant::now(),
                                bytes: buf[..len.min(buf.len())].to_vec(),
                            };
                            if keep(&packet) {
                                packets.push(packet);
                            }
                        }
                        Err(_) if stop.load(Ordering::Relaxed) => return packets,
                        Ok((_, None)) | Err(_) => {}
                    }
                }
            })
        };
        Self { stop, thread: Some(thread), ifindexes }
    }

    /// Stops and returns every packet kept.
    pub fn finish(mut self) -> Vec<Captured> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().expect("capture thread")).unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// Processes ---------------------------------------------------------------------------

/// Resident memory of a process, in KiB (`VmRSS`).
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}

/// For each needle (16 bytes or longer), whether it appears anywhere in the readable
/// memory of process `pid` (read through `/proc/PID/mem`, which root may do even for an
/// undumpable process).
pub fn memory_contains(pid: u32, needles: &[&[u8]]) -> Vec<bool> {
    memory_find(pid, needles).iter().map(Option::is_some).collect()
}

/// For each needle (16 bytes or longer), where it first appears in the readable memory of
/// process `pid`: the mapping (`[heap]`, `[stack]`, a file, or `anonymous`) and the address.
pub fn memory_find(pid: u32, needles: &[&[u8]]) -> Vec<Option<String>> {
    assert!(needles.iter().all(|n| n.len() >= 16), "needles shorter than 16 bytes match by chance");
    // Needles by their first two bytes: most positions are rejected by one table lookup.
    let mut by_prefix: Vec<Vec<usize>> = vec![Vec::new(); 1 << 16];
    for (i, needle) in needles.iter().enumerate() {
        by_prefix[usize::from(u16::from_ne_bytes([needle[0], needle[1]]))].push(i);
    }
    let mut found = vec![None; needles.len()];
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("mem");
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').expect("range");
        let (start, end) = (u64::from_str_radix(start, 16).expect("hex"), u64::from_str_radix(end, 16).expect("hex"));
        let mut region = vec![0u8; usize::try_from(end - start).expect("size")];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut region).is_err() {
            continue;
        }
        let name = line.split_whitespace().nth(5).unwrap_or("anonymous");
        for (offset, pair) in region.windows(2).enumerate() {
            let candidates = &by_prefix[usize::from(u16::from_ne_bytes([pair[0], pair[1]]))];
            for &i in candidates {
                if found[i].is_none() && region[offset..].starts_with(needles[i]) {
                    found[i] = Some(format!("{name} at {:#x}", start + offset as u64));
                }
            }
        }
    }
    found
}

/// The pid of `pid`'s worker child `role` ("netd" or "keyd"), by its command line.
pub fn worker(workers: &[u32], role: &str) -> u32 {
    *workers
        .iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == role.as_bytes()))
        })
        .unwrap_or_else(|| panic!("no {role} among {workers:?}"))
}
