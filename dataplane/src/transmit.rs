//! Sending datagrams to a peer or to whoever wrote to us, from the sticky
//! source when there is one; a source that is no longer ours is forgotten,
//! and each datagram a failed send lost is counted. Shared by the send
//! path's drains and the protocols' own messages.

use std::net::{IpAddr, SocketAddr};

use crate::counters::Drop;
use crate::interface::Interface;
use crate::io::{PartialSend, Socket, SourceUse};
use crate::peer::{Endpoint, PeerState};

/// Sends to a peer's endpoint from its sticky source. Returns whether the
/// datagrams left.
pub fn transmit(
    iface: &Interface,
    peer: &PeerState,
    ep: Endpoint,
    sock: &dyn Socket,
    contents: &[u8],
    segment: Option<usize>,
) -> bool {
    transmit_to(iface, Some(peer), ep.addr, ep.local, sock, contents, segment)
}

/// Sends to an address (a reply to whoever wrote to us, known peer or not).
pub fn transmit_to(
    iface: &Interface,
    peer: Option<&PeerState>,
    addr: SocketAddr,
    local: Option<IpAddr>,
    sock: &dyn Socket,
    contents: &[u8],
    segment: Option<usize>,
) -> bool {
    // A GSO send leaves whole or not at all.
    let datagrams = segment.map_or(1, |s| contents.len().div_ceil(s.max(1)));
    let result = sock.send(addr, local, contents, segment);
    let result = result.map_err(|error| PartialSend { error, sent: 0, source: SourceUse::Kept });
    settle(iface, peer, addr, datagrams, result) == datagrams
}

/// Sends datagrams of `lens` bytes, laid end to end in `contents`, to a
/// peer with one batched call (for sockets without GSO). Returns how many
/// left, from the first: a send can stop part way.
pub fn transmit_many(
    iface: &Interface,
    peer: &PeerState,
    ep: Endpoint,
    sock: &dyn Socket,
    contents: &[u8],
    lens: &[usize],
) -> usize {
    settle(iface, Some(peer), ep.addr, lens.len(), sock.send_many(ep.addr, ep.local, contents, lens))
}

/// Accounts for a send of `datagrams`: a dropped sticky source is
/// forgotten, each datagram that did not leave counted. Returns how many
/// left.
fn settle(
    iface: &Interface,
    peer: Option<&PeerState>,
    addr: SocketAddr,
    datagrams: usize,
    result: Result<SourceUse, PartialSend>,
) -> usize {
    let (source, sent) = match &result {
        Ok(source) => (*source, datagrams),
        Err(p) => (p.source, p.sent.min(datagrams)),
    };
    if source == SourceUse::Dropped {
        if let Some(p) = peer {
            p.forget_source(addr);
        }
    }
    if let Err(p) = result {
        tracing::debug!(error = %p.error, to = %addr, sent, datagrams, "UDP send failed");
        iface.counters.count_many(Drop::UdpSend, datagrams - sent);
    }
    sent
}
