//! The one error type of the crypto suite. Variants name what went wrong
//! without carrying any secret or any byte of the offending input, so an
//! error can be logged as it is.

/// Why a cryptographic operation refused its input or could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The peer's key-exchange value has the wrong length, is not a point on
    /// the curve, lies outside 1 < y < p-1 (MODP), or gives an all-zero
    /// X25519 result.
    #[error("invalid Diffie-Hellman public value")]
    InvalidPublicKey,
    /// The ICV or the AEAD tag did not match: the message was altered or was
    /// not sealed with this SA's keys.
    #[error("integrity check failed")]
    Authentication,
    /// A length or a padding that cannot be right, seen before or after
    /// authentication.
    #[error("malformed encrypted payload")]
    Malformed,
    /// The suite is inconsistent (an integrity algorithm with AEAD, none with
    /// CBC) or the keys do not have the lengths the suite needs. Every seal
    /// and open of such an `SkCrypto` fails with this rather than run with a
    /// weak or absent key.
    #[error("inconsistent suite or key lengths")]
    InvalidSuite,
    /// The 64-bit GCM IV counter of this SA is used up; the SA must be rekeyed
    /// (not reachable in practice, checked so a nonce can never repeat).
    #[error("IV space exhausted")]
    IvExhausted,
    /// The random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// The primitive library refused an operation with valid inputs.
    #[error("internal cryptographic failure")]
    Internal,
}
