//! Causeway's IKEv2 core (RFC 7296), sans-IO like the WireGuard core: it
//! takes datagrams, the time and randomness from its caller and gives back
//! datagrams to send, timers and events (child SAs up, rekeyed, deleted);
//! it never touches a socket or a clock. The gateway's control plane drives
//! it and installs the child SAs it negotiates into the data plane, whose
//! ESP sealing and opening live in `causeway-esp`.
//!
//! Entry points: [`Endpoint`] (the state machine) and
//! [`wire::message::Message::parse`] (the parser, for fuzzing).
#![forbid(unsafe_code)]

mod child_keys;
mod config;
mod cookies;
pub mod crypto;
mod drops;
mod duplicates;
mod effect;
mod endpoint;
mod event;
mod exchange;
pub mod ids;
mod ike_auth;
mod informational;
mod io;
mod lifetime;
mod negotiate;
mod operator;
mod peer;
mod rekey;
mod rekey_state;
mod responder;
mod sa;
mod sa_init;
pub mod spi;
mod timers;
pub mod wire;

#[cfg(test)]
mod tests;

pub use child_keys::{ChildKeys, EspCipher};
pub use config::{EspProposal, PeerConfig, PeerId};
pub use drops::{DropReason, Drops};
pub use endpoint::{Endpoint, DEFAULT_COOKIE_THRESHOLD, MAX_HALF_OPEN, RECONNECT_DELAY};
pub use event::{ChildSend, ChildStatus, DownReason, Event, Failure, IkeState, PeerStatus, Transmit};
pub use lifetime::{HALF_OPEN_TIMEOUT, REKEY_MARGIN_PERCENT, REPLACED_SA_LINGER};
pub use negotiate::describe_ts;
pub use operator::RekeyScheduled;
pub use rekey::REKEY_RETRY;
pub use sa::{RETRANSMIT_BASE, RETRANSMIT_TRIES};
pub use sa_init::NONCE_LEN;
pub use wire::identity::Identity;
pub use wire::traffic_selector::TrafficSelector;
pub use wire::WireError;
