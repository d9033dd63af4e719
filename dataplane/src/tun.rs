//! The multi-queue TUN device: one queue per worker, with vnet_hdr offload
//! when the kernel offers it, so the kernel hands over TSO super-packets
//! (split here into MTU-sized packets) and takes writes coalesced by
//! `gro.rs`.

use std::io;

use ipnet::IpNet;
use tun_rs::{DeviceBuilder, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::gro::Offload;
use crate::io::Tun;

/// Largest IP packet a TUN queue hands over or takes.
pub const MAX_PACKET: usize = 65_535;
/// Room in front of a packet written to the TUN for the virtio header.
pub const WRITE_HEADROOM: usize = VIRTIO_NET_HDR_LEN;

pub struct TunQueue {
    dev: SyncDevice,
    offload: bool,
    /// Scratch for one raw read (virtio header and a TSO super-packet).
    raw: Vec<u8>,
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
            Ok(TunQueue { dev, offload, raw: vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET] })
        })
        .collect()
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

    fn read_batch(&mut self, bufs: &mut [Vec<u8>], sizes: &mut [usize], offset: usize) -> io::Result<usize> {
        if self.offload {
            self.dev.recv_multiple(&mut self.raw, bufs, sizes, offset)
        } else {
            let n = self.dev.recv(&mut bufs[0][offset..])?;
            sizes[0] = n;
            Ok(1)
        }
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
