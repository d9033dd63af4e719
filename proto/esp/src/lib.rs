//! Causeway's ESP core (RFC 4303, tunnel mode), sans-IO: one child SA's
//! sealing and opening in place, its sequence numbers and replay window.
//! The data plane calls it from every worker at once; IKE (in
//! `causeway-ikev2`) makes the keys.
//!
//! Ciphers: AES-GCM with a 16-byte ICV (RFC 4106) and AES-CBC with
//! HMAC-SHA-256-128 (RFC 3602, RFC 4868), 128- or 256-bit keys; 32-bit
//! sequence numbers (no ESN).
//!
//! - `OutboundSa`: `reserve` sequence numbers for a batch (atomic), then
//!   `seal` each packet in place on any thread.
//! - `InboundSa`: `open` in place on any thread (authenticate, decrypt,
//!   check padding), then `accept` the sequence number in the drain.
//! - `spi_of`: which SA an arriving datagram belongs to.
#![forbid(unsafe_code)]

mod cbc;
mod error;
pub mod fuzz;
mod gcm;
mod inbound;
mod keys;
pub mod layout;
mod outbound;
mod replay;

pub use error::Error;
pub use inbound::{Arrival, InboundSa, Opened};
pub use keys::{Cipher, SaKeys, GCM_SALT_LEN, HMAC_SHA256_KEY_LEN};
pub use outbound::{OutboundSa, MAX_SEQ};
pub use replay::{ReplayWindow, WINDOW_SIZE};
pub use zeroize::Zeroizing;

/// The SPI of an ESP datagram (its first 4 bytes, big-endian). `None` if
/// the datagram is shorter, or starts with SPI 0: RFC 3948's non-ESP
/// marker, which on UDP port 4500 means an IKE message follows.
pub fn spi_of(datagram: &[u8]) -> Option<u32> {
    let spi = u32::from_be_bytes(datagram.get(..4)?.try_into().ok()?);
    (spi != 0).then_some(spi)
}

#[cfg(test)]
mod testutil;
