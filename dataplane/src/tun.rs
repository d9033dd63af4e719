//! The multi-queue TUN device: one queue per worker, with vnet_hdr offload
//! when the kernel offers it, so the kernel hands over TSO super-packets
//! (cut by the send path, `super_packet.rs`) and takes writes coalesced
//! by `gro.rs`.

use std::io;

use ipnet::IpNet;
use tun_rs::{DeviceBuilder, SyncDevice, VirtioNetHdr, VIRTIO_NET_HDR_LEN};

use crate::io::{Offload, Read, Tun};
use crate::super_packet::{complete_checksum, GSO_NONE, NEEDS_CSUM};

/// Largest IP packet a TUN queue hands over or takes.
pub const MAX_PACKET: usize = 65_535;
/// Room in front of a packet written to the TUN for the virtio header.
pub const WRITE_HEADROOM: usize = VIRTIO_NET_HDR_LEN;
/// Room a raw TUN read needs: a virtio header and the largest packet.
pub const RAW_READ: usize = VIRTIO_NET_HDR_LEN + MAX_PACKET;

pub struct TunQueue {
    dev: SyncDevice,
    offload: bool,
}

/// Creates interface `name` with `queues` queues. Addresses are assigned and
/// the link brought up when given (the `up` mode); wg-quick configures them
/// itself otherwise.
pub fn create(name: &str, mtu: u32, addresses: &[IpNet], queues: usize) -> io::Result<Vec<TunQueue>> {
    let v4: Vec<_> = addresses
        .iter()
        .filter_map(|a| match a {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        })
        .collect();
    let build = |offload: bool| {
        let mut b = DeviceBuilder::new().name(name).mtu(mtu as u16).multi_queue(true).offload(offload).enable(true);
        // The builder holds one IPv4 address (a later one replaces it); the
        // rest are added once the device exists.
        if let Some(n) = v4.first() {
            b = b.ipv4(n.addr(), n.prefix_len(), None);
        }
        for a in addresses {
            if let IpNet::V6(n) = a {
                b = b.ipv6(n.addr(), n.prefix_len());
            }
        }
        b.build_sync()
    };
    // Offload needs IFF_VNET_HDR and TUNSETOFFLOAD; fall back to plain
    // packets on kernels without them rather than failing to start.
    let (first, offload) = match build(true) {
        Ok(d) => (d, true),
        Err(e) => {
            tracing::warn!(error = %e, "TUN offload unavailable; using one packet per read");
            (build(false)?, false)
        }
    };
    for n in v4.iter().skip(1) {
        first.add_address_v4(n.addr(), n.prefix_len())?;
    }
    let mut devs = vec![first];
    for _ in 1..queues.max(1) {
        devs.push(devs[0].try_clone()?);
    }
    devs.into_iter()
        .map(|dev| {
            dev.set_nonblocking(true)?;
            Ok(TunQueue { dev, offload })
        })
        .collect()
}

/// Completes the checksum of a packet read with `flags`, if the kernel
/// left it partial (NEEDS_CSUM); false when its offsets lie outside the
/// packet. A packet without NEEDS_CSUM is left as it came: an IPv6 UDP
/// checksum of 0 there is its sender's choice (RFC 6935 allows it for
/// tunnels such as VXLAN with udp6zerocsumtx), not a sum that came out 0,
/// and 0xffff would be a wrong checksum the far end drops.
fn finish_checksum(packet: &mut [u8], flags: u8, csum_start: u16, csum_offset: u16) -> bool {
    if flags & NEEDS_CSUM == 0 {
        return true;
    }
    complete_checksum(packet, csum_start, csum_offset)
}

impl TunQueue {
    pub fn offload(&self) -> bool {
        self.offload
    }
}

impl Tun for TunQueue {
    fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.dev.as_raw_fd()
    }

    /// With offload, one raw read: a packet that is not cut is completed
    /// (its checksum, where the kernel left it partial) and copied into
    /// `bufs[0]`; a super-packet stays in `raw` for the send path to cut
    /// into its batches. Without, the packet is read into `bufs[0]`.
    fn read_batch(&mut self, bufs: &mut [Vec<u8>], sizes: &mut [usize], raw: &mut [u8]) -> io::Result<Read> {
        if !self.offload {
            sizes[0] = self.dev.recv(&mut bufs[0])?;
            return Ok(Read::Packets(1));
        }
        let len = self.dev.recv(raw)?;
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        if len <= VIRTIO_NET_HDR_LEN {
            return Err(invalid("a TUN read shorter than its virtio header"));
        }
        let hdr = VirtioNetHdr::decode(&raw[..VIRTIO_NET_HDR_LEN])?;
        if hdr.gso_type != GSO_NONE {
            return Ok(Read::Super(len - VIRTIO_NET_HDR_LEN));
        }
        let packet = &mut raw[VIRTIO_NET_HDR_LEN..len];
        if !finish_checksum(packet, hdr.flags, hdr.csum_start, hdr.csum_offset) {
            return Err(invalid("a partial checksum outside its packet"));
        }
        bufs[0][..packet.len()].copy_from_slice(packet);
        sizes[0] = packet.len();
        Ok(Read::Packets(1))
    }

    fn offload(&self) -> Offload {
        Offload { tcp: self.offload, udp: self.offload && self.dev.udp_gso() }
    }

    /// One write per buffer: with offload the virtio header goes too, and
    /// tells the kernel how to cut a coalesced packet. A failed write is
    /// reported after the others were tried; a gone TUN (EBADFD) at once.
    fn write_batch(&mut self, bufs: &[Vec<u8>]) -> io::Result<()> {
        let from = if self.offload { 0 } else { WRITE_HEADROOM };
        let mut result = Ok(());
        for b in bufs {
            if let Err(e) = self.dev.send(&b[from..]) {
                if e.raw_os_error() == Some(libc::EBADFD) {
                    return Err(e);
                }
                result = Err(e);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A zero checksum the sender chose (no NEEDS_CSUM: a tunnel with
    // udp6zerocsumtx) stays 0; one left partial is completed, and mended
    // if it came out 0.
    #[test]
    fn only_a_completed_ipv6_udp_checksum_is_mended() {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&20u16.to_be_bytes());
        p[6] = 17;
        assert!(finish_checksum(&mut p, 0, 0, 0));
        assert_eq!(&p[46..48], &[0, 0], "the sender's zero checksum stays");
        assert!(finish_checksum(&mut p, NEEDS_CSUM, 40, 6));
        assert_ne!(&p[46..48], &[0, 0], "completed, never left 0");
        assert!(!finish_checksum(&mut p, NEEDS_CSUM, 40, 40), "offsets outside the packet");
    }
}
