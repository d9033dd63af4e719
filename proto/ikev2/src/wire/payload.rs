//! The payloads of a message and the chain that links them (RFC 7296 §3.2):
//! each generic header names the next payload's type.
//!
//! Invariants: every payload length covers at least its generic header and
//! lies within the data; an unknown payload with the critical bit set fails
//! the whole chain with [`WireError::UnsupportedCritical`] (§2.5), an
//! unknown one without it, and known ones Causeway has no use for (CERT,
//! CERTREQ, CP, EAP), are kept only as [`Payload::Skipped`]. Vendor IDs are
//! kept whole: one of them says a peer is Causeway (`duplicates.rs`).

use super::identity::IdPayload;
use super::notify::{Delete, Notify};
use super::proposal::{parse_sa, write_sa, Proposal};
use super::reader::Reader;
use super::traffic_selector::{parse_ts, write_ts, TrafficSelector};
use super::WireError;
use crate::ids::payload as kind;

const CRITICAL: u8 = 0x80;
/// RFC 7296 §3.9: nonces are 16 to 256 octets.
const NONCE_MIN: usize = 16;
const NONCE_MAX: usize = 256;
/// The most payloads a chain may have. RFC 7296 sets no limit; a message
/// of 64 KiB could hold thousands of empty ones, each parsed, kept and
/// looked through by the exchange. strongSwan accepts at most 20 notify,
/// 20 delete, 20 vendor ID and 8 certificate payloads beside the few an
/// exchange needs, which this leaves room for.
pub const MAX_PAYLOADS: usize = 128;

/// One payload other than the Encrypted one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Sa(Vec<Proposal>),
    Ke {
        group: u16,
        data: Vec<u8>,
    },
    IdI(IdPayload),
    IdR(IdPayload),
    Auth {
        method: u8,
        data: Vec<u8>,
    },
    Nonce(Vec<u8>),
    Notify(Notify),
    Delete(Delete),
    TsI(Vec<TrafficSelector>),
    TsR(Vec<TrafficSelector>),
    /// A Vendor ID (§3.12): opaque bytes naming an implementation or a
    /// capability; unknown ones are ignored.
    Vendor(Vec<u8>),
    /// A payload read past: its type only.
    Skipped {
        kind: u8,
    },
}

impl Payload {
    /// The payload type number the chain names it by.
    pub fn kind(&self) -> u8 {
        match self {
            Payload::Sa(_) => kind::SA,
            Payload::Ke { .. } => kind::KE,
            Payload::IdI(_) => kind::IDI,
            Payload::IdR(_) => kind::IDR,
            Payload::Auth { .. } => kind::AUTH,
            Payload::Nonce(_) => kind::NONCE,
            Payload::Notify(_) => kind::NOTIFY,
            Payload::Delete(_) => kind::DELETE,
            Payload::TsI(_) => kind::TSI,
            Payload::TsR(_) => kind::TSR,
            Payload::Vendor(_) => kind::VENDOR,
            Payload::Skipped { kind } => *kind,
        }
    }

    fn parse(ty: u8, critical: bool, body: &[u8]) -> Result<Payload, WireError> {
        Ok(match ty {
            kind::SA => Payload::Sa(parse_sa(body)?),
            kind::KE => {
                let mut r = Reader::new(body);
                let group = r.u16()?;
                r.u16()?;
                let data = r.rest();
                if data.is_empty() {
                    return Err(WireError::Malformed("KE"));
                }
                Payload::Ke { group, data: data.to_vec() }
            }
            kind::IDI => Payload::IdI(IdPayload::parse(body)?),
            kind::IDR => Payload::IdR(IdPayload::parse(body)?),
            kind::AUTH => {
                let mut r = Reader::new(body);
                let method = r.u8()?;
                r.bytes(3)?;
                Payload::Auth { method, data: r.rest().to_vec() }
            }
            kind::NONCE => {
                if !(NONCE_MIN..=NONCE_MAX).contains(&body.len()) {
                    return Err(WireError::Malformed("Nonce"));
                }
                Payload::Nonce(body.to_vec())
            }
            kind::NOTIFY => Payload::Notify(Notify::parse(body)?),
            kind::DELETE => Payload::Delete(Delete::parse(body)?),
            kind::TSI => Payload::TsI(parse_ts(body)?),
            kind::TSR => Payload::TsR(parse_ts(body)?),
            kind::VENDOR => Payload::Vendor(body.to_vec()),
            kind::CERT | kind::CERTREQ | kind::CP | kind::EAP | kind::SKF => Payload::Skipped { kind: ty },
            other if critical => return Err(WireError::UnsupportedCritical(other)),
            other => Payload::Skipped { kind: other },
        })
    }

    fn write_body(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Sa(p) => write_sa(p, out),
            Payload::Ke { group, data } => {
                out.extend_from_slice(&group.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(data);
            }
            Payload::IdI(id) | Payload::IdR(id) => id.write(out),
            Payload::Auth { method, data } => {
                out.extend_from_slice(&[*method, 0, 0, 0]);
                out.extend_from_slice(data);
            }
            Payload::Nonce(n) => out.extend_from_slice(n),
            Payload::Notify(n) => n.write(out),
            Payload::Delete(d) => d.write(out),
            Payload::TsI(ts) | Payload::TsR(ts) => write_ts(ts, out),
            Payload::Vendor(v) => out.extend_from_slice(v),
            Payload::Skipped { .. } => {}
        }
    }
}

/// Where a chain ended: at its end, or at an Encrypted payload, which must
/// be the last one (its body runs to the end of the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainEnd {
    Done,
    /// An SK payload whose generic header starts at `offset` in the data
    /// given; its inner chain starts with a payload of type `first_inner`.
    Encrypted {
        offset: usize,
        first_inner: u8,
    },
}

/// Parses a payload chain starting with a payload of type `first`.
pub fn parse_chain(first: u8, data: &[u8]) -> Result<(Vec<Payload>, ChainEnd), WireError> {
    let mut r = Reader::new(data);
    let mut next = first;
    let mut out = Vec::new();
    while next != kind::NONE {
        let offset = data.len() - r.len();
        let this = next;
        next = r.u8()?;
        let critical = r.u8()? & CRITICAL != 0;
        let len = r.u16()? as usize;
        if len < 4 {
            return Err(WireError::BadLength);
        }
        let body = r.bytes(len - 4)?;
        if this == kind::SK {
            if !r.is_empty() {
                return Err(WireError::SkNotLast);
            }
            return Ok((out, ChainEnd::Encrypted { offset, first_inner: next }));
        }
        if out.len() == MAX_PAYLOADS {
            return Err(WireError::TooMany { what: "payloads in one chain", max: MAX_PAYLOADS });
        }
        out.push(Payload::parse(this, critical, body)?);
    }
    if !r.is_empty() {
        return Err(WireError::BadLength);
    }
    Ok((out, ChainEnd::Done))
}

/// Appends a chain of payloads; returns the type of the first one (what
/// the preceding header's next-payload field must name). `after` is the
/// type named by the last payload (SK's inner chains and plain chains end
/// with [`kind::NONE`]).
pub fn write_chain(payloads: &[Payload], after: u8, out: &mut Vec<u8>) -> u8 {
    for (i, p) in payloads.iter().enumerate() {
        let next = payloads.get(i + 1).map_or(after, Payload::kind);
        let start = out.len();
        out.extend_from_slice(&[next, 0, 0, 0]);
        p.write_body(out);
        let len = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    payloads.first().map_or(after, Payload::kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_round_trip() {
        let chain = vec![
            Payload::Nonce(vec![7; 32]),
            Payload::Ke { group: 31, data: vec![1; 32] },
            Payload::Notify(Notify::new(16388, vec![0; 20])),
            Payload::Vendor(b"vendor".to_vec()),
        ];
        let mut out = Vec::new();
        let first = write_chain(&chain, kind::NONE, &mut out);
        assert_eq!(parse_chain(first, &out), Ok((chain, ChainEnd::Done)));
    }

    #[test]
    fn unknown_payloads_are_skipped_unless_critical() {
        let mut out = vec![kind::NONE, 0, 0, 6, 0xaa, 0xbb];
        assert_eq!(parse_chain(99, &out), Ok((vec![Payload::Skipped { kind: 99 }], ChainEnd::Done)));
        out[1] = CRITICAL;
        assert_eq!(parse_chain(99, &out), Err(WireError::UnsupportedCritical(99)));
        // A known payload type never counts as unsupported.
        assert_eq!(
            parse_chain(kind::CERTREQ, &out),
            Ok((vec![Payload::Skipped { kind: kind::CERTREQ }], ChainEnd::Done))
        );
        assert_eq!(parse_chain(kind::VENDOR, &out), Ok((vec![Payload::Vendor(vec![0xaa, 0xbb])], ChainEnd::Done)));
    }

    #[test]
    fn a_chain_of_more_than_max_payloads_is_refused() {
        let notify = Payload::Notify(Notify::new(16388, vec![0; 20]));
        let mut out = Vec::new();
        let first = write_chain(&vec![notify.clone(); MAX_PAYLOADS], kind::NONE, &mut out);
        assert_eq!(parse_chain(first, &out).map(|(p, _)| p.len()), Ok(MAX_PAYLOADS));
        let mut out = Vec::new();
        let first = write_chain(&vec![notify; MAX_PAYLOADS + 1], kind::NONE, &mut out);
        assert_eq!(
            parse_chain(first, &out),
            Err(WireError::TooMany { what: "payloads in one chain", max: MAX_PAYLOADS })
        );
    }

    #[test]
    fn short_nonces_and_bad_lengths_are_refused() {
        let mut out = Vec::new();
        let first = write_chain(&[Payload::Nonce(vec![1; 32])], kind::NONE, &mut out);
        out[3] = 3;
        assert_eq!(parse_chain(first, &out), Err(WireError::BadLength));
        let mut out = Vec::new();
        let first = write_chain(&[Payload::Nonce(vec![1; 8])], kind::NONE, &mut out);
        assert_eq!(parse_chain(first, &out), Err(WireError::Malformed("Nonce")));
    }
}
