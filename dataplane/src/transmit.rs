//! Sending datagrams to a peer or to whoever wrote to us, from the sticky
//! source when there is one; a source that is no longer ours is forgotten,
//! and a failed send is counted. Shared by the send path's drains and the
//! protocols' own messages.

use std::net::{IpAddr, SocketAddr};

use crate::counters::Drop;
use crate::interface::Interface;
use crate::io::{Socket, SourceUse};
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
    settle(iface, peer, addr, sock.send(addr, local, contents, segment))
}

/// Sends datagrams of `lens` bytes, laid end to end in `contents`, to a
/// peer with one batched call (for sockets without GSO).
pub fn transmit_many(
    iface: &Interface,
    peer: &PeerState,
    ep: Endpoint,
    sock: &dyn Socket,
    contents: &[u8],
    lens: &[usize],
) -> bool {
    settle(iface, Some(peer), ep.addr, sock.send_many(ep.addr, ep.local, contents, lens))
}

/// Accounts for a send: a dropped sticky source is forgotten, an error
/// counted. Returns whether the datagrams left.
fn settle(iface: &Interface, peer: Option<&PeerState>, addr: SocketAddr, result: std::io::Result<SourceUse>) -> bool {
    match result {
        Ok(SourceUse::Kept) => true,
        Ok(SourceUse::Dropped) => {
            if let Some(p) = peer {
                p.forget_source(addr);
            }
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, to = %addr, "UDP send failed");
            iface.counters.count(Drop::UdpSend);
            false
        }
    }
}
