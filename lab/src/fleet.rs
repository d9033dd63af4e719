//! The fleet of issue #13 in namespaces: sites served by several gateways,
//! a router per site spreading its hosts' flows over its gateways, the
//! gateways' WAN shared with the etcd members of the registry.
//!
//! ```text
//!   site S (S = 1, 2, …)                                  WAN 198.18.0.0/24
//!   host H: 10.S.H.2 ─ 10.S.H.1 ┐                          (bridge "br0" in
//!                           router 10.S.0.1                  namespace "wan")
//!                               │ LAN 10.S.0.0/24 (bridge "lan0" in the router)
//!        ┌──────────────────────┼─────────────────────┐
//!   gateway G: 10.S.0.(10+G)                      …   │
//!        tunnel 10.255.S.G/32, WAN 198.18.0.(10·S+G) ─┼── etcd member I: 198.18.0.(100+I)
//! ```
//!
//! Each site's prefix is 10.S.0.0/16. A gateway routes its own site's
//! prefix to the router; causewayd (`install_routes`) routes the other
//! sites' prefixes into its interface while they have a gateway up. The
//! router reaches the other sites either by a kernel multipath route over
//! all its gateways that the lab writes (`SiteRouting::Static`) or by BIRD:
//! each gateway's bird exports causewayd's routes over BGP and the router's
//! bird merges them into a multipath route (`SiteRouting::Bgp`), so a
//! gateway whose causewayd dies (its TUN and routes vanish) leaves the
//! router's route, and a site none of whose gateways is up disappears.
//! Either way the router hashes flows by ports too
//! (`fib_multipath_hash_policy=1`), so several streams between two hosts
//! spread over the gateways.
//!
//! Gateway indices and site indices are 1-based, as in the addresses.
//! Sites up to 9 and gateways up to 9 per site fit the address plan (a
//! fifth gateway can join a site of four).
//!
//! Invariants: every namespace and process is registered with the lab
//! (deleted on drop, panic, Ctrl-C or the next run); fields drop in an
//! order that stops daemons before their namespaces and removes the
//! temporary directory (configurations, logs, etcd data) last.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use zeroize::Zeroizing;

use crate::bird::{self, Bird, GatewaySpeaker, RouterSpeaker};
use crate::bridge::Bridge;
use crate::etcd::EtcdCluster;
use crate::{b64, keypair, unique, Netns};

pub mod config;
mod gateway;
pub mod traffic;

pub use gateway::{FleetGateway, Transfer};

use config::{InterfaceSection, RegistrySection, SitePeer, SiteSection};

/// causewayd's WireGuard port on every gateway.
pub const LISTEN_PORT: u16 = 51820;
/// Where every gateway serves metrics, inside its own namespace.
pub const METRICS: &str = "127.0.0.1:9586";
/// The registry's key prefix (the contract's default).
pub const REGISTRY_PREFIX: &str = "/causeway";

/// How a site router reaches the other sites through its gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteRouting {
    /// A kernel multipath route over every gateway of the site, written by
    /// the lab (and rewritten when a gateway joins); it does not follow
    /// health.
    Static,
    /// BIRD on every gateway and on the router: the router's multipath
    /// route holds the gateways that have a route to the destination.
    Bgp,
}

/// The shape of a fleet.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub sites: u8,
    /// Gateways per site at build time (`Fleet::add_gateway` adds more).
    pub gateways: u8,
    /// Hosts behind each site's router.
    pub hosts: u8,
    /// etcd members on the WAN: 0 (static sites only), 1 or 3.
    pub etcd_members: usize,
    pub routing: SiteRouting,
    /// Keepalive (seconds) for every gateway's peers.
    pub keepalive: u16,
    /// `failover_after` (seconds) for static site peers, and for the
    /// peers learnt from the registry (`[registry] failover_after`).
    pub failover_after: u32,
    /// `[registry] lease_ttl` (seconds).
    pub lease_ttl: u32,
}

impl Default for FleetSpec {
    /// Two sites of two gateways and two hosts, no etcd, static routes.
    fn default() -> FleetSpec {
        FleetSpec {
            sites: 2,
            gateways: 2,
            hosts: 2,
            etcd_members: 0,
            routing: SiteRouting::Static,
            keepalive: 1,
            failover_after: 3,
            lease_ttl: 10,
        }
    }
}

/// The registry's state in a `tunctl sites --json` answer ("synced",
/// "stale", "connecting"), if it has a registry.
pub fn registry_state(sites: &serde_json::Value) -> Option<String> {
    sites["registry"]["state"].as_str().map(String::from)
}

/// "site1", "site2", …
pub fn site_name(site: u8) -> String {
    format!("site{site}")
}

/// A site's prefix, "10.S.0.0/16".
pub fn site_prefix(site: u8) -> String {
    format!("10.{site}.0.0/16")
}

/// One site: its router (with the LAN bridge), hosts and gateways. Fields
/// drop in order: gateways and birds before the router's namespace.
pub struct Site {
    pub gateways: Vec<FleetGateway>,
    pub router_bird: Option<Bird>,
    pub hosts: Vec<Netns>,
    pub lan: Bridge,
    pub router: Netns,
    pub index: u8,
    pub name: String,
}

impl Site {
    pub fn prefix(&self) -> String {
        site_prefix(self.index)
    }

    pub fn router_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.index, 0, 1)
    }

    /// Host `h` (1-based).
    pub fn host(&self, h: u8) -> &Netns {
        &self.hosts[usize::from(h) - 1]
    }

    /// Host `h`'s address, 10.S.H.2.
    pub fn host_address(&self, h: u8) -> String {
        format!("10.{}.{h}.2", self.index)
    }

    /// Gateway `g` (1-based).
    pub fn gateway(&self, g: u8) -> &FleetGateway {
        &self.gateways[usize::from(g) - 1]
    }

    pub fn gateway_mut(&mut self, g: u8) -> &mut FleetGateway {
        &mut self.gateways[usize::from(g) - 1]
    }

    /// The next hops of the router's route to `prefix` (sorted; empty when
    /// it has none).
    pub fn router_nexthops(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        bird::route_nexthops(&self.router, prefix)
    }

    /// Writes (or rewrites) the router's multipath routes to `prefixes`
    /// over all its gateways (`SiteRouting::Static`).
    fn write_static_routes(&self, prefixes: &[String]) -> anyhow::Result<()> {
        for prefix in prefixes {
            let mut args = vec!["route".to_string(), "replace".into(), prefix.clone()];
            for g in &self.gateways {
                args.extend(["nexthop".into(), "via".into(), g.lan_address().to_string()]);
            }
            self.router.ip(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        Ok(())
    }
}

/// The whole fleet. Fields drop in order: sites (their daemons, then
/// namespaces), the etcd members, the WAN, and the directory last.
pub struct Fleet {
    pub sites: Vec<Site>,
    pub etcd: Option<EtcdCluster>,
    pub wan: Bridge,
    wan_ns: Netns,
    pub spec: FleetSpec,
    dir: tempfile::TempDir,
}

impl Fleet {
    /// Builds the namespaces, links and routes of `spec`, starts the etcd
    /// members (healthy on return) and, with `SiteRouting::Bgp`, every
    /// bird; no causewayd runs yet (`start_static`, `start_registry`).
    pub fn build(spec: FleetSpec) -> anyhow::Result<Fleet> {
        if !(1..=9).contains(&spec.sites) || !(1..=9).contains(&spec.gateways) || !(1..=9).contains(&spec.hosts) {
            bail!("1 to 9 sites, gateways per site and hosts per site fit the address plan");
        }
        if spec.routing == SiteRouting::Bgp {
            bird::require_bird()?;
        }
        let dir = tempfile::Builder::new().prefix("cw-fleet-").tempdir()?;
        let wan_ns = Netns::new("wan")?;
        let wan = Bridge::new(&wan_ns, "br0", &[])?;
        let etcd = if spec.etcd_members > 0 {
            crate::etcd::require_etcd()?;
            let addrs: Vec<String> = (0..spec.etcd_members).map(|i| format!("198.18.0.{}", 100 + i)).collect();
            Some(EtcdCluster::start(&wan, &addrs.iter().map(String::as_str).collect::<Vec<_>>())?)
        } else {
            None
        };
        let mut fleet = Fleet { sites: vec![], etcd, wan, wan_ns, spec: spec.clone(), dir };
        for s in 1..=spec.sites {
            let site = fleet.build_site(s)?;
            fleet.sites.push(site);
            for _ in 0..spec.gateways {
                fleet.add_gateway(s)?;
            }
        }
        Ok(fleet)
    }

    fn build_site(&self, s: u8) -> anyhow::Result<Site> {
        let router = Netns::new(&format!("s{s}rt"))?;
        for sysctl in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.fib_multipath_hash_policy=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            router.exec("sysctl", &["-qw", sysctl])?;
        }
        let lan = Bridge::new(&router, "lan0", &[&format!("10.{s}.0.1/24")])?;
        let mut hosts = vec![];
        for h in 1..=self.spec.hosts {
            let host = Netns::new(&format!("s{s}h{h}"))?;
            crate::veth(
                &router,
                &format!("h{h}"),
                &[&format!("10.{s}.{h}.1/24")],
                &host,
                "lan0",
                &[&format!("10.{s}.{h}.2/24")],
            )?;
            host.ip(&["route", "add", "default", "via", &format!("10.{s}.{h}.1")])?;
            hosts.push(host);
        }
        let router_bird = match self.spec.routing {
            SiteRouting::Static => None,
            SiteRouting::Bgp => {
                let conf = RouterSpeaker {
                    address: Ipv4Addr::new(10, s, 0, 1),
                    local_as: bird::router_as(s),
                    gateways_range: format!("10.{s}.0.0/24").parse()?,
                    gateways_as: bird::gateways_as(s),
                }
                .to_bird_conf();
                Some(Bird::start(&router, self.dir.path(), &conf)?)
            }
        };
        Ok(Site { gateways: vec![], router_bird, hosts, lan, router, index: s, name: site_name(s) })
    }

    /// Adds a gateway to site `s` (namespace, LAN and WAN legs, routes,
    /// keys, and its bird with BGP); its causewayd is not started. With
    /// static routing the router's routes are rewritten to include it.
    /// Returns its index.
    pub fn add_gateway(&mut self, s: u8) -> anyhow::Result<u8> {
        let dir = self.dir.path().to_path_buf();
        let routing = self.spec.routing;
        let others: Vec<String> = (1..=self.spec.sites).filter(|&t| t != s).map(site_prefix).collect();
        let site = self.site_mut(s)?;
        let g = u8::try_from(site.gateways.len() + 1)?;
        if g > 9 {
            bail!("site {s} has nine gateways already");
        }
        let ns = Netns::new(&format!("s{s}gw{g}"))?;
        for sysctl in ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"] {
            ns.exec("sysctl", &["-qw", sysctl])?;
        }
        let (secret, public) = keypair();
        let ifname = unique("cw");
        let mut gw = FleetGateway {
            daemon: None,
            bird: None,
            site: s,
            index: g,
            name: format!("gw{g}"),
            config: dir.join(format!("{ifname}.toml")),
            log: dir.join(format!("{ifname}.log")),
            ifname,
            secret,
            public,
            ns,
        };
        site.lan.attach(&gw.ns, "lan0", &[&format!("{}/24", gw.lan_address())])?;
        // Its own site, behind the router (the LAN /24 is connected).
        gw.ns.ip(&["route", "add", &site_prefix(s), "via", &site.router_address().to_string()])?;
        if routing == SiteRouting::Bgp {
            let conf = GatewaySpeaker {
                address: gw.lan_address(),
                local_as: bird::gateways_as(s),
                router: site.router_address(),
                router_as: bird::router_as(s),
                interface: Some(gw.ifname.clone()),
            }
            .to_bird_conf()?;
            gw.bird = Some(Bird::start(&gw.ns, &dir, &conf)?);
        }
        site.gateways.push(gw);
        if routing == SiteRouting::Static {
            site.write_static_routes(&others)?;
        }
        let wan_addr = format!("{}/24", self.site(s)?.gateway(g).wan_address());
        let gw_ns = &self.site(s)?.gateway(g).ns;
        self.wan.attach(gw_ns, "wan0", &[&wan_addr])?;
        Ok(g)
    }

    /// Site `s` (1-based).
    pub fn site(&self, s: u8) -> anyhow::Result<&Site> {
        self.sites.get(usize::from(s).wrapping_sub(1)).with_context(|| format!("no site {s}"))
    }

    pub fn site_mut(&mut self, s: u8) -> anyhow::Result<&mut Site> {
        self.sites.get_mut(usize::from(s).wrapping_sub(1)).with_context(|| format!("no site {s}"))
    }

    /// Gateway `g` of site `s`.
    pub fn gateway(&self, s: u8, g: u8) -> &FleetGateway {
        self.sites[usize::from(s) - 1].gateway(g)
    }

    pub fn gateway_mut(&mut self, s: u8, g: u8) -> &mut FleetGateway {
        self.sites[usize::from(s) - 1].gateway_mut(g)
    }

    /// Every gateway, site by site.
    pub fn gateways(&self) -> impl Iterator<Item = &FleetGateway> {
        self.sites.iter().flat_map(|s| s.gateways.iter())
    }

    /// The fleet's temporary directory (configurations, logs, iperf3
    /// reports).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The WAN's namespace (holding the bridge).
    pub fn wan_netns(&self) -> &Netns {
        &self.wan_ns
    }

    fn interface(&self, gw: &FleetGateway) -> InterfaceSection {
        InterfaceSection {
            ifname: gw.ifname.clone(),
            private_key: Zeroizing::new(b64(gw.secret.as_bytes())),
            listen_port: LISTEN_PORT,
            address: format!("{}/32", gw.tunnel_address()),
            install_routes: true,
            metrics_listen: Some(METRICS.to_string()),
        }
    }

    /// Gateway (t, h) as a `[[peer]]` of another gateway's file: named
    /// `{site}.{name}`, `site =` its site, its key, endpoint and tunnel
    /// address, the spec's keepalive and `failover_after`.
    pub fn peer_entry(&self, t: u8, h: u8) -> SitePeer {
        let p = self.gateway(t, h);
        SitePeer {
            name: p.peer_name(),
            site: Some(site_name(t)),
            public_key: b64(p.public.as_bytes()),
            endpoints: vec![p.endpoint()],
            allowed_ips: vec![format!("{}/32", p.tunnel_address())],
            persistent_keepalive: self.spec.keepalive,
            failover_after: Some(self.spec.failover_after),
        }
    }

    /// A file for gateway (s, g) with its `[interface]` (which holds its
    /// private key, so only the fleet writes it) and the sections given.
    pub fn config_with(
        &self,
        s: u8,
        g: u8,
        sites: &[SiteSection],
        peers: &[SitePeer],
        registry: Option<&RegistrySection>,
    ) -> Zeroizing<String> {
        config::gateway_config(&self.interface(self.gateway(s, g)), sites, peers, registry)
    }

    /// Gateway (s, g)'s file with static sites: every other site as a
    /// `[[site]]`, and every gateway of theirs as a `[[peer]]` with `site =`.
    pub fn static_config(&self, s: u8, g: u8) -> Zeroizing<String> {
        let others = self.sites.iter().filter(|site| site.index != s);
        let sites: Vec<SiteSection> =
            others.clone().map(|site| SiteSection { name: site.name.clone(), prefixes: vec![site.prefix()] }).collect();
        let peers: Vec<SitePeer> =
            others.flat_map(|site| site.gateways.iter()).map(|p| self.peer_entry(p.site, p.index)).collect();
        self.config_with(s, g, &sites, &peers, None)
    }

    /// Gateway (s, g)'s file with the registry: no site and no peer, only
    /// `[registry]` naming its site and itself, every etcd member, the
    /// endpoint it advertises, and the keepalive and `failover_after` its
    /// learnt peers get. Fails without etcd.
    pub fn registry_config(&self, s: u8, g: u8) -> anyhow::Result<Zeroizing<String>> {
        let etcd = self.etcd.as_ref().context("the fleet has no etcd")?;
        let me = self.gateway(s, g);
        let registry = RegistrySection {
            endpoints: etcd.client_urls(),
            prefix: REGISTRY_PREFIX.to_string(),
            site: site_name(s),
            name: me.name.clone(),
            advertise: vec![me.endpoint()],
            lease_ttl: self.spec.lease_ttl,
            persistent_keepalive: self.spec.keepalive,
            failover_after: Some(self.spec.failover_after),
        };
        Ok(self.config_with(s, g, &[], &[], Some(&registry)))
    }

    /// Writes every site's record (`{prefix}/sites/{site}`) into etcd.
    pub fn seed_registry(&mut self) -> anyhow::Result<()> {
        let records: Vec<(String, String)> = self
            .sites
            .iter()
            .map(|s| (format!("{REGISTRY_PREFIX}/sites/{}", s.name), config::site_record(&[s.prefix()])))
            .collect();
        let etcd = self.etcd.as_mut().context("the fleet has no etcd")?;
        for (key, value) in records {
            etcd.put(&key, &value)?;
        }
        Ok(())
    }

    /// Starts gateway (s, g)'s causewayd on `config`.
    pub fn start_gateway(&mut self, s: u8, g: u8, config: &str) -> anyhow::Result<()> {
        let exe = crate::causewayd_path()?;
        self.gateway_mut(s, g).start(config, &exe)
    }

    /// Starts every gateway on its static file.
    pub fn start_static(&mut self) -> anyhow::Result<()> {
        for (s, g) in self.indices() {
            let config = self.static_config(s, g);
            self.start_gateway(s, g, &config)?;
        }
        Ok(())
    }

    /// Seeds the registry and starts every gateway on its registry file.
    pub fn start_registry(&mut self) -> anyhow::Result<()> {
        self.seed_registry()?;
        for (s, g) in self.indices() {
            let config = self.registry_config(s, g)?;
            self.start_gateway(s, g, &config)?;
        }
        Ok(())
    }

    /// (site, gateway) of every gateway.
    pub fn indices(&self) -> Vec<(u8, u8)> {
        self.gateways().map(|g| (g.site, g.index)).collect()
    }

    /// Waits until every router routes every other site through `want`
    /// next hops (with `SiteRouting::Bgp`: `want` gateways of its site
    /// have a route there; with static routing the routes are there from
    /// the start).
    pub fn wait_router_routes(&self, want: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut missing = vec![];
            for site in &self.sites {
                for other in self.sites.iter().filter(|o| o.index != site.index) {
                    let hops = site.router_nexthops(&other.prefix())?;
                    if hops.len() != want {
                        missing.push(format!("{} → {}: {hops:?}", site.name, other.prefix()));
                    }
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("routers lack {want} next hops after {timeout:?}: {}\n{}", missing.join("; "), self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The end of every causewayd log (and bird's, with BGP), for failure
    /// messages.
    pub fn logs(&self) -> String {
        let tail = |t: String| {
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        let mut out = String::new();
        for g in self.gateways() {
            out += &format!("--- {} ({}) causewayd:\n{}\n", g.peer_name(), g.ifname, tail(g.log_text()));
            if let Some(b) = &g.bird {
                out += &format!("--- {} bird:\n{}\n", g.peer_name(), tail(b.log_text()));
            }
        }
        out
    }
}
