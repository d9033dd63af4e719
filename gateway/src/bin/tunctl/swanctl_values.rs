//! strongSwan's notations for single values, read into Causeway's: times
//! (`1h`), booleans, IKE identities, proposals, traffic selectors and IKE
//! secrets (`0x` hex, `0s` base64 or the text itself), and the rekey
//! times strongSwan derives from the times given. Each reader says what
//! it cannot carry over; none prints a secret.
//!
//! Proposals are rewritten the way strongSwan itself reads them before
//! Causeway's parser (`causeway_config::proposals`) decides: an IKE
//! proposal without a PRF takes it from its integrity algorithm, and an
//! AEAD proposal drops integrity algorithms (swanctl.conf's common
//! `aes256gcm16-sha384-x25519` is `aes256gcm16-prfsha384-x25519`).

use std::net::IpAddr;

use base64::Engine;
use causeway_config::proposals::{default_esp_proposals, default_ike_proposals, EspProposal, IkeProposal};
use causeway_config::{Identity, TrafficSelector};
use ipnet::IpNet;
use zeroize::Zeroizing;

/// A comma-separated list, items trimmed, empty ones dropped.
pub fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// The number `text` starts with, read as C's strtoul with base 0 reads
/// it, as strongSwan's vici plugin reads every number of a connection
/// (vici_config.c: parse_uint32, parse_time): `0x` hexadecimal, a leading
/// 0 octal (`010` is 8), else decimal. Returns it and the text after it;
/// `None` without a digit or past `u64`.
fn leading_number(text: &str) -> Option<(u64, &str)> {
    let t = text.strip_prefix('+').unwrap_or(text);
    let (radix, digits) = match t.get(..2).map(str::to_ascii_lowercase).as_deref() {
        // strtoul takes `0x` only before a hex digit; `0xg` is 0, then `xg`.
        Some("0x") if t[2..].starts_with(|c: char| c.is_ascii_hexdigit()) => (16, &t[2..]),
        _ if t.starts_with('0') => (8, t),
        _ => (10, t),
    };
    let end = digits.find(|c: char| !c.is_digit(radix)).unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let n = u64::from_str_radix(&digits[..end], radix).ok()?;
    Some((n, &digits[end..]))
}

/// The refusal of a number strongSwan would not read: named as octal
/// when a leading 0 made an 8 or 9 end it early, which is easy to miss.
fn not_a_number(text: &str, expected: &str) -> String {
    // strtoul takes one sign: `++08` is no number at all, not an octal one.
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    let octal_end = unsigned.trim_start_matches(|c: char| ('0'..='7').contains(&c));
    if unsigned.starts_with('0') && octal_end.starts_with(['8', '9']) {
        return format!(
            "\"{text}\": strongSwan reads a number with a leading 0 as octal, which has no digit 8 or 9, \
             and refuses it; write it without the leading 0"
        );
    }
    format!("expected {expected}, got \"{text}\"")
}

/// A whole value that is one number, as strongSwan reads it
/// (`leading_number`); `expected` says what it should be.
pub fn number(text: &str, expected: &str) -> Result<u64, String> {
    let t = text.trim();
    match leading_number(t) {
        Some((n, "")) => Ok(n),
        _ => Err(not_a_number(t, expected)),
    }
}

/// A port number (remote_port), read as `number` reads one.
pub fn port(text: &str) -> Result<u16, String> {
    let expected = "a port number";
    number(text, expected)
        .and_then(|n| u16::try_from(n).map_err(|_| format!("expected {expected}, got \"{}\"", text.trim())))
}

const SECONDS_EXPECTED: &str = "a time such as 28800, 28800s, 480m, 8h or 1d";

/// A strongSwan time in seconds: a number with an optional `s`, `m`, `h`
/// or `d` (as strongSwan's vici plugin reads one, parse_time). The number
/// is read as `leading_number` says, so `0x1d` is 29 s: `d` is a hex digit.
pub fn seconds(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let expected = SECONDS_EXPECTED;
    let (number, unit) = leading_number(t).ok_or_else(|| not_a_number(t, expected))?;
    // parse_time skips spaces alone before the unit; a tab there fails.
    let scale = match unit.trim_start_matches(' ').to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(not_a_number(t, expected)),
    };
    number.checked_mul(scale).filter(|&n| n <= u64::from(u32::MAX)).ok_or_else(|| not_a_number(t, expected))
}

/// A child SA's rekey time as strongSwan derives it from `life_time` given
/// without `rekey_time`. The rule changed in 5.9.9 (vici_config.c,
/// check_lifetimes; commit a2b1e06f07, strongswan#1414): since then it is
/// `life_time / 1.1` in double precision, truncated, which is followed
/// here because it is the newest 5.9's rule (6.x keeps it) and the one
/// that rekeys at all below 3600 s. The floating point is kept on
/// purpose: 1100 s gives 999 s, not 1000 s, in strongSwan too.
pub fn rekey_from_life(life: u64) -> u64 {
    (life as f64 / 1.1) as u64
}

/// The child rekey time strongSwan 5.9.8 and older (Debian bookworm's)
/// keep whatever `life_time` says: their vici plugin set this default
/// before reading the child, so `life_time` alone never moved it.
pub const OLD_CHILD_REKEY: u64 = 3_600;

/// The note for a child whose rekey time came from `life_time` alone,
/// when strongSwan 5.9.8 and older would have used another.
pub fn life_time_note(path: &str, life: u64, rekey: u64) -> Option<String> {
    (rekey != OLD_CHILD_REKEY).then(|| {
        format!(
            "{path} = {life} s without rekey_time: child_lifetime = {rekey}, the rekey time strongSwan 5.9.9 and \
             later derive (life_time / 1.1); strongSwan 5.9.8 and older (Debian bookworm's) ignore life_time here and rekey after \
             {OLD_CHILD_REKEY} s, or never if life_time is not longer (the child SA is then closed at life_time): \
             set rekey_time to have both agree"
        )
    })
}

/// The note for `reauth_time` without `rekey_time`. strongSwan 5.9
/// (vici_config.c) then turns IKE rekeying off, even for reauth_time = 0;
/// over_time and rand_time never move the rekey time. Causeway neither
/// reauthenticates nor stops rekeying, so the import keeps its default.
pub fn reauth_note(reauth: &str) -> String {
    let then = match seconds(reauth) {
        Ok(0) => "neither rekeys nor reauthenticates the IKE SA".to_string(),
        Ok(v) => format!("does not rekey the IKE SA, but reauthenticates (replaces) it every {v} s"),
        Err(_) => "does not rekey the IKE SA".to_string(),
    };
    format!(
        "reauth_time without rekey_time: strongSwan then {then}; Causeway does not reauthenticate, and rekeys it \
         before its default ike_lifetime of {} s ends (set rekey_time to choose)",
        causeway_config::DEFAULT_IKE_LIFETIME.as_secs()
    )
}

/// strongSwan's yes/no words.
pub fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "enabled" | "1" => Ok(true),
        "no" | "false" | "disabled" | "0" => Ok(false),
        other => Err(format!("expected yes or no, got \"{other}\"")),
    }
}

/// An identity as swanctl.conf writes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    /// `%any` or unset: strongSwan accepts any identity there.
    Any,
    Exact(Identity),
}

/// Reads an identity: an IP address, a host name (`@` forces one), an
/// e-mail address, or one of the typed forms `fqdn:`, `email:`, `ipv4:`...
/// Distinguished names, key IDs and wildcards have no Causeway equivalent.
pub fn identity(text: &str) -> Result<Id, String> {
    let t = text.trim();
    if t.is_empty() || matches!(t, "%any" | "%any4" | "%any6") {
        return Ok(Id::Any);
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(Id::Exact(Identity::Address(ip)));
    }
    let typed = |v: &str| -> Result<Option<String>, String> {
        if v.starts_with('#') {
            return Err(format!("\"{t}\" is written in hex; write the identity as text"));
        }
        Ok(Some(v.to_string()))
    };
    // Rewritten into the untyped form Causeway reads as the same type.
    let untyped = match t.split_once(':') {
        Some(("ipv4" | "ipv6", v)) => {
            typed(v)?;
            return v
                .parse::<IpAddr>()
                .map(|ip| Id::Exact(Identity::Address(ip)))
                .map_err(|_| format!("\"{t}\" is not an IP address"));
        }
        Some(("fqdn" | "dns", v)) => typed(v)?.map(|v| format!("@{v}")),
        Some(("email" | "rfc822" | "userfqdn", v)) if v.contains('@') && !v.starts_with('@') => typed(v)?,
        Some(("email" | "rfc822" | "userfqdn", _)) => return Err(format!("\"{t}\" is not an e-mail address")),
        Some((ty @ ("asn1dn" | "asn1gn" | "keyid"), _)) => {
            return Err(format!("\"{t}\": {ty} identities belong to certificates; Causeway knows IP addresses, host names and e-mail addresses"))
        }
        Some((ty, _)) if ty.starts_with('{') => {
            return Err(format!("\"{t}\": identities of a numbered type are not supported"))
        }
        _ => None,
    };
    let text = untyped.unwrap_or_else(|| t.to_string());
    if text.contains('=') {
        return Err(format!(
            "\"{t}\" is a distinguished name (a certificate's subject); Causeway knows IP addresses, host names and e-mail addresses"
        ));
    }
    if text.contains('*') {
        return Err(format!("\"{t}\" is a wildcard; Causeway needs the one identity the peer uses"));
    }
    text.parse::<Identity>().map(Id::Exact).map_err(|e| e.to_string())
}

/// The text Causeway reads back as exactly this identity.
pub fn identity_text(id: &Identity) -> String {
    let plain = id.to_string();
    match id {
        Identity::Fqdn(s) if plain.parse::<Identity>().as_ref() != Ok(id) => format!("@{s}"),
        _ => plain,
    }
}

/// Whether two identities are the same to strongSwan (names without
/// regard to case).
pub fn same_identity(a: &Identity, b: &Identity) -> bool {
    match (a, b) {
        (Identity::Address(x), Identity::Address(y)) => x == y,
        (Identity::Fqdn(x), Identity::Fqdn(y)) | (Identity::Email(x), Identity::Email(y)) => x.eq_ignore_ascii_case(y),
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ike,
    Esp,
}

fn is_aead(token: &str) -> bool {
    token.contains("gcm") || token.contains("ccm") || token.starts_with("chacha20poly1305")
}

/// strongSwan's integrity algorithms and the PRF of the same hash.
fn prf_of(integrity: &str) -> Option<&'static str> {
    Some(match integrity {
        "sha" | "sha1" => "prfsha1",
        "sha256" | "sha2_256" => "prfsha256",
        "sha384" | "sha2_384" => "prfsha384",
        "sha512" | "sha2_512" => "prfsha512",
        "md5" => "prfmd5",
        "aesxcbc" => "prfaesxcbc",
        "aescmac" => "prfaescmac",
        _ => return None,
    })
}

/// One proposal in strongSwan's reading, in the notation Causeway's
/// parser takes.
fn rewrite(text: &str, kind: Kind) -> Result<String, String> {
    let mut tokens: Vec<String> = text
        .to_ascii_lowercase()
        .split('-')
        .map(|t| match t {
            "aes" => "aes128".to_string(),
            "aes128gcm" | "aes256gcm" => format!("{t}16"),
            "sha2_256" => "sha256".to_string(),
            _ => t.to_string(),
        })
        .collect();
    if kind == Kind::Esp {
        if tokens.iter().any(|t| t == "esn") && !tokens.iter().any(|t| t == "noesn") {
            return Err(format!(
                "\"{text}\" asks for extended sequence numbers (esn); Causeway uses 32-bit ones: write noesn or nothing"
            ));
        }
        tokens.retain(|t| t != "esn" && t != "noesn" && !t.starts_with("prf"));
    }
    let aead = tokens.iter().any(|t| is_aead(t));
    if kind == Kind::Ike && !tokens.iter().any(|t| t.starts_with("prf")) {
        let prfs: Vec<String> = tokens.iter().filter_map(|t| prf_of(t)).map(String::from).collect();
        tokens.extend(prfs);
    }
    if aead {
        tokens.retain(|t| prf_of(t).is_none());
    }
    Ok(tokens.join("-"))
}

/// A proposals setting: `None` when it is strongSwan's `default` alone
/// (Causeway's defaults then apply), else each proposal in Causeway's
/// notation, `default` among others standing for Causeway's defaults.
pub fn proposals(text: &str, kind: Kind) -> Result<Option<Vec<String>>, String> {
    let items: Vec<&str> = list(text).collect();
    if items.is_empty() || items == ["default"] {
        return Ok(None);
    }
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let parsed: Vec<String> = match (item, kind) {
            ("default", Kind::Ike) => default_ike_proposals().iter().map(|p| p.to_string()).collect(),
            ("default", Kind::Esp) => default_esp_proposals().iter().map(|p| p.to_string()).collect(),
            _ => {
                let read = rewrite(item, kind)?;
                // Several algorithms of a kind stand for every combination,
                // as in strongSwan: each is written as a proposal of its own.
                let parsed: Result<Vec<String>, _> = match kind {
                    Kind::Ike => IkeProposal::parse_all(&read).map(|v| v.iter().map(ToString::to_string).collect()),
                    Kind::Esp => EspProposal::parse_all(&read).map(|v| v.iter().map(ToString::to_string).collect()),
                };
                // Causeway's message quotes what it parsed; name what was written too.
                parsed.map_err(|e| if read == item { e.to_string() } else { format!("{e} (from \"{item}\")") })?
            }
        };
        for p in parsed {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(Some(out))
}

/// One traffic selector: a prefix or an address, and optionally a
/// protocol and ports in square brackets, which Causeway writes as
/// strongSwan does. `dynamic` (the tunnel's own address) becomes `own` as
/// a host prefix when it is known.
pub fn selector(text: &str, own: Option<IpAddr>) -> Result<TrafficSelector, String> {
    let t = text.trim();
    let (addr, narrowing) = t.split_at(t.find('[').unwrap_or(t.len()));
    let addr = addr.trim();
    let net = if addr == "dynamic" || addr == "%dynamic" {
        own.map(IpNet::from).ok_or_else(|| {
            "dynamic (strongSwan's default: the tunnel's own address) needs one address in local_addrs/remote_addrs; \
             write the prefixes instead"
                .to_string()
        })?
    } else {
        if let Some((a, b)) = addr.split_once('-') {
            if a.trim().parse::<IpAddr>().is_ok() && b.trim().parse::<IpAddr>().is_ok() {
                return Err(format!("\"{t}\" is an address range; write it as prefixes"));
            }
        }
        causeway_config::parse_allowed_ip(addr).map_err(|e| e.to_string())?
    };
    format!("{net}{narrowing}").parse::<TrafficSelector>().map_err(|e| format!("\"{t}\": {e}"))
}

/// The bytes of an IKE secret, as swanctl loads them.
pub fn secret_bytes(text: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let prefix = text.get(..2).map(str::to_ascii_lowercase);
    let bytes = match prefix.as_deref() {
        Some("0x") => {
            let hex = &text[2..];
            if !hex.len().is_multiple_of(2) || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err("the secret is written 0x... but is not an even number of hex digits".into());
            }
            let nibble = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            Zeroizing::new(hex.as_bytes().chunks(2).map(|p| nibble(p[0]) << 4 | nibble(p[1])).collect())
        }
        Some("0s") => Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text[2..].trim())
                .map_err(|_| "the secret is written 0s... but is not base64".to_string())?,
        ),
        _ => Zeroizing::new(text.as_bytes().to_vec()),
    };
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_take_strongswan_units() {
        assert_eq!(seconds("28800").unwrap(), 28_800);
        assert_eq!(seconds("28800s").unwrap(), 28_800);
        assert_eq!(seconds("60m").unwrap(), 3_600);
        assert_eq!(seconds("1h").unwrap(), 3_600);
        assert_eq!(seconds("1 H").unwrap(), 3_600);
        assert_eq!(seconds("1d").unwrap(), 86_400);
        for bad in ["", "h", "1.5h", "1w", "-1", "99999999999d", "1\th", "1 \th", "1hs"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }

    // strongSwan reads a connection's numbers with strtoul(..., 0)
    // (vici_config.c, parse_time and parse_uint32): a leading 0 is octal,
    // 0x hex, and an 8 or 9 after a leading 0 is refused.
    #[test]
    fn numbers_are_read_as_strtoul_with_base_0() {
        for (text, want) in [
            ("010", 8),
            ("010s", 8),
            ("010h", 8 * 3_600),
            ("0x10", 16),
            ("0X1h", 3_600),
            ("0x1d", 29),
            ("0", 0),
            ("00", 0),
            ("+10m", 600),
        ] {
            assert_eq!(seconds(text), Ok(want), "{text}");
        }
        for bad in ["08", "09h", "0189", "0x", "0xg", "0x1w"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        let e = seconds("08h").unwrap_err();
        assert!(e.contains("\"08h\": strongSwan reads a number with a leading 0 as octal"), "{e}");
        assert_eq!(number("010624", "a port number"), Ok(4_500));
        assert_eq!(number("0x1194", "a port number"), Ok(4_500));
        assert_eq!(number("4500", "a port number"), Ok(4_500));
        assert!(number("0458", "a port number").unwrap_err().contains("octal"));
        // One sign only, as strtoul: `++08` is refused as no number, not as octal.
        assert_eq!(seconds("++08").unwrap_err(), format!("expected {}, got \"++08\"", SECONDS_EXPECTED));
        assert!(seconds("+08").unwrap_err().contains("octal"));
        assert_eq!(port("65535"), Ok(65_535));
        assert_eq!(port("65536").unwrap_err(), "expected a port number, got \"65536\"");
        assert_eq!(number("45x", "a port number").unwrap_err(), "expected a port number, got \"45x\"");
    }

    // The values strongSwan 5.9.9+ computes (checked against its C
    // expression `uint64_t rekey = life / 1.1`): truncated, and a hair
    // under the exact quotient where 1.1 is not exact in binary.
    #[test]
    fn rekey_from_life_is_strongswans_division() {
        for (life, rekey) in [(1000, 909), (1100, 999), (3960, 3599), (7200, 6545), (33, 29), (11, 10), (1, 0), (0, 0)]
        {
            assert_eq!(rekey_from_life(life), rekey, "life_time {life}");
        }
    }

    #[test]
    fn identities_read_as_strongswan_reads_them() {
        let exact = |t: &str| match identity(t).unwrap() {
            Id::Exact(i) => i,
            Id::Any => panic!("{t} read as %any"),
        };
        assert_eq!(exact("198.18.1.2"), Identity::Address("198.18.1.2".parse().unwrap()));
        assert_eq!(exact("ipv6:fd00::1"), Identity::Address("fd00::1".parse().unwrap()));
        assert_eq!(exact("gw1.dc-east.example"), Identity::Fqdn("gw1.dc-east.example".into()));
        assert_eq!(exact("@gw1"), Identity::Fqdn("gw1".into()));
        assert_eq!(exact("fqdn:gw1.example"), Identity::Fqdn("gw1.example".into()));
        assert_eq!(exact("fqdn:a@b"), Identity::Fqdn("a@b".into()));
        assert_eq!(exact("ops@dc.example"), Identity::Email("ops@dc.example".into()));
        assert_eq!(exact("email:ops@dc.example"), Identity::Email("ops@dc.example".into()));
        assert_eq!(identity("%any").unwrap(), Id::Any);
        for (bad, why) in [
            ("C=CH, O=strongSwan, CN=gw1", "distinguished name"),
            ("CN=gw1", "distinguished name"),
            ("*@dc.example", "wildcard"),
            ("keyid:#0a0b", "certificates"),
            ("fqdn:#676177", "hex"),
            ("email:nobody", "not an e-mail address"),
        ] {
            let e = identity(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        for id in ["gw1.example", "@a@b", "ops@dc.example", "fd00::1", "@198.18.0.1"] {
            let Id::Exact(i) = identity(id).unwrap() else { panic!() };
            assert_eq!(identity_text(&i).parse::<Identity>().unwrap(), i, "{id}");
        }
        assert!(same_identity(&exact("GW1.example"), &exact("gw1.EXAMPLE")));
        assert!(!same_identity(&exact("a@b.example"), &exact("@a@b.example")));
    }

    #[test]
    fn proposals_are_read_the_way_strongswan_reads_them() {
        let ike = |t: &str| proposals(t, Kind::Ike);
        let esp = |t: &str| proposals(t, Kind::Esp);
        assert_eq!(ike("default").unwrap(), None);
        assert_eq!(ike("aes256gcm16-sha384-x25519").unwrap().unwrap(), ["aes256gcm16-prfsha384-x25519"]);
        assert_eq!(ike("aes256gcm-prfsha256-ecp256").unwrap().unwrap(), ["aes256gcm16-prfsha256-ecp256"]);
        assert_eq!(ike("aes256-sha256-modp2048").unwrap().unwrap(), ["aes256-sha256-prfsha256-modp2048"]);
        let with_default = ike("aes128gcm16-prfsha256-ecp256, default").unwrap().unwrap();
        assert_eq!(with_default[0], "aes128gcm16-prfsha256-ecp256");
        assert_eq!(with_default.len(), 1 + default_ike_proposals().len());
        assert_eq!(
            esp("aes256gcm16-sha256-noesn, aes256-sha2_256-modp2048").unwrap().unwrap(),
            ["aes256gcm16", "aes256-sha256-modp2048"]
        );
        assert!(esp("aes256gcm16-esn").unwrap_err().contains("extended sequence numbers"));
        assert!(esp("aes256gcm16-esn-noesn").is_ok());
        let e = ike("aes256-sha1-modp1024").unwrap_err();
        assert!(e.contains("unknown algorithm") && e.contains("known:"), "{e}");
        let e = esp("3des-md5").unwrap_err();
        assert!(e.contains("unknown algorithm \"3des\""), "{e}");
        assert!(ike("aes256gcm16-prfsha256").unwrap_err().contains("Diffie-Hellman"));
        // Several of a kind: every combination, in the order written.
        assert_eq!(
            ike("aes256gcm16-aes128gcm16-prfsha256-ecp384-ecp256").unwrap().unwrap(),
            [
                "aes256gcm16-prfsha256-ecp384",
                "aes256gcm16-prfsha256-ecp256",
                "aes128gcm16-prfsha256-ecp384",
                "aes128gcm16-prfsha256-ecp256"
            ]
        );
        assert_eq!(
            esp("aes256gcm16-modp2048-ecp256").unwrap().unwrap(),
            ["aes256gcm16-modp2048", "aes256gcm16-ecp256"]
        );
    }

    #[test]
    fn selectors_are_prefixes_narrowed_or_not() {
        assert_eq!(selector("10.1.0.0/16", None).unwrap().to_string(), "10.1.0.0/16");
        assert_eq!(selector("10.1.2.3", None).unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(selector("dynamic", Some("198.18.0.1".parse().unwrap())).unwrap().to_string(), "198.18.0.1/32");
        assert!(selector("dynamic", None).unwrap_err().contains("local_addrs/remote_addrs"));
        assert_eq!(selector("10.1.0.0/16[tcp/443]", None).unwrap().to_string(), "10.1.0.0/16[tcp/443]");
        let own = Some("198.18.0.1".parse().unwrap());
        assert_eq!(selector("dynamic[udp/500]", own).unwrap().to_string(), "198.18.0.1/32[udp/500]");
        assert!(selector("10.1.0.0/16[tcp/https]", None).unwrap_err().contains("service names are not read"));
        assert!(selector("10.1.0.1-10.1.0.9", None).unwrap_err().contains("range"));
        assert!(selector("10.1.2.3/16", None).unwrap_err().contains("host bits"));
    }

    #[test]
    fn secrets_take_the_three_forms() {
        assert_eq!(&*secret_bytes("0x00ff10").unwrap(), &[0, 0xff, 0x10]);
        assert_eq!(&*secret_bytes("0X00FF").unwrap(), &[0, 0xff]);
        assert_eq!(&*secret_bytes("0sAAEC").unwrap(), &[0, 1, 2]);
        assert_eq!(&*secret_bytes("plain text").unwrap(), b"plain text");
        assert!(secret_bytes("0x123").is_err());
        assert!(secret_bytes("0s!!").is_err());
    }

    #[test]
    fn booleans() {
        assert!(boolean("yes").unwrap() && boolean("TRUE").unwrap());
        assert!(!boolean("no").unwrap() && !boolean("0").unwrap());
        assert!(boolean("maybe").is_err());
    }
}
