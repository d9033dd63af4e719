//! IKEv2's wire format (RFC 7296 §3): the IKE header and the payloads
//! Causeway reads and writes, parsed from and written to plain bytes.
//!
//! Invariants: parsing never panics and never reads past a length field
//! (every read goes through [`reader::Reader`], which fails with
//! [`WireError::Truncated`]); every length field is checked against the
//! data it covers; writing computes every length and next-payload field
//! itself, so an emitted message always parses back. The Encrypted (SK)
//! payload is only located here — its body is opened by the protocol with
//! the IKE SA's keys and its inner chain parsed with [`payload::parse_chain`].

pub mod header;
pub mod identity;
pub mod message;
pub mod notify;
pub mod payload;
pub mod proposal;
mod reader;
pub mod traffic_selector;

/// Why a datagram or an inner payload chain could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message truncated")]
    Truncated,
    #[error("a length field disagrees with the data it covers")]
    BadLength,
    #[error("IKE major version {0} is not 2")]
    Version(u8),
    #[error("unsupported critical payload of type {0}")]
    UnsupportedCritical(u8),
    #[error("malformed {0} payload")]
    Malformed(&'static str),
    #[error("the encrypted (SK) payload is not the last payload")]
    SkNotLast,
    #[error("more than {max} {what}")]
    TooMany { what: &'static str, max: usize },
}
