//! IPsec proposals in the notation operators know from strongSwan's
//! swanctl.conf: algorithms joined by dashes, such as
//! `aes256gcm16-prfsha256-x25519` for IKE or `aes256gcm16` and
//! `aes256-sha256-modp2048` for ESP (a group in an ESP proposal asks for
//! perfect forward secrecy on rekeys). Only the algorithms Causeway
//! implements are accepted; anything else is an error that lists them.

use std::fmt;

/// Encryption of IKE messages or ESP packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// AES-GCM with a 16-byte ICV (RFC 5282, RFC 4106): no integrity
    /// algorithm beside it.
    AesGcm16 { key_bits: u16 },
    /// AES-CBC, which needs an integrity algorithm.
    AesCbc { key_bits: u16 },
}

impl Encryption {
    pub fn is_aead(self) -> bool {
        matches!(self, Encryption::AesGcm16 { .. })
    }
}

/// The pseudo-random function of an IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    HmacSha256,
    HmacSha384,
}

/// Integrity of IKE messages or ESP packets, beside AES-CBC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integrity {
    HmacSha256_128,
}

/// Diffie-Hellman groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    Modp2048,
    Ecp256,
    Ecp384,
    Curve25519,
}

/// One IKE proposal: every transform an IKE SA needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IkeProposal {
    pub encryption: Encryption,
    pub prf: Prf,
    /// None exactly when the encryption is AES-GCM.
    pub integrity: Option<Integrity>,
    pub group: DhGroup,
}

/// One ESP proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspProposal {
    pub encryption: Encryption,
    /// None exactly when the encryption is AES-GCM.
    pub integrity: Option<Integrity>,
    /// A new key exchange on each child SA rekey (PFS).
    pub group: Option<DhGroup>,
}

const KNOWN: &str = "known: aes128gcm16, aes256gcm16, aes128, aes256, sha256 (integrity), prfsha256, prfsha384, \
                     modp2048, ecp256, ecp384, x25519 (or curve25519)";

enum Token {
    Encryption(Encryption),
    Integrity(Integrity),
    Prf(Prf),
    Group(DhGroup),
}

fn token(t: &str) -> Option<Token> {
    Some(match t {
        "aes128gcm16" | "aes128gcm128" => Token::Encryption(Encryption::AesGcm16 { key_bits: 128 }),
        "aes256gcm16" | "aes256gcm128" => Token::Encryption(Encryption::AesGcm16 { key_bits: 256 }),
        "aes128" => Token::Encryption(Encryption::AesCbc { key_bits: 128 }),
        "aes256" => Token::Encryption(Encryption::AesCbc { key_bits: 256 }),
        "sha256" | "sha2_256" => Token::Integrity(Integrity::HmacSha256_128),
        "prfsha256" => Token::Prf(Prf::HmacSha256),
        "prfsha384" => Token::Prf(Prf::HmacSha384),
        "modp2048" => Token::Group(DhGroup::Modp2048),
        "ecp256" => Token::Group(DhGroup::Ecp256),
        "ecp384" => Token::Group(DhGroup::Ecp384),
        "x25519" | "curve25519" => Token::Group(DhGroup::Curve25519),
        _ => return None,
    })
}

/// The pieces of a proposal, each at most once.
#[derive(Default)]
struct Pieces {
    encryption: Option<Encryption>,
    integrity: Option<Integrity>,
    prf: Option<Prf>,
    group: Option<DhGroup>,
}

/// A proposal refused; its text names the proposal and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    #[error("unknown algorithm \"{algorithm}\" in \"{text}\"; {KNOWN}")]
    Unknown { algorithm: String, text: String },
    #[error("\"{0}\" names two algorithms of one kind; write each alternative as its own proposal")]
    Twice(String),
    #[error("\"{0}\" has no encryption algorithm (aes256gcm16, aes256, ...)")]
    NoEncryption(String),
    #[error("\"{0}\": AES-GCM authenticates by itself; drop the integrity algorithm")]
    GcmWithIntegrity(String),
    #[error("\"{0}\": AES-CBC needs an integrity algorithm, such as sha256")]
    CbcWithoutIntegrity(String),
    #[error("\"{0}\" has no PRF: add prfsha256 or prfsha384")]
    NoPrf(String),
    #[error("\"{0}\" has no Diffie-Hellman group (x25519, ecp256, ecp384, modp2048)")]
    NoGroup(String),
    #[error("\"{0}\": an ESP proposal has no PRF (that belongs to the IKE proposal)")]
    PrfInEsp(String),
}

fn pieces(text: &str) -> Result<Pieces, ProposalError> {
    let mut p = Pieces::default();
    for t in text.trim().to_ascii_lowercase().split('-') {
        let unknown = || ProposalError::Unknown { algorithm: t.to_string(), text: text.to_string() };
        let twice = match token(t).ok_or_else(unknown)? {
            Token::Encryption(e) => p.encryption.replace(e).is_some(),
            Token::Integrity(i) => p.integrity.replace(i).is_some(),
            Token::Prf(f) => p.prf.replace(f).is_some(),
            Token::Group(g) => p.group.replace(g).is_some(),
        };
        if twice {
            return Err(ProposalError::Twice(text.to_string()));
        }
    }
    let Some(e) = p.encryption else {
        return Err(ProposalError::NoEncryption(text.to_string()));
    };
    match (e.is_aead(), p.integrity) {
        (true, Some(_)) => return Err(ProposalError::GcmWithIntegrity(text.to_string())),
        (false, None) => return Err(ProposalError::CbcWithoutIntegrity(text.to_string())),
        _ => {}
    }
    Ok(p)
}

impl std::str::FromStr for IkeProposal {
    type Err = ProposalError;

    fn from_str(text: &str) -> Result<IkeProposal, ProposalError> {
        let p = pieces(text)?;
        // strongSwan takes the PRF from the integrity algorithm when none
        // is named; so does Causeway, for aes256-sha256-modp2048.
        let prf = match (p.prf, p.integrity) {
            (Some(f), _) => f,
            (None, Some(Integrity::HmacSha256_128)) => Prf::HmacSha256,
            (None, None) => return Err(ProposalError::NoPrf(text.to_string())),
        };
        let Some(group) = p.group else {
            return Err(ProposalError::NoGroup(text.to_string()));
        };
        Ok(IkeProposal { encryption: p.encryption.expect("checked in pieces"), prf, integrity: p.integrity, group })
    }
}

impl std::str::FromStr for EspProposal {
    type Err = ProposalError;

    fn from_str(text: &str) -> Result<EspProposal, ProposalError> {
        let p = pieces(text)?;
        if p.prf.is_some() {
            return Err(ProposalError::PrfInEsp(text.to_string()));
        }
        Ok(EspProposal { encryption: p.encryption.expect("checked in pieces"), integrity: p.integrity, group: p.group })
    }
}

fn encryption_name(e: Encryption) -> String {
    match e {
        Encryption::AesGcm16 { key_bits } => format!("aes{key_bits}gcm16"),
        Encryption::AesCbc { key_bits } => format!("aes{key_bits}"),
    }
}

impl fmt::Display for DhGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DhGroup::Modp2048 => "modp2048",
            DhGroup::Ecp256 => "ecp256",
            DhGroup::Ecp384 => "ecp384",
            DhGroup::Curve25519 => "x25519",
        })
    }
}

impl fmt::Display for IkeProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encryption_name(self.encryption))?;
        if self.integrity.is_some() {
            f.write_str("-sha256")?;
        }
        let prf = match self.prf {
            Prf::HmacSha256 => "prfsha256",
            Prf::HmacSha384 => "prfsha384",
        };
        write!(f, "-{prf}-{}", self.group)
    }
}

impl fmt::Display for EspProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encryption_name(self.encryption))?;
        if self.integrity.is_some() {
            f.write_str("-sha256")?;
        }
        if let Some(g) = self.group {
            write!(f, "-{g}")?;
        }
        Ok(())
    }
}

/// What a peer proposes when its file says nothing: AES-GCM first (the
/// fastest on CPUs with AES instructions), then what an SRX or an older
/// strongSwan commonly runs.
pub fn default_ike_proposals() -> Vec<IkeProposal> {
    ["aes256gcm16-prfsha256-x25519", "aes256gcm16-prfsha384-ecp384", "aes256-sha256-modp2048"]
        .iter()
        .map(|t| t.parse().expect("the defaults parse"))
        .collect()
}

pub fn default_esp_proposals() -> Vec<EspProposal> {
    ["aes256gcm16", "aes256-sha256"].iter().map(|t| t.parse().expect("the defaults parse")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strongswan_notation_round_trips() {
        for text in ["aes256gcm16-prfsha256-x25519", "aes128gcm16-prfsha384-ecp384", "aes256-sha256-prfsha256-modp2048"]
        {
            let p: IkeProposal = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
        }
        for text in ["aes256gcm16", "aes256-sha256", "aes256gcm16-ecp256"] {
            let p: EspProposal = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
        }
    }

    #[test]
    fn the_prf_follows_the_integrity_algorithm_when_not_named() {
        let p: IkeProposal = "aes256-sha256-modp2048".parse().unwrap();
        assert_eq!(p.prf, Prf::HmacSha256);
        assert_eq!(p.integrity, Some(Integrity::HmacSha256_128));
        assert_eq!(p.group, DhGroup::Modp2048);
    }

    #[test]
    fn mistakes_are_explained() {
        let e = "aes256gcm16-prfsha256-modp1024".parse::<IkeProposal>().unwrap_err().to_string();
        assert!(e.contains("unknown algorithm \"modp1024\"") && e.contains("known:"), "{e}");
        let e = "aes256gcm16-sha256-prfsha256-x25519".parse::<IkeProposal>().unwrap_err().to_string();
        assert!(e.contains("authenticates by itself"), "{e}");
        let e = "aes256-prfsha256-x25519".parse::<IkeProposal>().unwrap_err().to_string();
        assert!(e.contains("needs an integrity algorithm"), "{e}");
        let e = "aes256gcm16-prfsha256".parse::<IkeProposal>().unwrap_err().to_string();
        assert!(e.contains("no Diffie-Hellman group"), "{e}");
        let e = "aes256gcm16-prfsha256".parse::<EspProposal>().unwrap_err().to_string();
        assert!(e.contains("no PRF"), "{e}");
        let e = "aes256gcm16-aes128gcm16".parse::<EspProposal>().unwrap_err().to_string();
        assert!(e.contains("two algorithms of one kind"), "{e}");
        let e = "aes256gcm16-prfsha256-modp1024".parse::<IkeProposal>().unwrap_err();
        let unknown =
            ProposalError::Unknown { algorithm: "modp1024".into(), text: "aes256gcm16-prfsha256-modp1024".into() };
        assert_eq!(e, unknown, "the algorithm refused and the proposal it was in");
    }

    #[test]
    fn defaults_start_with_aes_gcm() {
        assert_eq!(default_ike_proposals()[0].to_string(), "aes256gcm16-prfsha256-x25519");
        assert_eq!(default_esp_proposals()[0].to_string(), "aes256gcm16");
    }
}
