//! The Security Association payload's body (RFC 7296 §3.3): proposals of
//! transforms, each transform with at most the key-length attribute.
//!
//! Invariants: a parsed proposal's transform count and every substructure
//! length match the data; a transform carrying an attribute we do not know
//! is kept but marked (`unknown_attr`) so negotiation never picks it, as
//! §3.3.6 asks.

use super::reader::Reader;
use super::WireError;
use crate::ids::ATTR_KEY_LENGTH;

const MORE_PROPOSALS: u8 = 2;
const MORE_TRANSFORMS: u8 = 3;
const LAST: u8 = 0;
/// The attribute-format bit: set for TV (two-octet value) attributes.
const ATTR_TV: u16 = 0x8000;
/// Proposal numbers are one octet, from 1 up by one (RFC 7296 §3.3.1), so
/// a conforming SA payload has at most 255 proposals; a 64 KiB one could
/// otherwise hold thousands for negotiation to look through.
pub const MAX_PROPOSALS: usize = 255;

/// One transform: its type (`ids::transform_type`), its ID and key length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    pub kind: u8,
    pub id: u16,
    pub key_len: Option<u16>,
    pub unknown_attr: bool,
}

impl Transform {
    pub fn new(kind: u8, id: u16, key_len: Option<u16>) -> Transform {
        Transform { kind, id, key_len, unknown_attr: false }
    }
}

/// One proposal: a protocol (`ids::protocol`), an SPI and its transforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub num: u8,
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

impl Proposal {
    /// The transforms of one type, in the order offered.
    pub fn of_type(&self, kind: u8) -> impl Iterator<Item = &Transform> {
        self.transforms.iter().filter(move |t| t.kind == kind)
    }
}

/// Parses an SA payload's body.
pub fn parse_sa(body: &[u8]) -> Result<Vec<Proposal>, WireError> {
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    loop {
        let last = r.u8()?;
        r.u8()?;
        let len = r.u16()? as usize;
        if len < 8 {
            return Err(WireError::Malformed("SA"));
        }
        let mut p = Reader::new(r.bytes(len - 4)?);
        if out.len() == MAX_PROPOSALS {
            return Err(WireError::TooMany { what: "proposals in one SA payload", max: MAX_PROPOSALS });
        }
        out.push(parse_proposal(&mut p)?);
        match last {
            LAST if r.is_empty() => return Ok(out),
            MORE_PROPOSALS if !r.is_empty() => {}
            _ => return Err(WireError::Malformed("SA")),
        }
    }
}

fn parse_proposal(p: &mut Reader<'_>) -> Result<Proposal, WireError> {
    let num = p.u8()?;
    let protocol = p.u8()?;
    let spi_size = p.u8()? as usize;
    let count = p.u8()? as usize;
    let spi = p.bytes(spi_size)?.to_vec();
    let mut transforms = Vec::with_capacity(count);
    while !p.is_empty() {
        // The count is one octet: more transforms than it says are refused
        // before they are parsed, not after thousands of them.
        if transforms.len() == count {
            return Err(WireError::Malformed("SA"));
        }
        let last = p.u8()?;
        p.u8()?;
        let len = p.u16()? as usize;
        if len < 8 {
            return Err(WireError::Malformed("SA transform"));
        }
        let mut t = Reader::new(p.bytes(len - 4)?);
        transforms.push(parse_transform(&mut t)?);
        let expected = if p.is_empty() { LAST } else { MORE_TRANSFORMS };
        if last != expected {
            return Err(WireError::Malformed("SA transform"));
        }
    }
    if transforms.len() != count {
        return Err(WireError::Malformed("SA"));
    }
    Ok(Proposal { num, protocol, spi, transforms })
}

fn parse_transform(t: &mut Reader<'_>) -> Result<Transform, WireError> {
    let kind = t.u8()?;
    t.u8()?;
    let id = t.u16()?;
    let mut key_len = None;
    let mut unknown_attr = false;
    while !t.is_empty() {
        let ty = t.u16()?;
        let value_len = if ty & ATTR_TV != 0 { 2 } else { t.u16()? as usize };
        let value = t.bytes(value_len)?;
        if ty == ATTR_TV | ATTR_KEY_LENGTH && key_len.is_none() && value.len() == 2 {
            key_len = Some(u16::from_be_bytes([value[0], value[1]]));
        } else {
            unknown_attr = true;
        }
    }
    Ok(Transform { kind, id, key_len, unknown_attr })
}

/// Appends an SA payload's body.
pub fn write_sa(proposals: &[Proposal], out: &mut Vec<u8>) {
    for (i, p) in proposals.iter().enumerate() {
        let start = out.len();
        out.push(if i + 1 == proposals.len() { LAST } else { MORE_PROPOSALS });
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        out.push(p.num);
        out.push(p.protocol);
        out.push(p.spi.len() as u8);
        out.push(p.transforms.len() as u8);
        out.extend_from_slice(&p.spi);
        for (j, t) in p.transforms.iter().enumerate() {
            let tstart = out.len();
            out.push(if j + 1 == p.transforms.len() { LAST } else { MORE_TRANSFORMS });
            out.push(0);
            out.extend_from_slice(&[0, 0]);
            out.push(t.kind);
            out.push(0);
            out.extend_from_slice(&t.id.to_be_bytes());
            if let Some(k) = t.key_len {
                out.extend_from_slice(&(ATTR_TV | ATTR_KEY_LENGTH).to_be_bytes());
                out.extend_from_slice(&k.to_be_bytes());
            }
            let tlen = (out.len() - tstart) as u16;
            out[tstart + 2..tstart + 4].copy_from_slice(&tlen.to_be_bytes());
        }
        let plen = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&plen.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{dh, encr, prf, protocol, transform_type as tt};

    fn sample() -> Vec<Proposal> {
        vec![
            Proposal {
                num: 1,
                protocol: protocol::IKE,
                spi: vec![],
                transforms: vec![
                    Transform::new(tt::ENCR, encr::AES_GCM_16, Some(256)),
                    Transform::new(tt::PRF, prf::HMAC_SHA2_256, None),
                    Transform::new(tt::DH, dh::CURVE25519, None),
                ],
            },
            Proposal {
                num: 2,
                protocol: protocol::ESP,
                spi: vec![1, 2, 3, 4],
                transforms: vec![Transform::new(tt::ENCR, encr::AES_CBC, Some(128))],
            },
        ]
    }

    #[test]
    fn proposals_round_trip() {
        let mut out = Vec::new();
        write_sa(&sample(), &mut out);
        assert_eq!(parse_sa(&out), Ok(sample()));
    }

    #[test]
    fn unknown_attributes_mark_the_transform() {
        let mut out = Vec::new();
        write_sa(&sample()[1..], &mut out);
        // Replace the key-length attribute type by an unknown TV one.
        let n = out.len();
        out[n - 4] = 0x80;
        out[n - 3] = 0x63;
        let parsed = parse_sa(&out).expect("parses");
        assert!(parsed[0].transforms[0].unknown_attr);
        assert_eq!(parsed[0].transforms[0].key_len, None);
    }

    #[test]
    fn more_than_255_proposals_are_refused() {
        let numbered = |n: usize| -> Vec<Proposal> {
            (0..n).map(|i| Proposal { num: (i % 255 + 1) as u8, ..sample()[1].clone() }).collect()
        };
        let mut out = Vec::new();
        write_sa(&numbered(MAX_PROPOSALS), &mut out);
        assert_eq!(parse_sa(&out).map(|p| p.len()), Ok(MAX_PROPOSALS));
        let mut out = Vec::new();
        write_sa(&numbered(MAX_PROPOSALS + 1), &mut out);
        assert_eq!(parse_sa(&out), Err(WireError::TooMany { what: "proposals in one SA payload", max: MAX_PROPOSALS }));
    }

    #[test]
    fn transforms_past_the_count_are_refused_at_the_first_extra_one() {
        let mut out = Vec::new();
        write_sa(&sample()[1..], &mut out);
        let mut bad = out.clone();
        bad[7] = 0; // the proposal says it has no transforms, and has one
        assert_eq!(parse_sa(&bad), Err(WireError::Malformed("SA")));
    }

    #[test]
    fn wrong_counts_and_flags_are_refused() {
        let mut out = Vec::new();
        write_sa(&sample(), &mut out);
        let mut bad = out.clone();
        bad[7] = 4; // transform count of the first proposal
        assert!(parse_sa(&bad).is_err());
        let mut bad = out.clone();
        bad[0] = 0; // "last" while another proposal follows
        assert!(parse_sa(&bad).is_err());
        assert!(parse_sa(&[]).is_err());
    }
}
