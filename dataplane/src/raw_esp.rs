//! ESP as IP protocol 50, without UDP: what an SRX sends when no NAT lies
//! between the gateways. One raw socket per address family for the whole
//! interface: the kernel gives every raw socket of a protocol a copy of
//! each packet, so one socket per worker would deliver each packet once
//! per worker. Every worker sends on them; worker 0 alone reads them, so
//! that a flow's packets reach the TUN in the order they came
//! (`worker::run`).
//!
//! The interface's raw ESP set holds one `RawEspSocket` per family that
//! opened: each reads its own family's socket and sends on either, by the
//! destination's family. Worker 0 polls each one's descriptor itself. An
//! epoll descriptor over both (one `Socket` for the pair) was tried and
//! measured slower: ping RTT about 10% higher than with the socket polled
//! directly, even with the IPv6 socket left out (README, raw ESP).
//!
//! The two families differ on receive: an IPv4 raw socket hands over the
//! IP header, which is stripped here; an IPv6 one hands over the payload
//! alone, with the source in the message's name and the destination in an
//! IPV6_PKTINFO control message. Sends leave from the peer's sticky source
//! (the address its packets, IKE's first, came to), as UDP ones do.
//!
//! This kernel has no ESP of its own (no XFRM), and an ESP packet that a
//! raw socket takes is answered neither with ICMP "protocol unreachable"
//! nor with ICMPv6 "unrecognized next header".
//!
//! Written on libc directly, not quinn-udp: quinn-udp is for UDP (GSO,
//! GRO, ECN cmsgs), none of which a raw socket has.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use socket2::{Domain, Protocol, SockAddr, Type};

use crate::io::{Bind, PartialSend, RecvMeta, Socket, SourceUse};
use crate::source::{encode_pktinfo, is_source_gone, RouteProbes};

/// IANA protocol number of ESP.
pub const IPPROTO_ESP: i32 = 50;

/// Datagrams per sendmmsg or recvmmsg.
const MMSG: usize = 64;

/// Room for one IPV6_PKTINFO control message (CMSG_SPACE of a 20-byte
/// in6_pktinfo on 64-bit Linux is 40), u64-aligned as cmsghdr needs.
const CONTROL_WORDS: usize = 8;

/// Both families' sockets, shared by the interface's readers.
struct Pair {
    v4: Option<socket2::Socket>,
    /// None where the host has no IPv6 (the module absent or disabled).
    v6: Option<socket2::Socket>,
}

impl Pair {
    fn get(&self, v6: bool) -> Option<&socket2::Socket> {
        if v6 {
            self.v6.as_ref()
        } else {
            self.v4.as_ref()
        }
    }
}

/// A reader of one family's raw ESP socket that sends on either family's.
pub struct RawEspSocket {
    pair: Arc<Pair>,
    /// The family it reads (its `fd`).
    reads_v6: bool,
    /// Route lookups with its fwmark (`local_address_towards`).
    route_probes: RouteProbes,
}

fn open_one(domain: Domain, fwmark: u32) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(domain, Type::RAW, Some(Protocol::from(IPPROTO_ESP)))?;
    socket.set_nonblocking(true)?;
    if fwmark != 0 {
        socket.set_mark(fwmark)?;
    }
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    if domain == Domain::IPV6 {
        set_recv_pktinfo(&socket)?;
    }
    Ok(socket)
}

fn set_recv_pktinfo(socket: &socket2::Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: IPV6_RECVPKTINFO takes an int; the pointer and length
    // describe `on`, which outlives the call.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl RawEspSocket {
    /// Opens both families' sockets and returns a reader for each that
    /// opened (IPv4's first); fails only if neither opens (the IPv4
    /// socket's error is the one returned, CAP_NET_RAW being the usual
    /// cause).
    pub fn open(fwmark: u32) -> io::Result<Vec<RawEspSocket>> {
        let (v4, v6) = match (open_one(Domain::IPV4, fwmark), open_one(Domain::IPV6, fwmark)) {
            (Err(e), Err(_)) => return Err(e),
            (v4, v6) => (v4, v6),
        };
        for (family, r) in [("IPv4", v4.as_ref().err()), ("IPv6", v6.as_ref().err())] {
            if let Some(e) = r {
                tracing::warn!(error = %e, "no raw ESP socket for {family}: {family} peers without a NAT need encap = \"always\"");
            }
        }
        let pair = Arc::new(Pair { v4: v4.ok(), v6: v6.ok() });
        Ok([false, true]
            .into_iter()
            .filter(|&v6| pair.get(v6).is_some())
            .map(|reads_v6| RawEspSocket { pair: pair.clone(), reads_v6, route_probes: RouteProbes::new(fwmark) })
            .collect())
    }

    /// The socket this one reads.
    fn read_socket(&self) -> &socket2::Socket {
        self.pair.get(self.reads_v6).expect("a reader exists only for a family whose socket opened")
    }

    /// The socket for a destination's family.
    fn for_family(&self, dst: &SocketAddr) -> io::Result<&socket2::Socket> {
        self.pair.get(dst.is_ipv6()).ok_or_else(|| {
            let family = if dst.is_ipv4() { "IPv4" } else { "IPv6" };
            io::Error::new(io::ErrorKind::Unsupported, format!("no raw ESP socket for {family} on this host"))
        })
    }

    /// Sends datagrams of `lens` bytes, laid end to end in `contents`,
    /// from `src` when given; a source that is no longer local is dropped
    /// and the rest sent from whatever address the kernel picks.
    fn send_datagrams(
        &self,
        dst: SocketAddr,
        src: Option<IpAddr>,
        contents: &[u8],
        lens: impl Iterator<Item = usize>,
    ) -> Result<SourceUse, PartialSend> {
        let sock = self.for_family(&dst).map_err(|error| PartialSend { error, sent: 0, source: SourceUse::Kept })?;
        let to = raw_destination(dst);
        // A source of the other family cannot be asked for.
        let mut src = src.filter(|s| s.is_ipv4() == dst.is_ipv4());
        let mut used = SourceUse::Kept;
        let mut control = [0u64; 8];
        let mut control_len = src.map_or(0, |ip| encode_pktinfo(&mut control, ip));
        let mut lens = lens.peekable();
        let mut at = 0;
        // Datagrams of the calls before this one that left.
        let mut left = 0;
        while lens.peek().is_some() {
            let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MMSG];
            // SAFETY: all-zero bytes are a valid mmsghdr (see recv_family).
            let mut msgs: [libc::mmsghdr; MMSG] = unsafe { std::mem::zeroed() };
            let mut n = 0;
            while n < MMSG {
                let Some(len) = lens.next() else { break };
                let datagram = contents.get(at..at + len).ok_or_else(|| PartialSend {
                    error: io::ErrorKind::InvalidInput.into(),
                    sent: left,
                    source: used,
                })?;
                iov[n] = libc::iovec { iov_base: datagram.as_ptr() as *mut libc::c_void, iov_len: len };
                at += len;
                n += 1;
            }
            let mut sent = 0;
            while sent < n {
                for (i, msg) in msgs.iter_mut().enumerate().take(n) {
                    let hdr = &mut msg.msg_hdr;
                    hdr.msg_iov = &mut iov[i];
                    hdr.msg_iovlen = 1;
                    hdr.msg_name = to.as_ptr() as *mut libc::c_void;
                    hdr.msg_namelen = to.len();
                    if control_len > 0 {
                        hdr.msg_control = control.as_mut_ptr().cast();
                        hdr.msg_controllen = control_len as _;
                    } else {
                        hdr.msg_control = std::ptr::null_mut();
                        hdr.msg_controllen = 0;
                    }
                }
                // SAFETY: `msgs[sent..n]` are initialised headers whose
                // iovecs point into `contents`, whose names point to `to`
                // and whose control data (if any) is `control`, all of which
                // outlive the call; the kernel only reads them (and writes
                // each header's msg_len).
                let r = unsafe {
                    libc::sendmmsg(sock.as_raw_fd(), msgs[sent..].as_mut_ptr(), (n - sent) as libc::c_uint, 0)
                };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    if src.is_some() && is_source_gone(&e) {
                        src = None;
                        control_len = 0;
                        used = SourceUse::Dropped;
                        continue;
                    }
                    return Err(PartialSend { error: e, sent: left + sent, source: used });
                }
                sent += r as usize;
            }
            left += n;
        }
        Ok(used)
    }
}

/// A raw socket's destination: the address alone (port 0; an IPv6 one
/// keeps its scope, for link-local peers).
fn raw_destination(dst: SocketAddr) -> SockAddr {
    match dst {
        SocketAddr::V4(a) => SockAddr::from(SocketAddr::new(IpAddr::V4(*a.ip()), 0)),
        SocketAddr::V6(a) => SockAddr::from(SocketAddrV6::new(*a.ip(), 0, 0, a.scope_id())),
    }
}

/// Strips the IPv4 header a raw socket delivers; returns (source,
/// destination, payload length), the payload moved to the buffer's start.
fn strip_ipv4(buf: &mut [u8], len: usize) -> Option<(Ipv4Addr, Ipv4Addr, usize)> {
    let packet = buf.get(..len)?;
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(len);
    if ihl < 20 || total < ihl {
        return None;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    buf.copy_within(ihl..total, 0);
    Some((src, dst, total - ihl))
}

/// The destination address of an IPv6 packet, from its IPV6_PKTINFO
/// control message.
fn pktinfo_destination(hdr: &libc::msghdr) -> Option<Ipv6Addr> {
    if hdr.msg_flags & libc::MSG_CTRUNC != 0 {
        return None;
    }
    // SAFETY: `hdr` is a header the kernel filled by recvmmsg; its control
    // pointer and length describe a buffer that is still alive, and the
    // CMSG_* macros stay within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let whole =
                (*cmsg).cmsg_len as usize >= libc::CMSG_LEN(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize;
            if (*cmsg).cmsg_level == libc::IPPROTO_IPV6 && (*cmsg).cmsg_type == libc::IPV6_PKTINFO && whole {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in6_pktinfo);
                return Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

/// What a slot holds when its packet is unusable: nothing, which the
/// receive path skips.
fn empty_meta() -> RecvMeta {
    let mut m = RecvMeta::default();
    m.addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    m.len = 0;
    m.stride = 1;
    m
}

/// One recvmmsg on one family's socket, for up to `bufs.len()` packets
/// (at most `MMSG`); 0 when none waits. Each packet is left with the ESP
/// header at its buffer's start.
fn recv_family(
    sock: &socket2::Socket,
    v6: bool,
    bufs: &mut [IoSliceMut<'_>],
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    let n = bufs.len().min(meta.len()).min(MMSG);
    if n == 0 {
        return Ok(0);
    }
    let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MMSG];
    // SAFETY: mmsghdr and sockaddr_in6 are plain C structs for which
    // all-zero bytes are valid values (null pointers, zero lengths).
    let mut msgs: [libc::mmsghdr; MMSG] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut names: [libc::sockaddr_in6; MMSG] = unsafe { std::mem::zeroed() };
    let mut control = [[0u64; CONTROL_WORDS]; MMSG];
    for i in 0..n {
        iov[i] = libc::iovec { iov_base: bufs[i].as_mut_ptr() as *mut libc::c_void, iov_len: bufs[i].len() };
        let hdr = &mut msgs[i].msg_hdr;
        hdr.msg_iov = &mut iov[i];
        hdr.msg_iovlen = 1;
        if v6 {
            hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in6).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            hdr.msg_control = control[i].as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of_val(&control[i]) as _;
        }
    }
    // SAFETY: the first `n` headers point at `n` distinct writable buffers
    // (packets, names, control) of the lengths given, all of which outlive
    // the call.
    let r = unsafe {
        libc::recvmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
    }
    let got = r as usize;
    for i in 0..got {
        let hdr = &msgs[i].msg_hdr;
        let len = msgs[i].msg_len as usize;
        let mut m = empty_meta();
        if hdr.msg_flags & libc::MSG_TRUNC != 0 {
            // Larger than any packet the pipeline takes: dropped whole.
        } else if v6 {
            let name = &names[i];
            if i32::from(name.sin6_family) == libc::AF_INET6 {
                let src = Ipv6Addr::from(name.sin6_addr.s6_addr);
                m.addr = SocketAddr::V6(SocketAddrV6::new(src, 0, 0, name.sin6_scope_id));
                m.len = len;
                m.stride = len.max(1);
                m.dst_ip = pktinfo_destination(hdr).map(IpAddr::V6);
            }
        } else if let Some((src, dst, payload)) = strip_ipv4(&mut bufs[i], len) {
            m.addr = SocketAddr::new(IpAddr::V4(src), 0);
            m.len = payload;
            m.stride = payload.max(1);
            m.dst_ip = Some(IpAddr::V4(dst));
        }
        meta[i] = m;
    }
    Ok(got)
}

impl Socket for RawEspSocket {
    fn fd(&self) -> RawFd {
        self.read_socket().as_raw_fd()
    }

    /// Whether `dst`'s family has a socket.
    fn reaches(&self, dst: &SocketAddr) -> bool {
        self.pair.get(dst.is_ipv6()).is_some()
    }

    fn local_port(&self) -> u16 {
        0
    }

    fn local_address_towards(&self, remote: SocketAddr) -> Option<IpAddr> {
        self.route_probes.source_towards(remote)
    }

    fn max_gso_segments(&self) -> usize {
        1
    }

    fn gro_segments(&self) -> usize {
        1
    }

    /// Marks the socket it reads; the interface's set holds a reader for
    /// every socket there is, so all of them are marked.
    fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        self.read_socket().set_mark(mark)?;
        self.route_probes.set_mark(mark);
        Ok(())
    }

    /// From the sticky source when there is one (an IP_PKTINFO or
    /// IPV6_PKTINFO control message, as for UDP): a host with several
    /// addresses, IPv6 temporary ones above all, would otherwise send ESP
    /// from another address than IKE's, which the peer's filters drop.
    fn send(
        &self,
        dst: SocketAddr,
        src: Option<IpAddr>,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<SourceUse> {
        let segment = segment.unwrap_or(contents.len()).max(1);
        let lens = (0..contents.len()).step_by(segment).map(|at| segment.min(contents.len() - at));
        self.send_datagrams(dst, src, contents, lens).map_err(|p| p.error)
    }

    /// Up to `MMSG` datagrams per sendmmsg (a raw socket has no GSO, so
    /// this is what batching it can do).
    fn send_many(
        &self,
        dst: SocketAddr,
        src: Option<IpAddr>,
        contents: &[u8],
        lens: &[usize],
    ) -> Result<SourceUse, PartialSend> {
        self.send_datagrams(dst, src, contents, lens.iter().copied())
    }

    /// Up to `MMSG` packets from the family it reads (WouldBlock when
    /// none waits). A packet that is not whole ESP over IP is left as an
    /// empty slot.
    fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        match recv_family(self.read_socket(), self.reads_v6, bufs, meta)? {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            got => Ok(got),
        }
    }
}

/// Makes the interface's raw ESP sockets: one reader per family that
/// opens (whatever `count` asks).
pub struct RawEspBind;

impl Bind for RawEspBind {
    fn bind(&self, _count: usize, _port: u16, fwmark: u32) -> io::Result<(Vec<Arc<dyn Socket>>, u16)> {
        let readers = RawEspSocket::open(fwmark)?;
        Ok((readers.into_iter().map(|r| Arc::new(r) as Arc<dyn Socket>).collect(), 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv4_header_is_stripped() {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&36u16.to_be_bytes());
        p[12..16].copy_from_slice(&[198, 18, 0, 2]);
        p[16..20].copy_from_slice(&[198, 18, 0, 1]);
        p[20..24].copy_from_slice(&[0xc0, 0xff, 0xee, 0x01]);
        let (src, dst, len) = strip_ipv4(&mut p, 40).unwrap();
        assert_eq!((src, dst, len), (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 1), 16));
        assert_eq!(&p[..4], &[0xc0, 0xff, 0xee, 0x01], "the SPI now leads");
        assert_eq!(strip_ipv4(&mut [0x45; 10], 10), None);
        assert_eq!(strip_ipv4(&mut [0x65; 40], 40), None, "not IPv4");
        let mut short = p.clone();
        short[0] = 0x4f;
        short[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(strip_ipv4(&mut short, 40), None, "a header longer than the packet");
    }
}
