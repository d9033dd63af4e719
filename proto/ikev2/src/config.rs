//! What an operator configures for one IKE peer, in the vocabulary of
//! swanctl.conf where it fits (proposals, `local_ts`/`remote_ts`,
//! lifetimes, `dpd_delay`, `encap = yes`).
//!
//! Invariant: the pre-shared key is zeroized on drop and never printed
//! (`Debug` shows only that one is set).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::child_keys::EspCipher;
use crate::crypto::{DhGroup, IkeSuite};
use crate::wire::identity::Identity;
use crate::wire::traffic_selector::TrafficSelector;

/// The name a configured peer is known by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub String);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for PeerId {
    fn from(s: &str) -> PeerId {
        PeerId(s.to_string())
    }
}

/// One ESP proposal: the cipher, the group for PFS on rekeys (`None`: no
/// PFS) and extended sequence numbers (Causeway offers only `false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspProposal {
    pub cipher: EspCipher,
    pub dh: Option<DhGroup>,
    pub esn: bool,
}

/// Everything Causeway needs to negotiate with one peer.
#[derive(Clone)]
pub struct PeerConfig {
    pub local_id: Identity,
    pub remote_id: Identity,
    pub psk: Zeroizing<Vec<u8>>,
    /// Our IKE proposals, most preferred first; the first one's group is
    /// the one our first KE payload uses.
    pub ike_proposals: Vec<IkeSuite>,
    pub esp_proposals: Vec<EspProposal>,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// Addresses the peer may initiate from.
    pub remote_addrs: Vec<IpAddr>,
    /// The peer may also initiate from any address (a peer configured
    /// without addresses). Not implied by an empty `remote_addrs`: a
    /// peer whose names did not resolve must not match every stranger.
    pub any_address: bool,
    pub ike_lifetime: Duration,
    pub child_lifetime: Duration,
    /// Up to this share of a lifetime is taken off at random, on top of
    /// [`crate::REKEY_MARGIN_PERCENT`], so both ends rarely rekey at once.
    pub rekey_jitter_percent: u8,
    /// Liveness check after this long without hearing from the peer;
    /// `Duration::ZERO` turns it off.
    pub dpd_interval: Duration,
    /// Whether this end starts (and restarts) the IKE SA.
    pub initiate: bool,
    /// Force UDP encapsulation (port 4500) as if a NAT were in the path.
    pub encap_always: bool,
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("local_id", &self.local_id)
            .field("remote_id", &self.remote_id)
            .field("psk", &"<set>")
            .field("ike_proposals", &self.ike_proposals)
            .field("esp_proposals", &self.esp_proposals)
            .field("local_ts", &self.local_ts)
            .field("remote_ts", &self.remote_ts)
            .field("remote_addrs", &self.remote_addrs)
            .field("any_address", &self.any_address)
            .field("ike_lifetime", &self.ike_lifetime)
            .field("child_lifetime", &self.child_lifetime)
            .field("rekey_jitter_percent", &self.rekey_jitter_percent)
            .field("dpd_interval", &self.dpd_interval)
            .field("initiate", &self.initiate)
            .field("encap_always", &self.encap_always)
            .finish()
    }
}
