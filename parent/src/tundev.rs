//! The tun device: opened by the parent (it needs `CAP_NET_ADMIN`), then handed to netd as
//! a bare descriptor. Its addresses, link state and MTU are set in [`crate::netlink`].
//!
//! The device is opened with the packet-information header, so every packet carries its
//! ethertype and any protocol crosses the tunnel.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

/// Why the tun device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The kernel refused the device.
    #[error("cannot create tun device {name}: {source} (is /dev/net/tun present, and are we root?)")]
    Create {
        /// The device name.
        name: String,
        /// What the tun crate said.
        source: tun::Error,
    },
}

/// Creates the tun device `name` with the packet-information header and `mtu`, link down.
pub fn create(name: &str, mtu: u16) -> Result<OwnedFd, TunError> {
    let mut config = tun::Configuration::default();
    config.tun_name(name).mtu(mtu).down();
    config.platform_config(|p| {
        // Deprecated because the crate's own read/write strip the header; netd uses the
        // raw descriptor, where this flag decides whether the kernel adds it (no IFF_NO_PI).
        #[allow(deprecated)]
        p.packet_information(true);
    });
    let device = tun::create(&config).map_err(|source| TunError::Create { name: name.to_owned(), source })?;
    let raw = device.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up the tun crate's ownership of this open descriptor (it
    // will not close it); wrapping it makes it closed exactly once, by us or by netd.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(fd)
}

/// Sets the don't-fragment bit on the tunnel's datagrams without letting the kernel's
/// ICMP-fed path-MTU cache shrink them (`IP_PMTUDISC_PROBE`): the tunnel finds the path
/// MTU itself with authenticated probes, and forged "fragmentation needed" messages change
/// nothing. A datagram larger than the local interface still fails with `EMSGSIZE`, which
/// netd reports to its path-MTU search.
pub fn probe_path_mtu(socket: &std::net::UdpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local c_int on an
        // open socket descriptor owned by `socket` for the duration of the call.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4),
            )
        };
        if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    };
    if socket.local_addr()?.is_ipv6() {
        set(libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_PROBE)?;
        // A dual-stack socket also sends IPv4; this option may be refused on v6-only sockets.
        let _ = set(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_PROBE);
        Ok(())
    } else {
        set(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_PROBE)
    }
}
