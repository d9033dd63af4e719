//! What a tunnel protocol does for the shared pipeline, beyond sealing and
//! opening (`session.rs`): pick the session to send with, hold packets
//! while there is none, sort inbound datagrams into data (with their
//! session) and the protocol's own messages, and check a datagram on its
//! way to the TUN (replay window, timers, session confirmation).
//!
//! The send path (`send.rs`) and the receive path (`receive.rs`) call
//! only this and `Session`; batching, order, pools, GSO/GRO, the TUN
//! side and the source filter are written once for every protocol.
//! WireGuard's implementation is in `wireguard.rs`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use causeway_wireguard::Time;

use crate::counters::Drop;
use crate::interface::Interface;
use crate::io::Socket;
use crate::peer::PeerState;
use crate::session::{Carrier, Session};

/// A session to seal a peer's packets with.
pub struct Sending {
    pub session: Arc<dyn Session>,
    /// The session is old enough that a new one should be negotiated.
    pub rekey: bool,
}

/// An accepted datagram, and whether its source speaks for where the
/// peer is now (roaming follows it only then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The peer's latest, or a protocol that follows every authenticated
    /// datagram (WireGuard, as the kernel's and wireguard-go do).
    Current,
    /// Overtaken on the way by one accepted before it: its source may be
    /// a mapping the peer has left.
    Late,
}

/// What an inbound datagram is.
pub enum Inbound<O> {
    /// Data of a session; `owner` names the peer cheaply (the protocol's
    /// own peer), so runs of one peer's datagrams skip the peer lookup.
    Data { owner: O, session: Arc<dyn Session> },
    /// One of the protocol's own messages (a handshake, a cookie): handed
    /// to `handle_control` after the data read before it is queued.
    Control,
    /// Refused before any batch, and counted under this reason.
    Refused(Drop),
}

pub trait Protocol: Send + Sync {
    /// The protocol's handle of a peer, as inbound lookup finds it.
    type Owner;

    /// The session to send to `peer` with now, if there is one.
    fn sending_session(&self, peer: &PeerState, now: Time) -> Option<Sending>;

    /// No session: keep `packet` until there is one (bounded), and start
    /// negotiating one.
    fn hold(&self, iface: &Interface, peer: &Arc<PeerState>, packet: &[u8], sock: &dyn Socket, now: Time);

    /// The session in use asked for a new one.
    fn rekey(&self, iface: &Interface, peer: &PeerState, sock: &dyn Socket, now: Time);

    /// Datagrams of a batch left for `peer`.
    fn on_sent(&self, peer: &PeerState, now: Time, wire_bytes: u64, packets: u64);

    /// Sorts an inbound datagram that `carrier`'s socket received.
    fn classify(&self, iface: &Interface, carrier: Carrier, datagram: &[u8], now: Time) -> Inbound<Self::Owner>;

    /// A datagram `classify` refused as `reason`: true when the protocol
    /// keeps it to be read again by worker `reader` once its session may
    /// exist (ESP before its SA, `early_esp.rs`); false drops it.
    #[allow(clippy::too_many_arguments)]
    fn keep_refused(
        &self,
        _iface: &Interface,
        _carrier: Carrier,
        _from: (SocketAddr, Option<IpAddr>),
        _datagram: &[u8],
        _reason: Drop,
        _reader: usize,
        _now: Time,
    ) -> bool {
        false
    }

    /// Whether `peer` is the one `owner` names.
    fn owns(&self, peer: &PeerState, owner: &Self::Owner) -> bool;

    /// The gateway's peer that `owner` names.
    fn peer_of(&self, iface: &Interface, owner: &Self::Owner) -> Option<Arc<PeerState>>;

    /// Handles one of the protocol's own messages, answering through `sock`.
    fn handle_control(
        &self,
        iface: &Interface,
        sock: &dyn Socket,
        from: (SocketAddr, Option<IpAddr>),
        datagram: &mut [u8],
        now: Time,
    );

    /// An opened datagram on its way to the TUN, in arrival order: the
    /// replay check and the protocol's timers. Err drops it; Ok says
    /// whether roaming may follow its source (`Accepted`).
    #[allow(clippy::too_many_arguments)]
    fn accept(
        &self,
        iface: &Interface,
        peer: &PeerState,
        session: &dyn Session,
        counter: u64,
        wire_len: usize,
        is_data: bool,
        sock: &dyn Socket,
        now: Time,
    ) -> Result<Accepted, Drop>;

    /// The first datagram of a delivered batch was accepted: a session it
    /// confirmed may release what was held for it.
    fn on_authenticated(&self, iface: &Interface, peer: &Arc<PeerState>, sock: &dyn Socket, now: Time);

    /// An authenticated datagram moved the peer's endpoint to `to`
    /// (roaming): a protocol whose key exchange keeps its own idea of the
    /// peer's address tells it here.
    fn on_moved(&self, _iface: &Interface, _peer: &PeerState, _to: SocketAddr) {}
}
