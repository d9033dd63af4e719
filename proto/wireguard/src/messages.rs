//! Wire formats of the four WireGuard messages (whitepaper section 5.4).
//!
//! Parsing checks type, reserved bytes and exact length before anything else
//! looks at a packet, so every later stage works on a well-formed view.

use crate::Error;

pub const TYPE_INITIATION: u32 = 1;
pub const TYPE_RESPONSE: u32 = 2;
pub const TYPE_COOKIE_REPLY: u32 = 3;
pub const TYPE_DATA: u32 = 4;

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
/// Smallest data message: header and the tag of an empty (keepalive) payload.
pub const DATA_MIN_LEN: usize = 32;

/// Offsets shared by both handshake messages: mac1 and mac2 are the last 32 bytes.
pub(crate) const MACS_LEN: usize = 32;

/// A borrowed view of a parsed message.
#[derive(Debug)]
pub enum Message<'a> {
    Initiation(&'a [u8; INITIATION_LEN]),
    Response(&'a [u8; RESPONSE_LEN]),
    CookieReply(&'a [u8; COOKIE_REPLY_LEN]),
    /// A data message; the slice is the whole message, header included.
    Data(&'a [u8]),
}

/// Reads the 4-byte little-endian type field, refusing non-zero reserved bytes.
pub fn message_type(packet: &[u8]) -> Result<u32, Error> {
    if packet.len() < 4 {
        return Err(Error::InvalidLength);
    }
    if packet[1..4] != [0, 0, 0] {
        return Err(Error::NonZeroReserved);
    }
    Ok(packet[0] as u32)
}

/// Classifies a datagram and checks its length for its type.
pub fn parse(packet: &[u8]) -> Result<Message<'_>, Error> {
    let ty = message_type(packet)?;
    match ty {
        TYPE_INITIATION => packet.try_into().map(Message::Initiation).map_err(|_| Error::InvalidLength),
        TYPE_RESPONSE => packet.try_into().map(Message::Response).map_err(|_| Error::InvalidLength),
        TYPE_COOKIE_REPLY => packet.try_into().map(Message::CookieReply).map_err(|_| Error::InvalidLength),
        TYPE_DATA if packet.len() >= DATA_MIN_LEN => Ok(Message::Data(packet)),
        TYPE_DATA => Err(Error::InvalidLength),
        other => Err(Error::UnknownMessageType(other)),
    }
}

pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Field layout of a handshake initiation.
pub mod initiation {
    pub const SENDER: usize = 4;
    pub const EPHEMERAL: usize = 8;
    pub const STATIC: usize = 40;
    pub const TIMESTAMP: usize = 88;
    pub const MAC1: usize = 116;
    pub const MAC2: usize = 132;
}

/// Field layout of a handshake response.
pub mod response {
    pub const SENDER: usize = 4;
    pub const RECEIVER: usize = 8;
    pub const EPHEMERAL: usize = 12;
    pub const EMPTY: usize = 44;
    pub const MAC1: usize = 60;
    pub const MAC2: usize = 76;
}

/// Field layout of a cookie reply.
pub mod cookie_reply {
    pub const RECEIVER: usize = 4;
    pub const NONCE: usize = 8;
    pub const COOKIE: usize = 32;
}

/// Field layout of a data message header.
pub mod data {
    pub const RECEIVER: usize = 4;
    pub const COUNTER: usize = 8;
    pub const PAYLOAD: usize = 16;
}

/// The receiver index of a response, cookie reply or data message.
pub fn receiver_index(msg: &Message<'_>) -> Option<u32> {
    match msg {
        Message::Initiation(_) => None,
        Message::Response(b) => Some(read_u32(&b[..], response::RECEIVER)),
        Message::CookieReply(b) => Some(read_u32(&b[..], cookie_reply::RECEIVER)),
        Message::Data(b) => Some(read_u32(b, data::RECEIVER)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(ty: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        if len > 0 {
            v[0] = ty;
        }
        v
    }

    #[test]
    fn accepts_exact_lengths_only() {
        assert!(matches!(parse(&with_type(1, 148)), Ok(Message::Initiation(_))));
        assert!(matches!(parse(&with_type(2, 92)), Ok(Message::Response(_))));
        assert!(matches!(parse(&with_type(3, 64)), Ok(Message::CookieReply(_))));
        assert!(matches!(parse(&with_type(4, 32)), Ok(Message::Data(_))));
        assert!(matches!(parse(&with_type(4, 1500)), Ok(Message::Data(_))));
        for (ty, len) in [(1, 147), (1, 149), (2, 91), (2, 93), (3, 63), (3, 65), (4, 31), (4, 0)] {
            assert_eq!(parse(&with_type(ty, len)).unwrap_err(), Error::InvalidLength, "type {ty} len {len}");
        }
    }

    #[test]
    fn rejects_unknown_types_and_reserved_bytes() {
        assert_eq!(parse(&with_type(5, 148)).unwrap_err(), Error::UnknownMessageType(5));
        assert_eq!(parse(&with_type(0, 148)).unwrap_err(), Error::UnknownMessageType(0));
        let mut v = with_type(1, 148);
        v[2] = 1;
        assert_eq!(parse(&v).unwrap_err(), Error::NonZeroReserved);
        assert_eq!(parse(&[1, 0]).unwrap_err(), Error::InvalidLength);
    }

    #[test]
    fn layouts_add_up() {
        assert_eq!(initiation::MAC2 + 16, INITIATION_LEN);
        assert_eq!(response::MAC2 + 16, RESPONSE_LEN);
        assert_eq!(cookie_reply::COOKIE + 32, COOKIE_REPLY_LEN);
        let mut d = with_type(4, 40);
        d[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        assert_eq!(receiver_index(&parse(&d).unwrap()), Some(0xdead_beef));
    }
}
