//! The Notify (RFC 7296 §3.10) and Delete (§3.11) payload bodies.
//!
//! Invariants: a parsed Delete's SPIs all have the size its header states
//! and their count matches; a Notify's SPI has the size its header states.

use super::reader::Reader;
use super::WireError;

/// A notification: error or status type (`ids::notify`), with the SPI of
/// the SA it concerns (empty for the IKE SA) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub kind: u16,
    pub data: Vec<u8>,
}

impl Notify {
    /// A notification about the IKE SA or the exchange (no SPI).
    pub fn new(kind: u16, data: Vec<u8>) -> Notify {
        Notify { protocol: 0, spi: Vec::new(), kind, data }
    }

    pub(crate) fn parse(body: &[u8]) -> Result<Notify, WireError> {
        let mut r = Reader::new(body);
        let protocol = r.u8()?;
        let spi_size = r.u8()? as usize;
        let kind = r.u16()?;
        let spi = r.bytes(spi_size)?.to_vec();
        Ok(Notify { protocol, spi, kind, data: r.rest().to_vec() })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.push(self.protocol);
        out.push(self.spi.len() as u8);
        out.extend_from_slice(&self.kind.to_be_bytes());
        out.extend_from_slice(&self.spi);
        out.extend_from_slice(&self.data);
    }
}

/// A request to delete SAs: the IKE SA itself (no SPIs) or child SAs by
/// the SPIs their sender receives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub protocol: u8,
    pub spis: Vec<Vec<u8>>,
}

impl Delete {
    pub(crate) fn parse(body: &[u8]) -> Result<Delete, WireError> {
        let mut r = Reader::new(body);
        let protocol = r.u8()?;
        let spi_size = r.u8()? as usize;
        let count = r.u16()? as usize;
        if spi_size == 0 && count != 0 {
            return Err(WireError::Malformed("Delete"));
        }
        let mut spis = Vec::new();
        for _ in 0..count {
            spis.push(r.bytes(spi_size)?.to_vec());
        }
        if !r.is_empty() {
            return Err(WireError::Malformed("Delete"));
        }
        Ok(Delete { protocol, spis })
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.push(self.protocol);
        out.push(self.spis.first().map_or(0, |s| s.len() as u8));
        out.extend_from_slice(&(self.spis.len() as u16).to_be_bytes());
        for s in &self.spis {
            out.extend_from_slice(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_and_delete_round_trip() {
        let n = Notify { protocol: 3, spi: vec![9, 9, 9, 9], kind: 16393, data: vec![] };
        let mut out = Vec::new();
        n.write(&mut out);
        assert_eq!(Notify::parse(&out), Ok(n));
        let d = Delete { protocol: 3, spis: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]] };
        let mut out = Vec::new();
        d.write(&mut out);
        assert_eq!(Delete::parse(&out), Ok(d));
        out.pop();
        assert!(Delete::parse(&out).is_err());
        assert!(Notify::parse(&[3, 4, 0]).is_err());
    }
}
