//! The validated configuration: every value here is usable as is.

use std::fmt;
use std::net::SocketAddr;

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
    pub ipsec_peers: Vec<crate::ipsec::IpsecPeer>,
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
    /// fail before the next is tried.
    pub failover_after: std::time::Duration,
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
