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
    /// strongSwan's "no extended sequence numbers", what ESP does anyway.
    NoEsn,
}

fn token(t: &str) -> Option<Token> {
    Some(match t {
        // strongSwan's keywords: "aes256gcm" is its 16-byte-ICV GCM too.
        "aes128gcm16" | "aes128gcm128" | "aes128gcm" => Token::Encryption(Encryption::AesGcm16 { key_bits: 128 }),
        "aes256gcm16" | "aes256gcm128" | "aes256gcm" => Token::Encryption(Encryption::AesGcm16 { key_bits: 256 }),
        "aes128" => Token::Encryption(Encryption::AesCbc { key_bits: 128 }),
        "aes256" => Token::Encryption(Encryption::AesCbc { key_bits: 256 }),
        "sha256" | "sha2_256" => Token::Integrity(Integrity::HmacSha256_128),
        "prfsha256" => Token::Prf(Prf::HmacSha256),
        "prfsha384" => Token::Prf(Prf::HmacSha384),
        "modp2048" => Token::Group(DhGroup::Modp2048),
        "ecp256" => Token::Group(DhGroup::Ecp256),
        "ecp384" => Token::Group(DhGroup::Ecp384),
        "x25519" | "curve25519" => Token::Group(DhGroup::Curve25519),
        "noesn" => Token::NoEsn,
        _ => return None,
    })
}

/// The algorithms a proposal names, by kind, in the order written. Like
/// strongSwan, a proposal may name several of a kind
/// (`aes256gcm16-aes128gcm16-prfsha256-ecp384-ecp256`): it stands for
/// every combination, which `expand` lists as single proposals.
#[derive(Default)]
struct Pieces {
    encryption: Vec<Encryption>,
    integrity: Vec<Integrity>,
    prf: Vec<Prf>,
    group: Vec<DhGroup>,
    no_esn: bool,
}

/// A proposal refused; its text names the proposal and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    #[error("unknown algorithm \"{algorithm}\" in \"{text}\"; {KNOWN}")]
    Unknown { algorithm: String, text: String },
    #[error("\"{0}\" names several algorithms of one kind, so stands for several proposals; one is needed here")]
    Twice(String),
    #[error("\"{0}\" has no encryption algorithm (aes256gcm16, aes256, ...)")]
    NoEncryption(String),
    #[error("\"{0}\": AES-GCM authenticates by itself; drop the integrity algorithm")]
    GcmWithIntegrity(String),
    #[error("\"{0}\": AES-GCM and AES-CBC cannot share a proposal (strongSwan refuses it too); write one of each")]
    GcmWithCbc(String),
    #[error("\"{0}\": AES-CBC needs an integrity algorithm, such as sha256")]
    CbcWithoutIntegrity(String),
    #[error("\"{0}\" has no PRF: add prfsha256 or prfsha384")]
    NoPrf(String),
    #[error("\"{0}\" has no Diffie-Hellman group (x25519, ecp256, ecp384, modp2048)")]
    NoGroup(String),
    #[error("\"{0}\": an ESP proposal has no PRF (that belongs to the IKE proposal)")]
    PrfInEsp(String),
    #[error("\"{0}\": noesn belongs to ESP proposals (IKE has no sequence numbers)")]
    EsnInIke(String),
    #[error(
        "\"{0}\": Causeway does not use extended sequence numbers (its SAs are rekeyed long before 2^32 packets); \
         write noesn or nothing"
    )]
    Esn(String),
}

fn pieces(text: &str) -> Result<Pieces, ProposalError> {
    let mut p = Pieces::default();
    fn add<T: PartialEq>(list: &mut Vec<T>, x: T) {
        if !list.contains(&x) {
            list.push(x);
        }
    }
    let lower = text.trim().to_ascii_lowercase();
    // "esn-noesn" offers either, as in strongSwan; Causeway takes noesn.
    let either = lower.split('-').any(|t| t == "noesn");
    for t in lower.split('-') {
        if t == "esn" && !either {
            return Err(ProposalError::Esn(text.to_string()));
        }
        if t == "esn" {
            continue;
        }
        match token(t).ok_or_else(|| ProposalError::Unknown { algorithm: t.to_string(), text: text.to_string() })? {
            Token::Encryption(e) => add(&mut p.encryption, e),
            Token::Integrity(i) => add(&mut p.integrity, i),
            Token::Prf(f) => add(&mut p.prf, f),
            Token::Group(g) => add(&mut p.group, g),
            Token::NoEsn => p.no_esn = true,
        }
    }
    if p.encryption.is_empty() {
        return Err(ProposalError::NoEncryption(text.to_string()));
    }
    // strongSwan refuses AES-GCM and AES-CBC in one proposal (classic and
    // combined-mode algorithms may not share one); so does Causeway.
    let aead = p.encryption.iter().any(|e| e.is_aead());
    let cbc = p.encryption.iter().any(|e| !e.is_aead());
    match (aead, cbc, p.integrity.is_empty()) {
        (true, true, _) => return Err(ProposalError::GcmWithCbc(text.to_string())),
        (true, false, false) => return Err(ProposalError::GcmWithIntegrity(text.to_string())),
        (false, true, true) => return Err(ProposalError::CbcWithoutIntegrity(text.to_string())),
        _ => {}
    }
    Ok(p)
}

/// Each encryption with its integrity algorithms (one each for AES-CBC,
/// none for AES-GCM), in the order written.
fn ciphers(p: &Pieces) -> Vec<(Encryption, Option<Integrity>)> {
    let mut v = Vec::new();
    for &e in &p.encryption {
        if e.is_aead() {
            v.push((e, None));
        } else {
            v.extend(p.integrity.iter().map(|&i| (e, Some(i))));
        }
    }
    v
}

impl IkeProposal {
    /// Every proposal `text` stands for, in the order its algorithms are
    /// written (the first encryption with the first PRF and group first).
    pub fn parse_all(text: &str) -> Result<Vec<IkeProposal>, ProposalError> {
        let p = pieces(text)?;
        if p.no_esn {
            return Err(ProposalError::EsnInIke(text.to_string()));
        }
        if p.group.is_empty() {
            return Err(ProposalError::NoGroup(text.to_string()));
        }
        let mut v = Vec::new();
        for (encryption, integrity) in ciphers(&p) {
            // strongSwan takes the PRF from the integrity algorithm when
            // none is named; so does Causeway, for aes256-sha256-modp2048.
            let prfs = match (p.prf.is_empty(), integrity) {
                (false, _) => p.prf.clone(),
                (true, Some(Integrity::HmacSha256_128)) => vec![Prf::HmacSha256],
                (true, None) => return Err(ProposalError::NoPrf(text.to_string())),
            };
            for &prf in &prfs {
                v.extend(p.group.iter().map(|&group| IkeProposal { encryption, prf, integrity, group }));
            }
        }
        Ok(v)
    }
}

impl EspProposal {
    /// Every proposal `text` stands for, as `IkeProposal::parse_all`.
    pub fn parse_all(text: &str) -> Result<Vec<EspProposal>, ProposalError> {
        let p = pieces(text)?;
        if !p.prf.is_empty() {
            return Err(ProposalError::PrfInEsp(text.to_string()));
        }
        let groups: Vec<Option<DhGroup>> =
            if p.group.is_empty() { vec![None] } else { p.group.iter().map(|&g| Some(g)).collect() };
        let mut v = Vec::new();
        for (encryption, integrity) in ciphers(&p) {
            v.extend(groups.iter().map(|&group| EspProposal { encryption, integrity, group }));
        }
        Ok(v)
    }
}

/// One proposal: `parse_all`'s list must hold exactly one.
fn single<T>(text: &str, all: Result<Vec<T>, ProposalError>) -> Result<T, ProposalError> {
    let mut all = all?;
    if all.len() != 1 {
        return Err(ProposalError::Twice(text.to_string()));
    }
    Ok(all.remove(0))
}

impl std::str::FromStr for IkeProposal {
    type Err = ProposalError;

    fn from_str(text: &str) -> Result<IkeProposal, ProposalError> {
        single(text, IkeProposal::parse_all(text))
    }
}

impl std::str::FromStr for EspProposal {
    type Err = ProposalError;

    fn from_str(text: &str) -> Result<EspProposal, ProposalError> {
        single(text, EspProposal::parse_all(text))
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
        assert!(e.contains("several algorithms of one kind"), "{e}");
        let e = "aes256gcm16-esn".parse::<EspProposal>().unwrap_err().to_string();
        assert!(e.contains("extended sequence numbers") && e.contains("noesn"), "{e}");
        let e = "aes256gcm16-prfsha256-x25519-noesn".parse::<IkeProposal>().unwrap_err().to_string();
        assert!(e.contains("belongs to ESP"), "{e}");
        let e = "aes256gcm16-prfsha256-modp1024".parse::<IkeProposal>().unwrap_err();
        let unknown =
            ProposalError::Unknown { algorithm: "modp1024".into(), text: "aes256gcm16-prfsha256-modp1024".into() };
        assert_eq!(e, unknown, "the algorithm refused and the proposal it was in");
    }

    #[test]
    fn several_algorithms_of_a_kind_stand_for_every_combination() {
        let names = |v: Vec<IkeProposal>| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let all = IkeProposal::parse_all("aes256gcm16-aes128gcm16-prfsha256-prfsha384-ecp384-ecp256").unwrap();
        assert_eq!(
            names(all),
            [
                "aes256gcm16-prfsha256-ecp384",
                "aes256gcm16-prfsha256-ecp256",
                "aes256gcm16-prfsha384-ecp384",
                "aes256gcm16-prfsha384-ecp256",
                "aes128gcm16-prfsha256-ecp384",
                "aes128gcm16-prfsha256-ecp256",
                "aes128gcm16-prfsha384-ecp384",
                "aes128gcm16-prfsha384-ecp256",
            ]
        );
        let e = IkeProposal::parse_all("aes256gcm16-aes256-sha256-prfsha256-x25519").unwrap_err();
        assert!(e.to_string().contains("cannot share a proposal"), "{e}");
        let esp = EspProposal::parse_all("aes256gcm-aes128gcm16-modp2048-esn-noesn").unwrap();
        let esp: Vec<String> = esp.iter().map(|p| p.to_string()).collect();
        assert_eq!(esp, ["aes256gcm16-modp2048", "aes128gcm16-modp2048"], "esn-noesn is either: noesn");
        assert_eq!("aes256gcm16-aes256gcm16".parse::<EspProposal>().unwrap().to_string(), "aes256gcm16", "one, twice");
    }

    #[test]
    fn defaults_start_with_aes_gcm() {
        assert_eq!(default_ike_proposals()[0].to_string(), "aes256gcm16-prfsha256-x25519");
        assert_eq!(default_esp_proposals()[0].to_string(), "aes256gcm16");
    }
}
