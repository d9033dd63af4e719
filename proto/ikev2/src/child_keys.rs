//! The keys of a negotiated child SA as handed to the ESP data plane, and
//! the ESP ciphers Causeway negotiates.
//!
//! Invariants: each direction's keying material is, in RFC 7296 §2.17
//! order, the encryption key (followed by the 4-octet salt for AES-GCM,
//! RFC 4106 §8.1) then the integrity key (32 octets for HMAC-SHA2-256-128,
//! none for GCM); key material is zeroized on drop and `Debug` never shows it.

use std::fmt;

use zeroize::Zeroizing;

use crate::ids::{encr, integ, transform_type as tt};
use crate::wire::proposal::Transform;

/// An ESP cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EspCipher {
    /// AES-GCM with a 16-octet ICV (RFC 4106).
    AesGcm16 { key_bits: u16 },
    /// AES-CBC (RFC 3602) with HMAC-SHA2-256-128 (RFC 4868).
    AesCbcHmacSha256 { key_bits: u16 },
}

impl EspCipher {
    /// Octets of keying material for one direction.
    pub fn keymat_len(self) -> usize {
        match self {
            EspCipher::AesGcm16 { key_bits } => usize::from(key_bits) / 8 + 4,
            EspCipher::AesCbcHmacSha256 { key_bits } => usize::from(key_bits) / 8 + 32,
        }
    }

    /// Whether it is an AEAD, which takes no integrity transform.
    pub fn is_aead(self) -> bool {
        matches!(self, EspCipher::AesGcm16 { .. })
    }

    /// The ENCR (and INTEG) transforms that name this cipher.
    pub(crate) fn transforms(self) -> Vec<Transform> {
        match self {
            EspCipher::AesGcm16 { key_bits } => vec![Transform::new(tt::ENCR, encr::AES_GCM_16, Some(key_bits))],
            EspCipher::AesCbcHmacSha256 { key_bits } => vec![
                Transform::new(tt::ENCR, encr::AES_CBC, Some(key_bits)),
                Transform::new(tt::INTEG, integ::HMAC_SHA2_256_128, None),
            ],
        }
    }
}

impl fmt::Display for EspCipher {
    /// strongSwan's names: `aes256gcm16`, `aes256-sha256`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EspCipher::AesGcm16 { key_bits } => write!(f, "aes{key_bits}gcm16"),
            EspCipher::AesCbcHmacSha256 { key_bits } => write!(f, "aes{key_bits}-sha256"),
        }
    }
}

/// A child SA's SPIs and keys, for the ESP data plane.
pub struct ChildKeys {
    /// The SPI we receive on (chosen by us).
    pub spi_in: u32,
    /// The SPI we send with (chosen by the peer).
    pub spi_out: u32,
    pub cipher: EspCipher,
    pub keymat_in: Zeroizing<Vec<u8>>,
    pub keymat_out: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for ChildKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildKeys")
            .field("spi_in", &format_args!("{:08x}", self.spi_in))
            .field("spi_out", &format_args!("{:08x}", self.spi_out))
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl ChildKeys {
    /// Splits KEYMAT (initiator-to-responder keys first, §2.17) by role.
    pub(crate) fn from_keymat(
        keymat: &[u8],
        we_initiated: bool,
        spi_in: u32,
        spi_out: u32,
        cipher: EspCipher,
    ) -> ChildKeys {
        let n = cipher.keymat_len();
        let i_to_r = Zeroizing::new(keymat.get(..n).unwrap_or_default().to_vec());
        let r_to_i = Zeroizing::new(keymat.get(n..2 * n).unwrap_or_default().to_vec());
        let (keymat_out, keymat_in) = if we_initiated { (i_to_r, r_to_i) } else { (r_to_i, i_to_r) };
        ChildKeys { spi_in, spi_out, cipher, keymat_in, keymat_out }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keymat_splits_by_role_and_debug_hides_keys() {
        let cipher = EspCipher::AesGcm16 { key_bits: 128 };
        let keymat: Vec<u8> = (0..40).collect();
        let i = ChildKeys::from_keymat(&keymat, true, 0x1000, 0x2000, cipher);
        let r = ChildKeys::from_keymat(&keymat, false, 0x2000, 0x1000, cipher);
        assert_eq!(i.keymat_out, r.keymat_in);
        assert_eq!(i.keymat_in, r.keymat_out);
        assert_eq!(i.keymat_out.len(), 20);
        assert_eq!(&i.keymat_out[..], &keymat[..20]);
        let shown = format!("{i:?}");
        assert!(shown.contains("00001000") && !shown.contains("keymat"));
        assert_eq!(EspCipher::AesCbcHmacSha256 { key_bits: 256 }.keymat_len(), 64);
        assert_eq!(EspCipher::AesCbcHmacSha256 { key_bits: 256 }.to_string(), "aes256-sha256");
    }
}
