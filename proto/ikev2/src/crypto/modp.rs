//! Diffie-Hellman in the 2048-bit MODP group 14 (RFC 3526 §3), which ring
//! does not offer. crypto-bigint does the arithmetic: its Montgomery
//! exponentiation is constant-time in the exponent (the private value) and
//! it is the RustCrypto project's audited big-integer crate.
//!
//! Invariants: public values on the wire are exactly 256 bytes, big-endian,
//! zero-padded (RFC 7296 §3.4); a peer value is accepted only if
//! 1 < y < p-1, which rules out the subgroups of order 1 and 2 (the other
//! subgroups of this safe-prime group are large); the private exponent is
//! 512 random bits, above twice the group's estimated strength
//! (110–160 bits, RFC 3526 §8), and is zeroized on drop.

use std::sync::OnceLock;

use crypto_bigint::modular::{MontyForm, MontyParams};
use crypto_bigint::{Odd, U2048, U512};
use zeroize::Zeroizing;

use super::{fill_random, CryptoError};

/// Bytes of a group element on the wire and of the shared secret.
pub(crate) const MODP2048_LEN: usize = 256;

/// p = 2^2048 - 2^1984 - 1 + 2^64 * ( [2^1918 pi] + 124476 ), generator 2.
const P_HEX: &str = "\
    FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1\
    29024E088A67CC74020BBEA63B139B22514A08798E3404DD\
    EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245\
    E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED\
    EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D\
    C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F\
    83655D23DCA3AD961C62F356208552BB9ED529077096966D\
    670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B\
    E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9\
    DE2BCBF6955817183995497CEA956AE515D2261898FA0510\
    15728E5A8AACAA68FFFFFFFFFFFFFFFF";

const P: Odd<U2048> = Odd::<U2048>::from_be_hex(P_HEX);

fn params() -> MontyParams<{ U2048::LIMBS }> {
    // Precomputing R^2 mod p costs a wide division; do it once.
    static PARAMS: OnceLock<MontyParams<{ U2048::LIMBS }>> = OnceLock::new();
    *PARAMS.get_or_init(|| MontyParams::new(P))
}

/// A MODP-2048 private exponent.
pub(crate) struct ModpPrivate {
    x: Zeroizing<U512>,
}

impl ModpPrivate {
    /// A fresh exponent and the public value g^x mod p.
    pub(crate) fn generate(rng: &mut dyn rand_core::RngCore) -> Result<(ModpPrivate, Vec<u8>), CryptoError> {
        let mut bytes = Zeroizing::new([0u8; 64]);
        fill_random(rng, &mut bytes[..])?;
        let x = Zeroizing::new(U512::from_be_slice(&bytes[..]));
        let g = MontyForm::new(&U2048::from_u8(2), params());
        let y = g.pow(&*x).retrieve();
        Ok((ModpPrivate { x }, y.to_be_bytes().to_vec()))
    }

    /// g^xy mod p as 256 big-endian bytes, after checking the peer's value.
    pub(crate) fn agree(&self, peer_public: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if peer_public.len() != MODP2048_LEN {
            return Err(CryptoError::InvalidPublicKey);
        }
        if !in_range(peer_public) {
            return Err(CryptoError::InvalidPublicKey);
        }
        let y = U2048::from_be_slice(peer_public);
        let mut shared = MontyForm::new(&y, params()).pow(&*self.x);
        let value = Zeroizing::new(shared.retrieve());
        zeroize::Zeroize::zeroize(&mut shared);
        // With 1 < y < p-1 this cannot be 1 unless the peer found an element
        // of tiny order, which a safe prime does not have; checked anyway.
        if *value == U2048::ONE {
            return Err(CryptoError::InvalidPublicKey);
        }
        let bytes = Zeroizing::new(value.to_be_bytes());
        Ok(Zeroizing::new(bytes.to_vec()))
    }
}

/// Whether a peer's 256-byte value y lies in 1 < y < p-1 (RFC 7296
/// §3.4 leaves the check to us; NIST SP 800-56A asks for it). Cheap next
/// to the exponentiation, so it is made before any DH work.
pub(crate) fn in_range(peer_public: &[u8]) -> bool {
    if peer_public.len() != MODP2048_LEN {
        return false;
    }
    // The peer's value is public: ordinary comparisons are fine here.
    let y = U2048::from_be_slice(peer_public);
    let p_minus_1 = P.as_ref().wrapping_sub(&U2048::ONE);
    y > U2048::ONE && y < p_minus_1
}

#[cfg(test)]
pub(crate) fn p_bytes() -> Vec<u8> {
    P.as_ref().to_be_bytes().to_vec()
}
