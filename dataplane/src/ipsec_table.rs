//! The interface's IPsec state, shared by the workers and the control
//! plane: the IPsec peers, their child SAs by inbound SPI (loaded by the
//! workers without a lock), and the requests the data plane makes of IKE.
//! IKE on the control plane installs and removes SAs here, the way an
//! IKE daemon feeds a kernel's SA table.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::child_sa::ChildSa;
use crate::counters::Drop;
use crate::early_esp::EarlyEsp;
use crate::esp_link::EspLink;
use crate::peer::PeerState;

/// Requests the data plane makes of IKE on the control plane, at most this
/// many waiting: beyond it new ones are dropped (IKE retransmits, and a
/// negotiation request is repeated by the next packet).
const MAX_REQUESTS: usize = 1024;
/// Places IKE messages never take, kept for the data plane's own requests
/// (an SA wanted, a rekey): a flood sent from a peer's address, which
/// anyone can write in a datagram, still leaves them room.
const RESERVED_FOR_REQUESTS: usize = 64;
/// Of those, how many may be IKE messages from addresses no IPsec peer is
/// known at. Anyone can send IKE to port 4500 from any address, before
/// any check of who it is (that is IKE's, on the control plane): without
/// this share a flood of such messages would fill the queue, and the
/// peers' own messages would be dropped.
const MAX_STRANGER_MESSAGES: usize = MAX_REQUESTS / 2;
/// The longest IKE message queued. With pre-shared keys IKE messages are
/// a few hundred bytes to a few KB (RFC 7296 §2 asks for 3000 to be
/// taken); datagrams up to 64 KiB copied into a full queue would hold
/// some 60 MiB for nothing.
const MAX_IKE_MESSAGE: usize = 16 << 10;

/// When a new child SA may carry outbound traffic (RFC 7296 §2.8): the
/// peer must have installed its inbound half first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOn {
    /// At once (a first SA, or a rekey we initiated).
    Now,
    /// Once a packet arrives on it or the SA it replaces goes (a rekey we
    /// answered: the initiator installs it when our answer arrives).
    OnceUsed,
    /// Never: the redundant SA of a simultaneous rekey, kept to receive.
    Never,
}

/// Inbound SPI → the peer and its SA.
type BySpi = HashMap<u32, (Arc<PeerState>, Arc<ChildSa>)>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the data plane asks of IKE on the control plane.
pub enum Request {
    /// An IKE message that arrived on a data-plane socket (port 4500,
    /// non-ESP marker removed).
    Ike { local: SocketAddr, remote: SocketAddr, data: Vec<u8> },
    /// Packets wait for an SA to this peer (named as configured).
    Negotiate(String),
    /// The child SA with this inbound SPI is running out of sequence
    /// numbers: rekey it now rather than when its lifetime says.
    Rekey { spi_in: u32 },
    /// An authenticated ESP packet moved the peer (named as configured)
    /// to `to`.
    Moved { peer: String, to: SocketAddr },
}

/// The requests waiting for IKE, and how many of them are messages from
/// strangers (`MAX_STRANGER_MESSAGES`).
#[derive(Default)]
struct Requests {
    queue: VecDeque<Request>,
    strangers: usize,
}

/// The interface's IPsec state shared by the workers and the control plane.
#[derive(Default)]
pub struct IpsecTable {
    peers: Mutex<HashMap<String, Arc<PeerState>>>,
    /// Whether `peers` is non-empty, kept beside it so that the workers'
    /// check of every inbound datagram (`tunnels.rs`) takes no lock.
    any: AtomicBool,
    /// Inbound SPI → its peer and SA; workers load it without a lock.
    by_spi: ArcSwap<BySpi>,
    /// Serialises SPI table changes.
    writer: Mutex<()>,
    /// The last install number given (`ChildSa::installed`).
    installs: std::sync::atomic::AtomicU64,
    requests: Mutex<Requests>,
    /// Where the IPsec peers' endpoints resolved to (canonical addresses),
    /// kept by IKE: their messages are not held to the strangers' share.
    ike_sources: ArcSwap<HashSet<IpAddr>>,
    /// Rung after a request is queued (the control plane's wake-up).
    doorbell: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// ESP that came before its SA was published (`early_esp.rs`), with
    /// the SPIs IKE reserves. Boxed, to keep the table small: it sits in
    /// the interface among fields every packet reads.
    pub(crate) early: Box<EarlyEsp>,
}

impl IpsecTable {
    pub fn peer(&self, name: &str) -> Option<Arc<PeerState>> {
        lock(&self.peers).get(name).cloned()
    }

    pub fn has_peers(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// IPsec peers in the order they were added.
    pub fn peers(&self) -> Vec<Arc<PeerState>> {
        let mut v: Vec<_> = lock(&self.peers).values().cloned().collect();
        v.sort_by_key(|p| p.order);
        v
    }

    pub(crate) fn insert(&self, name: String, peer: Arc<PeerState>) {
        let mut peers = lock(&self.peers);
        peers.insert(name, peer);
        self.any.store(true, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self, name: &str) -> Option<Arc<PeerState>> {
        let peer = {
            let mut peers = lock(&self.peers);
            let peer = peers.remove(name)?;
            self.any.store(!peers.is_empty(), Ordering::Relaxed);
            peer
        };
        self.change_spis(|m| m.retain(|_, (p, _)| !Arc::ptr_eq(p, &peer)));
        if let Some(link) = peer.ipsec() {
            let _switch = lock(&link.switch);
            link.outbound.store(None);
            link.pending.store(None);
        }
        Some(peer)
    }

    fn change_spis(&self, change: impl FnOnce(&mut BySpi)) {
        let _w = lock(&self.writer);
        let mut next = HashMap::clone(&self.by_spi.load());
        change(&mut next);
        self.by_spi.store(Arc::new(next));
    }

    /// Installs a child SA for `peer`: inbound at once, and for sending as
    /// `send` says. A new sending SA replaces the one before it, whose
    /// inbound half stays until `remove_child`.
    ///
    /// Order matters where the peer may already send on the new SA. An SA
    /// that takes over sending once used is made pending before its SPI
    /// is published: a packet opened on it then always finds it pending
    /// (`EspLink::used`), where the other order let the first packets
    /// pass unnoticed and kept sending on the old SA. An SA that sends at
    /// once is published first, so the peer's answers on it are found.
    /// Both happen under the link's switch lock (no path takes that lock
    /// while holding the SPI map's writer lock, so nesting them is safe).
    pub fn install_child(&self, peer: &Arc<PeerState>, sa: Arc<ChildSa>, send: SendOn) {
        let Some(link) = peer.ipsec() else { return };
        if sa.installed() == 0 {
            sa.set_installed(self.installs.fetch_add(1, Ordering::Relaxed) + 1);
        }
        if send != SendOn::Never {
            sa.unmark_receive_only();
        }
        let publish = || self.insert_sa(peer, &sa);
        let switch = lock(&link.switch);
        match send {
            SendOn::Now => {
                publish();
                link.pending.store(None);
                link.outbound.store(Some(sa.clone()));
            }
            // With nothing to send on yet, waiting would only hold packets.
            SendOn::OnceUsed if link.outbound.load().is_none() => {
                publish();
                link.outbound.store(Some(sa.clone()));
            }
            SendOn::OnceUsed => {
                link.pending.store(Some(sa.clone()));
                publish();
            }
            SendOn::Never => {
                sa.mark_receive_only();
                publish();
            }
        }
        drop(switch);
        *lock(&link.negotiation) = (None, None);
    }

    /// Publishes the inbound half of a child SA whose keys IKE's answer is
    /// about to give the peer, before that answer leaves: the peer sends
    /// on it the moment the answer arrives, and a packet that came before
    /// the SA was published would be dropped as of an unknown SPI.
    /// `install_child` decides afterwards whether and when it sends. (The
    /// whole install cannot come first: it would send the packets held
    /// for the SA ahead of the answer, which the peer cannot open yet.) A
    /// packet opened on an SA that takes over once used, between the two,
    /// does not yet switch sending over; the next one after the install
    /// does, or the old SA's removal. Until its install it counts as
    /// receive-only, so that no other SA's removal hands sending to it
    /// (it may be the redundant SA of a collision, never to send).
    pub fn publish_inbound(&self, peer: &Arc<PeerState>, sa: &Arc<ChildSa>) {
        if peer.ipsec().is_none() {
            return;
        }
        sa.mark_receive_only();
        sa.set_installed(self.installs.fetch_add(1, Ordering::Relaxed) + 1);
        self.insert_sa(peer, sa);
    }

    /// Makes `sa` found by its inbound SPI, and hands ESP that came for it
    /// before back to the workers that read it.
    fn insert_sa(&self, peer: &Arc<PeerState>, sa: &Arc<ChildSa>) {
        self.change_spis(|m| {
            m.insert(sa.spi_in(), (peer.clone(), sa.clone()));
        });
        self.early.release(sa.spi_in());
    }

    /// Sets the inbound SPIs IKE has reserved (offered, or of SAs up), before
    /// the IKE messages offering new ones leave. Returns how many kept
    /// datagrams were dropped because their SPI is no longer reserved
    /// (its negotiation failed or its SA went): the caller counts them.
    pub fn set_reserved_spis(&self, spis: HashSet<u32>) -> usize {
        self.early.set_reserved(spis)
    }

    /// Keeps an ESP datagram on SPI `spi`, which no SA has, if IKE has
    /// reserved that SPI (`early_esp.rs`): ESP on an SPI of no SA and of no
    /// negotiation (a peer's SA from before a restart, a forgery) is
    /// dropped at once. Returns whether it was kept and how many kept
    /// before went unclaimed. The SPI table is looked at again after
    /// keeping: an SA published between the worker's lookup and the
    /// keeping released nothing, so the datagram is released here
    /// (`insert_sa` publishes, then releases under the kept datagrams'
    /// lock; this keeps under that lock, then looks).
    pub(crate) fn keep_early(
        &self,
        spi: u32,
        from: (SocketAddr, Option<IpAddr>),
        carrier: crate::session::Carrier,
        datagram: &[u8],
        reader: usize,
        now: causeway_wireguard::Time,
    ) -> (bool, usize) {
        if !self.early.is_reserved(spi) {
            return (false, 0);
        }
        let (kept, expired) = self.early.keep(spi, from, carrier, datagram, reader, now);
        if kept && self.by_spi.load().contains_key(&spi) {
            self.early.release(spi);
        }
        (kept, expired)
    }

    /// Removes the child SA whose inbound SPI is `spi_in`. If it was the
    /// one sending, its successor (the pending SA) sends from now on, or
    /// else another SA of the peer that is up (`hand_over_sending`). With
    /// neither, the peer has no SA to send with until the next.
    pub fn remove_child(&self, spi_in: u32) -> Option<Arc<ChildSa>> {
        self.remove_where(spi_in, |_| true)
    }

    /// Removes `sa`, retired by `retire_child`, if the table still holds it.
    /// IKE frees an SA's SPI when it deletes the SA, while a retired SA
    /// stays here for its grace: a new SA may be given the same SPI
    /// meanwhile (a chance of 2^-32), and must not go with the old one.
    pub fn remove_retired(&self, sa: &Arc<ChildSa>) -> Option<Arc<ChildSa>> {
        self.remove_where(sa.spi_in(), |held| Arc::ptr_eq(held, sa))
    }

    fn remove_where(&self, spi_in: u32, this_one: impl Fn(&Arc<ChildSa>) -> bool) -> Option<Arc<ChildSa>> {
        let mut removed = None;
        self.change_spis(|m| {
            if m.get(&spi_in).is_some_and(|(_, held)| this_one(held)) {
                removed = m.remove(&spi_in);
            }
        });
        let (peer, sa) = removed?;
        if let Some(link) = peer.ipsec() {
            let spis = self.by_spi.load();
            // The peer's SAs still in the table.
            let its_sas = || spis.values().filter(|(p, _)| Arc::ptr_eq(p, &peer)).map(|(_, other)| other);
            // If it was the newest SA packets came on, the newest of those
            // left takes its place (`EspLink::heard_on`).
            sa.mark_removed();
            let newest_heard =
                its_sas().filter(|other| other.heard()).map(|other| other.installed()).max().unwrap_or(0);
            let _ =
                link.newest_heard.compare_exchange(sa.installed(), newest_heard, Ordering::SeqCst, Ordering::SeqCst);
            hand_over_sending(link, &peer, &sa, &spis, false);
        }
        Some(sa)
    }

    /// IKE deleted the child SA whose inbound SPI is `spi_in` while
    /// another SA of its peer is up (a rekey replaced it): sending moves to
    /// that one at once, as `remove_child` would move it, but the SA keeps
    /// opening until the caller's `remove_child`, since what the peer
    /// sealed with it before switching may still be on the way (the Delete
    /// can overtake it; strongSwan keeps a rekeyed inbound SA 5 s,
    /// `delete_rekeyed_delay`). Returns the SA, for `remove_retired`; None,
    /// and nothing done, when no other SA of the peer could send: the
    /// caller then removes it at once.
    pub fn retire_child(&self, spi_in: u32) -> Option<Arc<ChildSa>> {
        let spis = self.by_spi.load();
        let (peer, sa) = spis.get(&spi_in)?;
        let another =
            spis.values().any(|(p, other)| Arc::ptr_eq(p, peer) && !Arc::ptr_eq(other, sa) && !other.receive_only());
        // With another to hand over to, `stop_sending` does exactly this.
        (another && peer.ipsec().is_some() && self.stop_sending(spi_in)).then(|| sa.clone())
    }

    /// Hands sending on the child SA whose inbound SPI is `spi_in` over
    /// as `remove_child` would, but keeps it to receive on until its
    /// `remove_child`: IKE is deleting it, and the peer sends on it until
    /// the Delete arrives. An SA with nothing to hand over to goes on
    /// sending: better into an SA about to go than into none; it is then
    /// still a stand-in should a newer SA go first. Returns whether it was
    /// found.
    pub fn stop_sending(&self, spi_in: u32) -> bool {
        let spis = self.by_spi.load();
        let Some((peer, sa)) = spis.get(&spi_in) else { return false };
        let Some(link) = peer.ipsec() else { return true };
        if !hand_over_sending(link, peer, sa, &spis, true) {
            sa.mark_receive_only();
        }
        true
    }

    pub fn child(&self, spi_in: u32) -> Option<(Arc<PeerState>, Arc<ChildSa>)> {
        self.by_spi.load().get(&spi_in).cloned()
    }

    /// Inbound SPIs in use, with their peers' names.
    pub fn spis(&self) -> Vec<(u32, u32, String)> {
        let mut v: Vec<_> = self.by_spi.load().values().map(|(p, sa)| (sa.spi_in(), sa.spi_out(), p.name())).collect();
        v.sort();
        v
    }

    /// Sets what rings when a request waits (the control plane's wake-up).
    pub fn set_doorbell(&self, ring: Box<dyn Fn() + Send + Sync>) {
        *lock(&self.doorbell) = Some(ring);
    }

    /// Takes the waiting requests.
    pub fn take_requests(&self) -> VecDeque<Request> {
        std::mem::take(&mut *lock(&self.requests)).queue
    }

    /// Sets the addresses the IPsec peers' endpoints resolved to; IKE
    /// messages from them may fill the whole request queue.
    pub fn set_ike_sources(&self, addrs: impl IntoIterator<Item = IpAddr>) {
        self.ike_sources.store(Arc::new(addrs.into_iter().map(|a| a.to_canonical()).collect()));
    }

    /// Whether IKE messages from `ip` count as a peer's: an address its
    /// endpoints resolved to (`set_ike_sources`), or the address the data
    /// plane last had from it, which covers a peer configured without
    /// endpoints and one that moved behind a NAT.
    pub fn is_ike_source(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.ike_sources.load().contains(&ip)
            || lock(&self.peers).values().any(|p| p.endpoint().is_some_and(|e| e.addr.ip().to_canonical() == ip))
    }

    /// Queues an IKE message that arrived on a data-plane socket, copied
    /// only when there is room for it; Err says why it was dropped (longer
    /// than `MAX_IKE_MESSAGE`, or no room).
    pub(crate) fn ike_message(&self, local: SocketAddr, remote: SocketAddr, data: &[u8]) -> Result<(), Drop> {
        if data.len() > MAX_IKE_MESSAGE {
            return Err(Drop::Malformed);
        }
        let stranger = !self.is_ike_source(remote.ip());
        {
            let mut r = lock(&self.requests);
            let full = r.queue.len() >= MAX_REQUESTS - RESERVED_FOR_REQUESTS;
            if full || (stranger && r.strangers >= MAX_STRANGER_MESSAGES) {
                return Err(Drop::StagedQueueFull);
            }
            r.strangers += usize::from(stranger);
            r.queue.push_back(Request::Ike { local, remote, data: data.to_vec() });
        }
        self.ring();
        Ok(())
    }

    /// Queues `r` for IKE; false if the queue is full. A peer's move is
    /// never refused but kept once per peer, the latest: the data plane
    /// reports a move only when it sees it, so a lost one would leave IKE
    /// at the old address.
    pub(crate) fn request(&self, r: Request) -> bool {
        {
            let mut q = lock(&self.requests);
            if let Request::Moved { peer, to } = &r {
                let queued = q.queue.iter_mut().find_map(|x| match x {
                    Request::Moved { peer: p, to: t } if p == peer => Some(t),
                    _ => None,
                });
                match queued {
                    Some(t) => *t = *to,
                    None => q.queue.push_back(r),
                }
            } else if q.queue.len() >= MAX_REQUESTS {
                return false;
            } else {
                q.queue.push_back(r);
            }
        }
        self.ring();
        true
    }

    fn ring(&self) {
        if let Some(ring) = &*lock(&self.doorbell) {
            ring();
        }
    }
}

/// If `sa` sends for `peer` or waits to, it no longer does: the
/// pending SA sends instead, or else another SA of the peer in
/// `spis` that may send. A peer can hold two at once (one from each of
/// two IKE SAs, when both ends initiated together), and losing one
/// must not stop traffic while the other carries it. With neither, the
/// peer has no SA to send with, unless `keep_if_alone`: then `sa` goes
/// on sending. Returns whether `sa` still sends.
fn hand_over_sending(
    link: &EspLink,
    peer: &Arc<PeerState>,
    sa: &Arc<ChildSa>,
    spis: &BySpi,
    keep_if_alone: bool,
) -> bool {
    let _switch = lock(&link.switch);
    let is = |slot: &arc_swap::ArcSwapOption<ChildSa>| slot.load().as_ref().is_some_and(|c| Arc::ptr_eq(c, sa));
    if is(&link.pending) {
        link.pending.store(None);
    }
    if is(&link.outbound) {
        // Any of them carries traffic; the same choice every time is
        // easier to follow.
        let other = || {
            spis.values()
                .filter(|(p, other)| Arc::ptr_eq(p, peer) && !Arc::ptr_eq(other, sa) && !other.receive_only())
                .max_by_key(|(_, other)| other.spi_in())
                .map(|(_, other)| other.clone())
        };
        match link.pending.swap(None).or_else(other) {
            None if keep_if_alone => return true,
            next => link.outbound.store(next),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(q: &VecDeque<Request>) -> (usize, usize) {
        let ike = q.iter().filter(|r| matches!(r, Request::Ike { .. })).count();
        (ike, q.len() - ike)
    }

    #[test]
    fn strangers_fill_only_their_share_and_peers_and_the_data_plane_still_get_in() {
        let t = IpsecTable::default();
        let local: SocketAddr = "198.18.0.1:4500".parse().unwrap();
        let peer: SocketAddr = "198.18.0.2:4500".parse().unwrap();
        t.set_ike_sources(["198.18.0.2".parse().unwrap()]);
        let mut admitted = 0;
        for i in 0..MAX_REQUESTS {
            let stranger = SocketAddr::new(IpAddr::from([198, 19, (i >> 8) as u8, i as u8]), 4500);
            admitted += usize::from(t.ike_message(local, stranger, &[0; 28]).is_ok());
        }
        assert_eq!(admitted, MAX_STRANGER_MESSAGES);
        // The peer's address, also written as an IPv4-mapped IPv6 one, as a
        // dual-stack socket may report it.
        assert!(t.ike_message(local, peer, &[1; 28]).is_ok());
        assert!(t.ike_message(local, "[::ffff:198.18.0.2]:4500".parse().unwrap(), &[1; 28]).is_ok());
        assert!(t.request(Request::Negotiate("site-b".into())));
        let q = t.take_requests();
        assert_eq!(count(&q), (MAX_STRANGER_MESSAGES + 2, 1));
        // Taking the queue gives the strangers their share again.
        assert!(t.ike_message(local, "198.19.9.9:4500".parse().unwrap(), &[0; 28]).is_ok());
        // Nor are big datagrams copied, from anyone.
        assert_eq!(t.ike_message(local, peer, &vec![0; MAX_IKE_MESSAGE + 1]), Err(Drop::Malformed));
        assert!(t.ike_message(local, peer, &vec![0; MAX_IKE_MESSAGE]).is_ok());
    }

    #[test]
    fn a_flood_from_a_peers_address_leaves_room_for_the_data_planes_requests() {
        let t = IpsecTable::default();
        let local: SocketAddr = "198.18.0.1:4500".parse().unwrap();
        let peer: SocketAddr = "198.18.0.2:4500".parse().unwrap();
        t.set_ike_sources([peer.ip()]);
        let admitted = (0..MAX_REQUESTS).filter(|_| t.ike_message(local, peer, &[0; 28]).is_ok()).count();
        assert_eq!(admitted, MAX_REQUESTS - RESERVED_FOR_REQUESTS);
        assert_eq!(t.ike_message(local, "198.19.0.1:4500".parse().unwrap(), &[0; 28]), Err(Drop::StagedQueueFull));
        let asked = (0..RESERVED_FOR_REQUESTS + 1).filter(|_| t.request(Request::Rekey { spi_in: 1 })).count();
        assert_eq!(asked, RESERVED_FOR_REQUESTS, "the reserve, and then the whole queue is bounded");
        assert_eq!(t.take_requests().len(), MAX_REQUESTS);
    }

    // A full queue still takes a peer's move, once per peer, the latest.
    #[test]
    fn a_peers_move_is_never_lost_and_queued_once() {
        let t = IpsecTable::default();
        while t.request(Request::Negotiate("site-b".into())) {}
        let moved =
            |peer: &str, port: u16| Request::Moved { peer: peer.into(), to: SocketAddr::from(([198, 18, 0, 2], port)) };
        assert!(t.request(moved("site-b", 40001)));
        assert!(t.request(moved("site-c", 40002)));
        assert!(t.request(moved("site-b", 40003)));
        let moves: Vec<(String, u16)> = t
            .take_requests()
            .into_iter()
            .filter_map(|r| if let Request::Moved { peer, to } = r { Some((peer, to.port())) } else { None })
            .collect();
        assert_eq!(moves, vec![("site-b".into(), 40003), ("site-c".into(), 40002)]);
    }
}
