//! TUN queues and a UDP network in memory, for driving whole data planes
//! in one process without root (as wireguard-go tests its device through
//! channel TUNs and a test bind). Each queue and socket is a mailbox with a
//! doorbell (`doorbell.rs`) rung exactly while the mailbox has something,
//! so the workers' poll() sees it like a real descriptor.
//!
//! The network behaves like loopback with offloads: a GSO send arrives as
//! one GRO-coalesced receive of the same segments, and every send is
//! logged so tests can check how the send path cut its runs. Delivery is
//! in order; a full mailbox drops, like a full socket buffer. A host can
//! be unplugged: nothing reaches it or leaves it until it is plugged in
//! again, as with a machine that crashed (a gateway stopped this way says
//! goodbye to nobody).
//!
//! A TUN made with offload takes coalesced writes (`gro.rs`) and cuts them
//! back into packets with tun-rs's segmentation, standing in for the
//! kernel, so the host sees what a real host would.
//!
//! Test code: it allocates per packet, which the real I/O never does.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::doorbell::Doorbell;
use crate::io::{Bind, Offload, PartialSend, Read, RecvMeta, Socket, SourceUse, Tun};
use crate::tun::WRITE_HEADROOM;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A bounded FIFO whose doorbell polls readable while it holds anything.
pub struct Mailbox<T> {
    inner: Mutex<VecDeque<T>>,
    bell: Doorbell,
    capacity: usize,
    dropped: AtomicU64,
}

impl<T> Mailbox<T> {
    pub fn new(capacity: usize) -> Arc<Mailbox<T>> {
        let bell = Doorbell::new().expect("an eventfd for the doorbell");
        Arc::new(Mailbox { inner: Mutex::new(VecDeque::new()), bell, capacity, dropped: AtomicU64::new(0) })
    }

    /// Adds `items` in order; those past the capacity are dropped and
    /// counted. Invariant (under the lock): the doorbell is rung exactly
    /// when the queue is not empty.
    pub fn push_all(&self, items: impl IntoIterator<Item = T>) {
        let mut q = lock(&self.inner);
        let was_empty = q.is_empty();
        for item in items {
            if q.len() >= self.capacity {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                q.push_back(item);
            }
        }
        if was_empty && !q.is_empty() {
            self.bell.ring();
        }
    }

    pub fn push(&self, item: T) {
        self.push_all(std::iter::once(item));
    }

    /// Takes up to `max` items in order.
    pub fn pop_up_to(&self, max: usize, take: impl FnMut(T)) -> usize {
        self.pop_while(max, |_| true, take)
    }

    /// Takes up to `max` items in order while `accept` takes the next one;
    /// the first it refuses stays in front.
    pub fn pop_while(&self, max: usize, mut accept: impl FnMut(&T) -> bool, mut take: impl FnMut(T)) -> usize {
        let mut q = lock(&self.inner);
        let mut n = 0;
        while n < max {
            if !q.front().is_some_and(&mut accept) {
                break;
            }
            let item = q.pop_front().expect("the front was there");
            take(item);
            n += 1;
        }
        if n > 0 && q.is_empty() {
            self.bell.clear();
        }
        n
    }

    pub fn pop(&self) -> Option<T> {
        let mut out = None;
        self.pop_up_to(1, |item| out = Some(item));
        out
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items refused because the mailbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn fd(&self) -> RawFd {
        self.bell.fd()
    }
}

/// The host's side of an in-memory TUN device: packets the host routes
/// into the tunnel (one mailbox per queue, as the kernel picks a queue per
/// flow) and packets the workers wrote (one mailbox for the device).
pub struct MemTunHost {
    queues: Vec<Arc<Mailbox<FromHost>>>,
    written: Arc<Mailbox<Vec<u8>>>,
    coalesced: Arc<AtomicU64>,
}

/// One queue of an in-memory TUN device, for one worker.
pub struct MemTun {
    from_host: Arc<Mailbox<FromHost>>,
    to_host: Arc<Mailbox<Vec<u8>>>,
    offload: Offload,
    coalesced: Arc<AtomicU64>,
}

/// What the host routes into the tunnel: a packet, or a TSO/USO
/// super-packet with its virtio header, as a real TUN with offload hands
/// one over.
enum FromHost {
    Packet(Vec<u8>),
    Super(tun_rs::VirtioNetHdr, Vec<u8>),
}

/// Makes an in-memory TUN device of `queues` queues.
pub fn tun(queues: usize) -> (MemTunHost, Vec<MemTun>) {
    tun_with_offload(queues, Offload::default())
}

/// Makes an in-memory TUN device that takes coalesced writes as `offload`
/// allows.
pub fn tun_with_offload(queues: usize, offload: Offload) -> (MemTunHost, Vec<MemTun>) {
    let written = Mailbox::new(usize::MAX);
    let coalesced = Arc::new(AtomicU64::new(0));
    let inbound: Vec<_> = (0..queues).map(|_| Mailbox::new(usize::MAX)).collect();
    let tuns = inbound
        .iter()
        .map(|q| MemTun { from_host: q.clone(), to_host: written.clone(), offload, coalesced: coalesced.clone() })
        .collect();
    (MemTunHost { queues: inbound, written, coalesced }, tuns)
}

impl MemTunHost {
    /// Routes packets into the tunnel through queue `queue`, all at once,
    /// so one worker read may take them together.
    pub fn send(&self, queue: usize, packets: impl IntoIterator<Item = Vec<u8>>) {
        self.queues[queue].push_all(packets.into_iter().map(FromHost::Packet));
    }

    /// Routes a super-packet into the tunnel through queue `queue`, as the
    /// kernel's TSO or USO makes one: `hdr` says how to cut `packet`.
    pub fn send_super(&self, queue: usize, hdr: tun_rs::VirtioNetHdr, packet: Vec<u8>) {
        self.queues[queue].push(FromHost::Super(hdr, packet));
    }

    /// The next packet a worker wrote, if any.
    pub fn recv(&self) -> Option<Vec<u8>> {
        self.written.pop()
    }

    /// Packets written and not yet taken.
    pub fn pending(&self) -> usize {
        self.written.len()
    }

    /// Writes that carried a coalesced run of packets.
    pub fn coalesced_writes(&self) -> u64 {
        self.coalesced.load(Ordering::Relaxed)
    }
}

impl Tun for MemTun {
    fn fd(&self) -> RawFd {
        self.from_host.fd()
    }

    /// Packets in order, as many as `bufs` hold; a super-packet alone in
    /// its read, as from the kernel (one super-packet per read).
    fn read_batch(&mut self, bufs: &mut [Vec<u8>], sizes: &mut [usize], raw: &mut [u8]) -> io::Result<Read> {
        let got = std::cell::Cell::new(Read::Packets(0));
        self.from_host.pop_while(
            bufs.len(),
            |item| {
                matches!(
                    (item, got.get()),
                    (FromHost::Packet(_), Read::Packets(_)) | (FromHost::Super(..), Read::Packets(0))
                )
            },
            |item| match (item, got.get()) {
                (FromHost::Packet(p), Read::Packets(i)) => {
                    bufs[i][..p.len()].copy_from_slice(&p);
                    sizes[i] = p.len();
                    got.set(Read::Packets(i + 1));
                }
                (FromHost::Super(hdr, p), _) => {
                    let h = tun_rs::VIRTIO_NET_HDR_LEN;
                    hdr.encode(&mut raw[..h]).expect("room for the header");
                    raw[h..h + p.len()].copy_from_slice(&p);
                    got.set(Read::Super(p.len()));
                }
                (FromHost::Packet(_), Read::Super(_)) => unreachable!("refused above"),
            },
        );
        match got.get() {
            Read::Packets(0) => Err(io::ErrorKind::WouldBlock.into()),
            read => Ok(read),
        }
    }

    fn offload(&self) -> Offload {
        self.offload
    }

    fn write_batch(&mut self, bufs: &[Vec<u8>]) -> io::Result<()> {
        for b in bufs {
            let hdr = tun_rs::VirtioNetHdr::decode(b)?;
            let mut packet = b[WRITE_HEADROOM..].to_vec();
            if hdr.gso_type == 0 {
                self.to_host.push_all([packet]);
                continue;
            }
            let allowed = match hdr.gso_type {
                tun_rs::VIRTIO_NET_HDR_GSO_UDP_L4 => self.offload.udp,
                _ => self.offload.tcp,
            };
            if !allowed {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "a coalesced write the TUN does not take"));
            }
            self.coalesced.fetch_add(1, Ordering::Relaxed);
            let v6 = packet[0] >> 4 == 6;
            let mut out = vec![vec![0u8; 65_536]; 128];
            let mut sizes = vec![0usize; 128];
            let n = tun_rs::gso_split(&mut packet, hdr, &mut out, &mut sizes, 0, v6)?;
            self.to_host.push_all(out.into_iter().zip(sizes).take(n).map(|(mut p, len)| {
                p.truncate(len);
                p
            }));
        }
        Ok(())
    }
}

/// One datagram, or a GRO run of equal segments, in flight.
struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
    stride: usize,
}

/// One send call, as the network saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRecord {
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// Each datagram's length, in order.
    pub datagrams: Vec<usize>,
    /// The GSO segment size, for a GSO send of more than one datagram.
    pub segment: Option<usize>,
}

/// A UDP network in memory: hosts by address, sockets by port, and the
/// log of every send.
#[derive(Default)]
pub struct MemNet {
    /// Sockets bound to each address: a reuseport group.
    groups: Mutex<HashMap<SocketAddr, Vec<Arc<Mailbox<Datagram>>>>>,
    next_port: Mutex<u16>,
    log: Mutex<Vec<SendRecord>>,
    /// Hosts cut off: datagrams from or to them vanish.
    unplugged: Mutex<HashSet<IpAddr>>,
    /// Addresses another program holds: binding them fails.
    held: Mutex<HashSet<SocketAddr>>,
    /// The fwmark of the sockets at each address, as last bound or set.
    marks: Mutex<HashMap<SocketAddr, u32>>,
    /// Datagrams the sockets may still send before their sends fail
    /// (ENOBUFS, as a full send queue); None: no limit.
    send_allowance: Mutex<Option<usize>>,
}

/// Datagrams one in-memory socket holds before it drops.
const SOCKET_QUEUE: usize = 8192;

impl MemNet {
    pub fn new() -> Arc<MemNet> {
        Arc::new(MemNet { next_port: Mutex::new(40_000), ..MemNet::default() })
    }

    /// A binder for a host at `ip` whose sockets allow `gso_segments`
    /// datagrams per send (1: no GSO, so the send path uses `send_many`).
    pub fn host(self: &Arc<Self>, ip: IpAddr, gso_segments: usize) -> Arc<MemBind> {
        Arc::new(MemBind { net: self.clone(), ip, gso_segments })
    }

    /// Every send so far, and clears the log.
    pub fn take_log(&self) -> Vec<SendRecord> {
        std::mem::take(&mut *lock(&self.log))
    }

    /// Datagrams dropped at full sockets.
    pub fn dropped(&self) -> u64 {
        lock(&self.groups).values().flatten().map(|m| m.dropped()).sum()
    }

    /// Makes `addr` held by another program, so a bind to it fails with
    /// `AddrInUse`, as a port another program holds does.
    pub fn hold(&self, addr: SocketAddr) {
        lock(&self.held).insert(addr);
    }

    /// The fwmark of the sockets bound to `addr` (0 when none is).
    pub fn fwmark_of(&self, addr: SocketAddr) -> u32 {
        lock(&self.marks).get(&addr).copied().unwrap_or(0)
    }

    /// Lets the sockets send `datagrams` more, then fails their sends
    /// (a GSO send as a whole, a batched send part way) until
    /// `allow_sends`.
    pub fn fail_sends_after(&self, datagrams: usize) {
        *lock(&self.send_allowance) = Some(datagrams);
    }

    /// Sends no longer fail.
    pub fn allow_sends(&self) {
        *lock(&self.send_allowance) = None;
    }

    /// Of `want` datagrams, how many may leave now (all or none when
    /// `whole`), taken from the allowance.
    fn take_allowance(&self, want: usize, whole: bool) -> usize {
        let mut a = lock(&self.send_allowance);
        let Some(left) = a.as_mut() else { return want };
        let take = if whole && *left < want { 0 } else { want.min(*left) };
        *left -= take;
        take
    }

    /// Cuts host `ip` off: what it sends and what is sent to it is lost.
    pub fn unplug(&self, ip: IpAddr) {
        lock(&self.unplugged).insert(ip);
    }

    /// Connects host `ip` again.
    pub fn plug(&self, ip: IpAddr) {
        lock(&self.unplugged).remove(&ip);
    }

    fn deliver(&self, d: Datagram) {
        {
            let cut = lock(&self.unplugged);
            if cut.contains(&d.from.ip()) || cut.contains(&d.to.ip()) {
                return;
            }
        }
        let group = lock(&self.groups).get(&d.to).cloned();
        // Reuseport hashes the 4-tuple: one source always reaches one socket.
        if let Some(group) = group.filter(|g| !g.is_empty()) {
            let hash = d.from.port() as usize;
            group[hash % group.len()].push(d);
        }
    }
}

/// Binds the in-memory sockets of one host.
pub struct MemBind {
    net: Arc<MemNet>,
    ip: IpAddr,
    gso_segments: usize,
}

impl Bind for MemBind {
    fn bind(&self, count: usize, port: u16, fwmark: u32) -> io::Result<(Vec<Arc<dyn Socket>>, u16)> {
        let port = if port == 0 {
            let mut next = lock(&self.net.next_port);
            *next += 1;
            *next
        } else {
            port
        };
        let addr = SocketAddr::new(self.ip, port);
        if lock(&self.net.held).contains(&addr) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        let mailboxes: Vec<_> = (0..count.max(1)).map(|_| Mailbox::new(SOCKET_QUEUE)).collect();
        // A new group replaces the old one, as a rebind closes the old sockets.
        lock(&self.net.groups).insert(addr, mailboxes.clone());
        lock(&self.net.marks).insert(addr, fwmark);
        let sockets = mailboxes
            .into_iter()
            .map(|inbox| {
                Arc::new(MemSocket { net: self.net.clone(), addr, inbox, gso_segments: self.gso_segments })
                    as Arc<dyn Socket>
            })
            .collect();
        Ok((sockets, port))
    }
}

struct MemSocket {
    net: Arc<MemNet>,
    addr: SocketAddr,
    inbox: Arc<Mailbox<Datagram>>,
    gso_segments: usize,
}

impl Socket for MemSocket {
    fn fd(&self) -> RawFd {
        self.inbox.fd()
    }

    fn local_port(&self) -> u16 {
        self.addr.port()
    }

    /// The host's one address, for a remote of its family: the in-memory
    /// network has no NAT, and its hosts no other addresses.
    fn local_address_towards(&self, remote: SocketAddr) -> Option<IpAddr> {
        (self.addr.is_ipv4() == remote.is_ipv4()).then_some(self.addr.ip())
    }

    fn max_gso_segments(&self) -> usize {
        self.gso_segments
    }

    fn gro_segments(&self) -> usize {
        64
    }

    fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        lock(&self.net.marks).insert(self.addr, mark);
        Ok(())
    }

    fn send(
        &self,
        dst: SocketAddr,
        _src: Option<IpAddr>,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<SourceUse> {
        let stride = segment.unwrap_or(contents.len()).max(1);
        if contents.len().div_ceil(stride) > self.gso_segments.max(1) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let datagrams = contents.chunks(stride).map(<[u8]>::len).collect::<Vec<_>>();
        if self.net.take_allowance(datagrams.len(), true) < datagrams.len() {
            return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
        }
        lock(&self.net.log).push(SendRecord {
            from: self.addr,
            to: dst,
            segment: (datagrams.len() > 1).then_some(stride),
            datagrams,
        });
        self.net.deliver(Datagram { from: self.addr, to: dst, data: contents.to_vec(), stride });
        Ok(SourceUse::Kept)
    }

    fn send_many(
        &self,
        dst: SocketAddr,
        _src: Option<IpAddr>,
        contents: &[u8],
        lens: &[usize],
    ) -> Result<SourceUse, PartialSend> {
        let sent = self.net.take_allowance(lens.len(), false);
        if sent > 0 {
            let datagrams = lens[..sent].to_vec();
            lock(&self.net.log).push(SendRecord { from: self.addr, to: dst, datagrams, segment: None });
        }
        let mut at = 0;
        for &len in &lens[..sent] {
            let data = contents[at..at + len].to_vec();
            at += len;
            self.net.deliver(Datagram { from: self.addr, to: dst, data, stride: len });
        }
        if sent < lens.len() {
            let error = io::Error::from_raw_os_error(libc::ENOBUFS);
            return Err(PartialSend { error, sent, source: SourceUse::Kept });
        }
        Ok(SourceUse::Kept)
    }

    fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let max = bufs.len().min(meta.len());
        let mut i = 0;
        self.inbox.pop_up_to(max, |d| {
            bufs[i][..d.data.len()].copy_from_slice(&d.data);
            let mut m = RecvMeta::default();
            m.addr = d.from;
            m.len = d.data.len();
            m.stride = d.stride;
            m.dst_ip = Some(d.to.ip());
            meta[i] = m;
            i += 1;
        });
        if i == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd that outlives the call; zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    // IKE's NAT detection hashes this: the host's own address, so two
    // in-memory gateways see no NAT between them, as on one LAN.
    #[test]
    fn a_socket_is_reached_at_its_host_address() {
        let net = MemNet::new();
        let (sockets, port) = net.host("198.18.0.1".parse().unwrap(), 1).bind(1, 0, 0).unwrap();
        let to_v4: SocketAddr = "198.18.0.2:500".parse().unwrap();
        assert_eq!(sockets[0].local_address_towards(to_v4), Some("198.18.0.1".parse().unwrap()));
        assert_eq!(sockets[0].local_address_towards("[fd00::2]:500".parse().unwrap()), None, "no IPv6 address");
        assert_ne!(port, 0);
        let raw = net.host("198.18.0.1".parse().unwrap(), 1).bind_raw_esp(0);
        assert!(
            matches!(raw, Err(ref e) if e.kind() == io::ErrorKind::Unsupported),
            "no raw ESP in memory: ESP goes in UDP"
        );
    }

    #[test]
    fn the_doorbell_rings_exactly_while_the_mailbox_holds_something() {
        let m = Mailbox::new(3);
        assert!(!readable(m.fd()));
        m.push_all([1, 2]);
        assert!(readable(m.fd()));
        assert_eq!(m.pop(), Some(1));
        assert!(readable(m.fd()), "one left");
        m.push_all([3, 4, 5]);
        assert_eq!(m.dropped(), 1, "capacity 3");
        let mut got = Vec::new();
        assert_eq!(m.pop_up_to(10, |x| got.push(x)), 3);
        assert_eq!(got, [2, 3, 4]);
        assert!(!readable(m.fd()), "empty again");
    }

    #[test]
    fn a_gso_send_arrives_as_one_coalesced_receive() {
        let net = MemNet::new();
        let (a, _) = net.host("198.18.0.1".parse().unwrap(), 64).bind(1, 0, 0).unwrap();
        let (b, port) = net.host("198.18.0.2".parse().unwrap(), 64).bind(1, 51820, 0).unwrap();
        let dst = SocketAddr::new("198.18.0.2".parse().unwrap(), port);
        a[0].send(dst, None, &[7u8; 250], Some(100)).unwrap();
        let mut buf = vec![0u8; 1000];
        let mut meta = [RecvMeta::default()];
        assert_eq!(b[0].recv(&mut [IoSliceMut::new(&mut buf)], &mut meta).unwrap(), 1);
        assert_eq!((meta[0].len, meta[0].stride), (250, 100));
        assert_eq!(net.take_log()[0].datagrams, [100, 100, 50]);
        assert!(a[0].send(dst, None, &[0u8; 6500], Some(100)).is_err(), "more segments than GSO allows");
    }

    #[test]
    fn an_unplugged_host_neither_sends_nor_receives_until_plugged_in() {
        let net = MemNet::new();
        let (ip_a, ip_b): (IpAddr, IpAddr) = ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
        let (a, _) = net.host(ip_a, 1).bind(1, 500, 0).unwrap();
        let (b, _) = net.host(ip_b, 1).bind(1, 500, 0).unwrap();
        let (to_a, to_b) = (SocketAddr::new(ip_a, 500), SocketAddr::new(ip_b, 500));
        let mut buf = vec![0u8; 100];
        let mut meta = [RecvMeta::default()];
        let mut recv = |s: &Arc<dyn Socket>| s.recv(&mut [IoSliceMut::new(&mut buf)], &mut meta).is_ok();
        net.unplug(ip_b);
        b[0].send(to_a, None, &[1], None).unwrap();
        a[0].send(to_b, None, &[2], None).unwrap();
        assert!(!recv(&a[0]) && !recv(&b[0]), "lost both ways");
        net.plug(ip_b);
        b[0].send(to_a, None, &[3], None).unwrap();
        a[0].send(to_b, None, &[4], None).unwrap();
        assert!(recv(&a[0]) && recv(&b[0]));
    }
}
