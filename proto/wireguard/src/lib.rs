//! The WireGuard protocol, sans-IO.
//!
//! This crate owns every byte Causeway puts on the wire and every decision the
//! protocol makes, but it never touches a socket, a thread or a clock: callers
//! pass buffers in, pass the time in (`Time` for the monotonic protocol clock,
//! `SystemTime` for the TAI64N handshake timestamp), and act on what comes back.
//! That is what lets tests run hours of protocol time in milliseconds and lets
//! the gateway drive one peer's packets from every core at once.
//!
//! Concurrency model, stated once here and relied on everywhere:
//! - [`Keypair`] is `Sync`. Sealing reserves nonces with one atomic `fetch_add`
//!   and runs the AEAD without any lock; opening runs the AEAD without any lock
//!   and then takes the replay window's mutex for a few instructions.
//! - [`Peer`] keeps its handshake and keypair slots behind short mutexes that
//!   are never held across an AEAD operation on transport data.
//! - [`Device`] routes incoming messages by receiver index through an
//!   [`IndexTable`] that readers consult under a read lock.

#![forbid(unsafe_code)]

mod constants;
mod cookie;
mod device;
mod error;
mod handshake;
mod index;
mod keypair;
mod keys;
mod load;
pub mod messages;
mod peer;
mod primitives;
mod ratelimit;
mod replay;
mod tai64n;
mod time;
mod timers;

pub use constants::*;
pub use cookie::{CookieChecker, CookieGenerator};
pub use device::{Device, Received};
pub use error::Error;
pub use handshake::{consume_initiation_static, HandshakeState, PartialInitiation};
pub use index::{IndexEntry, IndexTable};
pub use keypair::{padded_len, Keypair};
pub use keys::{PresharedKey, PublicKey, StaticSecret};
pub use load::LoadMonitor;
pub use peer::{Peer, PeerStats};
pub use replay::ReplayWindow;
pub use tai64n::Tai64N;
pub use time::Time;
pub use timers::{TimerAction, Timers};
