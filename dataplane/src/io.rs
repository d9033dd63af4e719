//! The data plane's two kinds of I/O, as traits: a TUN queue (IP packets
//! to and from the kernel) and a UDP socket (datagrams to and from peers),
//! with a binder that makes a worker group's sockets. The workers see
//! nothing else of the outside, so the whole pipeline runs over the real
//! ones (`tun.rs`, `udp.rs`) in a daemon and over in-memory ones
//! (`memory.rs`) in tests without root.
//!
//! Calls are per batch (one read, one GSO send), never per packet, so the
//! dynamic dispatch costs nothing measurable.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::Arc;

pub use quinn_udp::RecvMeta;

/// What offloads the TUN queue takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// TCP segmentation (TSO): coalesced TCP writes.
    pub tcp: bool,
    /// UDP segmentation (USO): coalesced UDP writes.
    pub udp: bool,
}

/// What one TUN read brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// This many packets, in the buffers from the first.
    Packets(usize),
    /// A super-packet in the raw buffer: its virtio header
    /// (`VIRTIO_NET_HDR_LEN` bytes), then this many bytes of packet. It
    /// comes alone, and the send path cuts it straight into its batches
    /// (`super_packet.rs`).
    Super(usize),
}

/// The TUN queue was closed: the interface is gone.
#[derive(Debug)]
pub struct TunGone;

/// One queue of a (multi-queue) TUN device.
pub trait Tun: Send {
    /// A descriptor that polls readable when packets wait.
    fn fd(&self) -> RawFd;

    /// Reads what is waiting (WouldBlock when nothing is): packets into
    /// `bufs` with their lengths in `sizes`, or a TSO or USO super-packet
    /// into `raw` (`Read`), which must hold `tun::RAW_READ` bytes.
    fn read_batch(&mut self, bufs: &mut [Vec<u8>], sizes: &mut [usize], raw: &mut [u8]) -> io::Result<Read>;

    /// The offloads the queue takes, which decide what `write_batch` may
    /// be given. None by default.
    fn offload(&self) -> Offload {
        Offload::default()
    }

    /// Writes buffers, each a virtio header of `WRITE_HEADROOM` bytes and
    /// a packet (`gro.rs`): a coalesced one, which the header describes,
    /// only within what `offload` allows; otherwise the header is zero.
    fn write_batch(&mut self, bufs: &[Vec<u8>]) -> io::Result<()>;
}

/// The outcome of a send that had a sticky source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceUse {
    Kept,
    /// The sticky source was gone and the kernel chose another: forget it.
    Dropped,
}

/// A batched send that stopped part way (the socket's buffer full, the
/// route gone): the datagrams before `sent` left, the rest did not.
#[derive(Debug)]
pub struct PartialSend {
    pub error: io::Error,
    pub sent: usize,
    /// What became of the sticky source before the error.
    pub source: SourceUse,
}

/// One worker's UDP socket.
pub trait Socket: Send + Sync {
    /// A descriptor that polls readable when datagrams wait.
    fn fd(&self) -> RawFd;

    fn local_port(&self) -> u16;

    /// Datagrams one GSO send may carry; 1 means no GSO.
    fn max_gso_segments(&self) -> usize;

    /// Datagrams one GRO receive may coalesce.
    fn gro_segments(&self) -> usize;

    fn set_fwmark(&self, mark: u32) -> io::Result<()>;

    /// Whether the socket can send to `dst`'s address family (a raw ESP
    /// socket on a host without IPv6 cannot).
    fn reaches(&self, dst: &SocketAddr) -> bool {
        let _ = dst;
        true
    }

    /// Our address on the route to `remote`: what the peer should see as
    /// our address when no NAT lies between (IKE's NAT detection hashes
    /// it). None when there is no route.
    fn local_address_towards(&self, remote: SocketAddr) -> Option<IpAddr>;

    /// Sends `contents` to `dst`, split into `segment` sized datagrams when
    /// given (GSO; only the last may be shorter), from `src` when given. A
    /// sticky source that is no longer local is dropped and the send
    /// retried from whatever address the system picks.
    fn send(
        &self,
        dst: SocketAddr,
        src: Option<IpAddr>,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<SourceUse>;

    /// Where GSO is missing: sends datagrams of `lens` bytes, laid end to
    /// end in `contents`, in as few calls as the system allows. Datagrams
    /// leave in order, so a failure says how many had left.
    fn send_many(
        &self,
        dst: SocketAddr,
        src: Option<IpAddr>,
        contents: &[u8],
        lens: &[usize],
    ) -> Result<SourceUse, PartialSend>;

    /// Receives a batch (WouldBlock when nothing waits); a buffer may hold
    /// several datagrams of one source, `stride` apart (GRO). Addresses
    /// are plain IPv4 for IPv4 peers.
    fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize>;
}

/// Makes a worker group's sockets: `count` sockets sharing one port
/// (SO_REUSEPORT on the real network), 0 picking a free port.
pub trait Bind: Send + Sync {
    fn bind(&self, count: usize, port: u16, fwmark: u32) -> io::Result<(Vec<Arc<dyn Socket>>, u16)>;

    /// The network's raw ESP sockets (IP protocol 50), one per family that
    /// opens. A network without raw ESP says Unsupported, and ESP then
    /// goes in UDP.
    fn bind_raw_esp(&self, fwmark: u32) -> io::Result<Vec<Arc<dyn Socket>>> {
        let _ = fwmark;
        Err(io::Error::new(io::ErrorKind::Unsupported, "this network has no raw ESP"))
    }
}
