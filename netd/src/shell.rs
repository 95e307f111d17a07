//! netd's I/O shell: the process around the sans-IO [`Tunnel`].
//!
//! Started by the parent with two channels (to the parent, to keyd). It jails itself
//! first, then takes the tun device and the UDP socket from the parent's `Init`, and runs
//! one poll loop: tun → seal → UDP, UDP → open → tun, keyd ↔ tunnel, timers. Everything
//! that decides anything lives in the core; this file only moves bytes and reads the clock.
//! Buffers are allocated once; the packet path allocates nothing.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use yavipin_ipc::KeydToNetd;
use yavipin_ipc::control::{NetdInit, NetdToParent, ParentToNetd};
use yavipin_ipc::frame::{Ancillary, Channel, FrameError};
use yavipin_ipc::reasons::DatagramDrop;
use yavipin_proto::OsRandom;
use yavipin_sandbox::{Role, StartError};

use crate::dataplane::{DataConfig, DataPlane};
use crate::handshake::HandshakeConfig;
use crate::status;
use crate::suite::Classic;
use crate::tunnel::{Tunnel, TunnelConfig, TunnelError, TunnelEvent};

/// Bytes of the tun packet-information header: flags (2), ethertype (2).
const PI_LEN: usize = 4;
/// Datagrams or tun packets handled per readiness before looking at the other sources, so
/// one busy direction cannot starve the other or the channels.
const BATCH: usize = 64;
/// Largest UDP payload or tun packet read.
const MAX_PACKET: usize = 65_535;

/// Why netd stopped.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The channels were wrong or the jail failed: the process must not go on.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A channel failed or carried a bad frame.
    #[error("{peer} channel: {source}")]
    Channel {
        /// "parent" or "keyd".
        peer: &'static str,
        /// What went wrong.
        source: FrameError,
    },
    /// The parent's first message was not a valid `Init`.
    #[error("bad Init from parent: {0}")]
    BadInit(String),
    /// keyd answered something the tunnel's state cannot take.
    #[error("keyd: {0}")]
    Keyd(#[from] TunnelError),
    /// polling failed.
    #[error("poll: {0}")]
    Poll(nix::Error),
    /// The tun device failed.
    #[error("tun device: {0}")]
    Tun(std::io::Error),
}

/// Runs netd on `channels` = [to parent, to keyd] as `user`.
pub fn run(channels: Vec<OwnedFd>, user: &str) -> Result<(), ShellError> {
    let (jailed, [parent, keyd]) = yavipin_sandbox::jail_worker(Role::Netd, channels, user)?;

    let mut parent = Channel::new(parent, Ancillary::Descriptors);
    let mut keyd = Channel::new(keyd, Ancillary::None);
    let received = parent.recv::<ParentToNetd>().map_err(|source| ShellError::Channel { peer: "parent", source })?;
    let init = match received.message {
        ParentToNetd::Init(init) => init,
        ParentToNetd::Shutdown => return Ok(()),
        ParentToNetd::Status => return Err(ShellError::BadInit("Status before Init".into())),
    };
    let [tun, socket]: [OwnedFd; 2] = received
        .fds
        .try_into()
        .map_err(|fds: Vec<_>| ShellError::BadInit(format!("{} descriptors, expected 2", fds.len())))?;
    let io = Io::new(tun, socket, init.local)?;
    let config = tunnel_config(&init, io.local);
    let mut tunnel = Tunnel::new(Instant::now(), config, OsRandom);
    parent.send(&NetdToParent::Ready).map_err(|source| ShellError::Channel { peer: "parent", source })?;
    log::debug!("{} running on {} ({:?}, jailed)", init.device, io.local, jailed.role());
    event_loop(&mut tunnel, io, &mut parent, &mut keyd)
}

fn tunnel_config(init: &NetdInit, local: SocketAddr) -> TunnelConfig {
    let mut config = TunnelConfig::new(HandshakeConfig::new(local, init.group, init.key_id), init.peer.map(normalize));
    let rekey = Duration::from_secs(u64::from(init.rekey_seconds));
    let liveness = &init.liveness;
    let ms = |ms: u32| Duration::from_millis(u64::from(ms));
    config.liveness.reachable_time = ms(liveness.reachable_time_ms);
    config.liveness.retrans_timer = ms(liveness.retrans_timer_ms);
    config.liveness.delay_first_probe_time = ms(liveness.delay_first_probe_ms);
    config.liveness.max_unicast_solicit = liveness.max_unicast_solicit.max(1);
    config.liveness.keepalive_interval =
        (liveness.keepalive_seconds > 0).then(|| Duration::from_secs(u64::from(liveness.keepalive_seconds)));
    config.data = DataConfig {
        max_inner_len: usize::from(init.max_inner_len),
        compression: init.compression,
        rekey_after_time: rekey,
        reject_after_time: 2 * rekey,
        ..DataConfig::default()
    };
    config
}

/// IPv4 peers appear as IPv4-mapped IPv6 addresses on a dual-stack socket; the core sees
/// one spelling of each address, the plain one.
fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// What became of a datagram handed to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendOutcome {
    Done,
    TooBig,
    Lost,
}

/// The descriptors and their buffers.
struct Io {
    tun: File,
    socket: UdpSocket,
    local: SocketAddr,
    /// The socket is IPv6 (possibly dual-stack): IPv4 destinations must be mapped.
    ipv6_socket: bool,
    /// Received datagram.
    datagram: Box<[u8]>,
    /// Tun packet: read from tun, or opened for tun (packet-information header first).
    packet: Box<[u8]>,
    /// Sealed datagram.
    sealed: Box<[u8]>,
}

impl Io {
    fn new(tun: OwnedFd, socket: OwnedFd, local: SocketAddr) -> Result<Self, ShellError> {
        for fd in [&tun, &socket] {
            let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| ShellError::Tun(e.into()))?;
            fcntl(fd, FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK))
                .map_err(|e| ShellError::Tun(e.into()))?;
        }
        Ok(Self {
            tun: File::from(tun),
            socket: UdpSocket::from(socket),
            ipv6_socket: local.is_ipv6(),
            local,
            datagram: vec![0; MAX_PACKET].into_boxed_slice(),
            // A tun packet read, or one opened from the peer (which may exceed MAX_PACKET by
            // the ethertype of an "other" packet).
            packet: vec![0; DataPlane::<Classic>::OPEN_BUFFER_LEN.max(MAX_PACKET) + PI_LEN].into_boxed_slice(),
            sealed: vec![0; MAX_PACKET].into_boxed_slice(),
        })
    }

    fn send(&self, to: SocketAddr, bytes: &[u8]) -> SendOutcome {
        let to = match to {
            SocketAddr::V4(v4) if self.ipv6_socket => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
            _ => to,
        };
        match self.socket.send_to(bytes, to) {
            Ok(_) => SendOutcome::Done,
            // Larger than the local link allows: the path-MTU search must hear of it.
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EMSGSIZE as i32) => SendOutcome::TooBig,
            // A full socket buffer or an unreachable network loses this datagram, as the
            // network itself might; the protocol recovers (retransmission, liveness).
            Err(_) => SendOutcome::Lost,
        }
    }
}

fn event_loop(
    tunnel: &mut Tunnel<OsRandom>,
    mut io: Io,
    parent: &mut Channel,
    keyd: &mut Channel,
) -> Result<(), ShellError> {
    let mut drops = DropReport::new(Instant::now());
    loop {
        flush(tunnel, &io, keyd)?;
        events(tunnel, parent)?;
        let now = Instant::now();
        if let Some(line) = drops.report(now, || status::snapshot(tunnel, now).drops) {
            log::info!("{line}");
        }

        let timeout = match tunnel.poll_timeout() {
            Some(at) => PollTimeout::try_from(at.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
                .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let ready = {
            let mut fds = [
                PollFd::new(io.tun.as_fd(), PollFlags::POLLIN),
                PollFd::new(io.socket.as_fd(), PollFlags::POLLIN),
                PollFd::new(keyd.as_fd(), PollFlags::POLLIN),
                PollFd::new(parent.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(ShellError::Poll(e)),
            }
            fds.map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
        };
        let now = Instant::now();
        if tunnel.poll_timeout().is_some_and(|at| at <= now) {
            tunnel.handle_timeout(now);
        }
        if ready[1] {
            receive_datagrams(tunnel, &mut io, now)?;
        }
        if ready[0] {
            read_tun(tunnel, &mut io, now)?;
        }
        // The parent first: after its Shutdown, keyd's channel closing is expected.
        if ready[3] {
            match parent
                .recv::<ParentToNetd>()
                .map_err(|source| ShellError::Channel { peer: "parent", source })?
                .message
            {
                ParentToNetd::Shutdown => {
                    // The authenticated shutdown notice, so the peer goes down at once.
                    tunnel.shutdown(now);
                    flush(tunnel, &io, keyd)?;
                    return Ok(());
                }
                ParentToNetd::Status => {
                    let status = status::snapshot(tunnel, now);
                    parent
                        .send(&NetdToParent::Status(status))
                        .map_err(|source| ShellError::Channel { peer: "parent", source })?;
                }
                ParentToNetd::Init(_) => return Err(ShellError::BadInit("a second Init".into())),
            }
        }
        if ready[2] {
            let message = keyd.recv::<KeydToNetd>().map_err(|source| ShellError::Channel { peer: "keyd", source })?;
            #[cfg(feature = "test-keylog")]
            crate::keylog::record(&message.message);
            tunnel.handle_keyd(now, message.message)?;
        }
    }
}

/// How often dropped datagrams are summarised in the log, at most.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Rate-limited logging of drops: an attacker's flood costs one log line per interval, not
/// one per datagram.
struct DropReport {
    next: Instant,
    /// Counts at the last report, by reason.
    reported: Vec<(DatagramDrop, u64)>,
}

impl DropReport {
    fn new(now: Instant) -> Self {
        Self { next: now + DROP_REPORT_INTERVAL, reported: Vec::new() }
    }

    /// The log line due at `now`, if an interval has passed since the last one and
    /// something was dropped meanwhile. `drops` (counts by reason) is read only then.
    fn report(&mut self, now: Instant, drops: impl FnOnce() -> Vec<(DatagramDrop, u64)>) -> Option<String> {
        if now < self.next {
            return None;
        }
        self.next = now + DROP_REPORT_INTERVAL;
        let drops = drops();
        let new: Vec<String> = drops
            .iter()
            .filter_map(|(reason, count)| {
                let before = self.reported.iter().find(|(r, _)| r == reason).map_or(0, |(_, n)| *n);
                (*count > before).then(|| format!("{reason} {}", count - before))
            })
            .collect();
        self.reported = drops;
        (!new.is_empty())
            .then(|| format!("dropped in the last {} s: {}", DROP_REPORT_INTERVAL.as_secs(), new.join(", ")))
    }
}

/// Tells the parent what changed: tunnel up or down (link state, scripts), path MTU (tun
/// MTU); logs the rest.
fn events(tunnel: &mut Tunnel<OsRandom>, parent: &mut Channel) -> Result<(), ShellError> {
    while let Some(event) = tunnel.poll_event() {
        let message = match event {
            TunnelEvent::Up { peer } => NetdToParent::TunnelUp { peer },
            TunnelEvent::Down { reason } => NetdToParent::TunnelDown { reason },
            TunnelEvent::MtuChanged { path_mtu, inner_mtu } => NetdToParent::Mtu { path_mtu, inner_mtu },
            TunnelEvent::PeerMoved { from, to } => {
                log::info!("peer moved from {} to {to}", from.map_or_else(|| "nowhere".to_owned(), |f| f.to_string()));
                continue;
            }
            TunnelEvent::Reachability { state } => {
                log::debug!("peer reachability: {}", state.name());
                continue;
            }
        };
        parent.send(&message).map_err(|source| ShellError::Channel { peer: "parent", source })?;
    }
    Ok(())
}

/// Sends everything the tunnel queued for the network and for keyd.
fn flush(tunnel: &mut Tunnel<OsRandom>, io: &Io, keyd: &mut Channel) -> Result<(), ShellError> {
    let now = Instant::now();
    while let Some(transmit) = tunnel.poll_transmit() {
        if io.send(transmit.to, &transmit.bytes) == SendOutcome::TooBig {
            tunnel.handle_send_error_too_big(now, transmit.bytes.len());
        }
    }
    while let Some(message) = tunnel.poll_keyd() {
        keyd.send(&message).map_err(|source| ShellError::Channel { peer: "keyd", source })?;
    }
    Ok(())
}

fn receive_datagrams(tunnel: &mut Tunnel<OsRandom>, io: &mut Io, now: Instant) -> Result<(), ShellError> {
    for _ in 0..BATCH {
        let (len, from) = match io.socket.recv_from(&mut io.datagram) {
            Ok(received) => received,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            // ICMP errors reported on the socket (port unreachable and the like) are not
            // authenticated: ignore them.
            Err(_) => continue,
        };
        let Io { datagram, packet, tun, .. } = io;
        if let Some(delivered) = tunnel.handle_datagram(now, normalize(from), &datagram[..len], &mut packet[PI_LEN..]) {
            // The opened packet sits at `PI_LEN + range`; the packet-information header (no
            // flags, then the ethertype) goes right before it.
            let start = delivered.range.start;
            packet[start..start + 2].fill(0);
            packet[start + 2..start + PI_LEN].copy_from_slice(&delivered.ethertype.to_be_bytes());
            match tun.write(&packet[start..PI_LEN + delivered.range.end]) {
                Ok(_) => {}
                // EIO: the link is down (tunnel not up yet, or going down). Full queue:
                // the packet is lost as on any congested link.
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EIO as i32) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(ShellError::Tun(e)),
            }
        }
    }
    Ok(())
}

fn read_tun(tunnel: &mut Tunnel<OsRandom>, io: &mut Io, now: Instant) -> Result<(), ShellError> {
    for _ in 0..BATCH {
        let len = match io.tun.read(&mut io.packet) {
            Ok(len) => len,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(ShellError::Tun(e)),
        };
        let Some((header, payload)) = io.packet[..len].split_first_chunk::<PI_LEN>() else { continue };
        let ethertype = u16::from_be_bytes([header[2], header[3]]);
        // Refusals (no session or peer yet, key exhausted, too large) are counted by the core.
        if let Ok(outgoing) = tunnel.send_packet(now, ethertype, payload, &mut io.sealed)
            && io.send(outgoing.to, &io.sealed[..outgoing.len]) == SendOutcome::TooBig
        {
            tunnel.handle_send_error_too_big(now, outgoing.len);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use yavipin_ipc::reasons::DropReason;

    const BAD_MAC: DatagramDrop = DatagramDrop::Data(DropReason::BadMac);
    const TOO_SHORT: DatagramDrop = DatagramDrop::Data(DropReason::TooShort);

    fn counts(list: &[(DatagramDrop, u64)]) -> Vec<(DatagramDrop, u64)> {
        list.to_vec()
    }

    #[test]
    fn drops_are_logged_at_most_once_per_interval_and_only_what_is_new() {
        let t0 = Instant::now();
        let mut report = DropReport::new(t0);
        let second = Duration::from_secs(1);
        // A flood: the counters grow all the time, one line per 10 s at the most.
        let mut lines = Vec::new();
        for s in 0..=35u64 {
            let flood = counts(&[(BAD_MAC, 1000 * s), (TOO_SHORT, s)]);
            if let Some(line) = report.report(t0 + second * u32::try_from(s).expect("small"), || flood) {
                lines.push((s, line));
            }
        }
        assert_eq!(
            lines,
            [
                (10, "dropped in the last 10 s: data/bad-mac 10000, data/too-short 10".to_owned()),
                (20, "dropped in the last 10 s: data/bad-mac 10000, data/too-short 10".to_owned()),
                (30, "dropped in the last 10 s: data/bad-mac 10000, data/too-short 10".to_owned()),
            ]
        );
        // Nothing new: no line. Then one reason moves: only it is named.
        assert_eq!(report.report(t0 + second * 40, || counts(&[(BAD_MAC, 30_000), (TOO_SHORT, 30)])), None);
        let line = report.report(t0 + second * 50, || counts(&[(BAD_MAC, 30_000), (TOO_SHORT, 31)]));
        assert_eq!(line.as_deref(), Some("dropped in the last 10 s: data/too-short 1"));
        // Between reports the counters are not even read.
        assert_eq!(report.report(t0 + second * 55, || unreachable!("read between reports")), None);
    }
}
