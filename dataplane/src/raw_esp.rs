//! ESP as IP protocol 50, without UDP: what an SRX sends when no NAT lies
//! between the gateways. One raw IPv4 socket for the whole interface: the
//! kernel gives every raw socket of a protocol a copy of each packet, so
//! one socket per worker would deliver each packet once per worker. Every
//! worker sends on it; worker 0 alone reads it, so that a flow's packets
//! reach the TUN in the order they came (`worker::run`).
//!
//! This kernel has no ESP of its own (no XFRM), and an ESP packet that a
//! raw socket takes is not answered with ICMP "protocol unreachable".
//! IPv4 only: an IPv6 WAN uses ESP in UDP (`encap = "always"`).
//!
//! Written on libc directly, not quinn-udp: quinn-udp is for UDP (GSO,
//! GRO, ECN cmsgs), none of which a raw socket has.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use socket2::{Domain, Protocol, SockAddr, Type};

use crate::io::{Bind, RecvMeta, Socket, SourceUse};

/// IANA protocol number of ESP.
pub const IPPROTO_ESP: i32 = 50;

/// Datagrams per sendmmsg or recvmmsg.
const MMSG: usize = 64;

pub struct RawEspSocket {
    socket: socket2::Socket,
}

impl RawEspSocket {
    pub fn open(fwmark: u32) -> io::Result<RawEspSocket> {
        let socket = socket2::Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_ESP)))?;
        socket.set_nonblocking(true)?;
        if fwmark != 0 {
            socket.set_mark(fwmark)?;
        }
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(4 << 20);
        Ok(RawEspSocket { socket })
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

impl Socket for RawEspSocket {
    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn local_port(&self) -> u16 {
        0
    }

    fn max_gso_segments(&self) -> usize {
        1
    }

    fn gro_segments(&self) -> usize {
        1
    }

    fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        self.socket.set_mark(mark)
    }

    /// The kernel picks the source address: a raw socket's sticky source
    /// would need IP_PKTINFO on send, and an SRX-style peer is reached on
    /// one address.
    fn send(
        &self,
        dst: SocketAddr,
        _src: Option<IpAddr>,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<SourceUse> {
        let segment = segment.unwrap_or(contents.len()).max(1);
        let to = match dst.ip() {
            IpAddr::V4(v4) => SockAddr::from(SocketAddrV4::new(v4, 0)),
            IpAddr::V6(_) => return Err(io::Error::new(io::ErrorKind::Unsupported, "raw ESP is IPv4 only")),
        };
        for chunk in contents.chunks(segment) {
            self.socket.send_to(chunk, &to)?;
        }
        Ok(SourceUse::Kept)
    }

    /// One sendmmsg per run of up to `MMSG` datagrams (a raw socket has
    /// no GSO, so this is what batching it can do).
    fn send_many(
        &self,
        dst: SocketAddr,
        _src: Option<IpAddr>,
        contents: &[u8],
        lens: &[usize],
    ) -> io::Result<SourceUse> {
        let IpAddr::V4(v4) = dst.ip() else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "raw ESP is IPv4 only"));
        };
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(v4).to_be() },
            sin_zero: [0; 8],
        };
        let mut at = 0;
        for run in lens.chunks(MMSG) {
            let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MMSG];
            // SAFETY: mmsghdr is a plain C struct for which all-zero bytes
            // are a valid value (null pointers, zero lengths).
            let mut msgs: [libc::mmsghdr; MMSG] = unsafe { std::mem::zeroed() };
            for (i, &len) in run.iter().enumerate() {
                let datagram =
                    contents.get(at..at + len).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
                iov[i] = libc::iovec { iov_base: datagram.as_ptr() as *mut libc::c_void, iov_len: len };
                msgs[i].msg_hdr.msg_iov = &mut iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
                msgs[i].msg_hdr.msg_name = &to as *const libc::sockaddr_in as *mut libc::c_void;
                msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                at += len;
            }
            let mut sent = 0;
            while sent < run.len() {
                // SAFETY: `msgs[sent..run.len()]` are initialised headers whose
                // iovecs point into `contents` and whose names point to `to`,
                // all of which outlive the call; the kernel only reads them
                // (and writes each header's msg_len).
                let r = unsafe {
                    libc::sendmmsg(self.fd(), msgs[sent..].as_mut_ptr(), (run.len() - sent) as libc::c_uint, 0)
                };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                sent += r as usize;
            }
        }
        Ok(SourceUse::Kept)
    }

    /// One recvmmsg for up to `MMSG` packets; each is left with its IPv4
    /// header stripped, and a packet that is not IPv4 as an empty slot.
    fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let n = bufs.len().min(meta.len()).min(MMSG);
        let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MMSG];
        // SAFETY: all-zero bytes are a valid mmsghdr (see send_many).
        let mut msgs: [libc::mmsghdr; MMSG] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iov[i] = libc::iovec { iov_base: bufs[i].as_mut_ptr() as *mut libc::c_void, iov_len: bufs[i].len() };
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `n` headers point at `n` distinct writable
        // buffers of the lengths given, which outlive the call; no names or
        // control data are asked for.
        let r = unsafe {
            libc::recvmmsg(self.fd(), msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = r as usize;
        for i in 0..got {
            let mut m = RecvMeta::default();
            match strip_ipv4(&mut bufs[i], msgs[i].msg_len as usize) {
                Some((src, dst, payload)) => {
                    m.addr = SocketAddr::new(IpAddr::V4(src), 0);
                    m.len = payload;
                    m.stride = payload.max(1);
                    m.dst_ip = Some(IpAddr::V4(dst));
                }
                None => {
                    m.addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
                    m.len = 0;
                    m.stride = 1;
                }
            }
            meta[i] = m;
        }
        Ok(got)
    }
}

/// Makes the interface's one raw ESP socket (whatever `count` asks).
pub struct RawEspBind;

impl Bind for RawEspBind {
    fn bind(&self, _count: usize, _port: u16, fwmark: u32) -> io::Result<(Vec<Arc<dyn Socket>>, u16)> {
        Ok((vec![Arc::new(RawEspSocket::open(fwmark)?) as Arc<dyn Socket>], 0))
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
