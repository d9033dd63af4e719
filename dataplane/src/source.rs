//! The source address of what a gateway sends: choosing it per send
//! (IP_PKTINFO), noticing when it is no longer ours, and learning which
//! one the routing table would pick. Shared by the UDP and raw ESP sockets.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Mutex;

/// The wildcard address of `remote`'s family: the local address of a
/// datagram whose destination the kernel did not report, which must still
/// be of the family the datagram came by (IKE hashes it for NAT detection).
pub fn unspecified_for(remote: SocketAddr) -> IpAddr {
    match remote {
        SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Whether a send error may mean "this source address is no longer ours".
/// Linux answers EINVAL, EADDRNOTAVAIL or ENETUNREACH depending on the
/// route; if the network really is unreachable, the retry without a source
/// fails the same way and that error is returned.
pub(crate) fn is_source_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EADDRNOTAVAIL) | Some(libc::ENETUNREACH))
}

/// Our address on the route to `remote`, from the routing table: a
/// connected UDP socket learns it without sending anything.
pub fn route_source(remote: SocketAddr) -> Option<IpAddr> {
    let probe = UdpSocket::bind((unspecified_for(remote), 0)).ok()?;
    source_through(&probe, remote)
}

/// The source `probe` gets once connected to `remote`. A connected UDP
/// socket may be connected again, to another address.
fn source_through(probe: &UdpSocket, remote: SocketAddr) -> Option<IpAddr> {
    probe.connect(remote).ok()?;
    probe.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
}

/// `route_source` as a socket with a fwmark would see it: policy routing
/// may choose by the mark (wg-quick's `not fwmark` rule sends everything
/// else into the tunnel). The probes (IPv4, IPv6) are marked where the
/// mark is set (at bind, `set_fwmark`), by a thread allowed to mark: the
/// IKE thread asking later may not be (a thread running when privileges
/// were dropped has no capabilities), and connecting needs none. Empty
/// while the mark is 0.
pub(crate) struct RouteProbes(Mutex<Vec<UdpSocket>>);

impl RouteProbes {
    pub(crate) fn new(mark: u32) -> RouteProbes {
        RouteProbes(Mutex::new(Self::marked(mark)))
    }

    fn marked(mark: u32) -> Vec<UdpSocket> {
        if mark == 0 {
            return Vec::new();
        }
        [IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
            .into_iter()
            .filter_map(|ip| {
                let probe = UdpSocket::bind((ip, 0)).ok()?;
                socket2::SockRef::from(&probe).set_mark(mark).ok()?;
                Some(probe)
            })
            .collect()
    }

    pub(crate) fn set_mark(&self, mark: u32) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Self::marked(mark);
    }

    /// Our address on the route to `remote` for marked packets.
    pub(crate) fn source_towards(&self, remote: SocketAddr) -> Option<IpAddr> {
        let probes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match probes.iter().find(|p| p.local_addr().is_ok_and(|a| a.is_ipv6() == remote.is_ipv6())) {
            Some(probe) => source_through(probe, remote),
            None => route_source(remote),
        }
    }

    #[cfg(test)]
    pub(crate) fn marks(&self) -> Vec<u32> {
        let probes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        probes.iter().map(|p| socket2::SockRef::from(p).mark().unwrap_or(0)).collect()
    }
}

/// Writes an IP_PKTINFO or IPV6_PKTINFO control message choosing `src` as
/// the source address (as quinn-udp does for single sends); returns the
/// control length.
pub(crate) fn encode_pktinfo(buf: &mut [u64; 8], src: IpAddr) -> usize {
    // SAFETY: a zeroed msghdr is valid; it only frames `buf` for the CMSG
    // macros, which stay inside msg_controllen (checked by CMSG_FIRSTHDR).
    unsafe {
        let mut hdr: libc::msghdr = std::mem::zeroed();
        hdr.msg_control = buf.as_mut_ptr() as *mut libc::c_void;
        hdr.msg_controllen = std::mem::size_of_val(buf);
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        match src {
            IpAddr::V4(v4) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr { s_addr: u32::from_ne_bytes(v4.octets()) },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let len = std::mem::size_of_val(&info) as u32;
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(len) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in_pktinfo, info);
                libc::CMSG_SPACE(len) as usize
            }
            IpAddr::V6(v6) => {
                let info = libc::in6_pktinfo { ipi6_ifindex: 0, ipi6_addr: libc::in6_addr { s6_addr: v6.octets() } };
                let len = std::mem::size_of_val(&info) as u32;
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(len) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in6_pktinfo, info);
                libc::CMSG_SPACE(len) as usize
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routing_table_names_the_source() {
        assert_eq!(route_source("127.0.0.1:9".parse().unwrap()), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(unspecified_for("[fd00::2]:1".parse().unwrap()), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }
}
