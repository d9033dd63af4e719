//! The registry's layout in etcd and its records, as JSON on the wire and
//! as checked values:
//!
//! - `{prefix}/sites/{site}` → `{"prefixes": ["10.2.0.0/16", ...]}`, no lease;
//! - `{prefix}/gateways/{site}/{name}` → `{"site", "name", "public_key"
//!   (base64), "endpoints": ["198.18.0.1:51820"], "tunnel_address":
//!   "10.255.1.1/32" or null, "version"}`, under the gateway's lease.
//!
//! Anything in the store may be written by anyone holding credentials, so
//! a record is checked with the configuration's own rules before it can
//! become a peer: names by the peer-name rule (and the key's path must
//! agree with the record's site and name), the key as a WireGuard key,
//! endpoints as the file's, prefixes with host bits clear, the tunnel
//! address a single host. A record that fails is left out, never half
//! applied. Only public keys are ever in a record.

use causeway_config::{parse_allowed_ip, rules, Endpoint};
use causeway_wireguard::PublicKey;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The largest value read: a record is a few hundred bytes; far larger is
/// not one of ours.
pub const MAX_VALUE: usize = 64 * 1024;
/// Most endpoints and prefixes taken from one record.
pub const MAX_LIST: usize = 64;

/// Where the records of one fleet live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Without a trailing slash (`causeway_config::registry_prefix`).
    prefix: String,
}

/// What a key under the prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Site(String),
    Gateway { site: String, name: String },
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        Layout { prefix: prefix.trim_end_matches('/').to_string() }
    }

    /// Everything of this fleet, for the initial read and the watch; the
    /// slash keeps `/causeway2` out of `/causeway`.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn site(&self, site: &str) -> String {
        format!("{}/sites/{site}", self.prefix)
    }

    pub fn gateway(&self, site: &str, name: &str) -> String {
        format!("{}/gateways/{site}/{name}", self.prefix)
    }

    /// The key's meaning, or `None` for a key this version does not use
    /// (left alone: a newer version may have put it there).
    pub fn parse(&self, key: &[u8]) -> Option<Key> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts[..] {
            ["sites", site] => Some(Key::Site(site.to_string())),
            ["gateways", site, name] => Some(Key::Gateway { site: site.to_string(), name: name.to_string() }),
            _ => None,
        }
    }
}

/// A gateway's record as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRecord {
    pub site: String,
    pub name: String,
    pub public_key: String,
    pub endpoints: Vec<String>,
    pub tunnel_address: Option<String>,
    pub version: String,
}

/// A site's record as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    pub prefixes: Vec<String>,
}

/// A gateway of the fleet, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub site: String,
    pub name: String,
    pub public_key: PublicKey,
    pub endpoints: Vec<Endpoint>,
    /// A host prefix (/32 or /128).
    pub tunnel_address: Option<IpNet>,
    pub version: String,
}

/// Why a record was left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("value of {0} bytes is larger than {MAX_VALUE}")]
    TooLarge(usize),
    #[error("not a record: {0}")]
    Json(String),
    #[error("{field}: {message}")]
    Field { field: &'static str, message: String },
    #[error("record says {site}/{name} but is stored under {key_site}/{key_name}")]
    Misplaced { site: String, name: String, key_site: String, key_name: String },
}

fn field<E: std::fmt::Display>(field: &'static str) -> impl Fn(E) -> RecordError {
    move |e| RecordError::Field { field, message: e.to_string() }
}

fn parse_json<'a, T: Deserialize<'a>>(value: &'a [u8]) -> Result<T, RecordError> {
    if value.len() > MAX_VALUE {
        return Err(RecordError::TooLarge(value.len()));
    }
    serde_json::from_slice(value).map_err(|e| RecordError::Json(e.to_string()))
}

fn bounded<T>(name: &'static str, list: &[T]) -> Result<(), RecordError> {
    if list.len() > MAX_LIST {
        return Err(field(name)(format!("{} entries; at most {MAX_LIST}", list.len())));
    }
    Ok(())
}

impl Member {
    /// Checks the record stored under `{site}/{name}`.
    pub fn decode(key_site: &str, key_name: &str, value: &[u8]) -> Result<Member, RecordError> {
        let r: GatewayRecord = parse_json(value)?;
        rules::peer_name(&r.site).map_err(field("site"))?;
        rules::peer_name(&r.name).map_err(field("name"))?;
        rules::peer_name(&format!("{}.{}", r.site, r.name)).map_err(field("name"))?;
        if r.site != key_site || r.name != key_name {
            return Err(RecordError::Misplaced {
                site: r.site,
                name: r.name,
                key_site: key_site.to_string(),
                key_name: key_name.to_string(),
            });
        }
        let key = causeway_config::parse_key(&r.public_key).map_err(|e| field("public_key")(e.to_string()))?;
        bounded("endpoints", &r.endpoints)?;
        let endpoints =
            r.endpoints.iter().map(|e| e.parse::<Endpoint>()).collect::<Result<_, _>>().map_err(field("endpoints"))?;
        let tunnel_address = match &r.tunnel_address {
            None => None,
            Some(t) => {
                let net = parse_allowed_ip(t).map_err(field("tunnel_address"))?;
                if net.prefix_len() != net.max_prefix_len() {
                    return Err(field("tunnel_address")(format!("{net} is not a single address (/32 or /128)")));
                }
                Some(net)
            }
        };
        // Cut by characters: a byte cut inside a multi-byte one panics,
        // and this runs on every gateway reading the record.
        let version: String = r.version.chars().take(32).collect();
        Ok(Member {
            site: r.site,
            name: r.name,
            public_key: PublicKey::from_bytes(*key),
            endpoints,
            tunnel_address,
            version,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let r = GatewayRecord {
            site: self.site.clone(),
            name: self.name.clone(),
            public_key: self.public_key.to_base64(),
            endpoints: self.endpoints.iter().map(ToString::to_string).collect(),
            tunnel_address: self.tunnel_address.map(|t| t.to_string()),
            version: self.version.clone(),
        };
        // Strings and lists of strings only: this cannot fail.
        serde_json::to_vec(&r).unwrap_or_default()
    }

    /// The name other gateways give this one.
    pub fn peer_name(&self) -> String {
        format!("{}.{}", self.site, self.name)
    }
}

/// A site's prefixes from its record.
pub fn decode_site(value: &[u8]) -> Result<Vec<IpNet>, RecordError> {
    let r: SiteRecord = parse_json(value)?;
    bounded("prefixes", &r.prefixes)?;
    r.prefixes.iter().map(|p| parse_allowed_ip(p)).collect::<Result<_, _>>().map_err(field("prefixes"))
}

pub fn encode_site(prefixes: &[IpNet]) -> Vec<u8> {
    let r = SiteRecord { prefixes: prefixes.iter().map(ToString::to_string).collect() };
    serde_json::to_vec(&r).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUB_B: &str = "429kEP7A6Eoqwhuq9S1svBRBfglokdMLy0ksTS3R2S8=";

    fn record(site: &str, name: &str) -> serde_json::Value {
        serde_json::json!({"site": site, "name": name, "public_key": PUB_B, "endpoints": ["198.18.0.3:51820"],
            "tunnel_address": "10.255.2.1/32", "version": "0.1.0"})
    }

    #[test]
    fn keys_of_the_layout() {
        let l = Layout::new("/causeway/");
        assert_eq!(l.all(), "/causeway/");
        assert_eq!(l.site("west"), "/causeway/sites/west");
        assert_eq!(l.gateway("west", "gw1"), "/causeway/gateways/west/gw1");
        assert_eq!(l.parse(b"/causeway/sites/west"), Some(Key::Site("west".into())));
        assert_eq!(
            l.parse(b"/causeway/gateways/west/gw1"),
            Some(Key::Gateway { site: "west".into(), name: "gw1".into() })
        );
        for other in [
            &b"/causeway2/sites/west"[..],
            b"/causeway/sites/a/b",
            b"/causeway/other",
            b"/causeway/gateways/x",
            b"\xff",
        ] {
            assert_eq!(l.parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn a_gateway_record_round_trips() {
        let m = Member::decode("west", "gw1", record("west", "gw1").to_string().as_bytes()).unwrap();
        assert_eq!(m.public_key.to_base64(), PUB_B);
        assert_eq!(m.endpoints, [Endpoint::Addr("198.18.0.3:51820".parse().unwrap())]);
        assert_eq!(m.tunnel_address, Some("10.255.2.1/32".parse().unwrap()));
        assert_eq!(m.peer_name(), "west.gw1");
        let back: serde_json::Value = serde_json::from_slice(&m.encode()).unwrap();
        assert_eq!(back, record("west", "gw1"), "the contract's field names");
        let mut no_tunnel = record("west", "gw1");
        no_tunnel["tunnel_address"] = serde_json::Value::Null;
        no_tunnel["extra"] = "from a newer version".into();
        assert_eq!(Member::decode("west", "gw1", no_tunnel.to_string().as_bytes()).unwrap().tunnel_address, None);
    }

    #[test]
    fn hostile_records_are_refused_whole() {
        let bad = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut r = record("west", "gw1");
            edit(&mut r);
            Member::decode("west", "gw1", r.to_string().as_bytes()).unwrap_err().to_string()
        };
        assert!(bad(&|r| r["public_key"] = "x".into()).starts_with("public_key:"));
        assert!(bad(&|r| r["name"] = "gw 1".into()).starts_with("name:"));
        assert!(bad(&|r| r["name"] = "gw2".into()).contains("stored under west/gw1"));
        assert!(bad(&|r| r["endpoints"] = serde_json::json!(["nowhere"])).starts_with("endpoints:"));
        assert!(bad(&|r| r["tunnel_address"] = "10.255.0.0/16".into()).contains("not a single address"));
        assert!(bad(&|r| r["tunnel_address"] = "10.255.0.1/16".into()).contains("host bits"));
        assert!(bad(&|r| r["endpoints"] = serde_json::json!(vec!["198.18.0.1:1"; 65])).contains("at most 64"));
        assert!(bad(&|r| r.as_object_mut().unwrap().remove("site").map(drop).unwrap_or(())).starts_with("not a record"));
        assert!(Member::decode("west", "gw1", b"\xff\x00").unwrap_err().to_string().starts_with("not a record"));
        assert!(matches!(Member::decode("w", "g", &vec![b' '; MAX_VALUE + 1]), Err(RecordError::TooLarge(_))));
    }

    // A version is kept to 32 characters; cut by bytes, a multi-byte
    // character across byte 32 panicked the registry thread of every
    // gateway that read the record.
    #[test]
    fn a_long_version_is_cut_between_characters() {
        let mut r = record("west", "gw1");
        r["version"] = format!("1{}", "é".repeat(40)).into();
        let m = Member::decode("west", "gw1", r.to_string().as_bytes()).unwrap();
        assert_eq!(m.version.chars().count(), 32);
        assert!(m.version.starts_with("1é"));
    }

    #[test]
    fn site_records() {
        let nets = decode_site(br#"{"prefixes": ["10.2.0.0/16", "fd00:2::/48"]}"#).unwrap();
        assert_eq!(nets.len(), 2);
        assert_eq!(decode_site(&encode_site(&nets)).unwrap(), nets);
        assert!(decode_site(br#"{"prefixes": ["10.2.0.1/16"]}"#).unwrap_err().to_string().contains("host bits"));
        assert!(decode_site(br#"{"prefix": []}"#).is_err());
    }
}
