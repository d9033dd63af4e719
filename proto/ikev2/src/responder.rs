//! The responder's side of an IKE SA before IKE_AUTH: which configured
//! peer an IKE_SA_INIT is for, retransmitted and new requests under one
//! initiator SPI, the half-open SAs they leave (counted for cookies and
//! `MAX_HALF_OPEN`), and the peer an SA takes once IKE_AUTH names it.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::config::PeerId;
use crate::drops::DropReason;
use crate::endpoint::Endpoint;
use crate::peer::Peer;
use crate::sa::{IkeSa, SaState};
use crate::sa_init;
use crate::wire::message::Message;

/// Whether an SA is half-open for the cookie load and `MAX_HALF_OPEN`: a
/// responder's SA that never authenticated, waiting for IKE_AUTH or, after
/// a refused one, kept dead until the half-open timeout to answer its
/// retransmissions. Both hold the IKE_SA_INIT request, and a host that
/// answered a cookie can turn its SA dead at will with a bad IKE_AUTH.
fn is_half_open(sa: &IkeSa) -> bool {
    !sa.initiator && !sa.up && matches!(sa.state, SaState::InitReplied | SaState::Dead)
}

impl Endpoint {
    /// A new IKE_SA_INIT request: a retransmission gets the response it had
    /// before from the SA it created; otherwise `sa_init` answers it and
    /// the half-open SA it may create is filed here.
    pub(crate) fn respond_init(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
        msg: &Message,
    ) {
        let h = msg.header;
        if h.message_id != 0 {
            self.io.dropped(DropReason::UnexpectedMessageId);
            return;
        }
        if let Some(spis) = self.init_index.get(&(h.spi_i, remote)) {
            let mut same_spi = spis.iter().filter_map(|spi| self.sas.get(spi));
            // A retransmission gets the answer it had, while its SA waits
            // for IKE_AUTH (or refused it); once IKE_AUTH came, the
            // initiator has the answer, and it is ignored (§2.1).
            if let Some(sa) = same_spi.clone().find(|sa| sa.init_request == data) {
                if matches!(sa.state, SaState::InitReplied | SaState::Dead) {
                    let again = sa.init_response.clone();
                    sa.transmit(&mut self.io, again);
                } else {
                    self.io.dropped(DropReason::UnexpectedMessageId);
                }
                return;
            }
            // Other bytes under the same SPIi, before any IKE_AUTH, are a
            // new request (§2.1): the initiator started again, with a
            // cookie or another group (perhaps asked by a forged notify
            // after we had answered). It gets an SA of its own beside the
            // first, which stays: a copy forged from the initiator's
            // address must not cost it the real one. The half-open
            // timeout and limit take whichever is not used.
            if !same_spi.all(|sa| sa.state == SaState::InitReplied) {
                self.io.dropped(DropReason::UnexpectedExchange);
                return;
            }
        }
        let Some(peer_id) = self.peer_for(remote.ip(), Some(msg)) else {
            self.io.dropped(DropReason::UnknownPeer);
            return;
        };
        let Some(peer) = self.peers.get(&peer_id) else { return };
        // The load the cookie decision weighs: half-open SAs, or new
        // requests earlier in this second (each may have cost a DH and
        // left no SA), whichever is more.
        let half_open = self.half_open_count();
        let load = half_open.max(self.cookies.count_request(now));
        let from = (peer_id, &peer.cfg);
        let new = sa_init::respond_init(&mut self.io, &self.cookies, load, from, now, local, remote, data, msg);
        if let Some(sa) = new {
            if half_open >= self.max_half_open {
                let oldest = self.sas.iter().filter(|(_, s)| is_half_open(s)).min_by_key(|(_, s)| s.created);
                if let Some(spi) = oldest.map(|(spi, _)| *spi) {
                    self.destroy(spi, now);
                }
            }
            let spi_r = sa.spi_r;
            self.init_index.entry((h.spi_i, remote)).or_default().push(spi_r);
            self.sas.insert(spi_r, sa);
        }
    }

    /// Half-open SAs (`is_half_open`), as the cookie load and
    /// `MAX_HALF_OPEN` count them.
    pub(crate) fn half_open_count(&self) -> usize {
        self.sas.values().filter(|s| is_half_open(s)).count()
    }

    /// A responder's half-open SA `spi` takes the peer its IKE_AUTH
    /// request's identity names, among those that may call from `ip`
    /// (`ike_auth::peer_by_identity`); it keeps its peer if none fits.
    /// When the SA's own peer is the only candidate there is nothing to
    /// choose, and the request is not opened here a first time.
    pub(crate) fn bind_by_identity(&mut self, spi: u64, ip: IpAddr, data: &[u8], msg: &Message) {
        let Some(sa) = self.sas.get_mut(&spi) else { return };
        if sa.initiator || sa.state != SaState::InitReplied {
            return;
        }
        let configs = || self.peers.iter().map(|(id, p)| (id, &p.cfg));
        let listed = configs().filter(|(_, c)| c.remote_addrs.contains(&ip));
        let candidates: Vec<_> = listed.chain(configs().filter(|(_, c)| c.any_address)).collect();
        if candidates.iter().all(|(id, _)| **id == sa.peer) {
            return;
        }
        if let Some(id) = crate::ike_auth::peer_by_identity(sa, data, msg, candidates.into_iter()) {
            sa.peer = id;
        }
    }

    /// The configured peer an IKE_SA_INIT from `ip` is for. The peers it
    /// may come from are those listing the address, then those accepting
    /// any address, each by name (as `bind_by_identity` takes them).
    /// IKE_SA_INIT names no one, so the request `init` goes to the first
    /// listing the address whose IKE proposals take it in the key share's
    /// group, else to the first listing it that takes it in another group
    /// (after an INVALID_KE_PAYLOAD round), then the same among those
    /// accepting any address, else to the first of all, which refuses it.
    /// A peer that names the address is the more specific configuration;
    /// among equals, one the initiator's first choice fits is the more
    /// likely to be its mirror. Peers behind one address (a shared NAT)
    /// with different proposals get each their own answer; IKE_AUTH's
    /// identity then picks among those that accept the suite chosen.
    /// Matching proposals costs comparisons and one small allocation per
    /// peer that fits, no DH, so it may come before the cookie check.
    /// Without `init` (a datagram that does not parse): whether any peer
    /// may call from `ip`.
    pub(crate) fn peer_for(&self, ip: IpAddr, init: Option<&Message>) -> Option<PeerId> {
        use sa_init::Fit;
        let listed = |p: &Peer| p.cfg.remote_addrs.contains(&ip);
        let may_call = self
            .peers
            .iter()
            .filter(|(_, p)| listed(p))
            .chain(self.peers.iter().filter(|(_, p)| p.cfg.any_address && !listed(p)));
        // Ranks compare as tuples: a listed peer that takes the offer at
        // all comes before any other; ties keep the first.
        let mut best: Option<((bool, Fit), &PeerId)> = None;
        for (id, p) in may_call {
            let fit = init.map_or(Fit::Refused, |m| sa_init::offer_fit(&p.cfg, m));
            let rank = (fit != Fit::Refused && listed(p), fit);
            if best.is_none_or(|(b, _)| rank > b) {
                best = Some((rank, id));
            }
            if rank == (true, Fit::Exact) {
                break;
            }
        }
        best.map(|(_, id)| id.clone())
    }
}
