//! IKEv2's cryptographic suite (RFC 7296 §2.13–2.18, §3.14; RFC 5282 for
//! AES-GCM in IKE): the negotiable algorithms, prf and prf+, ephemeral
//! Diffie-Hellman, key derivation for IKE and child SAs, protection of SK
//! payloads, PSK authentication, NAT detection hashes and anti-DoS cookies.
//!
//! Everything here is sans-IO: randomness comes in as `&mut dyn RngCore`
//! (only ring's ECDH key generation draws from the OS itself, see `dh.rs`).
//! Secrets live in `Zeroizing` buffers or zeroize-on-drop types and have no
//! `Debug` that shows them; secret comparisons are constant-time.

mod algorithms;
mod auth;
mod cookie;
mod dh;
mod error;
mod keys;
mod modp;
mod nat;
mod prf;
mod sk;

pub use algorithms::{DhGroup, EncrAlg, IkeSuite, IntegAlg, PrfAlg, GCM_SALT_LEN};
pub use auth::{psk_auth, signed_octets, verify_psk_auth};
pub use cookie::{CookieSecret, COOKIE_LEN};
pub use dh::DhPrivate;
pub use error::CryptoError;
pub use keys::{child_keymat, derive_ike_keys, derive_rekeyed_ike_keys, IkeKeys};
pub use nat::nat_detection_hash;
pub use prf::{prf, prf_plus};
pub use sk::SkCrypto;

/// Fills `buf` from the caller's generator, turning its failure into an error
/// instead of the panic `fill_bytes` would give.
pub(crate) fn fill_random(rng: &mut dyn rand_core::RngCore, buf: &mut [u8]) -> Result<(), CryptoError> {
    rng.try_fill_bytes(buf).map_err(|_| CryptoError::Rng)
}
