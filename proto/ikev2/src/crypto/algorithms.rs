//! The algorithms Causeway negotiates for an IKE SA, as closed enums mapped to
//! and from their IANA transform IDs (`crate::ids`). Anything not listed
//! here is not negotiable: `from_id` returns `None` for it, which is how the
//! proposal code skips a transform it cannot run.
//!
//! Invariants: `EncrAlg` key sizes are only 128 or 256 bits; an `IkeSuite`
//! built with `IkeSuite::new` has `integ == None` exactly when `encr` is an
//! AEAD.

use crate::ids;

/// Pseudo-random functions (transform type 2). Both are HMAC, so they take a
/// key of any length; the preferred key length is the output length
/// (RFC 7296 §2.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrfAlg {
    HmacSha256,
    HmacSha384,
}

impl PrfAlg {
    pub fn id(self) -> u16 {
        match self {
            PrfAlg::HmacSha256 => ids::prf::HMAC_SHA2_256,
            PrfAlg::HmacSha384 => ids::prf::HMAC_SHA2_384,
        }
    }

    pub fn from_id(id: u16) -> Option<PrfAlg> {
        match id {
            ids::prf::HMAC_SHA2_256 => Some(PrfAlg::HmacSha256),
            ids::prf::HMAC_SHA2_384 => Some(PrfAlg::HmacSha384),
            _ => None,
        }
    }

    /// Bytes of one prf output.
    pub fn output_len(self) -> usize {
        match self {
            PrfAlg::HmacSha256 => 32,
            PrfAlg::HmacSha384 => 48,
        }
    }

    /// Preferred key length in bytes: the length of SK_d, SK_pi and SK_pr.
    pub fn key_len(self) -> usize {
        self.output_len()
    }

    /// The shortest nonce this prf may be keyed with (RFC 7296 §2.10: at
    /// least 128 bits and at least half its key size; 24 octets for
    /// HMAC-SHA2-384).
    pub fn min_nonce_len(self) -> usize {
        (self.key_len() / 2).max(16)
    }

    pub(crate) fn hmac(self) -> aws_lc_rs::hmac::Algorithm {
        match self {
            PrfAlg::HmacSha256 => aws_lc_rs::hmac::HMAC_SHA256,
            PrfAlg::HmacSha384 => aws_lc_rs::hmac::HMAC_SHA384,
        }
    }
}

/// Integrity algorithms (transform type 3), used only with a non-AEAD cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // the IANA name, digits and all
pub enum IntegAlg {
    /// HMAC-SHA2-256 with the ICV truncated to 128 bits (RFC 4868).
    HmacSha256_128,
}

impl IntegAlg {
    pub fn id(self) -> u16 {
        match self {
            IntegAlg::HmacSha256_128 => ids::integ::HMAC_SHA2_256_128,
        }
    }

    pub fn from_id(id: u16) -> Option<IntegAlg> {
        match id {
            ids::integ::HMAC_SHA2_256_128 => Some(IntegAlg::HmacSha256_128),
            _ => None,
        }
    }

    /// Key length in bytes (RFC 4868 §2.1.1: the full hash output).
    pub fn key_len(self) -> usize {
        match self {
            IntegAlg::HmacSha256_128 => 32,
        }
    }

    /// Length of the truncated ICV on the wire.
    pub fn icv_len(self) -> usize {
        match self {
            IntegAlg::HmacSha256_128 => 16,
        }
    }

    pub(crate) fn hmac(self) -> aws_lc_rs::hmac::Algorithm {
        match self {
            IntegAlg::HmacSha256_128 => aws_lc_rs::hmac::HMAC_SHA256,
        }
    }
}

/// Encryption algorithms (transform type 1) with their key size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncrAlg {
    /// AES-GCM with a 16-byte ICV (RFC 5282 in IKE, RFC 4106 in ESP).
    AesGcm16 { key_bits: u16 },
    /// AES-CBC (RFC 3602), paired with an integrity algorithm.
    AesCbc { key_bits: u16 },
}

/// Bytes of salt appended to an AES-GCM key in the keying material
/// (RFC 5282 §7.1, RFC 4106 §8.1).
pub const GCM_SALT_LEN: usize = 4;

impl EncrAlg {
    pub fn id(self) -> u16 {
        match self {
            EncrAlg::AesGcm16 { .. } => ids::encr::AES_GCM_16,
            EncrAlg::AesCbc { .. } => ids::encr::AES_CBC,
        }
    }

    /// `key_bits` is the Key Length attribute (`ids::ATTR_KEY_LENGTH`); AES
    /// transforms must carry it (RFC 7296 §3.3.5), so `None` is refused, as is
    /// any size but 128 and 256.
    pub fn from_id(id: u16, key_bits: Option<u16>) -> Option<EncrAlg> {
        let key_bits = key_bits.filter(|b| *b == 128 || *b == 256)?;
        match id {
            ids::encr::AES_GCM_16 => Some(EncrAlg::AesGcm16 { key_bits }),
            ids::encr::AES_CBC => Some(EncrAlg::AesCbc { key_bits }),
            _ => None,
        }
    }

    /// The Key Length attribute to put in the transform.
    pub fn key_bits(self) -> u16 {
        match self {
            EncrAlg::AesGcm16 { key_bits } | EncrAlg::AesCbc { key_bits } => key_bits,
        }
    }

    /// AES key length in bytes, without the GCM salt.
    pub fn key_len(self) -> usize {
        usize::from(self.key_bits()) / 8
    }

    /// Bytes of keying material taken for this cipher: the key, plus the
    /// salt for GCM.
    pub fn keymat_len(self) -> usize {
        match self {
            EncrAlg::AesGcm16 { .. } => self.key_len() + GCM_SALT_LEN,
            EncrAlg::AesCbc { .. } => self.key_len(),
        }
    }

    pub fn is_aead(self) -> bool {
        matches!(self, EncrAlg::AesGcm16 { .. })
    }
}

/// Key exchange groups (transform type 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// 2048-bit MODP, group 14 (RFC 3526 §3).
    Modp2048,
    /// NIST P-256, group 19 (RFC 5903).
    Ecp256,
    /// NIST P-384, group 20 (RFC 5903).
    Ecp384,
    /// X25519, group 31 (RFC 8031).
    Curve25519,
}

impl DhGroup {
    pub fn id(self) -> u16 {
        match self {
            DhGroup::Modp2048 => ids::dh::MODP_2048,
            DhGroup::Ecp256 => ids::dh::ECP_256,
            DhGroup::Ecp384 => ids::dh::ECP_384,
            DhGroup::Curve25519 => ids::dh::CURVE25519,
        }
    }

    pub fn from_id(id: u16) -> Option<DhGroup> {
        match id {
            ids::dh::MODP_2048 => Some(DhGroup::Modp2048),
            ids::dh::ECP_256 => Some(DhGroup::Ecp256),
            ids::dh::ECP_384 => Some(DhGroup::Ecp384),
            ids::dh::CURVE25519 => Some(DhGroup::Curve25519),
            _ => None,
        }
    }

    /// Length of the Key Exchange Data in a KE payload of this group.
    pub fn public_len(self) -> usize {
        match self {
            DhGroup::Modp2048 => 256,
            DhGroup::Ecp256 => 64,
            DhGroup::Ecp384 => 96,
            DhGroup::Curve25519 => 32,
        }
    }

    /// Length of the shared secret g^ir this group yields.
    pub fn shared_len(self) -> usize {
        match self {
            DhGroup::Modp2048 => 256,
            DhGroup::Ecp256 => 32,
            DhGroup::Ecp384 => 48,
            DhGroup::Curve25519 => 32,
        }
    }
}

/// The transforms of one negotiated IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IkeSuite {
    pub encr: EncrAlg,
    pub prf: PrfAlg,
    /// `None` exactly when `encr` is an AEAD (RFC 5282 §8).
    pub integ: Option<IntegAlg>,
    pub dh: DhGroup,
}

impl IkeSuite {
    /// A suite, if its integrity choice fits its cipher.
    pub fn new(encr: EncrAlg, prf: PrfAlg, integ: Option<IntegAlg>, dh: DhGroup) -> Option<IkeSuite> {
        let suite = IkeSuite { encr, prf, integ, dh };
        suite.is_consistent().then_some(suite)
    }

    /// Whether `integ` is present exactly when `encr` is not an AEAD.
    pub fn is_consistent(&self) -> bool {
        self.encr.is_aead() == self.integ.is_none()
    }

    /// Integrity key length in bytes; zero for an AEAD.
    pub fn integ_key_len(&self) -> usize {
        self.integ.map_or(0, IntegAlg::key_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for prf in [PrfAlg::HmacSha256, PrfAlg::HmacSha384] {
            assert_eq!(PrfAlg::from_id(prf.id()), Some(prf));
        }
        for g in [DhGroup::Modp2048, DhGroup::Ecp256, DhGroup::Ecp384, DhGroup::Curve25519] {
            assert_eq!(DhGroup::from_id(g.id()), Some(g));
        }
        assert_eq!(IntegAlg::from_id(12), Some(IntegAlg::HmacSha256_128));
        for bits in [128, 256] {
            for e in [EncrAlg::AesGcm16 { key_bits: bits }, EncrAlg::AesCbc { key_bits: bits }] {
                assert_eq!(EncrAlg::from_id(e.id(), Some(e.key_bits())), Some(e));
            }
        }
        assert_eq!(DhGroup::from_id(14), Some(DhGroup::Modp2048));
        assert_eq!(DhGroup::from_id(31), Some(DhGroup::Curve25519));
        assert_eq!(PrfAlg::from_id(ids::prf::HMAC_SHA2_512), None);
        assert_eq!(DhGroup::from_id(ids::dh::NONE), None);
    }

    #[test]
    fn aes_needs_a_supported_key_length() {
        assert_eq!(EncrAlg::from_id(ids::encr::AES_GCM_16, None), None);
        assert_eq!(EncrAlg::from_id(ids::encr::AES_CBC, Some(192)), None);
        assert_eq!(EncrAlg::from_id(3, Some(128)), None);
        let gcm = EncrAlg::from_id(ids::encr::AES_GCM_16, Some(256)).expect("supported");
        assert_eq!((gcm.key_len(), gcm.keymat_len(), gcm.is_aead()), (32, 36, true));
        let cbc = EncrAlg::AesCbc { key_bits: 128 };
        assert_eq!((cbc.key_len(), cbc.keymat_len(), cbc.is_aead()), (16, 16, false));
    }

    #[test]
    fn suites_pair_integrity_with_cbc_only() {
        let gcm = EncrAlg::AesGcm16 { key_bits: 128 };
        let cbc = EncrAlg::AesCbc { key_bits: 128 };
        let integ = Some(IntegAlg::HmacSha256_128);
        assert!(IkeSuite::new(gcm, PrfAlg::HmacSha256, None, DhGroup::Curve25519).is_some());
        assert!(IkeSuite::new(gcm, PrfAlg::HmacSha256, integ, DhGroup::Curve25519).is_none());
        assert!(IkeSuite::new(cbc, PrfAlg::HmacSha256, integ, DhGroup::Curve25519).is_some());
        assert!(IkeSuite::new(cbc, PrfAlg::HmacSha256, None, DhGroup::Curve25519).is_none());
    }
}
