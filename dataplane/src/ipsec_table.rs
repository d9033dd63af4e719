//! The interface's IPsec state, shared by the workers and the control
//! plane: the IPsec peers, their child SAs by inbound SPI (loaded by the
//! workers without a lock), and the requests the data plane makes of IKE.
//! IKE on the control plane installs and removes SAs here, the way an
//! IKE daemon feeds a kernel's SA table.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::child_sa::ChildSa;
use crate::peer::PeerState;

/// Requests the data plane makes of IKE on the control plane, at most this
/// many waiting: beyond it new ones are dropped (IKE retransmits, and a
/// negotiation request is repeated by the next packet).
const MAX_REQUESTS: usize = 1024;

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
}

/// The interface's IPsec state shared by the workers and the control plane.
#[derive(Default)]
pub struct IpsecTable {
    peers: Mutex<HashMap<String, Arc<PeerState>>>,
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
        !lock(&self.peers).is_empty()
    }

    /// IPsec peers in the order they were added.
    pub fn peers(&self) -> Vec<Arc<PeerState>> {
        let mut v: Vec<_> = lock(&self.peers).values().cloned().collect();
        v.sort_by_key(|p| p.order);
        v
    }

    pub(crate) fn insert(&self, name: String, peer: Arc<PeerState>) {
        lock(&self.peers).insert(name, peer);
    }

    pub(crate) fn remove(&self, name: &str) -> Option<Arc<PeerState>> {
        let peer = lock(&self.peers).remove(name)?;
        self.change_spis(|m| m.retain(|_, (p, _)| !Arc::ptr_eq(p, &peer)));
        if let Some(link) = peer.ipsec() {
            link.outbound.store(None);
        }
        Some(peer)
    }

    fn change_spis(&self, change: impl FnOnce(&mut BySpi)) {
        let _w = lock(&self.writer);
        let mut next = HashMap::clone(&self.by_spi.load());
        change(&mut next);
        self.by_spi.store(Arc::new(next));
    }

    /// Installs a child SA for `peer`: inbound at once, and for sending
    /// from now on (it replaces the SA sending before it, whose inbound
    /// half stays until `remove_child`).
    pub fn install_child(&self, peer: &Arc<PeerState>, sa: Arc<ChildSa>) {
        let Some(link) = peer.ipsec() else { return };
        self.change_spis(|m| {
            m.insert(sa.spi_in(), (peer.clone(), sa.clone()));
        });
        link.outbound.store(Some(sa));
        *lock(&link.negotiation) = (None, None);
    }

    /// Removes the child SA whose inbound SPI is `spi_in`; if it was
    /// still sending, the peer has no SA to send with until the next.
    pub fn remove_child(&self, spi_in: u32) -> Option<Arc<ChildSa>> {
        let mut removed = None;
        self.change_spis(|m| removed = m.remove(&spi_in));
        let (peer, sa) = removed?;
        if let Some(link) = peer.ipsec() {
            let current = link.outbound.load();
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &sa)) {
                link.outbound.store(None);
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
