//! What travels between workers: a batch of one peer's packets, sealed or
//! opened by any worker and taken out by the drainer of the peer's
//! ordered queue (`ordered.rs`). The data sits in pooled buffers made at
//! start-up (`jobs.rs`), so nothing is allocated per packet.
//!
//! Generic over the peer type only to keep module dependencies one way:
//! `peer.rs` holds queues of these batches, so this file cannot name it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::counters::Drop;
use crate::session::{Opened, Session};

/// Largest UDP payload one GSO send may carry in total.
pub const GSO_MAX_BYTES: usize = 65_000;
/// Most datagrams one send batch carries (and so one GSO send).
pub const TX_BATCH_PACKETS: usize = 64;
/// Most datagrams in one receive batch.
pub const RX_BATCH_DATAGRAMS: usize = 64;
/// Bytes of datagrams in one receive batch.
pub const RX_BATCH_BYTES: usize = 65_536;

/// Where a peer is: its address, and our address it last reached (the
/// sticky source for replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub local: Option<IpAddr>,
}

/// Packets of one peer, one session and one endpoint, laid out as the
/// datagrams they become. Default: a placeholder that allocates nothing,
/// left in the batch's mutex while the reader fills the batch outside it.
pub struct TxData<P> {
    pub target: Option<(Arc<P>, Arc<dyn Session>, Endpoint)>,
    /// Counter of the first datagram; the others follow in order.
    pub first_counter: u64,
    /// Datagrams end to end: header, padded payload, trailer.
    pub buf: Vec<u8>,
    pub len: usize,
    /// (payload, padded payload) lengths per datagram.
    pub packets: Vec<(usize, usize)>,
    /// Per datagram, whether sealing succeeded.
    pub sealed: Vec<bool>,
    /// The worker that read the packets, to count help.
    pub reader: usize,
    /// Made beyond the pool, for packets held until a session came that
    /// found every pooled batch in flight (`send::send_held`): dropped
    /// after use, never pooled, so the pool and the job queue keep their
    /// bounds.
    pub spilled: bool,
}

impl<P> Default for TxData<P> {
    fn default() -> Self {
        TxData {
            target: None,
            first_counter: 0,
            buf: Vec::new(),
            len: 0,
            packets: Vec::new(),
            sealed: Vec::new(),
            reader: 0,
            spilled: false,
        }
    }
}

impl<P> TxData<P> {
    /// With its buffers allocated, for the pool.
    pub fn with_buffers() -> Self {
        TxData {
            // A batch stays within one GSO send, except that its first
            // datagram may be as large as any packet.
            buf: vec![0u8; GSO_MAX_BYTES.max(crate::tun::MAX_PACKET + 64)],
            packets: Vec::with_capacity(TX_BATCH_PACKETS),
            sealed: Vec::with_capacity(TX_BATCH_PACKETS),
            ..TxData::default()
        }
    }

    pub fn reset(&mut self) {
        self.target = None;
        self.len = 0;
        self.packets.clear();
        self.sealed.clear();
    }
}

/// One received datagram in a batch.
pub struct RxItem {
    pub at: usize,
    pub len: usize,
    /// After opening: where the plaintext is, or why it was refused.
    pub opened: Result<Opened, Drop>,
}

/// Datagrams of one peer's session from one source, copied out of the
/// receive buffers.
pub struct RxData<P> {
    pub source: Option<(Arc<P>, Arc<dyn Session>)>,
    pub from: (SocketAddr, Option<IpAddr>),
    pub buf: Vec<u8>,
    pub len: usize,
    pub items: Vec<RxItem>,
    /// The worker that received the datagrams, to count help.
    pub reader: usize,
}

impl<P> Default for RxData<P> {
    fn default() -> Self {
        RxData {
            source: None,
            from: (SocketAddr::from(([0, 0, 0, 0], 0)), None),
            buf: Vec::new(),
            len: 0,
            items: Vec::new(),
            reader: 0,
        }
    }
}

impl<P> RxData<P> {
    /// With its buffers allocated, for the pool.
    pub fn with_buffers() -> Self {
        RxData { buf: vec![0u8; RX_BATCH_BYTES], items: Vec::with_capacity(RX_BATCH_DATAGRAMS), ..RxData::default() }
    }

    pub fn reset(&mut self) {
        self.source = None;
        self.len = 0;
        self.items.clear();
    }
}
