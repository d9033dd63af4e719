//! Per-worker UDP sockets bound with SO_REUSEPORT to the listen port, with
//! quinn-udp doing the cmsg work: GRO and recvmmsg on receive, GSO on send,
//! and IP_PKTINFO both ways so replies leave from the address the peer
//! reached us on (sticky source).

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Type};

use crate::io::{Bind, PartialSend, Socket, SourceUse};
use crate::raw_esp::RawEspBind;
use crate::source::{encode_pktinfo, is_source_gone, RouteProbes};

pub struct UdpEndpoint {
    socket: UdpSocket,
    state: UdpSocketState,
    /// Dual-stack IPv6 socket: IPv4 peers appear as v4-mapped addresses.
    dual_stack: bool,
    /// Datagrams one GSO send may carry (1: none, sendmmsg batches
    /// instead): quinn-udp's count at bind, or 1 when the operator turned
    /// GSO off (CAUSEWAY_UDP_GSO=off) for a NIC or driver that mishandles
    /// it. Kept here, not read from quinn-udp, which drops its count to 1
    /// for good on any EINVAL of any send; a sticky IPv6 source that is no
    /// longer ours returns that too (`send`), and one address removed
    /// would have cost the socket GSO until restart. Lowered to 1 by
    /// `gso_refused` only.
    gso_segments: AtomicUsize,
    /// Route lookups with the socket's fwmark (`local_address_towards`).
    route_probes: RouteProbes,
}

/// Most datagrams handed to one sendmmsg call.
pub const MMSG_BATCH: usize = 64;

/// Environment variable that turns UDP GSO off (`off`), as the kernel's
/// own detection would on a system without it.
pub const GSO_ENV: &str = "CAUSEWAY_UDP_GSO";

/// How often, and how far apart, a held port is probed again.
const PROBE_TRIES: u32 = 20;
const PROBE_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Socket buffer size asked for: a few hundred full-size datagrams, so a
/// burst from the peer is not dropped while a worker is busy encrypting.
const SOCKET_BUFFER: usize = 4 << 20;

fn open(port: u16, reuse_port: bool, fwmark: u32) -> io::Result<(socket2::Socket, bool)> {
    let try_v6 = || -> io::Result<socket2::Socket> {
        let s = socket2::Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(false)?;
        s.set_reuse_port(reuse_port)?;
        if fwmark != 0 {
            s.set_mark(fwmark)?;
        }
        s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())?;
        Ok(s)
    };
    // A host with IPv6 disabled still gets an IPv4-only gateway; any
    // other failure (the port held, above all) is the answer.
    match try_v6() {
        Ok(s) => Ok((s, true)),
        Err(e)
            if !matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL)) =>
        {
            Err(e)
        }
        Err(_) => {
            let s = socket2::Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.set_reuse_port(reuse_port)?;
            if fwmark != 0 {
                s.set_mark(fwmark)?;
            }
            s.bind(&SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port).into())?;
            Ok((s, false))
        }
    }
}

/// Binds `count` sockets to `port` (0 picks a free port); returns them and
/// the port they share.
///
/// The port must be free: SO_REUSEPORT would otherwise let the group join
/// sockets another interface or daemon of the same user already holds
/// there, and the kernel would then split the port's datagrams between
/// the two by hash, silently. So the port is first bound alone, without
/// SO_REUSEPORT, which fails if any socket holds it; between that probe
/// and the group's bind another process could still take it, a window of
/// two system calls. A port held is tried again for a short while: the
/// interface's own previous sockets on it (a port changed and changed
/// back) close as soon as each worker has looked at the new set.
pub fn bind_group(count: usize, port: u16, fwmark: u32) -> io::Result<(Vec<Arc<UdpEndpoint>>, u16)> {
    let mut tries = 0;
    let probe = loop {
        match open(port, false, fwmark) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && port != 0 && tries < PROBE_TRIES => {
                tries += 1;
                std::thread::sleep(PROBE_PAUSE);
            }
            other => break other,
        }
    };
    let port = {
        let (probe, _) = probe.map_err(|e| {
            let held = if port == 0 { String::new() } else { format!(" (another socket holds UDP port {port}?)") };
            io::Error::new(e.kind(), format!("{e}{held}"))
        })?;
        probe.local_addr()?.as_socket().map_or(port, |a| a.port())
    };
    let mut sockets = vec![];
    for _ in 0..count.max(1) {
        sockets.push(open(port, true, fwmark)?);
    }
    let eps = sockets
        .into_iter()
        .map(|(s, dual_stack)| {
            let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
            let _ = s.set_send_buffer_size(SOCKET_BUFFER);
            let socket: UdpSocket = s.into();
            let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
            let gso_off = std::env::var(GSO_ENV).is_ok_and(|v| v == "off");
            let gso_segments = AtomicUsize::new(if gso_off { 1 } else { state.max_gso_segments() });
            let route_probes = RouteProbes::new(fwmark);
            Ok(Arc::new(UdpEndpoint { socket, state, dual_stack, gso_segments, route_probes }))
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok((eps, port))
}

/// The real network: SO_REUSEPORT UDP sockets on this host.
pub struct OsBind;

impl Bind for OsBind {
    fn bind(&self, count: usize, port: u16, fwmark: u32) -> io::Result<(Vec<Arc<dyn Socket>>, u16)> {
        let (sockets, port) = bind_group(count, port, fwmark)?;
        Ok((sockets.into_iter().map(|s| s as Arc<dyn Socket>).collect(), port))
    }

    fn bind_raw_esp(&self, fwmark: u32) -> io::Result<Vec<Arc<dyn Socket>>> {
        RawEspBind.bind(1, 0, fwmark).map(|(sockets, _)| sockets)
    }
}

/// An address as the rest of the gateway sees it: plain IPv4 for IPv4 peers.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl UdpEndpoint {
    fn wire(&self, addr: SocketAddr) -> SocketAddr {
        match addr {
            SocketAddr::V4(a) if self.dual_stack => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
            other => other,
        }
    }

    /// Notes a failed send: a GSO send the kernel refused as a device that
    /// cannot segment would (EIO; EINVAL without a source of ours to
    /// blame) turns GSO off for this socket, as quinn-udp would.
    fn gso_refused(&self, e: io::Error, segment: Option<usize>, src: Option<IpAddr>) -> io::Error {
        let refused = match e.raw_os_error() {
            Some(libc::EIO) => true,
            Some(libc::EINVAL) => src.is_none(),
            _ => false,
        };
        if segment.is_some() && refused && self.gso_segments.swap(1, Ordering::Relaxed) > 1 {
            tracing::info!(error = %e, "a GSO send failed: sending batches with sendmmsg from now on");
        }
        e
    }

    /// Sends `lens[from..]`; on failure, the error and how many were sent.
    fn sendmmsg_all(
        &self,
        dst: SocketAddr,
        src: Option<IpAddr>,
        contents: &[u8],
        lens: &[usize],
        from: usize,
    ) -> Result<(), (io::Error, usize)> {
        let name = socket2::SockAddr::from(self.wire(dst));
        // One control buffer serves every message: they share the source.
        // u64s for cmsghdr alignment; 64 bytes hold either pktinfo.
        let mut control = [0u64; 8];
        let control_len = src.map_or(0, |ip| encode_pktinfo(&mut control, ip));
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero
        // is a valid (empty) value.
        let mut iovs: [libc::iovec; MMSG_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; MMSG_BATCH] = unsafe { std::mem::zeroed() };
        let mut done = from;
        let mut offset: usize = lens[..from].iter().sum();
        while done < lens.len() {
            let n = (lens.len() - done).min(MMSG_BATCH);
            let mut at = offset;
            for i in 0..n {
                let len = lens[done + i];
                let chunk = &contents[at..at + len];
                at += len;
                iovs[i] = libc::iovec { iov_base: chunk.as_ptr() as *mut libc::c_void, iov_len: len };
                let hdr = &mut msgs[i].msg_hdr;
                hdr.msg_name = name.as_ptr() as *mut libc::c_void;
                hdr.msg_namelen = name.len();
                hdr.msg_iov = &mut iovs[i];
                hdr.msg_iovlen = 1;
                if control_len > 0 {
                    hdr.msg_control = control.as_mut_ptr() as *mut libc::c_void;
                    hdr.msg_controllen = control_len;
                }
            }
            // SAFETY: msgs[..n] point at `name`, `iovs` and `control`, all
            // alive for the call; each iovec lies inside `contents`.
            let sent = unsafe { libc::sendmmsg(self.socket.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
            if sent < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err((e, done));
            }
            let sent = sent as usize;
            offset += lens[done..done + sent].iter().sum::<usize>();
            done += sent;
        }
        Ok(())
    }
}

impl Socket for UdpEndpoint {
    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn local_port(&self) -> u16 {
        self.socket.local_addr().map_or(0, |a| a.port())
    }

    fn local_address_towards(&self, remote: SocketAddr) -> Option<IpAddr> {
        self.route_probes.source_towards(remote)
    }

    /// Datagrams one GSO send may carry; 1 means no GSO.
    fn max_gso_segments(&self) -> usize {
        self.gso_segments.load(Ordering::Relaxed)
    }

    fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        socket2::SockRef::from(&self.socket).set_mark(mark)?;
        self.route_probes.set_mark(mark);
        Ok(())
    }

    /// Sends `contents` to `dst`, split into `segment` sized datagrams when
    /// given (GSO). A sticky source that is no longer local is dropped and
    /// the send retried from whatever address the kernel picks.
    fn send(
        &self,
        dst: SocketAddr,
        src: Option<IpAddr>,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<SourceUse> {
        let mut t = Transmit { destination: self.wire(dst), ecn: None, contents, segment_size: segment, src_ip: src };
        match self.state.try_send(UdpSockRef::from(&self.socket), &t) {
            Ok(()) => Ok(SourceUse::Kept),
            Err(e) if src.is_some() && is_source_gone(&e) => {
                t.src_ip = None;
                let sent = self.state.try_send(UdpSockRef::from(&self.socket), &t);
                sent.map(|()| SourceUse::Dropped).map_err(|e| self.gso_refused(e, segment, None))
            }
            Err(e) => Err(self.gso_refused(e, segment, src)),
        }
    }

    /// Where GSO is missing: sends datagrams of `lens` bytes, laid end to
    /// end in `contents`, with sendmmsg, up to MMSG_BATCH per syscall.
    /// quinn-udp sends one datagram per syscall without GSO, hence this
    /// path. The sticky source is handled as in `send`.
    fn send_many(
        &self,
        dst: SocketAddr,
        src: Option<IpAddr>,
        contents: &[u8],
        lens: &[usize],
    ) -> Result<SourceUse, PartialSend> {
        match self.sendmmsg_all(dst, src, contents, lens, 0) {
            Ok(()) => Ok(SourceUse::Kept),
            Err((e, sent)) if src.is_some() && is_source_gone(&e) => {
                let source = SourceUse::Dropped;
                self.sendmmsg_all(dst, None, contents, lens, sent).map_err(|(error, sent)| PartialSend {
                    error,
                    sent,
                    source,
                })?;
                Ok(source)
            }
            Err((error, sent)) => Err(PartialSend { error, sent, source: SourceUse::Kept }),
        }
    }

    /// Receives a batch (WouldBlock when nothing waits). Addresses in `meta`
    /// are normalized to plain IPv4 where they were v4-mapped.
    fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let n = self.state.recv(UdpSockRef::from(&self.socket), bufs, meta)?;
        for m in &mut meta[..n] {
            m.addr = normalize(m.addr);
            m.dst_ip = m.dst_ip.map(normalize_ip);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_shares_a_port_and_talks_over_loopback() {
        let (group, port) = bind_group(2, 0, 0).unwrap();
        assert!(port != 0);
        assert!(group.iter().all(|s| s.local_port() == port));
        let (other, other_port) = bind_group(1, 0, 0).unwrap();
        let dst: SocketAddr = format!("127.0.0.1:{other_port}").parse().unwrap();
        assert_eq!(group[0].send(dst, Some("127.0.0.1".parse().unwrap()), b"hello", None).unwrap(), SourceUse::Kept);
        // A source address that is not (or no longer) ours falls back to
        // the kernel's choice; the datagram still goes to loopback.
        assert_eq!(
            group[0].send(dst, Some("198.18.255.254".parse().unwrap()), b"again", None).unwrap(),
            SourceUse::Dropped
        );
        let mut buf = vec![0u8; 65536];
        let mut meta = [RecvMeta::default()];
        let mut got = vec![];
        for _ in 0..200 {
            let mut slices = [IoSliceMut::new(&mut buf)];
            match other[0].recv(&mut slices, &mut meta) {
                Ok(n) => {
                    assert_eq!(n, 1);
                    assert_eq!(
                        meta[0].addr,
                        SocketAddr::new("127.0.0.1".parse().unwrap(), port),
                        "plain IPv4, not v4-mapped"
                    );
                    got.push(buf[..meta[0].len].to_vec());
                    if got.len() == 2 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, vec![b"hello".to_vec(), b"again".to_vec()]);
    }

    // An IPv6 sticky source that is not ours makes the kernel answer
    // EINVAL, as a device that cannot segment may; the send goes out
    // without it and the socket keeps GSO. (The source is the WAN test
    // range's, v4-mapped: an IPv6 source the kernel refuses the same way.)
    #[test]
    fn a_gone_ipv6_source_does_not_cost_gso() {
        let (group, _) = bind_group(1, 0, 0).unwrap();
        let gso = group[0].max_gso_segments();
        assert!(gso > 1, "loopback has UDP GSO");
        let rx = UdpSocket::bind("[::1]:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let gone = Some("::ffff:198.18.255.254".parse().unwrap());
        let two = [7u8; 200];
        assert_eq!(group[0].send(rx.local_addr().unwrap(), gone, &two, Some(100)).unwrap(), SourceUse::Dropped);
        let mut buf = [0u8; 256];
        assert_eq!((rx.recv(&mut buf).unwrap(), rx.recv(&mut buf).unwrap()), (100, 100), "two segments");
        assert_eq!(group[0].state.max_gso_segments(), 1, "quinn-udp gave GSO up");
        assert_eq!(group[0].max_gso_segments(), gso, "the socket did not");
    }

    // A route lookup asks as the socket's own packets would go: with its
    // fwmark, on a socket marked when the mark was set.
    #[test]
    fn route_lookups_carry_the_fwmark() {
        let Ok((group, _)) = bind_group(1, 0, 7) else { return }; // marking needs CAP_NET_ADMIN
        let marks = |g: &UdpEndpoint| g.route_probes.marks();
        assert!(!marks(&group[0]).is_empty() && marks(&group[0]).iter().all(|&m| m == 7));
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(group[0].local_address_towards(to), Some("127.0.0.1".parse().unwrap()));
        group[0].set_fwmark(9).unwrap();
        assert!(marks(&group[0]).iter().all(|&m| m == 9));
        group[0].set_fwmark(0).unwrap();
        assert!(marks(&group[0]).is_empty(), "no mark, no probes");
        assert_eq!(group[0].local_address_towards(to), Some("127.0.0.1".parse().unwrap()));
    }

    // Two groups on one port would share its datagrams by hash; the second
    // must be refused, as a second WireGuard interface on the port would be.
    #[test]
    fn a_port_held_by_another_group_is_refused() {
        let (_first, port) = bind_group(2, 0, 0).unwrap();
        let e = bind_group(2, port, 0).err().expect("the port is taken");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(e.to_string().contains(&format!("UDP port {port}")), "{e}");
        let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = bind_group(1, plain.local_addr().unwrap().port(), 0).err().expect("held by a plain socket");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        // Held for IPv6 only, by a socket that would share it: not an
        // IPv4-only fallback that then joins the holder's group.
        let v6 = socket2::Socket::new(Domain::IPV6, Type::DGRAM, None).unwrap();
        v6.set_only_v6(true).unwrap();
        v6.set_reuse_port(true).unwrap();
        v6.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into()).unwrap();
        let port = v6.local_addr().unwrap().as_socket().unwrap().port();
        let e = bind_group(2, port, 0).err().expect("held for IPv6");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    }

    // A port whose holder lets go within the probe's patience (the
    // interface's own old sockets, as workers move to a new set) is taken.
    #[test]
    fn a_port_let_go_of_shortly_is_taken() {
        let (old, port) = bind_group(2, 0, 0).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(old);
        });
        let (group, got) = bind_group(2, port, 0).unwrap();
        assert_eq!((group.len(), got), (2, port));
        release.join().unwrap();
    }

    /// One socket of a group and a loopback receiver (2 s patience) with
    /// its address.
    fn sender_and_receiver() -> (Arc<UdpEndpoint>, UdpSocket, SocketAddr) {
        let (mut group, _) = bind_group(1, 0, 0).unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let dst = rx.local_addr().unwrap();
        (group.remove(0), rx, dst)
    }

    #[test]
    fn sendmmsg_sends_every_size_in_order_from_the_sticky_source() {
        let (sock, rx, dst) = sender_and_receiver();
        // More datagrams than one call takes, of varied sizes.
        let lens: Vec<usize> = (0..MMSG_BATCH + 9).map(|i| 1 + (i * 37) % 1400).collect();
        let contents: Vec<u8> = lens.iter().enumerate().flat_map(|(i, &l)| std::iter::repeat_n(i as u8, l)).collect();
        // All of 127/8 is ours: the source must be the one asked for.
        assert_eq!(sock.send_many(dst, Some("127.0.0.7".parse().unwrap()), &contents, &lens).unwrap(), SourceUse::Kept);
        let mut buf = vec![0u8; 2048];
        for (i, &len) in lens.iter().enumerate() {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!((n, buf[0]), (len, i as u8), "datagram {i}");
            assert_eq!(from.ip(), "127.0.0.7".parse::<IpAddr>().unwrap(), "IP_PKTINFO chose the source");
        }
        // A source that is not ours: dropped, and everything still arrives.
        let gone = Some("198.18.255.254".parse().unwrap());
        assert_eq!(sock.send_many(dst, gone, &contents[..lens[0] + lens[1]], &lens[..2]).unwrap(), SourceUse::Dropped);
        for &len in &lens[..2] {
            assert_eq!(rx.recv_from(&mut buf).unwrap().0, len);
        }
    }

    #[test]
    fn a_sendmmsg_that_stops_part_way_says_how_many_left() {
        let (sock, rx, dst) = sender_and_receiver();
        // The third is larger than any UDP datagram: the kernel sends two
        // and returns, and the next call fails (EMSGSIZE).
        let lens = [100, 200, 70_000, 300];
        let contents = vec![7u8; lens.iter().sum()];
        let e = sock.send_many(dst, None, &contents, &lens).unwrap_err();
        assert_eq!((e.sent, e.error.raw_os_error()), (2, Some(libc::EMSGSIZE)));
        let mut buf = vec![0u8; 2048];
        for &len in &lens[..2] {
            assert_eq!(rx.recv_from(&mut buf).unwrap().0, len);
        }
        // The same past a first whole call.
        let more = MMSG_BATCH + 2;
        let mut lens = vec![10; more];
        lens.push(70_000);
        let contents = vec![7u8; lens.iter().sum()];
        assert_eq!(sock.send_many(dst, None, &contents, &lens).unwrap_err().sent, more);
    }
}
