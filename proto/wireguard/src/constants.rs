//! Protocol constants from the WireGuard whitepaper, section 6.

use std::time::Duration;

/// After this many messages on one keypair the initiator starts a new handshake.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// A keypair never seals or opens a counter at or beyond this value
/// (2^64 - 2^13 - 1), which keeps the counter far from wrapping.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// After this age the initiator of a session starts a new handshake when sending.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// After this age a keypair is neither used to send nor accepted on receive.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// How long the peer keeps retrying a handshake before it gives up.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Minimum time between two initiations, and the retransmit interval.
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// A keepalive is sent when data was received but nothing was sent for this long.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Cookie secrets rotate, and received cookies expire, after this long.
pub const COOKIE_SECRET_MAX_AGE: Duration = Duration::from_secs(120);
/// Upper bound of the random jitter added to each handshake retransmission,
/// and to the new-handshake timer (`timers.rs`).
pub const REKEY_TIMEOUT_JITTER_MAX: Duration = Duration::from_millis(334);
/// A responder consumes at most this many initiations per second from one peer
/// (the kernel's INITIATIONS_PER_SECOND); faster ones are dropped.
pub const INITIATIONS_PER_SECOND: u64 = 50;

/// Size of the header of a transport data message (type, receiver, counter).
pub const DATA_HEADER_LEN: usize = 16;
/// Size of the Poly1305 tag that follows every ciphertext.
pub const AEAD_TAG_LEN: usize = 16;
/// Bytes a data message adds to its (padded) plaintext.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + AEAD_TAG_LEN;
/// Plaintext is padded to a multiple of this many bytes.
pub const PADDING_MULTIPLE: usize = 16;
