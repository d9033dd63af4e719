//! The control API's messages: causewayd serializes them and tunctl parses
//! them with the same types, so a renamed field is a compile error rather
//! than a column of zeros.
//!
//! The field names are the wire format (`tunctl --json` users, the lab and
//! the netns tests read them), so renaming one here is a breaking change.
//! A reader ignores fields it does not know, so a newer daemon may add
//! some; but every field it knows must be present, `null` included: a
//! missing one fails the parse instead of reading as nothing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::wire::present;
use zeroize::Zeroizing;

/// One request line, named by its `"op"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Reload,
    PeerAdd(PeerChange),
    /// Adds the `[[peer]]` tables of a peer file (either protocol): its
    /// text, and its absolute path, which names it in errors and anchors
    /// relative PSK and key files (causewayd reads those itself). The
    /// text may hold an inline pre-shared key, so it is kept as one.
    PeersAdd {
        path: std::path::PathBuf,
        text: SecretText,
        /// The file's permission bits when its group or others may read
        /// it: an inline key in it is then refused.
        #[serde(default)]
        exposed: Option<u32>,
    },
    /// Changes the peer named (or keyed) `peer`; fields left out stay.
    PeerSet {
        peer: String,
        #[serde(flatten)]
        change: PeerChange,
    },
    PeerRemove {
        peer: String,
    },
    /// New keys for a peer now: an IPsec peer's child SAs are rekeyed,
    /// with `ike` its IKE SA too; a WireGuard peer gets a new handshake.
    PeerRekey {
        peer: String,
        #[serde(default)]
        ike: bool,
    },
    /// A peer's SAs (IPsec) or sessions (WireGuard) deleted and set up
    /// from the start.
    PeerReset {
        peer: String,
    },
    /// The sites, their gateways and the registry's state.
    Sites,
    /// This gateway registers in `site` (leaving the one it was in).
    SiteJoin {
        site: String,
    },
    /// This gateway withdraws its record; it keeps running.
    SiteLeave,
    /// Writes a site's prefixes to the registry.
    SiteSet {
        site: String,
        prefixes: Vec<String>,
    },
    /// Removes a site's record from the registry.
    SiteRemove {
        site: String,
    },
}

/// A peer's fields as a request gives them, in the configuration file's
/// words; absent ones are kept (`peer_set`) or defaulted (`peer_add`).
/// causewayd checks them with the configuration's own rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<SecretText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<Vec<String>>,
    /// Seconds; 0 is off. A u16, as in the configuration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<u16>,
    /// Seconds; checked by `causeway_config::rules::failover_after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_after: Option<u64>,
}

/// Key text that is wiped when dropped and never shown by `Debug`, so a
/// logged request cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub Zeroizing<String>);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(..)")
    }
}

/// One reply line: `{"ok": T}` or `{"error": "why"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    Ok(T),
    Error(String),
}

/// What a successful request answers: the status for `status`, a sentence
/// saying what changed for the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Box<Status>),
    Sites(SitesStatus),
    Done(String),
}

/// `tunctl sites`: every site with its gateways, and the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SitesStatus {
    pub sites: Vec<SiteStatus>,
    /// `null` without `[registry]`.
    #[serde(deserialize_with = "present")]
    pub registry: Option<RegistryStatus>,
    /// Registry prefixes of a site that an IPsec gateway of the site
    /// cannot carry (what the site sends it there is dropped). May be
    /// missing, unlike the other fields: a causewayd from before it did
    /// not tell them.
    #[serde(default)]
    pub uncarried: Vec<UncarriedPrefix>,
}

/// A site prefix, routed, that an IPsec gateway of the site cannot carry:
/// one per such gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UncarriedPrefix {
    pub site: String,
    pub prefix: String,
    /// The IPsec peer whose remote_ts does not reach it.
    pub peer: String,
    /// A sentence saying why and what to do.
    pub reason: String,
}

/// One site as this gateway sends to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteStatus {
    pub name: String,
    pub prefixes: Vec<String>,
    pub gateways: Vec<SiteGatewayStatus>,
    pub gateways_up: usize,
    /// Hash buckets the site's flows are spread over (each gateway's
    /// `buckets` is its share of these).
    pub buckets: usize,
    /// Whether the site's prefixes are in the kernel routing table now
    /// (only while a gateway is up); `null` when causewayd does not
    /// install routes.
    #[serde(deserialize_with = "present")]
    pub routes_installed: Option<bool>,
}

/// One gateway of a site: a peer, its health and its share of the flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteGatewayStatus {
    /// The peer's name.
    pub peer: String,
    /// "wireguard" or "ipsec".
    pub protocol: String,
    /// Base64, for a WireGuard gateway; `null` for IPsec.
    #[serde(deserialize_with = "present")]
    pub public_key: Option<String>,
    #[serde(deserialize_with = "present")]
    pub endpoint: Option<String>,
    pub up: bool,
    /// Why it is down ("silent", "handshakes failing", "unreachable",
    /// "marked down"); `null` while up.
    #[serde(deserialize_with = "present")]
    pub down_reason: Option<String>,
    /// Seconds in the current state (up or down).
    pub state_secs: u64,
    /// Seconds since something authenticated came from it (or since it
    /// joined the site).
    pub last_heard_secs: u64,
    /// Hash buckets it serves, of the site's `buckets`: its share of the
    /// site's flows.
    pub buckets: usize,
    /// Traffic with this gateway; every packet sent to it was steered to
    /// it, by its buckets or its own allowed IPs.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes_per_sec: u64,
    pub tx_bytes_per_sec: u64,
}

/// The interface's state, as `tunctl show` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub interface: String,
    /// Base64; `null` until a private key is set (UAPI-configured).
    #[serde(deserialize_with = "present")]
    pub public_key: Option<String>,
    pub listen_port: u16,
    pub mtu: u32,
    pub workers: usize,
    /// Datagrams per UDP send the kernel takes (1: no GSO).
    pub udp_gso_segments: usize,
    /// `null` when causewayd does not install routes.
    #[serde(deserialize_with = "present")]
    pub kernel_routes: Option<KernelRoutes>,
    pub peers: Vec<PeerStatus>,
    /// Peers with `protocol = "ipsec"`.
    pub ipsec_peers: Vec<IpsecPeerStatus>,
    /// Packets dropped, by reason (the names of `counters::Drop`).
    pub drops: BTreeMap<String, u64>,
    pub cookie_replies_sent: u64,
    /// One per data-plane worker.
    pub worker_stats: Vec<WorkerCounters>,
    /// IKE messages dropped, by reason (the names of
    /// `causeway_ikev2::DropReason`); empty while IKE is not running. May
    /// be missing, unlike the fields above: a causewayd from before it
    /// did not tell them.
    #[serde(default)]
    pub ike_drops: BTreeMap<String, u64>,
}

pub use crate::registry_status::RegistryStatus;

/// The routes causewayd keeps in a kernel routing table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRoutes {
    pub table: u32,
    pub installed: Vec<String>,
}

/// One row of `tunctl peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Empty for a peer added through the UAPI, which has no names.
    pub name: String,
    pub public_key: String,
    /// The address in use; `null` until known.
    #[serde(deserialize_with = "present")]
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Unix time of the latest handshake; `null` if none.
    #[serde(deserialize_with = "present")]
    pub latest_handshake: Option<u64>,
    #[serde(deserialize_with = "present")]
    pub latest_handshake_age_secs: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub persistent_keepalive: u16,
    pub handshakes_initiated: u64,
    pub state: PeerState,
    pub staged_packets: usize,
    pub tx_batches_queued: usize,
    pub rx_batches_queued: usize,
    pub endpoint_failovers: u64,
    pub rx_bytes_per_sec: u64,
    pub tx_bytes_per_sec: u64,
}

/// One IPsec peer: its IKE SA and child SAs (never a key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpsecPeerStatus {
    pub name: String,
    /// "established", "connecting", "deleting" or "down".
    pub ike_state: String,
    /// Whether a child SA carries traffic now.
    pub up: bool,
    #[serde(deserialize_with = "present")]
    pub remote: Option<String>,
    pub local_id: String,
    pub remote_id: String,
    /// The IKE SA's algorithms in strongSwan's notation; `null` without one.
    #[serde(deserialize_with = "present")]
    pub ike_proposal: Option<String>,
    /// IKE SA SPIs, initiator's then responder's, in hex.
    pub ike_spis: String,
    pub initiator: bool,
    /// A NAT was detected (so ESP goes inside UDP).
    pub nat: bool,
    pub child_sas: Vec<ChildSaStatus>,
    pub ike_rekeys: u32,
    pub child_rekeys: u32,
    pub allowed_ips: Vec<String>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub staged_packets: usize,
    /// The last failure, until an IKE SA comes up.
    #[serde(deserialize_with = "present")]
    pub last_failure: Option<String>,
}

/// A child SA as `tunctl` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSaStatus {
    /// Hex, as strongSwan prints SPIs.
    pub spi_in: String,
    pub spi_out: String,
    pub cipher: String,
    /// "udp" (port 4500) or "esp" (IP protocol 50).
    pub encapsulation: String,
    pub age_secs: u64,
    /// The selectors negotiated, ours and the peer's, in the notation of
    /// `local_ts` and `remote_ts`: narrower than configured when the peer
    /// narrowed them.
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
}

impl ChildSaStatus {
    /// One line for `tunctl`'s table: SPIs, cipher and encapsulation, and
    /// the selectors only where they narrow. Every address of both
    /// families both ways (an st0 interface's) is the common case; IPv4
    /// alone is a narrowing (IPv6 is not carried), as is anything else.
    pub fn summary(&self) -> String {
        let sas = format!("{}/{} {} {}", self.spi_in, self.spi_out, self.cipher, self.encapsulation);
        let all =
            |ts: &[String]| ts.len() == 2 && ts.iter().any(|t| t == "0.0.0.0/0") && ts.iter().any(|t| t == "::/0");
        if all(&self.local_ts) && all(&self.remote_ts) {
            sas
        } else {
            format!("{sas} {} === {}", self.local_ts.join(","), self.remote_ts.join(","))
        }
    }
}

/// Whether a peer can carry traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// A session usable for sending.
    Up,
    /// No session; a handshake is under way.
    Handshaking,
    /// A session existed and expired; none under way.
    Stale,
    /// Never had a session.
    Configured,
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerState::Up => "up",
            PeerState::Handshaking => "handshaking",
            PeerState::Stale => "stale",
            PeerState::Configured => "configured",
        })
    }
}

/// One worker's batch counters (see `counters::WorkerStats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounters {
    pub tun_reads: u64,
    pub tun_packets: u64,
    pub udp_sends: u64,
    pub udp_datagrams_sent: u64,
    pub udp_receives: u64,
    pub udp_datagrams_received: u64,
    pub tun_writes: u64,
    pub tun_packets_written: u64,
    pub crypto_batches: u64,
    pub crypto_batches_helped: u64,
    pub helper_wakeups: u64,
    pub pool_stalls: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_sas_show_their_selectors_where_they_narrow() {
        let child = |local: &[&str], remote: &[&str]| ChildSaStatus {
            spi_in: "c0ffee01".into(),
            spi_out: "c0ffee02".into(),
            cipher: "aes256gcm16".into(),
            encapsulation: "udp".into(),
            age_secs: 1,
            local_ts: local.iter().map(|s| s.to_string()).collect(),
            remote_ts: remote.iter().map(|s| s.to_string()).collect(),
        };
        let every = ["0.0.0.0/0", "::/0"];
        let shown = [
            child(&every, &every),
            child(&["10.1.0.0/16"], &["10.2.0.0/16[tcp/443]", "fd00:2::/64"]),
            // A peer that takes IPv4 only: IPv6 is no longer carried.
            child(&["0.0.0.0/0"], &["0.0.0.0/0"]),
            child(&["::/0", "0.0.0.0/0"], &every),
        ]
        .map(|c| c.summary());
        assert_eq!(
            shown,
            [
                "c0ffee01/c0ffee02 aes256gcm16 udp",
                "c0ffee01/c0ffee02 aes256gcm16 udp 10.1.0.0/16 === 10.2.0.0/16[tcp/443],fd00:2::/64",
                "c0ffee01/c0ffee02 aes256gcm16 udp 0.0.0.0/0 === 0.0.0.0/0",
                "c0ffee01/c0ffee02 aes256gcm16 udp",
            ]
        );
    }
    use serde_json::json;

    pub(crate) fn sample_status() -> Status {
        Status {
            interface: "cw0".into(),
            public_key: Some("Cc8LbKRR2r5vwJTigLNRnTrhc7L4uJLTd9RXJdLA2EA=".into()),
            listen_port: 51820,
            mtu: 1420,
            workers: 2,
            udp_gso_segments: 64,
            kernel_routes: Some(KernelRoutes { table: 254, installed: vec!["10.1.0.0/16".into()] }),
            peers: vec![PeerStatus {
                name: "dc-east".into(),
                public_key: "429kEP7A6Eoqwhuq9S1svBRBfglokdMLy0ksTS3R2S8=".into(),
                endpoint: Some("198.18.0.2:51820".into()),
                allowed_ips: vec!["10.1.0.0/16".into()],
                latest_handshake: Some(1_700_000_000),
                latest_handshake_age_secs: Some(3),
                rx_bytes: 1,
                tx_bytes: 2,
                rx_packets: 3,
                tx_packets: 4,
                persistent_keepalive: 25,
                handshakes_initiated: 5,
                state: PeerState::Up,
                staged_packets: 6,
                tx_batches_queued: 7,
                rx_batches_queued: 8,
                endpoint_failovers: 9,
                rx_bytes_per_sec: 10,
                tx_bytes_per_sec: 11,
            }],
            ipsec_peers: vec![IpsecPeerStatus {
                name: "dc-west".into(),
                ike_state: "established".into(),
                up: true,
                remote: Some("198.18.0.3:4500".into()),
                local_id: "gw1.primary.example".into(),
                remote_id: "198.18.0.3".into(),
                ike_proposal: Some("aes256gcm16-prfsha256-x25519".into()),
                ike_spis: "0123456789abcdef_i fedcba9876543210_r".into(),
                initiator: true,
                nat: false,
                child_sas: vec![ChildSaStatus {
                    spi_in: "c0ffee01".into(),
                    spi_out: "c0ffee02".into(),
                    cipher: "aes256gcm16".into(),
                    encapsulation: "udp".into(),
                    age_secs: 12,
                    local_ts: vec!["10.1.0.0/16".into()],
                    remote_ts: vec!["10.2.0.0/16[tcp/443]".into()],
                }],
                ike_rekeys: 0,
                child_rekeys: 1,
                allowed_ips: vec!["10.2.0.0/16".into()],
                rx_bytes: 1,
                tx_bytes: 2,
                rx_packets: 3,
                tx_packets: 4,
                staged_packets: 0,
                last_failure: None,
            }],
            drops: [("replay".to_string(), 12)].into(),
            cookie_replies_sent: 13,
            worker_stats: vec![WorkerCounters { tun_reads: 14, pool_stalls: 15, ..Default::default() }],
            ike_drops: [("unknown_spi".to_string(), 16)].into(),
        }
    }

    #[test]
    fn status_round_trips_with_its_wire_names() {
        let reply = Reply::Ok(Answer::Status(Box::new(sample_status())));
        let text = serde_json::to_string(&reply).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        // The names scripts and the netns tests read.
        assert_eq!(v["ok"]["peers"][0]["latest_handshake"], 1_700_000_000);
        assert_eq!(v["ok"]["peers"][0]["state"], "up");
        assert_eq!(v["ok"]["drops"]["replay"], 12);
        assert_eq!(v["ok"]["cookie_replies_sent"], 13);
        assert_eq!(v["ok"]["worker_stats"][0]["tun_reads"], 14);
        assert_eq!(v["ok"]["kernel_routes"]["table"], 254);
        assert_eq!(v["ok"]["ike_drops"]["unknown_spi"], 16);
        let back: Reply<Status> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, Reply::Ok(sample_status()));
    }

    #[test]
    fn a_status_without_ike_drops_is_an_older_daemons_and_reads() {
        let mut v = serde_json::to_value(sample_status()).unwrap();
        v.as_object_mut().unwrap().remove("ike_drops");
        let old = serde_json::from_value::<Status>(v).expect("an older causewayd's answer");
        assert!(old.ike_drops.is_empty());
        assert_eq!(old, Status { ike_drops: BTreeMap::new(), ..sample_status() });
    }

    #[test]
    fn empty_options_are_null_and_required() {
        let mut s = sample_status();
        s.public_key = None;
        s.kernel_routes = None;
        s.peers[0].endpoint = None;
        s.peers[0].latest_handshake = None;
        let mut v = serde_json::to_value(&s).unwrap();
        assert!(v["kernel_routes"].is_null() && v["peers"][0]["endpoint"].is_null());
        assert_eq!(serde_json::from_value::<Status>(v.clone()).unwrap(), s);
        v["peers"][0].as_object_mut().unwrap().remove("endpoint");
        let e = serde_json::from_value::<Status>(v).unwrap_err().to_string();
        assert!(e.contains("missing field `endpoint`"), "{e}");
    }

    #[test]
    fn a_missing_or_mistyped_counter_is_an_error() {
        let mut v = serde_json::to_value(sample_status()).unwrap();
        v["peers"][0].as_object_mut().unwrap().remove("rx_bytes");
        let e = serde_json::from_value::<Status>(v).unwrap_err().to_string();
        assert!(e.contains("missing field `rx_bytes`"), "{e}");
        let mut v = serde_json::to_value(sample_status()).unwrap();
        v["worker_stats"][0]["tun_reads"] = json!("many");
        assert!(serde_json::from_value::<Status>(v).is_err());
    }

    #[test]
    fn unknown_fields_from_a_newer_daemon_are_ignored() {
        let mut v = serde_json::to_value(sample_status()).unwrap();
        v["peers"][0]["new_counter"] = json!(1);
        assert_eq!(serde_json::from_value::<Status>(v).unwrap(), sample_status());
    }

    fn sample_sites() -> SitesStatus {
        SitesStatus {
            sites: vec![SiteStatus {
                name: "west".into(),
                prefixes: vec!["10.2.0.0/16".into()],
                gateways: vec![SiteGatewayStatus {
                    peer: "west.gw1".into(),
                    protocol: "wireguard".into(),
                    public_key: Some("429kEP7A6Eoqwhuq9S1svBRBfglokdMLy0ksTS3R2S8=".into()),
                    endpoint: Some("198.18.0.3:51820".into()),
                    up: false,
                    down_reason: Some("silent".into()),
                    state_secs: 4,
                    last_heard_secs: 7,
                    buckets: 0,
                    rx_bytes: 1,
                    tx_bytes: 2,
                    rx_packets: 3,
                    tx_packets: 4,
                    rx_bytes_per_sec: 5,
                    tx_bytes_per_sec: 6,
                }],
                gateways_up: 0,
                buckets: 1024,
                routes_installed: Some(false),
            }],
            registry: None,
            uncarried: vec![UncarriedPrefix {
                site: "west".into(),
                prefix: "10.9.0.0/16".into(),
                peer: "west-srx".into(),
                reason: "10.9.0.0/16 lies outside every remote_ts selector".into(),
            }],
        }
    }

    #[test]
    fn sites_round_trip_and_are_told_from_status() {
        let reply = Reply::Ok(Answer::Sites(sample_sites()));
        let text = serde_json::to_string(&reply).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["ok"]["sites"][0]["gateways"][0]["down_reason"], "silent");
        assert_eq!(v["ok"]["sites"][0]["routes_installed"], false);
        assert!(v["ok"]["registry"].is_null());
        assert_eq!(serde_json::from_str::<Reply<Answer>>(&text).unwrap(), reply);
        let status = serde_json::to_string(&Reply::Ok(Answer::Status(Box::new(sample_status())))).unwrap();
        assert!(matches!(serde_json::from_str::<Reply<Answer>>(&status).unwrap(), Reply::Ok(Answer::Status(_))));
        let mut v = serde_json::to_value(sample_sites()).unwrap();
        v.as_object_mut().unwrap().remove("registry");
        assert!(serde_json::from_value::<SitesStatus>(v).is_err(), "registry must be present, as null");
        let mut v = serde_json::to_value(sample_sites()).unwrap();
        assert_eq!(v["uncarried"][0]["peer"], "west-srx");
        v.as_object_mut().unwrap().remove("uncarried");
        let old = serde_json::from_value::<SitesStatus>(v).expect("an older causewayd's answer");
        assert!(old.uncarried.is_empty());
        assert_eq!(serde_json::to_string(&Request::Sites).unwrap(), r#"{"op":"sites"}"#);
    }

    #[test]
    fn requests_on_the_wire() {
        let add = Request::PeerAdd(PeerChange {
            name: Some("c".into()),
            public_key: Some("k".into()),
            persistent_keepalive: Some(5),
            ..Default::default()
        });
        assert_eq!(
            serde_json::to_value(&add).unwrap(),
            json!({"op": "peer_add", "name": "c", "public_key": "k", "persistent_keepalive": 5})
        );
        let set: Request =
            serde_json::from_str(r#"{"op":"peer_set","peer":"c","endpoints":["198.18.0.2:1"]}"#).unwrap();
        assert_eq!(
            set,
            Request::PeerSet {
                peer: "c".into(),
                change: PeerChange { endpoints: Some(vec!["198.18.0.2:1".into()]), ..Default::default() }
            }
        );
        assert_eq!(serde_json::to_string(&Request::Status).unwrap(), r#"{"op":"status"}"#);
        assert!(serde_json::from_str::<Request>(r#"{"op":"peer_remove"}"#).is_err(), "peer is required");
        assert!(serde_json::from_str::<Request>(r#"{"op":"status","extra":1}"#).is_ok());
    }

    #[test]
    fn a_preshared_key_is_not_in_debug_output() {
        let change =
            PeerChange { preshared_key: Some(SecretText(Zeroizing::new("c2VjcmV0".into()))), ..Default::default() };
        assert!(!format!("{change:?}").contains("c2VjcmV0"));
        assert!(serde_json::to_string(&change).unwrap().contains("c2VjcmV0"), "but it is sent");
    }
}
