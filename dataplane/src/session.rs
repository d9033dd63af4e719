//! One keyed session of a tunnel protocol, as the shared pipeline uses
//! it: reserve counters for a batch, seal in place, open in place. A
//! WireGuard keypair is one (`wireguard.rs`); an ESP child SA will be
//! another. Any worker calls these on any peer's batch at once, so a
//! session keeps its counters in atomics and takes no lock to seal or
//! open.

use std::any::Any;

use crate::counters::Drop;
use crate::selectors::Selectors;

/// Where the plaintext of an opened datagram lies, and its counter for
/// the replay check (which waits for the drain, where order is back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub counter: u64,
    /// Offset of the plaintext in the datagram.
    pub at: usize,
    /// Plaintext length, padding included.
    pub len: usize,
}

/// What carries a session's datagrams, and so which of the interface's
/// socket sets sends them (`Interface::sockets_for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Carrier {
    /// UDP on the interface's WireGuard listen port.
    WireGuard,
    /// ESP inside UDP on port 4500 (RFC 3948).
    EspInUdp,
    /// ESP as IP protocol 50, no UDP.
    RawEsp,
}

pub trait Session: Send + Sync + Any {
    /// Which sockets carry this session's datagrams.
    fn carrier(&self) -> Carrier;

    /// Bytes in front of the payload in a datagram.
    fn header_len(&self) -> usize;

    /// Bytes after the padded payload (the tag, and any trailer).
    fn trailer_len(&self) -> usize;

    /// The payload length after padding, for a packet of `len` bytes on
    /// an interface of `mtu`.
    fn padded_len(&self, len: usize, mtu: usize) -> usize;

    /// Takes `count` consecutive counters (nonces, sequence numbers) and
    /// returns the first; called in the order batches join their queue.
    fn reserve(&self, count: u64) -> Result<u64, Drop>;

    /// Seals the datagram in place: `datagram` holds the header room, the
    /// payload of `payload_len` bytes, room for padding to `padded_len`
    /// and for the trailer. Returns the datagram's length.
    fn seal(&self, counter: u64, datagram: &mut [u8], payload_len: usize, padded_len: usize) -> Result<usize, Drop>;

    /// Authenticates and decrypts a datagram in place.
    fn open(&self, datagram: &mut [u8]) -> Result<Opened, Drop>;

    /// Whether the source of a datagram that authenticates on this session
    /// becomes the peer's endpoint (roaming), if the protocol calls the
    /// datagram current (`Accepted`). WireGuard always roams; an IPsec
    /// child SA only where IKE said so (RFC 7296 §2.23: the peer is behind
    /// a NAT, and we did not initiate from behind one).
    fn roams(&self) -> bool {
        true
    }

    /// What the session may carry inward, when it is less than every
    /// packet (an IPsec child SA's narrowed traffic selectors).
    fn selectors(&self) -> Option<&Selectors> {
        None
    }

    /// For the protocol's own drain step, which needs its concrete type.
    fn as_any(&self) -> &dyn Any;
}

impl dyn Session {
    /// The datagram length for a payload padded to `padded` bytes.
    pub fn wire_len(&self, padded: usize) -> usize {
        self.header_len() + padded + self.trailer_len()
    }
}
