use thiserror::Error;

/// Everything that can go wrong while handling a protocol message.
///
/// Every variant is a reason to drop a packet; none leaves state half-changed.
/// The gateway counts drops by variant, so variants are about causes an
/// operator can act on, not about which line failed.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    #[error("packet too short or of the wrong length for its type")]
    InvalidLength,
    #[error("unknown message type {0}")]
    UnknownMessageType(u32),
    #[error("reserved header bytes are not zero")]
    NonZeroReserved,
    #[error("MAC1 does not verify")]
    InvalidMac1,
    #[error("MAC2 is missing or does not verify while under load")]
    InvalidMac2,
    #[error("authenticated decryption failed")]
    DecryptionFailed,
    #[error("initiation is from a public key that is not a configured peer")]
    UnknownPeer,
    #[error("receiver index does not match any session or handshake")]
    UnknownReceiverIndex,
    #[error("handshake timestamp is not newer than the last accepted one (replayed initiation)")]
    ReplayedInitiation,
    #[error("initiations from this peer arrive faster than allowed")]
    InitiationFlood,
    #[error("handshake messages from this address arrive faster than allowed while under load")]
    RateLimited,
    #[error("response does not match an initiation in flight")]
    UnexpectedResponse,
    #[error("cookie reply does not match a handshake in flight")]
    UnexpectedCookieReply,
    #[error("Diffie-Hellman result is all zeros (low-order public key)")]
    LowOrderKey,
    #[error("packet counter already seen or older than the replay window")]
    Replayed,
    #[error("keypair has reached its message or age limit")]
    KeypairExpired,
    #[error("no valid keypair for this peer; a handshake is needed")]
    NoSession,
    #[error("output buffer is too small")]
    BufferTooSmall,
    #[error("the interface has no private key")]
    NoPrivateKey,
    #[error("an initiation was sent to this peer less than REKEY_TIMEOUT ago")]
    InitiationTooSoon,
    #[error("a peer may not have the interface's own public key")]
    OwnPublicKey,
    #[error("the handshake was made with a private key replaced meanwhile")]
    KeyChanged,
}
