//! The fixed 28-octet IKE header (RFC 7296 §3.1).
//!
//! Invariant: a parsed header's `length` equals the datagram's length and
//! its major version is 2; anything else is refused before a payload is read.

use super::reader::Reader;
use super::WireError;
use crate::ids::{flags, ExchangeType};

/// Octets in the IKE header.
pub const HEADER_LEN: usize = 28;
/// Octets in a generic payload header (RFC 7296 §3.2).
pub const GENERIC_HEADER_LEN: usize = 4;

/// The IKE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub spi_i: u64,
    pub spi_r: u64,
    /// Type of the first payload.
    pub next_payload: u8,
    pub exchange: ExchangeType,
    pub flags: u8,
    pub message_id: u32,
    /// Total message length, header included.
    pub length: u32,
}

impl Header {
    /// Reads the header of `data` and checks its length against `data`.
    pub fn parse(data: &[u8]) -> Result<Header, WireError> {
        let mut r = Reader::new(data);
        let spi_i = r.u64()?;
        let spi_r = r.u64()?;
        let next_payload = r.u8()?;
        let version = r.u8()?;
        if version >> 4 != 2 {
            return Err(WireError::Version(version >> 4));
        }
        let exchange = ExchangeType::from_u8(r.u8()?);
        let flags = r.u8()?;
        let message_id = r.u32()?;
        let length = r.u32()?;
        if (length as usize) < HEADER_LEN || length as usize != data.len() {
            return Err(WireError::BadLength);
        }
        Ok(Header { spi_i, spi_r, next_payload, exchange, flags, message_id, length })
    }

    /// Appends the header as it stands (the caller has set `length`).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.push(self.next_payload);
        out.push(0x20); // version 2.0
        out.push(self.exchange.to_u8());
        out.push(self.flags);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }

    pub fn is_response(&self) -> bool {
        self.flags & flags::RESPONSE != 0
    }

    /// Whether the sender is the IKE SA's original initiator.
    pub fn from_initiator(&self) -> bool {
        self.flags & flags::INITIATOR != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_checks_length() {
        let h = Header {
            spi_i: 0x0102030405060708,
            spi_r: 0,
            next_payload: 33,
            exchange: ExchangeType::IkeSaInit,
            flags: flags::INITIATOR,
            message_id: 0,
            length: HEADER_LEN as u32,
        };
        let mut out = Vec::new();
        h.write(&mut out);
        assert_eq!(out.len(), HEADER_LEN);
        assert_eq!(Header::parse(&out), Ok(h));
        out.push(0);
        assert_eq!(Header::parse(&out), Err(WireError::BadLength));
        out.pop();
        assert_eq!(Header::parse(&out[..27]), Err(WireError::Truncated));
        out[17] = 0x10;
        assert_eq!(Header::parse(&out), Err(WireError::Version(1)));
    }
}
