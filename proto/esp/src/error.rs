//! The crate's one error type. Per-packet failures are values the data
//! plane counts under a drop reason; none of them carries secret bytes.

/// Why an SA could not be made, or a packet could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The keying material does not have the length the cipher needs, or
    /// the cipher's key size is not 128 or 256 bits.
    #[error("key material does not fit the cipher")]
    BadKeys,
    /// SPI 0 is reserved and never sent (RFC 4303 §2.1).
    #[error("SPI 0 is reserved")]
    ReservedSpi,
    /// Every 32-bit sequence number of the SA was handed out; the child SA
    /// must be rekeyed (RFC 4303 §3.3.3: the counter never cycles).
    #[error("sequence numbers exhausted: the child SA must be rekeyed")]
    SequenceExhausted,
    /// `reserve` was asked for no sequence numbers: a caller's slip, refused
    /// so that no number is ever handed out twice.
    #[error("a reservation of no sequence numbers")]
    EmptyReservation,
    /// `seal` was given a sequence number that `reserve` never hands out
    /// (0, or beyond 2^32 - 1).
    #[error("sequence number outside 1..=2^32-1")]
    InvalidSequence,
    /// The datagram buffer cannot hold header, padded payload and trailer.
    #[error("buffer too small for header, padded payload and trailer")]
    BufferTooSmall,
    /// `padded_len` is not one `OutboundSa::padded_len` could return: the
    /// trailer would not be aligned, or the padding exceeds 255 bytes.
    #[error("padded length does not align the ESP trailer")]
    BadPaddedLen,
    /// The payload to seal is neither empty nor an IPv4 or IPv6 packet.
    #[error("payload is not an IPv4 or IPv6 packet")]
    NotIp,
    /// The datagram is too short, or its ciphertext length is impossible
    /// for the cipher (CBC: not whole blocks).
    #[error("malformed ESP datagram")]
    Malformed,
    /// The datagram carries another SA's SPI.
    #[error("SPI does not belong to this SA")]
    WrongSpi,
    /// The ICV did not verify: forged, corrupted, or another key.
    #[error("ICV did not verify")]
    Authentication,
    /// The sequence number was seen before, is too old for the window, or
    /// is 0.
    #[error("replayed or too old sequence number")]
    Replayed,
    /// Authenticated, but the pad length or the padding bytes are not what
    /// RFC 4303 §2.4 prescribes (1, 2, 3, ...).
    #[error("bad ESP padding")]
    BadPadding,
    /// Authenticated, but the next header is not IPv4 (4), IPv6 (41) or a
    /// dummy packet (59): tunnel mode carries nothing else.
    #[error("unexpected next header {0}")]
    NextHeader(u8),
}
