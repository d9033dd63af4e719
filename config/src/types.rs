//! The validated configuration: every value here is usable as is.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::proposals::{EspProposal, IkeProposal};
use crate::selector::TrafficSelector;

use causeway_wireguard::{PresharedKey, PublicKey, StaticSecret};
use ipnet::IpNet;

pub const DEFAULT_LISTEN_PORT: u16 = 51820;
/// Two handshake retries (5 s apart) without an answer before failing over.
/// Endpoint names are resolved again this often while sessions are healthy
/// (while handshakes fail, every `failover_after`).
pub const DEFAULT_DNS_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);
pub const DEFAULT_FAILOVER_AFTER: std::time::Duration = std::time::Duration::from_secs(10);
/// 1420 leaves room for the outer IPv6 (40) + UDP (8) + WireGuard (32)
/// headers within a 1500-byte WAN MTU, as wg-quick assumes.
pub const DEFAULT_MTU: u32 = 1420;
/// The default when the interface has IPsec peers: ESP in UDP with
/// AES-CBC adds up to 85 bytes over IPv4 (IP 20, UDP 8, ESP 8, IV 16,
/// padding up to 15, trailer 2, ICV 16), so 1400 fits a 1500-byte WAN, as
/// strongSwan's userspace ESP assumes.
pub const DEFAULT_MTU_IPSEC: u32 = 1400;
/// The smallest MTU IPv4 guarantees; IPv6 needs 1280.
pub const MIN_MTU: u32 = 576;
pub const MIN_MTU_IPV6: u32 = 1280;
/// The largest MTU whose encrypted packet (MTU + 32 bytes of WireGuard, up
/// to 15 of padding, 8 of UDP and 40 of IPv6) still fits one IP packet.
pub const MAX_MTU: u32 = 65_535 - 40 - 8 - 32 - 15;

#[derive(Debug, Clone)]
pub struct Config {
    pub interface: Interface,
    /// WireGuard peers.
    pub peers: Vec<Peer>,
    /// IPsec peers (`protocol = "ipsec"`), on the same interface.
    pub ipsec_peers: Vec<IpsecPeer>,
    /// Sites (`[[site]]`): prefixes served by several gateways, each a peer
    /// that names the site. From the registry too when one is configured.
    pub sites: Vec<Site>,
    /// Membership from a shared store (`[registry]`); `None` is file only.
    pub registry: Option<Registry>,
}

/// A site: a name and the prefixes behind it, served by every peer whose
/// `site` names it. Traffic to the prefixes is spread over the site's
/// gateways that are up, by a hash of the inner flow; traffic from them
/// is accepted from any of its gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub name: String,
    /// Host bits clear; no two sites (nor a site and a peer) overlap.
    pub prefixes: Vec<IpNet>,
}

/// Where the fleet's membership lives: an etcd v3 cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    /// Client URLs (`http://198.18.0.10:2379`, `https://...`).
    pub endpoints: Vec<String>,
    /// Key prefix of this fleet's records, without a trailing slash
    /// (default `/causeway`).
    pub prefix: String,
    /// The site this gateway serves.
    pub site: String,
    /// This gateway's name in the registry, unique within its site.
    pub name: String,
    /// Where the other gateways reach this one (published in its record).
    pub advertise: Vec<Endpoint>,
    /// Seconds-long lease the record lives under; it drops out this long
    /// after the gateway stops refreshing it.
    pub lease_ttl: Duration,
    /// Client TLS: CA bundle, certificate and key (the key file 0600).
    pub tls: Option<RegistryTls>,
    /// etcd user name and the 0600 file holding its password.
    pub user: Option<(String, Psk)>,
    /// Keepalive interval given to peers learnt from the registry.
    pub persistent_keepalive: u16,
    /// `failover_after` given to peers learnt from the registry.
    pub failover_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryTls {
    pub ca_file: std::path::PathBuf,
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    /// Who may own `key_file` besides root and the daemon's user: checked
    /// again on the file opened when the key is read.
    pub key_owners: crate::key::Owners,
}

#[derive(Debug, Clone)]
pub struct Interface {
    /// Interface name; when absent, the command line names it.
    pub name: Option<String>,
    pub private_key: StaticSecret,
    pub listen_port: u16,
    /// Addresses assigned to the interface, with their prefix.
    pub addresses: Vec<IpNet>,
    pub mtu: u32,
    /// Data-plane worker threads; `None` means one per CPU core.
    pub workers: Option<usize>,
    /// Lower the MSS of TCP SYNs crossing the tunnel to fit its MTU.
    pub mss_clamp: bool,
    /// Where to serve Prometheus metrics; off when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// Route the peers' allowed IPs through the interface (as wg-quick does),
    /// in this routing table.
    pub routes: Option<RouteTable>,
    /// After setup, run as this user with only CAP_NET_ADMIN.
    pub user: Option<String>,
    /// How often endpoint names are resolved again while sessions are
    /// healthy; `None` is never.
    pub dns_refresh: Option<std::time::Duration>,
}

impl Interface {
    /// An interface with `private_key` and, for everything else, what the
    /// configuration file gives when a field is left out (for code that
    /// builds a `Config` itself: tests, benchmarks).
    pub fn with_defaults(private_key: StaticSecret) -> Interface {
        Interface {
            name: None,
            private_key,
            listen_port: DEFAULT_LISTEN_PORT,
            addresses: Vec::new(),
            mtu: DEFAULT_MTU,
            workers: None,
            mss_clamp: true,
            metrics_listen: None,
            routes: None,
            user: None,
            dns_refresh: Some(DEFAULT_DNS_REFRESH),
        }
    }
}

/// The routing table that receives the peers' routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTable(pub u32);

impl RouteTable {
    /// The table `ip route` shows without `table`.
    pub const MAIN: RouteTable = RouteTable(254);
}

#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    /// Where to reach the peer, in order of preference. Empty for a peer
    /// that always contacts us first.
    pub endpoints: Vec<Endpoint>,
    /// Prefixes routed to this peer and accepted from it; host bits clear.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds between keepalives to hold a NAT mapping open; 0 is off.
    pub persistent_keepalive: u16,
    /// With several endpoints: how long handshakes to the current one may
    /// fail before the next is tried. For a site's gateway, also how long
    /// it may stay silent before its flows move to the site's others.
    pub failover_after: std::time::Duration,
    /// The site this peer is one gateway of; it then also carries the
    /// site's prefixes.
    pub site: Option<String>,
}

/// A peer's endpoint: an address, or a DNS name resolved at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(a) => write!(f, "{a}"),
            // A zoned IPv6 address (`zoned_v6`) is bracketed like any other.
            Endpoint::Host { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Endpoint {
    /// Resolves to socket addresses (a DNS lookup for a host name).
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        use std::net::ToSocketAddrs;
        match self {
            Endpoint::Addr(a) => Ok(vec![*a]),
            Endpoint::Host { host, port } => Ok((host.as_str(), *port).to_socket_addrs()?.collect()),
        }
    }
}

// IPsec peers (`protocol = "ipsec"`); validated in `ipsec.rs`.

/// IKE's port; an endpoint without a port means this one.
pub const IKE_PORT: u16 = 500;
/// IKE and ESP in UDP once a NAT is detected (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;
pub const DEFAULT_IKE_LIFETIME: Duration = Duration::from_secs(28_800);
pub const DEFAULT_CHILD_LIFETIME: Duration = Duration::from_secs(3_600);
/// The child_lifetime a peer may set, in seconds.
pub const CHILD_LIFETIME_SECONDS: (u32, u32) = (30, 86_400);
/// NAT keepalives this often while a NAT lies on the path (strongSwan's
/// default too).
pub const DEFAULT_NAT_KEEPALIVE: Duration = Duration::from_secs(20);
/// Liveness checks after this long without a packet from the peer.
pub const DEFAULT_DPD_INTERVAL: Duration = Duration::from_secs(30);
/// A shorter key can be guessed offline from one captured IKE_AUTH.
pub const MIN_PSK_LEN: usize = 16;

const ENDPOINT_HINT: &str =
    "expected host:port, such as 198.18.0.2:51820, [fd00::2]:51820 or gw1.dc-east.example:51820";

/// What an IPsec endpoint looks like: the port may be left out.
pub const IKE_ENDPOINT_HINT: &str =
    "expected an address or host name, with a port only if not 500: 198.18.0.2, [fd00::2]:4500 or srx.dc-east.example";

/// An endpoint refused; its text says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    NoPort(String),
    Port(String),
    PortZero(String),
    Brackets {
        host: String,
        port: u16,
    },
    V6NoPort(String),
    Host(String),
    NotIpv4(String),
    Scheme(String),
    NotV6InBrackets(String),
    /// An IPv6 address without brackets whose last group reads as an IKE
    /// port.
    AmbiguousV6(String),
}

impl EndpointError {
    /// The message, ending in `hint` (what the field expects) where a
    /// hint helps.
    pub fn describe(&self, hint: &str) -> String {
        match self {
            EndpointError::NoPort(t) => format!("\"{t}\" has no port; {hint}"),
            EndpointError::Port(t) => format!("\"{t}\" is not a port number; {hint}"),
            EndpointError::PortZero(t) => format!("\"{t}\": port 0 cannot be sent to; {hint}"),
            EndpointError::Brackets { host, port } => format!("an IPv6 endpoint needs brackets: [{host}]:{port}"),
            EndpointError::V6NoPort(t) => {
                format!(
                    "\"{t}\" has no port: an IPv6 endpoint is written in brackets with its port, such as [{t}]:51820"
                )
            }
            EndpointError::Host(t) => format!("\"{t}\" is neither an IP address nor a DNS name; {hint}"),
            EndpointError::NotIpv4(t) => format!(
                "\"{t}\" is not an IPv4 address (four numbers from 0 to 255, such as 198.18.0.2), and a DNS name \
                 does not end in a number: the system's resolver would read it as some other address"
            ),
            EndpointError::Scheme(t) => format!("\"{t}\": an endpoint has no scheme; {hint}"),
            EndpointError::NotV6InBrackets(t) => format!("{t}: brackets hold an IPv6 address"),
            EndpointError::AmbiguousV6(t) => {
                let (addr, port) = t.rsplit_once(':').unwrap_or((t, ""));
                format!("\"{t}\" is ambiguous: write [{addr}]:{port} for port {port}, or [{t}] for that address")
            }
        }
    }
}

impl std::error::Error for EndpointError {}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(ENDPOINT_HINT))
    }
}

/// Whether `host` is one of the numeric forms the C resolver takes for an
/// IPv4 address (`inet_aton`: "198.18.1" for 198.18.0.1, "10.001.010.2"
/// read as octal, "0x7f.1"), or ends in a number, which no DNS name does
/// (RFC 3696 §2). Such text is a mistyped address: were it looked up as a
/// name, the tunnel would go to whatever the resolver made of it.
fn numeric_host(host: &str) -> bool {
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    let number = |l: &str| {
        let hex = l.strip_prefix("0x").or_else(|| l.strip_prefix("0X"));
        match hex {
            Some(h) => h.chars().all(|c| c.is_ascii_hexdigit()),
            None => !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()),
        }
    };
    let last_is_decimal = labels.last().is_some_and(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()));
    last_is_decimal || (labels.len() <= 4 && labels.iter().all(|l| number(l)))
}

/// `[ipv6%zone]:port` with an interface name for the zone (a numeric zone
/// is a `SocketAddr` already), as `wg` writes a link-local endpoint. Kept
/// as a host for the resolver, which turns the name into the interface's
/// index when the endpoint is used: the interface may not exist yet when
/// the file is checked.
fn zoned_v6(text: &str) -> Option<Endpoint> {
    let (inside, port) = text.strip_prefix('[')?.split_once("]:")?;
    let (ip, zone) = inside.split_once('%')?;
    ip.parse::<std::net::Ipv6Addr>().ok()?;
    let ifname =
        !zone.is_empty() && zone.len() < 16 && zone.chars().all(|c| c.is_ascii_graphic() && !"/%:".contains(c));
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    ifname.then(|| Endpoint::Host { host: inside.to_string(), port })
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Endpoint, EndpointError> {
        let text = text.trim();
        if let Ok(a) = text.parse::<SocketAddr>() {
            if a.port() == 0 {
                return Err(EndpointError::PortZero(text.to_string()));
            }
            return Ok(Endpoint::Addr(a));
        }
        if let Some(e) = zoned_v6(text) {
            return Ok(e);
        }
        if text.contains("://") {
            return Err(EndpointError::Scheme(text.to_string()));
        }
        if text.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(EndpointError::V6NoPort(text.to_string()));
        }
        if text.starts_with('[') && text.ends_with(']') {
            return Err(EndpointError::NoPort(text.to_string()));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(EndpointError::NoPort(text.to_string()));
        };
        let Ok(port) = port.parse::<u16>() else {
            return Err(EndpointError::Port(port.to_string()));
        };
        if port == 0 {
            return Err(EndpointError::PortZero(text.to_string()));
        }
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
        };
        if host.contains(':') {
            if host.parse::<std::net::Ipv6Addr>().is_ok() {
                return Err(EndpointError::Brackets { host: host.to_string(), port });
            }
            return Err(EndpointError::Host(host.to_string()));
        }
        if host.len() > 253 || !host.trim_end_matches('.').split('.').all(valid_label) {
            return Err(EndpointError::Host(host.to_string()));
        }
        if numeric_host(host) {
            return Err(EndpointError::NotIpv4(host.to_string()));
        }
        Ok(Endpoint::Host { host: host.to_string(), port })
    }
}

/// An IKE identity (RFC 7296 §3.5), written as strongSwan writes one: an
/// IP address, `user@domain` (an e-mail address) or a host name (FQDN,
/// with or without strongSwan's leading `@`); `@@user@domain` and the type
/// prefixes `fqdn:` and `email:` (or `rfc822:`, `userfqdn:`) as strongSwan
/// reads them too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Address(IpAddr),
    Fqdn(String),
    Email(String),
}

/// Text that is not an IKE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not an IKE identity: expected an IP address, a host name (gw1.dc-east.example) or user@domain{1}")]
pub struct IdentityError(pub String, pub &'static str);

impl std::str::FromStr for Identity {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Identity, IdentityError> {
        let text = text.trim();
        let refuse = |why: &'static str| Err(IdentityError(text.to_string(), why));
        if let Ok(a) = text.parse::<IpAddr>() {
            return Ok(Identity::Address(a));
        }
        let ok = |s: &str| !s.is_empty() && s.len() <= 253 && s.chars().all(|c| c.is_ascii_graphic());
        // strongSwan's forms (`identification.c`): "@@" is an e-mail
        // identity, a type prefix names the type. Taken as a host name,
        // either would fail every authentication at run time.
        if let Some(email) = text.strip_prefix("@@") {
            return if ok(email) { Ok(Identity::Email(email.to_string())) } else { refuse("") };
        }
        // Wildcards, distinguished names and key IDs would be taken for host
        // names below and fail every authentication.
        if text.starts_with('%') || text == "*" {
            return refuse("; a wildcard matches no one here: name the peer's identity");
        }
        if text.contains('=') || text.starts_with("@#") {
            return refuse(
                "; Causeway authenticates with pre-shared keys, so takes no distinguished name, key ID or other \
                 identity type",
            );
        }
        if let Some((kind, value)) = text.split_once(':') {
            return match kind.to_ascii_lowercase().as_str() {
                _ if !ok(value) => refuse(""),
                "fqdn" | "dns" => Ok(Identity::Fqdn(value.to_string())),
                "email" | "rfc822" | "userfqdn" => Ok(Identity::Email(value.to_string())),
                // strongSwan takes the text after these as the identity's
                // bytes, not as an address: the two ends would disagree.
                "ipv4" | "ipv6" => refuse("; write the address alone, without the type"),
                _ => refuse(
                    "; Causeway authenticates with pre-shared keys, so takes no distinguished name, key ID or other \
                     identity type",
                ),
            };
        }
        let fqdn = text.strip_prefix('@').unwrap_or(text);
        if !ok(fqdn) {
            return refuse("");
        }
        if !text.starts_with('@') && fqdn.contains('@') {
            Ok(Identity::Email(fqdn.to_string()))
        } else {
            Ok(Identity::Fqdn(fqdn.to_string()))
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Address(a) => write!(f, "{a}"),
            Identity::Fqdn(s) | Identity::Email(s) => f.write_str(s),
        }
    }
}

/// When ESP goes inside UDP (port 4500, RFC 3948).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// Only when IKE detects a NAT; raw ESP (IP protocol 50) otherwise, as
    /// an SRX does by default.
    Auto,
    /// Always, as strongSwan's `encap = yes`: through firewalls that pass
    /// only UDP, and towards peers whose ESP runs in userspace.
    Always,
}

/// A pre-shared key. No Debug output of the bytes, zeroized on drop.
#[derive(Clone)]
pub struct Psk(pub Zeroizing<Vec<u8>>);

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Psk(<{} bytes>)", self.0.len())
    }
}

impl PartialEq for Psk {
    /// Constant time: a reload compares the old and new key.
    fn eq(&self, other: &Psk) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct IpsecPeer {
    pub name: String,
    /// The peer's IKE addresses, in order of preference (failover as for
    /// WireGuard endpoints). Empty: the peer always initiates.
    pub endpoints: Vec<Endpoint>,
    /// Prefixes routed to this peer and accepted from it.
    pub allowed_ips: Vec<IpNet>,
    pub local_id: Identity,
    pub remote_id: Identity,
    pub psk: Psk,
    pub ike_proposals: Vec<IkeProposal>,
    pub esp_proposals: Vec<EspProposal>,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub ike_lifetime: Duration,
    pub child_lifetime: Duration,
    /// Zero: no liveness checks.
    pub dpd_interval: Duration,
    /// Behind a NAT, a one-byte keepalive to the peer this often (RFC 3948
    /// §2.3) holds the mapping open; zero: none.
    pub nat_keepalive: Duration,
    /// Start IKE at once (and again when it fails), not only on traffic.
    pub initiate: bool,
    pub encap: Encap,
    pub failover_after: Duration,
    /// The site this peer is one gateway of.
    pub site: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(text: &str) -> Result<Endpoint, EndpointError> {
        text.parse()
    }

    #[test]
    fn a_mistyped_ipv4_address_is_not_taken_for_a_name() {
        // Each of these the C resolver reads as an address other than the
        // one meant (198.18.0.1, 10.1.8.2, 127.0.0.1), or as none.
        for host in ["198.18.1", "10.001.010.2", "0x7f.1", "0x7f000001", "198.18.2.256", "gw1.example.1"] {
            let e = endpoint(&format!("{host}:51820")).unwrap_err();
            assert_eq!(e, EndpointError::NotIpv4(host.to_string()), "{host}");
            assert!(e.to_string().contains("not an IPv4 address"), "{e}");
        }
        for host in ["gw1.dc-east.example", "3com.example", "gw-2.example.", "localhost", "a1b2"] {
            assert_eq!(endpoint(&format!("{host}:51820")), Ok(Endpoint::Host { host: host.into(), port: 51820 }));
        }
    }

    #[test]
    fn endpoint_errors_say_what_to_write() {
        assert_eq!(endpoint("2001:db8::1"), Err(EndpointError::V6NoPort("2001:db8::1".into())));
        assert!(endpoint("2001:db8::1").unwrap_err().to_string().contains("[2001:db8::1]:51820"));
        assert_eq!(
            endpoint("2001:db8::1:4500").unwrap_err(),
            EndpointError::V6NoPort("2001:db8::1:4500".into()),
            "a valid IPv6 address: its last group is not taken for a port"
        );
        assert_eq!(
            endpoint("2001:db8::1:51820"),
            Err(EndpointError::Brackets { host: "2001:db8::1".into(), port: 51820 }),
            "51820 is no IPv6 group, so it is the port"
        );
        assert_eq!(endpoint("fd00::2x:51820"), Err(EndpointError::Host("fd00::2x".into())));
        assert_eq!(
            endpoint("fd00::2:x"),
            Err(EndpointError::Port("x".into())),
            "not an address, and what follows the last colon is no port"
        );
        assert_eq!(endpoint("[2001:db8::1]"), Err(EndpointError::NoPort("[2001:db8::1]".into())));
        assert_eq!(endpoint("udp://198.18.1.2:51820"), Err(EndpointError::Scheme("udp://198.18.1.2:51820".into())));
        let ike = EndpointError::Host("a b".into()).describe(IKE_ENDPOINT_HINT);
        assert!(ike.contains("[fd00::2]:4500") && !ike.contains("51820"), "{ike}");
    }

    #[test]
    fn a_link_local_endpoint_may_name_its_interface() {
        let e = endpoint("[fe80::1%lo]:51820").unwrap();
        assert_eq!(e, Endpoint::Host { host: "fe80::1%lo".into(), port: 51820 });
        assert_eq!(e.to_string(), "[fe80::1%lo]:51820");
        let lo = std::fs::read_to_string("/sys/class/net/lo/ifindex").unwrap();
        match e.resolve().unwrap()[..] {
            [SocketAddr::V6(a)] => {
                assert_eq!((a.ip().to_string(), a.port()), ("fe80::1".into(), 51820));
                assert_eq!(a.scope_id().to_string(), lo.trim(), "the zone is the interface's index");
            }
            ref other => panic!("{other:?}"),
        }
        assert!(matches!(endpoint("[fe80::1%2]:51820"), Ok(Endpoint::Addr(SocketAddr::V6(a))) if a.scope_id() == 2));
        assert!(endpoint("[fe80::1%a/b]:51820").is_err());
        assert!(endpoint("[fe80::1%lo]:0").is_err());
    }

    #[test]
    fn identities_take_strongswans_prefixes() {
        let id = |t: &str| t.parse::<Identity>();
        assert_eq!(id("@@ops@peer.example"), Ok(Identity::Email("ops@peer.example".into())));
        assert_eq!(id("fqdn:gw1.a.example"), Ok(Identity::Fqdn("gw1.a.example".into())));
        assert_eq!(id("email:ops@a.example"), Ok(Identity::Email("ops@a.example".into())));
        assert_eq!(id("userfqdn:ops@a.example"), Ok(Identity::Email("ops@a.example".into())));
        assert!(id("ipv4:198.18.0.1").unwrap_err().to_string().contains("the address alone"));
        assert!(id("ipv6:fd00::1").is_err());
        for wild in ["%any", "%any6", "*"] {
            assert!(id(wild).unwrap_err().to_string().contains("wildcard"), "{wild}");
        }
        assert!(id("CN=srx1.example").unwrap_err().to_string().contains("pre-shared keys"));
        assert!(id("@#0a1b").is_err());
        assert!(id("keyid:0x1234").unwrap_err().to_string().contains("pre-shared keys"));
        assert!(id("asn1dn:C=CH, O=x").is_err());
        assert!(id("@@").is_err() && id("fqdn:").is_err());
    }
}
