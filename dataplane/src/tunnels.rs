//! Every protocol of an interface as one `Protocol`, which is what the
//! workers run: WireGuard and IPsec peers share one interface, one set of
//! workers and one routing table. Outbound, the peer says which protocol
//! it speaks (`Link`); inbound, the socket that received the datagram
//! does (`Carrier`), then its first four bytes:
//!
//! | socket                 | first bytes        | what                                 |
//! |------------------------|--------------------|--------------------------------------|
//! | WireGuard's port       | `t 0 0 0`, t 1..=4 | a WireGuard message of type t        |
//! | 4500 (ESP in UDP)      | `0 0 0 0`          | IKE behind RFC 3948's non-ESP marker |
//! | 4500                   | `ff` (alone)       | a NAT keepalive (RFC 3948 §2.3)      |
//! | 4500, or raw ESP       | anything else      | ESP: the SPI, of an SA of that carrier |
//!
//! Anything else is refused: ESP on WireGuard's port, WireGuard on 4500,
//! a zero SPI in raw ESP. The content alone would be unambiguous too
//! (`is_wireguard`: Causeway never hands out an inbound SPI of the form
//! `t 0 0 0`, an invariant of the IKE core's SPI allocation), which is
//! what `handle_control` relies on; the carrier keeps a datagram from
//! reaching a peer by a path it was never negotiated for.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use causeway_wireguard::Time;

use crate::interface::Interface;
use crate::io::Socket;
use crate::ipsec::Ipsec;
use crate::peer::{Link, PeerState};
use crate::protocol::{Accepted, Inbound, Protocol, Sending};
use crate::session::{Carrier, Session};
use crate::wireguard::WireGuard;

/// Which protocol's peer an inbound datagram names.
pub enum Owner {
    WireGuard(Arc<causeway_wireguard::Peer>),
    Ipsec(Arc<PeerState>),
}

/// Whether a datagram is a WireGuard message (by its type field).
pub fn is_wireguard(datagram: &[u8]) -> bool {
    datagram.len() >= 4 && (1..=4).contains(&datagram[0]) && datagram[1..4] == [0, 0, 0]
}

#[derive(Default, Clone, Copy)]
pub struct Tunnels;

impl Protocol for Tunnels {
    type Owner = Owner;

    fn sending_session(&self, peer: &PeerState, now: Time) -> Option<Sending> {
        match peer.link {
            Link::WireGuard(_) => WireGuard.sending_session(peer, now),
            Link::Ipsec(_) => Ipsec.sending_session(peer, now),
        }
    }

    fn hold(&self, iface: &Interface, peer: &Arc<PeerState>, packet: &[u8], sock: &dyn Socket, now: Time) {
        match peer.link {
            Link::WireGuard(_) => WireGuard.hold(iface, peer, packet, sock, now),
            Link::Ipsec(_) => Ipsec.hold(iface, peer, packet, sock, now),
        }
    }

    fn rekey(&self, iface: &Interface, peer: &PeerState, sock: &dyn Socket, now: Time) {
        match peer.link {
            Link::WireGuard(_) => WireGuard.rekey(iface, peer, sock, now),
            Link::Ipsec(_) => Ipsec.rekey(iface, peer, sock, now),
        }
    }

    fn on_sent(&self, peer: &PeerState, now: Time, wire_bytes: u64, packets: u64) {
        match peer.link {
            Link::WireGuard(_) => WireGuard.on_sent(peer, now, wire_bytes, packets),
            Link::Ipsec(_) => Ipsec.on_sent(peer, now, wire_bytes, packets),
        }
    }

    fn classify(&self, iface: &Interface, carrier: Carrier, datagram: &[u8], now: Time) -> Inbound<Owner> {
        if carrier == Carrier::WireGuard {
            return match WireGuard.classify(iface, carrier, datagram, now) {
                Inbound::Data { owner, session } => Inbound::Data { owner: Owner::WireGuard(owner), session },
                Inbound::Control => Inbound::Control,
                Inbound::Refused(r) => Inbound::Refused(r),
            };
        }
        match Ipsec.classify(iface, carrier, datagram, now) {
            Inbound::Data { owner, session } => Inbound::Data { owner: Owner::Ipsec(owner), session },
            Inbound::Control => Inbound::Control,
            Inbound::Refused(r) => Inbound::Refused(r),
        }
    }

    fn keep_refused(
        &self,
        iface: &Interface,
        carrier: Carrier,
        from: (SocketAddr, Option<IpAddr>),
        datagram: &[u8],
        reason: crate::counters::Drop,
        reader: usize,
        now: Time,
    ) -> bool {
        carrier != Carrier::WireGuard && Ipsec.keep_refused(iface, carrier, from, datagram, reason, reader, now)
    }

    fn owns(&self, peer: &PeerState, owner: &Owner) -> bool {
        match owner {
            Owner::WireGuard(o) => WireGuard.owns(peer, o),
            Owner::Ipsec(o) => Ipsec.owns(peer, o),
        }
    }

    fn peer_of(&self, iface: &Interface, owner: &Owner) -> Option<Arc<PeerState>> {
        match owner {
            Owner::WireGuard(o) => WireGuard.peer_of(iface, o),
            Owner::Ipsec(o) => Ipsec.peer_of(iface, o),
        }
    }

    fn handle_control(
        &self,
        iface: &Interface,
        sock: &dyn Socket,
        from: (SocketAddr, Option<IpAddr>),
        datagram: &mut [u8],
        now: Time,
    ) {
        if is_wireguard(datagram) {
            WireGuard.handle_control(iface, sock, from, datagram, now)
        } else {
            Ipsec.handle_control(iface, sock, from, datagram, now)
        }
    }

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
    ) -> Result<Accepted, crate::counters::Drop> {
        match peer.link {
            Link::WireGuard(_) => WireGuard.accept(iface, peer, session, counter, wire_len, is_data, sock, now),
            Link::Ipsec(_) => Ipsec.accept(iface, peer, session, counter, wire_len, is_data, sock, now),
        }
    }

    fn on_authenticated(&self, iface: &Interface, peer: &Arc<PeerState>, sock: &dyn Socket, now: Time) {
        match peer.link {
            Link::WireGuard(_) => WireGuard.on_authenticated(iface, peer, sock, now),
            Link::Ipsec(_) => Ipsec.on_authenticated(iface, peer, sock, now),
        }
    }

    fn on_moved(&self, iface: &Interface, peer: &PeerState, to: SocketAddr) {
        match peer.link {
            Link::WireGuard(_) => WireGuard.on_moved(iface, peer, to),
            Link::Ipsec(_) => Ipsec.on_moved(iface, peer, to),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wireguard_messages_are_told_from_esp_and_ike() {
        assert!(is_wireguard(&[1, 0, 0, 0, 9]));
        assert!(is_wireguard(&[4, 0, 0, 0]));
        assert!(!is_wireguard(&[0, 0, 0, 0, 1]), "IKE's non-ESP marker");
        assert!(!is_wireguard(&[5, 0, 0, 0]), "no such WireGuard type: an SPI");
        assert!(!is_wireguard(&[1, 0, 0, 1]), "an SPI");
        assert!(!is_wireguard(&[0xff]), "a NAT keepalive");
        assert!(!is_wireguard(&[1, 0, 0]));
    }
}
