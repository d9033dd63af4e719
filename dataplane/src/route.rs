//! What a prefix routes to (cryptokey routing, `allowed_ips.rs`): one
//! peer, or a site whose gateways share its traffic (`site.rs`). Inbound,
//! a packet's source must route to the peer it came from, or to a site
//! that peer is a gateway of.

use std::collections::HashSet;
use std::sync::Arc;

use crate::allowed_ips::AllowedIps;
use crate::peer::PeerState;
use crate::site::Site;

#[derive(Clone)]
pub enum Route {
    Peer(Arc<PeerState>),
    Site(Arc<Site>),
}

/// The routing table: every prefix to its peer or site.
pub type Routes = AllowedIps<Route>;

impl From<Arc<PeerState>> for Route {
    fn from(p: Arc<PeerState>) -> Route {
        Route::Peer(p)
    }
}

impl From<Arc<Site>> for Route {
    fn from(s: Arc<Site>) -> Route {
        Route::Site(s)
    }
}

impl Route {
    /// The peer, for a prefix routed to one.
    pub fn peer(&self) -> Option<&Arc<PeerState>> {
        match self {
            Route::Peer(p) => Some(p),
            Route::Site(_) => None,
        }
    }

    /// The site, for a prefix routed to one.
    pub fn site(&self) -> Option<&Arc<Site>> {
        match self {
            Route::Site(s) => Some(s),
            Route::Peer(_) => None,
        }
    }

    /// Whether this routes to `peer` itself (not to a site of it).
    pub fn is_peer(&self, peer: &PeerState) -> bool {
        self.peer().is_some_and(|p| std::ptr::eq(Arc::as_ptr(p), peer))
    }

    /// Whether it is one of the peers of `peers` (by address).
    pub fn is_peer_in(&self, peers: &HashSet<*const PeerState>) -> bool {
        self.peer().is_some_and(|p| peers.contains(&Arc::as_ptr(p)))
    }

    pub fn is_site(&self, site: &Site) -> bool {
        self.site().is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), site))
    }

    /// How a message names it: the peer's label, or `site NAME`.
    pub fn label(&self) -> String {
        match self {
            Route::Peer(p) => format!("peer {}", p.label()),
            Route::Site(s) => format!("site {}", s.name()),
        }
    }
}
