//! The tun device: created by the parent (it needs `CAP_NET_ADMIN`), configured with the
//! tunnel's inner addresses and MTU, then handed to netd as a bare descriptor.
//!
//! The device is opened with the packet-information header, so every packet carries its
//! ethertype and any protocol crosses the tunnel. Addresses and link state are set with
//! iproute2's `ip`, run with an empty environment: one well-known tool rather than
//! hand-written netlink.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::process::{Command, Stdio};

use ipnet::IpNet;

/// Where `ip` is looked for, in order (Debian and most distributions ship `/usr/sbin/ip`
/// or `/sbin/ip`; merged-/usr systems have both).
const IP_COMMANDS: [&str; 3] = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"];

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
    /// iproute2 is missing.
    #[error("iproute2's `ip` command was not found in {IP_COMMANDS:?}; install iproute2")]
    NoIpCommand,
    /// `ip` failed.
    #[error("`ip {args}` failed: {stderr}")]
    Ip {
        /// The arguments.
        args: String,
        /// What it printed.
        stderr: String,
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

fn ip_command() -> Result<&'static str, TunError> {
    IP_COMMANDS.into_iter().find(|p| std::path::Path::new(p).exists()).ok_or(TunError::NoIpCommand)
}

fn ip(args: &[&str]) -> Result<(), TunError> {
    let output = Command::new(ip_command()?)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TunError::Ip { args: args.join(" "), stderr: e.to_string() })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(TunError::Ip { args: args.join(" "), stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned() })
    }
}

/// Assigns the inner addresses to `name`.
pub fn add_addresses(name: &str, addresses: &[IpNet]) -> Result<(), TunError> {
    for address in addresses {
        let address = address.to_string();
        let mut args = vec!["address", "add", address.as_str(), "dev", name];
        if address.contains(':') {
            // Duplicate address detection would delay IPv6 by a second on a link where
            // nobody else can answer.
            args.push("nodad");
        }
        ip(&args)?;
    }
    Ok(())
}

/// Sets the link up (tunnel established) or down (tunnel lost), so routes through it
/// fail fast instead of black-holing traffic.
pub fn set_link(name: &str, up: bool) -> Result<(), TunError> {
    ip(&["link", "set", "dev", name, if up { "up" } else { "down" }])
}

/// Sets the device MTU (after path-MTU discovery).
pub fn set_mtu(name: &str, mtu: u16) -> Result<(), TunError> {
    ip(&["link", "set", "dev", name, "mtu", &mtu.to_string()])
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
