//! The file as written: every field optional and spanned, so validation can
//! say where each problem is and report all of them at once.

use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroizing;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub interface: Option<Spanned<RawInterface>>,
    #[serde(default)]
    pub peer: Vec<Spanned<RawPeer>>,
    /// `[[site]]` tables.
    #[serde(default)]
    pub site: Vec<Spanned<RawSite>>,
    pub registry: Option<Spanned<RawRegistry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSite {
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub prefixes: Vec<Spanned<String>>,
}

/// `[registry]`: checked in `registry.rs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistry {
    #[serde(default)]
    pub endpoints: Vec<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub site: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub advertise: Vec<Spanned<String>>,
    pub lease_ttl: Option<Spanned<u32>>,
    pub persistent_keepalive: Option<Spanned<u16>>,
    pub failover_after: Option<Spanned<u32>>,
    pub ca_file: Option<Spanned<String>>,
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInterface {
    pub name: Option<Spanned<String>>,
    pub private_key: Option<Spanned<Zeroizing<String>>>,
    pub private_key_file: Option<Spanned<String>>,
    pub listen_port: Option<Spanned<u16>>,
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
    pub mtu: Option<Spanned<u32>>,
    pub workers: Option<Spanned<u32>>,
    pub mss_clamp: Option<Spanned<bool>>,
    pub metrics_listen: Option<Spanned<String>>,
    pub install_routes: Option<Spanned<bool>>,
    pub route_table: Option<Spanned<u32>>,
    pub user: Option<Spanned<String>>,
    pub dns_refresh: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeer {
    pub name: Option<Spanned<String>>,
    pub public_key: Option<Spanned<String>>,
    pub preshared_key: Option<Spanned<Zeroizing<String>>>,
    pub preshared_key_file: Option<Spanned<String>>,
    #[serde(default)]
    pub endpoints: Vec<Spanned<String>>,
    #[serde(default)]
    pub allowed_ips: Vec<Spanned<String>>,
    pub persistent_keepalive: Option<Spanned<u16>>,
    pub failover_after: Option<Spanned<u32>>,
    /// The `[[site]]` this peer is one gateway of (either protocol).
    pub site: Option<Spanned<String>>,
    /// "wireguard" (the default) or "ipsec"; the rest are IPsec's.
    pub protocol: Option<Spanned<String>>,
    pub local_id: Option<Spanned<String>>,
    pub remote_id: Option<Spanned<String>>,
    pub psk_file: Option<Spanned<String>>,
    #[serde(default)]
    pub ike_proposals: Vec<Spanned<String>>,
    #[serde(default)]
    pub esp_proposals: Vec<Spanned<String>>,
    #[serde(default)]
    pub local_ts: Vec<Spanned<String>>,
    #[serde(default)]
    pub remote_ts: Vec<Spanned<String>>,
    pub ike_lifetime: Option<Spanned<u32>>,
    pub child_lifetime: Option<Spanned<u32>>,
    pub dpd_interval: Option<Spanned<u32>>,
    pub nat_keepalive: Option<Spanned<u32>>,
    pub initiate: Option<Spanned<bool>>,
    pub encap: Option<Spanned<String>>,
}
