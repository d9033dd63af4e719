//! What IKE hands the ESP core for one direction of a child SA: the SPI,
//! the negotiated cipher and its keying material.
//!
//! Invariants:
//! - Keying material is laid out as RFC 7296 §2.17 takes it from KEYMAT:
//!   the encryption key (for AES-GCM followed by its 4-byte salt, RFC 4106
//!   §8.1), then the integrity key (32 bytes for HMAC-SHA-256-128, RFC
//!   4868 §2.1.2; none for AES-GCM).
//! - Key bytes live only in `Zeroizing` buffers and are never printed:
//!   `SaKeys`'s `Debug` shows the SPI and the cipher, not the keys.

use std::fmt;

use zeroize::Zeroizing;

use crate::Error;

/// Bytes of the salt that follows an AES-GCM key (RFC 4106 §8.1).
pub const GCM_SALT_LEN: usize = 4;
/// Bytes of an HMAC-SHA-256-128 integrity key (RFC 4868 §2.1.2).
pub const HMAC_SHA256_KEY_LEN: usize = 32;

/// An ESP transform Causeway supports, named as IKEv2 negotiates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// ENCR_AES_GCM_16 (IKEv2 transform 20): AES-GCM with a 16-byte ICV
    /// (RFC 4106). `key_bits` is 128 or 256.
    AesGcm16 { key_bits: u16 },
    /// ENCR_AES_CBC (12, RFC 3602) with AUTH_HMAC_SHA2_256_128 (12, RFC
    /// 4868). `key_bits` is 128 or 256.
    AesCbcHmacSha256 { key_bits: u16 },
}

impl Cipher {
    /// Every supported cipher, in the order of preference a proposal lists.
    pub const ALL: [Cipher; 4] = [
        Cipher::AesGcm16 { key_bits: 256 },
        Cipher::AesGcm16 { key_bits: 128 },
        Cipher::AesCbcHmacSha256 { key_bits: 256 },
        Cipher::AesCbcHmacSha256 { key_bits: 128 },
    ];

    /// The AES key size in bits.
    pub fn key_bits(&self) -> u16 {
        match *self {
            Cipher::AesGcm16 { key_bits } | Cipher::AesCbcHmacSha256 { key_bits } => key_bits,
        }
    }

    /// The AES key size in bytes.
    pub fn key_len(&self) -> usize {
        usize::from(self.key_bits() / 8)
    }

    /// Bytes of keying material one direction takes from KEYMAT: the key
    /// and salt for AES-GCM, the key and the integrity key for AES-CBC.
    pub fn keymat_len(&self) -> usize {
        match self {
            Cipher::AesGcm16 { .. } => self.key_len() + GCM_SALT_LEN,
            Cipher::AesCbcHmacSha256 { .. } => self.key_len() + HMAC_SHA256_KEY_LEN,
        }
    }

    /// The strongSwan name of the ESP proposal ("aes256gcm16",
    /// "aes256-sha256"), as operators write it in swanctl.conf.
    pub fn name(&self) -> &'static str {
        match self {
            Cipher::AesGcm16 { key_bits: 128 } => "aes128gcm16",
            Cipher::AesGcm16 { key_bits: 256 } => "aes256gcm16",
            Cipher::AesGcm16 { .. } => "aesgcm16",
            Cipher::AesCbcHmacSha256 { key_bits: 128 } => "aes128-sha256",
            Cipher::AesCbcHmacSha256 { key_bits: 256 } => "aes256-sha256",
            Cipher::AesCbcHmacSha256 { .. } => "aes-sha256",
        }
    }

    /// The cipher a strongSwan proposal name stands for, if supported.
    pub fn from_name(name: &str) -> Option<Cipher> {
        Cipher::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Refuses key sizes other than 128 and 256 bits.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match self.key_bits() {
            128 | 256 => Ok(()),
            _ => Err(Error::BadKeys),
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One direction of a child SA as IKE negotiated it.
pub struct SaKeys {
    /// The SPI the receiver chose; written into (outbound) or expected in
    /// (inbound) every datagram.
    pub spi: u32,
    pub cipher: Cipher,
    /// RFC 7296 §2.17 layout: encryption key (+ salt), then integrity key.
    pub keymat: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SaKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaKeys")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

/// The keying material split into its parts, borrowed from `SaKeys`.
pub(crate) struct KeyParts<'a> {
    pub encryption: &'a [u8],
    /// AES-GCM's salt; empty for AES-CBC.
    pub salt: &'a [u8],
    /// HMAC-SHA-256's key; empty for AES-GCM.
    pub integrity: &'a [u8],
}

impl SaKeys {
    /// Checks the SPI, the cipher and the keying material's length, and
    /// splits the material per RFC 7296 §2.17.
    pub(crate) fn parts(&self) -> Result<KeyParts<'_>, Error> {
        if self.spi == 0 {
            return Err(Error::ReservedSpi);
        }
        self.cipher.check()?;
        if self.keymat.len() != self.cipher.keymat_len() {
            return Err(Error::BadKeys);
        }
        let (encryption, rest) = self.keymat.split_at(self.cipher.key_len());
        Ok(match self.cipher {
            Cipher::AesGcm16 { .. } => KeyParts { encryption, salt: rest, integrity: &[] },
            Cipher::AesCbcHmacSha256 { .. } => KeyParts { encryption, salt: &[], integrity: rest },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cipher: Cipher, len: usize) -> SaKeys {
        SaKeys { spi: 0x1234_5678, cipher, keymat: Zeroizing::new((0..len as u8).collect()) }
    }

    #[test]
    fn keymat_lengths_follow_rfc_4106_and_4868() {
        assert_eq!(Cipher::AesGcm16 { key_bits: 128 }.keymat_len(), 20);
        assert_eq!(Cipher::AesGcm16 { key_bits: 256 }.keymat_len(), 36);
        assert_eq!(Cipher::AesCbcHmacSha256 { key_bits: 128 }.keymat_len(), 48);
        assert_eq!(Cipher::AesCbcHmacSha256 { key_bits: 256 }.keymat_len(), 64);
    }

    #[test]
    fn names_are_strongswan_proposals_and_parse_back() {
        assert_eq!(Cipher::AesGcm16 { key_bits: 256 }.name(), "aes256gcm16");
        assert_eq!(Cipher::AesCbcHmacSha256 { key_bits: 256 }.name(), "aes256-sha256");
        assert_eq!(Cipher::AesCbcHmacSha256 { key_bits: 128 }.to_string(), "aes128-sha256");
        for c in Cipher::ALL {
            assert_eq!(Cipher::from_name(c.name()), Some(c));
        }
        assert_eq!(Cipher::from_name("aes192gcm16"), None);
    }

    #[test]
    fn parts_split_key_salt_and_integrity_key() {
        let gcm = keys(Cipher::AesGcm16 { key_bits: 128 }, 20);
        let p = gcm.parts().unwrap();
        assert_eq!((p.encryption.len(), p.salt, p.integrity.len()), (16, &[16, 17, 18, 19][..], 0));
        let cbc = keys(Cipher::AesCbcHmacSha256 { key_bits: 256 }, 64);
        let p = cbc.parts().unwrap();
        assert_eq!((p.encryption.len(), p.salt.len(), p.integrity[0]), (32, 0, 32));
    }

    #[test]
    fn wrong_lengths_sizes_and_spi_are_refused() {
        assert_eq!(keys(Cipher::AesGcm16 { key_bits: 128 }, 16).parts().err(), Some(Error::BadKeys));
        assert_eq!(keys(Cipher::AesCbcHmacSha256 { key_bits: 128 }, 64).parts().err(), Some(Error::BadKeys));
        assert_eq!(keys(Cipher::AesGcm16 { key_bits: 192 }, 28).parts().err(), Some(Error::BadKeys));
        let mut zero = keys(Cipher::AesGcm16 { key_bits: 128 }, 20);
        zero.spi = 0;
        assert_eq!(zero.parts().err(), Some(Error::ReservedSpi));
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let k = SaKeys {
            spi: 0xc0ffee,
            cipher: Cipher::AesGcm16 { key_bits: 128 },
            keymat: Zeroizing::new(vec![0xab; 20]),
        };
        let shown = format!("{k:?}");
        assert!(shown.contains("0x00c0ffee") && shown.contains("AesGcm16"), "{shown}");
        assert!(!shown.to_lowercase().contains("ab, ") && !shown.contains("171"), "{shown}");
    }
}
