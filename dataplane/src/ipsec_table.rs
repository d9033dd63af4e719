//! The interface's IPsec state, shared by the workers and the control
//! plane: the IPsec peers, their child SAs by inbound SPI (loaded by the
//! workers without a lock), and the requests the data plane makes of IKE.
//! IKE on the control plane installs and removes SAs here, the way an
//! IKE daemon feeds a kernel's SA table.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::child_sa::ChildSa;
use crate::peer::PeerState;

/// Requests the data plane makes of IKE on the control plane, at most this
/// many waiting: beyond it new ones are dropped (IKE retransmits, and a
/// negotiation request is repeated by the next packet).
const MAX_REQUESTS: usize = 1024;

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
    requests: Mutex<VecDeque<Request>>,
    /// Rung after a request is queued (the control plane's wake-up).
    doorbell: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
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
    pub fn install_child(&self, peer: &Arc<PeerState>, sa: Arc<ChildSa>, send: SendOn) {
        let Some(link) = peer.ipsec() else { return };
        self.change_spis(|m| {
            m.insert(sa.spi_in(), (peer.clone(), sa.clone()));
        });
        let switch = lock(&link.switch);
        match send {
            SendOn::Now => {
                link.pending.store(None);
                link.outbound.store(Some(sa));
            }
            // With nothing to send on yet, waiting would only hold packets.
            SendOn::OnceUsed if link.outbound.load().is_none() => link.outbound.store(Some(sa)),
            SendOn::OnceUsed => link.pending.store(Some(sa)),
            SendOn::Never => {}
        }
        drop(switch);
        *lock(&link.negotiation) = (None, None);
    }

    /// Removes the child SA whose inbound SPI is `spi_in`; if it was
    /// still sending, the peer has no SA to send with until the next.
    pub fn remove_child(&self, spi_in: u32) -> Option<Arc<ChildSa>> {
        let mut removed = None;
        self.change_spis(|m| removed = m.remove(&spi_in));
        let (peer, sa) = removed?;
        if let Some(link) = peer.ipsec() {
            let _switch = lock(&link.switch);
            let is =
                |slot: &arc_swap::ArcSwapOption<ChildSa>| slot.load().as_ref().is_some_and(|c| Arc::ptr_eq(c, &sa));
            if is(&link.pending) {
                link.pending.store(None);
            }
            // The replaced SA went: its successor sends from now on.
            if is(&link.outbound) {
                link.outbound.store(link.pending.swap(None));
            }
        }
        Some(sa)
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
        std::mem::take(&mut *lock(&self.requests))
    }

    pub(crate) fn request(&self, r: Request) -> bool {
        {
            let mut q = lock(&self.requests);
            if q.len() >= MAX_REQUESTS {
                return false;
            }
            q.push_back(r);
        }
        if let Some(ring) = &*lock(&self.doorbell) {
            ring();
        }
        true
    }
}
