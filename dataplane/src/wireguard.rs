//! WireGuard on the shared pipeline: a keypair is the `Session` that
//! seals and opens data messages, and `WireGuard` is the `Protocol` that
//! picks keypairs, stages packets while a handshake runs, and answers
//! handshake and cookie messages. The handshake runs here, on the
//! data-plane threads, because it is one round trip of fixed-size
//! messages; the timers that retry it run on the control plane
//! (`send_keepalive`, `send_initiation`).

use std::any::Any;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use causeway_wireguard::messages::{self, Message};
use causeway_wireguard::{padded_len, Error, Keypair, Received, Time, DATA_HEADER_LEN, DATA_OVERHEAD};

use crate::counters::Drop;
use crate::interface::Interface;
use crate::io::Socket;
use crate::peer::{Endpoint, PeerState};
use crate::protocol::{Accepted, Inbound, Protocol, Sending};
use crate::session::{Carrier, Opened, Session};
use crate::transmit::{transmit, transmit_to};

/// The reason a WireGuard error counts under.
pub fn drop_reason(e: Error) -> Drop {
    match e {
        Error::InvalidLength | Error::UnknownMessageType(_) | Error::NonZeroReserved | Error::BufferTooSmall => {
            Drop::Malformed
        }
        Error::InvalidMac1 | Error::InvalidMac2 => Drop::BadMac,
        Error::DecryptionFailed => Drop::Decryption,
        Error::UnknownPeer => Drop::UnknownPeer,
        Error::UnknownReceiverIndex => Drop::UnknownIndex,
        Error::Replayed => Drop::Replay,
        Error::KeypairExpired | Error::NoSession => Drop::Expired,
        Error::NoPrivateKey => Drop::NoPrivateKey,
        Error::ReplayedInitiation
        | Error::InitiationFlood
        | Error::RateLimited
        | Error::UnexpectedResponse
        | Error::UnexpectedCookieReply
        | Error::LowOrderKey
        | Error::InitiationTooSoon
        | Error::OwnPublicKey
        | Error::KeyChanged => Drop::HandshakeRejected,
    }
}

impl Session for Keypair {
    fn carrier(&self) -> Carrier {
        Carrier::WireGuard
    }

    fn header_len(&self) -> usize {
        DATA_HEADER_LEN
    }

    fn trailer_len(&self) -> usize {
        DATA_OVERHEAD - DATA_HEADER_LEN
    }

    fn padded_len(&self, len: usize, mtu: usize) -> usize {
        padded_len(len, mtu)
    }

    fn reserve(&self, count: u64) -> Result<u64, Drop> {
        Keypair::reserve(self, count).map_err(drop_reason)
    }

    fn seal(&self, counter: u64, datagram: &mut [u8], payload_len: usize, padded_len: usize) -> Result<usize, Drop> {
        Keypair::seal(self, counter, datagram, payload_len, padded_len).map_err(drop_reason)
    }

    fn open(&self, datagram: &mut [u8]) -> Result<Opened, Drop> {
        Keypair::open(self, datagram)
            .map(|(counter, plain)| Opened { counter, at: DATA_HEADER_LEN, len: plain.len() })
            .map_err(drop_reason)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The WireGuard protocol; its state is the interface's `Device` and each
/// peer's `crypto`.
#[derive(Default, Clone, Copy)]
pub struct WireGuard;

impl Protocol for WireGuard {
    type Owner = Arc<causeway_wireguard::Peer>;

    fn sending_session(&self, peer: &PeerState, now: Time) -> Option<Sending> {
        let kp = peer.crypto().keypair_for_sending(now).ok()?;
        let rekey = peer.crypto().needs_rekey_on_send(&kp, now);
        Some(Sending { session: kp, rekey })
    }

    fn hold(&self, iface: &Interface, peer: &Arc<PeerState>, packet: &[u8], sock: &dyn Socket, now: Time) {
        if !peer.stage(packet, now) {
            iface.counters.count(Drop::StagedQueueFull);
        }
        // The session may have come between the sender finding none and
        // the packet being staged, after the handshake's flush found the
        // queue empty: the packet would then wait for the peer's next
        // packet, or the next handshake. The staged queue's lock orders
        // the two: either that flush comes after the staging and takes the
        // packet, or this look sees the session.
        if peer.crypto().keypair_for_sending(now).is_ok() {
            flush_staged(iface, peer, sock, now, false);
            return;
        }
        send_initiation(iface, peer, sock, now);
    }

    fn rekey(&self, iface: &Interface, peer: &PeerState, sock: &dyn Socket, now: Time) {
        send_initiation(iface, peer, sock, now);
    }

    fn on_sent(&self, peer: &PeerState, now: Time, wire_bytes: u64, packets: u64) {
        peer.crypto().on_sent(now, wire_bytes, packets, true);
    }

    fn classify(&self, iface: &Interface, _carrier: Carrier, datagram: &[u8], now: Time) -> Inbound<Self::Owner> {
        match messages::parse(datagram) {
            Ok(Message::Data(_)) => match iface.device.data_keypair(datagram, now) {
                Ok((owner, kp)) => Inbound::Data { owner, session: kp },
                Err(e) => Inbound::Refused(drop_reason(e)),
            },
            Ok(_) => Inbound::Control,
            Err(e) => Inbound::Refused(drop_reason(e)),
        }
    }

    fn owns(&self, peer: &PeerState, owner: &Self::Owner) -> bool {
        peer.wireguard().is_some_and(|p| Arc::ptr_eq(p, owner))
    }

    fn peer_of(&self, iface: &Interface, owner: &Self::Owner) -> Option<Arc<PeerState>> {
        iface.peer_for_crypto(owner)
    }

    fn handle_control(
        &self,
        iface: &Interface,
        sock: &dyn Socket,
        (src, local): (SocketAddr, Option<IpAddr>),
        datagram: &mut [u8],
        now: Time,
    ) {
        let received = match iface.device.receive(src, datagram, now) {
            Ok(r) => r,
            Err(e) => {
                iface.refuse(src, drop_reason(e));
                return;
            }
        };
        match received {
            Received::HandshakeResponse { peer, response } => {
                let ps = iface.peer_for_crypto(&peer);
                if let Some(ps) = &ps {
                    ps.observe(src, local);
                }
                transmit_to(iface, ps.as_deref(), src, local, sock, &response, None);
            }
            Received::SessionEstablished { peer } => {
                if let Some(ps) = iface.peer_for_crypto(&peer) {
                    ps.observe(src, local);
                    tracing::debug!(peer = %ps.public_key(), "session established");
                    flush_staged(iface, &ps, sock, now, true);
                }
            }
            Received::CookieReply { reply } => {
                iface.counters.cookie_replies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                transmit_to(iface, None, src, local, sock, &reply, None);
            }
            Received::CookieStored { .. } => {}
            // Data messages never come this way: `classify` sorts them out.
            Received::Data { .. } | Received::Keepalive { .. } => {}
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
    ) -> Result<Accepted, Drop> {
        // Batches of this protocol hold only keypairs; the pointer test
        // inside `accept_data` needs the keypair itself.
        let kp = session.as_any().downcast_ref::<Keypair>().ok_or(Drop::Malformed)?;
        let rekey =
            iface.device.accept_data(peer.crypto(), kp, counter, wire_len, is_data, now).map_err(drop_reason)?;
        if rekey {
            send_initiation(iface, peer, sock, now);
        }
        // The endpoint follows every authenticated datagram, reordered or
        // not, as in the kernel's WireGuard and wireguard-go.
        Ok(Accepted::Current)
    }

    fn on_authenticated(&self, iface: &Interface, peer: &Arc<PeerState>, sock: &dyn Socket, now: Time) {
        if peer.has_staged() {
            flush_staged(iface, peer, sock, now, false);
        }
    }
}

/// Sends a handshake initiation if the endpoint is known and REKEY_TIMEOUT
/// allows one now.
pub fn send_initiation(iface: &Interface, peer: &PeerState, sock: &dyn Socket, now: Time) {
    let Some(ep) = peer.endpoint() else {
        iface.counters.count(Drop::NoEndpoint);
        return;
    };
    match iface.device.create_initiation(peer.crypto(), now, iface.clock.wall_now()) {
        Ok(msg) => {
            peer.handshakes_initiated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            transmit(iface, peer, ep, sock, &msg, None);
        }
        Err(Error::InitiationTooSoon) => {}
        Err(e) => {
            tracing::debug!(peer = %peer.public_key(), error = %e, "cannot create initiation");
            iface.counters.count(drop_reason(e));
        }
    }
}

/// Where an off-path packet goes: the peer, its session and its endpoint.
struct Target<'a> {
    peer: &'a PeerState,
    kp: &'a Keypair,
    ep: Endpoint,
}

/// Seals and sends one packet (or a keepalive, when empty) on its own.
/// Used off the hot path: keepalives.
fn send_one(iface: &Interface, t: &Target<'_>, sock: &dyn Socket, payload: &[u8], scratch: &mut Vec<u8>, now: Time) {
    let padded = padded_len(payload.len(), iface.mtu() as usize);
    scratch.clear();
    scratch.resize(DATA_OVERHEAD + padded, 0);
    scratch[DATA_HEADER_LEN..DATA_HEADER_LEN + payload.len()].copy_from_slice(payload);
    let sealed = t.kp.reserve(1).and_then(|c| t.kp.seal(c, scratch, payload.len(), padded));
    match sealed {
        Ok(len) => {
            if transmit(iface, t.peer, t.ep, sock, &scratch[..len], None) {
                t.peer.crypto().on_sent(now, len as u64, 1, !payload.is_empty());
            }
        }
        Err(e) => iface.counters.count(drop_reason(e)),
    }
}

/// Sends a keepalive, or starts a handshake if there is no session.
pub fn send_keepalive(iface: &Interface, peer: &PeerState, sock: &dyn Socket, now: Time) {
    match (peer.crypto().keypair_for_sending(now), peer.endpoint()) {
        (Ok(kp), Some(ep)) => {
            let target = Target { peer, kp: &kp, ep };
            send_one(iface, &target, sock, &[], &mut Vec::with_capacity(64), now)
        }
        (Err(_), _) => send_initiation(iface, peer, sock, now),
        (_, None) => iface.counters.count(Drop::NoEndpoint),
    }
}

/// A new session is up: send what waited for it, or a keepalive so the
/// responder can confirm the session. What waited goes through the peer's
/// send queue (`send::send_held`), so packets read after it, sealed by
/// the workers on the new session meanwhile, cannot leave before it.
pub fn flush_staged(iface: &Interface, peer: &Arc<PeerState>, sock: &dyn Socket, now: Time, keepalive_if_empty: bool) {
    let (Ok(kp), Some(ep)) = (peer.crypto().keypair_for_sending(now), peer.endpoint()) else {
        return;
    };
    let staged = peer.take_staged();
    if staged.is_empty() {
        if keepalive_if_empty {
            let target = Target { peer, kp: &kp, ep };
            send_one(iface, &target, sock, &[], &mut Vec::with_capacity(64), now);
        }
        return;
    }
    let held: Vec<Vec<u8>> = staged.into();
    crate::send::send_held(&WireGuard, iface, peer, &held, sock, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_errors_count_under_their_reason() {
        assert_eq!(drop_reason(Error::Replayed), Drop::Replay);
        assert_eq!(drop_reason(Error::InvalidMac1), Drop::BadMac);
        assert_eq!(drop_reason(Error::UnknownReceiverIndex), Drop::UnknownIndex);
        assert_eq!(drop_reason(Error::OwnPublicKey), Drop::HandshakeRejected);
    }
}
