//! A configured peer as the endpoint keeps it: its configuration, where to
//! reach it again, and its counters.
//!
//! Invariant: only the endpoint changes a peer; SA handlers only read it.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::config::PeerConfig;

pub(crate) struct Peer {
    pub cfg: PeerConfig,
    /// Where `connect` last sent us, for restarts.
    pub target: Option<(SocketAddr, Option<IpAddr>)>,
    /// Whether another IKE SA with this peer is up, so INITIAL_CONTACT
    /// must not be sent (set before each dispatch).
    pub contacted: bool,
    pub reconnect_at: Option<Instant>,
    pub ike_rekeys: u32,
    pub child_rekeys: u32,
}

impl Peer {
    pub(crate) fn new(cfg: PeerConfig) -> Peer {
        Peer { cfg, target: None, contacted: false, reconnect_at: None, ike_rekeys: 0, child_rekeys: 0 }
    }
}
