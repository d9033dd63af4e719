//! What the endpoint hands back to its driver: datagrams to send, events
//! (SAs up and down, failures) and a status snapshot per peer.
//!
//! Invariants: no event, failure or status carries key material except
//! [`Event::ChildUp`]'s [`ChildKeys`], whose `Debug` hides it; every
//! [`Failure`] displays as one log line that says what to check.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::child_keys::{ChildKeys, EspCipher};
use crate::config::PeerId;
use crate::crypto::IkeSuite;
use crate::wire::traffic_selector::TrafficSelector;

/// A datagram to send. `data` carries no non-ESP marker: when `local_port`
/// is 4500 the driver prepends the four zero octets (RFC 3948 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub remote: SocketAddr,
    /// Our address to send from, when known.
    pub local: Option<IpAddr>,
    /// 500 or 4500.
    pub local_port: u16,
    pub data: Vec<u8>,
}

/// Why an IKE SA that was up went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// The peer sent a Delete for it.
    DeletedByPeer,
    /// We deleted it (peer removed or replaced).
    DeletedLocally,
    /// No answer after every retransmission.
    PeerDead,
    /// The peer started over with INITIAL_CONTACT.
    Replaced,
    /// Its lifetime ran out before a rekey succeeded.
    Expired,
    /// Both ends set up an IKE SA at once and this was the redundant one
    /// (the lowest nonce; the other SA carries on).
    Duplicate,
    /// Deleted on an operator's request to start over (`reset_peer`).
    Reset,
}

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `by_peer`: the peer refused our AUTH; otherwise the peer's AUTH did
    /// not verify with our PSK.
    AuthenticationFailed { by_peer: bool },
    /// The peer's ID is not the configured remote ID.
    IdentityMismatch { expected: String, received: String },
    /// No proposal in common; `offered` lists the offer in strongSwan's
    /// notation (ours when we initiated, the peer's when it did).
    NoProposalChosen { offered: String },
    /// No traffic selectors in common.
    TsUnacceptable { offered: String },
    /// No answer after every retransmission.
    Timeout,
    /// The peer asked for a key exchange group we do not offer.
    InvalidKe { requested: u16 },
    /// The peer answered with an error notification.
    PeerError { notify: u16 },
    /// The peer's messages broke the protocol (what, for the log).
    Protocol(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::AuthenticationFailed { by_peer: true } => f.write_str(
                "authentication failed: the peer refused our AUTH (check the PSK and both IDs on both ends)",
            ),
            Failure::AuthenticationFailed { by_peer: false } => f.write_str(
                "authentication failed: the peer's AUTH does not verify with our PSK (check the PSK on both ends)",
            ),
            Failure::IdentityMismatch { expected, received } => {
                write!(f, "identity mismatch: the peer says it is '{received}', the configuration expects '{expected}'")
            }
            Failure::NoProposalChosen { offered } => {
                write!(
                    f,
                    "no proposal chosen: nothing in common with the offer {offered} (compare both proposal lists)"
                )
            }
            Failure::TsUnacceptable { offered } => {
                write!(f, "traffic selectors unacceptable: no overlap with {offered} (compare local_ts and remote_ts)")
            }
            Failure::Timeout => {
                f.write_str("timeout: the peer did not answer any retransmission (check the path and UDP 500/4500)")
            }
            Failure::InvalidKe { requested } => {
                write!(f, "the peer asks for key exchange group {requested}, which none of our proposals for this exchange has")
            }
            Failure::PeerError { notify } => match crate::ids::notify::error_meaning(*notify) {
                Some((name, meaning)) => {
                    write!(f, "the peer answered with error notification {notify} ({name}): {meaning}")
                }
                None => write!(f, "the peer answered with error notification {notify}"),
            },
            Failure::Protocol(what) => write!(f, "protocol error: {what}"),
        }
    }
}

/// When a new child SA may carry outbound traffic. The peer must have
/// installed its inbound half first, or what we send on it is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildSend {
    /// At once: a first child SA, or one whose rekey we initiated (the
    /// peer installed it before answering).
    Now,
    /// We answered the rekey, so the initiator may install the SA only when
    /// our answer arrives: keep sending on the SA it replaces until a packet
    /// arrives on this one or the replaced SA goes down.
    OnceUsed,
    /// The redundant SA of a simultaneous rekey (§2.8.1): installed only to
    /// receive what the peer sent on it before the delete.
    Never,
}

/// What happened, for the driver to act on.
#[derive(Debug)]
pub enum Event {
    IkeUp {
        peer: PeerId,
        suite: IkeSuite,
        nat: bool,
        remote: SocketAddr,
    },
    IkeDown {
        peer: PeerId,
        reason: DownReason,
    },
    /// A child SA to install. `replaces`: the inbound SPI of the SA whose
    /// outbound traffic this one takes over (that SA stays installed until
    /// its own `ChildDown`, so nothing in flight is lost).
    ChildUp {
        peer: PeerId,
        keys: ChildKeys,
        remote: SocketAddr,
        local: Option<IpAddr>,
        /// UDP encapsulation on port 4500 rather than raw ESP.
        encap: bool,
        /// The peer's address may follow the source of its authenticated
        /// packets (RFC 7296 §2.23: it is behind a NAT, and we did not
        /// initiate from behind one).
        roams: bool,
        replaces: Option<u32>,
        /// When the data plane may send on this SA (RFC 7296 §2.8).
        send: ChildSend,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
    },
    ChildDown {
        peer: PeerId,
        spi_in: u32,
        spi_out: u32,
    },
    /// Send no more on this child SA (the peer's other SA carries its
    /// traffic), but keep receiving on it until its `ChildDown`: it is
    /// being deleted, and the peer sends on it until the Delete arrives.
    ChildStopSending {
        peer: PeerId,
        spi_in: u32,
    },
    /// An authenticated request moved an established IKE SA to the peer's
    /// new address (a NAT in front of it remapped it, or IKE moved to
    /// 4500): the child SAs' packets in UDP go there too.
    PeerMoved {
        peer: PeerId,
        remote: SocketAddr,
    },
    Failed {
        peer: PeerId,
        reason: Failure,
    },
}

/// The state of a peer's IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IkeState {
    /// IKE_SA_INIT or IKE_AUTH under way.
    Connecting,
    Established,
    /// Being deleted.
    Deleting,
    /// No IKE SA.
    Down,
}

/// A child SA as shown in a status (no keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildStatus {
    pub spi_in: u32,
    pub spi_out: u32,
    pub cipher: EspCipher,
    /// The key exchange group of its rekeys (PFS), if any.
    pub pfs: Option<crate::crypto::DhGroup>,
    pub age: Duration,
    pub encap: bool,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
}

/// A peer's state, for operators (never keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub state: IkeState,
    pub initiator: bool,
    pub spi_i: u64,
    pub spi_r: u64,
    pub suite: Option<IkeSuite>,
    pub remote: Option<SocketAddr>,
    pub nat: bool,
    pub children: Vec<ChildStatus>,
    pub ike_rekeys: u32,
    pub child_rekeys: u32,
    pub last_received: Option<Instant>,
    /// The last failure, kept until an IKE SA comes up.
    pub failure: Option<Failure>,
}
