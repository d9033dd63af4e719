//! One configuration from two sources: the file, and the registry's view.
//! The result is what `reload::reconcile` applies, whichever of the two
//! changed.
//!
//! Rules, so that no store content can break what the file set up:
//! - the file wins: a registry site named like a `[[site]]` of the file is
//!   left out (its gateways still join that site, which keeps the file's
//!   prefixes: the file says where the site is, the registry who serves
//!   it), and so is a record whose key or name is a file peer's;
//! - this gateway's own site is neither a remote site nor a source of
//!   peers (its gateways are our neighbours, not tunnel ends);
//! - each address belongs to one peer or site only: a registry prefix or
//!   tunnel address overlapping one already taken (the file's first, and
//!   our own site's, then the registry's in the order its keys were
//!   created, so an established site keeps its prefixes when a newer one
//!   claims them) is left out; the rest of a site stays;
//! - a record with our own public key, or one already used by another
//!   record, is left out;
//! - the registry adds at most `MAX_GATEWAYS` peers, from at most twice as
//!   many gateway records, and sites listing at most `MAX_PREFIXES`
//!   prefixes, whole sites with their gateways, the first created first;
//!   the rest is left out (and told as a count), and so are the reasons
//!   beyond the first `MAX_LEFT_OUT_LINES`.
//!
//! A site prefix that one of the site's IPsec gateways (the file's peers
//! naming the site) cannot carry, because no selector of its remote_ts
//! reaches it, is reported (`Uncarried`): the flows of it that the site's
//! table sends to that gateway are dropped by its SA's selectors. The
//! configuration refuses this for a `[[site]]` of the file; a registry
//! site arrives later, so it can only be told. The prefix stays routed:
//! the site's gateways share its routes, so holding it back would take it
//! from the site's WireGuard gateways too, and with `install_routes` its
//! kernel route would go, and its traffic leave unencrypted by the
//! default route.
//!
//! A learnt peer is named `{site}.{name}`, belongs to `site`, is routed its
//! tunnel address, and has `[registry]`'s keepalive and failover.

use std::collections::HashSet;

use causeway_config::{Config, IpsecPeer, Peer, Site};
use causeway_wireguard::PublicKey;
use ipnet::IpNet;

use super::view::{Record, View};

/// The most gateways of other sites the registry may add as peers. A
/// fleet of a few DCs has a few dozen; each peer handshakes and is
/// watched, so a record writer gone wrong (a script in a loop) must not
/// make every gateway of the fleet run tens of thousands of them.
pub const MAX_GATEWAYS: usize = 1024;
/// The most prefixes the registry's sites may list, counted as listed,
/// before any is left out for an overlap (a site record holds up to
/// `record::MAX_LIST`). Each one is checked for overlap against all taken
/// before it, a scan that grows with the square of their number: at this
/// bound a merge stays within milliseconds, under the state lock.
pub const MAX_PREFIXES: usize = 4096;
/// The most gateway records the merge reads, taken or not: a record left
/// out for a clash costs an overlap scan and a log line too, and a writer
/// gone wrong can write any number of those.
const MAX_READ_GATEWAYS: usize = 2 * MAX_GATEWAYS;
/// The most reasons `left_out` lists one by one; the rest are counted.
const MAX_LEFT_OUT_LINES: usize = 100;

/// The merged configuration and what was left out of it, with why.
#[derive(Debug, Clone)]
pub struct Merged {
    pub config: Config,
    pub left_out: Vec<String>,
    /// Site prefixes an IPsec gateway of the site cannot carry, once each:
    /// apart from `left_out`, as they are routed, and shown in `sites`.
    pub uncarried: Vec<Uncarried>,
}

/// A registry site's prefix that an IPsec gateway of the site cannot
/// carry: no selector of its `remote_ts` reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncarried {
    pub site: String,
    pub prefix: IpNet,
    /// The IPsec peer's name.
    pub peer: String,
    /// Its `remote_ts`, listed.
    pub remote_ts: String,
}

impl Uncarried {
    /// What a change is told by: the selectors' wording is not part of it,
    /// so editing a remote_ts that still misses the prefix is not news.
    pub fn key(&self) -> (&str, IpNet, &str) {
        (&self.site, self.prefix, &self.peer)
    }

    pub fn reason(&self) -> String {
        format!(
            "{} lies outside every remote_ts selector of IPsec peer \"{}\" ({}): the flows the site sends through \
             that peer are dropped (outbound_outside_traffic_selectors); widen its remote_ts or correct the site's \
             prefixes",
            self.prefix, self.peer, self.remote_ts
        )
    }
}

/// The site's IPsec gateways that cannot carry `net`.
pub(crate) fn unreached_by(site: &str, net: &IpNet, ipsec_peers: &[IpsecPeer]) -> Vec<Uncarried> {
    ipsec_peers
        .iter()
        .filter(|p| p.site.as_deref() == Some(site))
        .filter_map(|p| {
            causeway_config::unreached(net, &p.remote_ts).map(|remote_ts| Uncarried {
                site: site.to_string(),
                prefix: *net,
                peer: p.name.clone(),
                remote_ts,
            })
        })
        .collect()
}

/// Prefixes already given to a peer or a site, with whose they are.
struct Taken(Vec<(IpNet, String)>);

impl Taken {
    fn clash(&self, net: &IpNet) -> Option<&(IpNet, String)> {
        self.0.iter().find(|(other, _)| other.contains(net) || net.contains(other))
    }
}

/// The registry sites past `MAX_PREFIXES`: every site from the first, in
/// creation order, whose listed prefixes would take the total past it, so
/// the sites taken are the first created, whatever their sizes. A whole
/// site or none of it: part of a site's prefixes would send the rest of
/// its traffic wherever the other routes say. Decided from the site
/// records alone, before any record is placed, so that a site's gateways
/// are left out with it wherever they come in creation order: they would
/// be peers of a site with no routes. Our own site and the file's sites
/// are not read, so they do not count.
fn sites_past_limit<'a>(records: &[Record<'a>], own_site: &str, file_sites: &HashSet<&str>) -> HashSet<&'a str> {
    let mut listed = 0;
    let mut past = HashSet::new();
    for record in records {
        if let Record::Site(name, nets) = record {
            if *name == own_site || file_sites.contains(name.as_str()) {
                continue;
            }
            if past.is_empty() && listed + nets.len() <= MAX_PREFIXES {
                listed += nets.len();
            } else {
                past.insert(name.as_str());
            }
        }
    }
    past
}

/// `file` with the registry's sites and gateways added; `own_site` is the
/// site this gateway serves.
pub fn merge(file: &Config, view: &View, own_site: &str) -> Merged {
    let (keepalive, failover) = file
        .registry
        .as_ref()
        .map_or((causeway_config::DEFAULT_REGISTRY_KEEPALIVE, causeway_config::DEFAULT_REGISTRY_FAILOVER), |r| {
            (r.persistent_keepalive, r.failover_after)
        });
    let mut config = file.clone();
    let mut left_out = Vec::new();
    let mut uncarried = Vec::new();
    let mut taken = Taken(Vec::with_capacity(file.peers.len() + view.members.len() + view.sites.len() * 2));
    for p in &file.peers {
        taken.0.extend(p.allowed_ips.iter().map(|n| (*n, format!("peer {}", p.name))));
    }
    for p in &file.ipsec_peers {
        taken.0.extend(p.allowed_ips.iter().map(|n| (*n, format!("peer {}", p.name))));
    }
    for s in &file.sites {
        taken.0.extend(s.prefixes.iter().map(|n| (*n, format!("site {}", s.name))));
    }
    // Our own site's prefixes are our LAN: a remote site or gateway given
    // part of them would draw local traffic into the tunnel.
    if let Some(own) = view.sites.get(own_site) {
        taken.0.extend(own.iter().map(|n| (*n, format!("this gateway's own site {own_site}"))));
    }
    let file_sites: HashSet<&str> = file.sites.iter().map(|s| s.name.as_str()).collect();
    let mut names: HashSet<String> = file.peers.iter().map(|p| p.name.clone()).collect();
    names.extend(file.ipsec_peers.iter().map(|p| p.name.clone()));
    let mut keys: HashSet<PublicKey> = file.peers.iter().map(|p| p.public_key).collect();
    keys.insert(file.interface.private_key.public_key());
    config.peers.reserve(view.members.len().min(MAX_GATEWAYS));
    // The file's peers come first in `config.peers`; the rest are the registry's.
    let file_peers = config.peers.len();
    let (mut gateways_read, mut gateways_beyond, mut gateways_of_sites_past) = (0, 0, 0);
    // Sites and gateways in one order, the first created first: a site's
    // prefix and a gateway's tunnel address that overlap go to the older
    // record, as two sites' prefixes do.
    let records = view.in_creation_order();
    let sites_past = sites_past_limit(&records, own_site, &file_sites);
    for record in records {
        match record {
            Record::Site(name, nets) => {
                if name == own_site {
                    continue;
                }
                if file_sites.contains(name.as_str()) {
                    left_out
                        .push(format!("site {name}: the configuration file's [[site]] of that name is used instead"));
                    continue;
                }
                if sites_past.contains(name.as_str()) {
                    continue;
                }
                let mut prefixes: Vec<IpNet> = Vec::with_capacity(nets.len());
                for n in nets {
                    if let Some((other, whose)) = taken.clash(n) {
                        left_out.push(format!("site {name}: {n} overlaps {other} of {whose}"));
                        continue;
                    }
                    // A record may list a prefix twice (nothing upstream dedups
                    // it); once is enough for the routes, and for the telling.
                    if prefixes.contains(n) {
                        continue;
                    }
                    uncarried.extend(unreached_by(name, n, &file.ipsec_peers));
                    prefixes.push(*n);
                }
                taken.0.extend(prefixes.iter().map(|n| (*n, format!("site {name}"))));
                config.sites.push(Site { name: name.clone(), prefixes });
            }
            Record::Gateway(m) => {
                if m.site == own_site {
                    continue;
                }
                if sites_past.contains(m.site.as_str()) {
                    gateways_of_sites_past += 1;
                    continue;
                }
                if config.peers.len() - file_peers == MAX_GATEWAYS || gateways_read == MAX_READ_GATEWAYS {
                    gateways_beyond += 1;
                    continue;
                }
                gateways_read += 1;
                let name = m.peer_name();
                if names.contains(&name) {
                    left_out.push(format!("gateway {name}: a peer of the configuration file has that name"));
                    continue;
                }
                if keys.contains(&m.public_key) {
                    left_out.push(format!("gateway {name}: its public key is this gateway's or another peer's"));
                    continue;
                }
                if let Some(t) = m.tunnel_address {
                    if let Some((other, whose)) = taken.clash(&t) {
                        left_out.push(format!("gateway {name}: tunnel address {t} overlaps {other} of {whose}"));
                        continue;
                    }
                    taken.0.push((t, format!("peer {name}")));
                }
                names.insert(name.clone());
                keys.insert(m.public_key);
                config.peers.push(Peer {
                    name,
                    public_key: m.public_key,
                    preshared_key: None,
                    endpoints: m.endpoints.clone(),
                    allowed_ips: m.tunnel_address.into_iter().collect(),
                    persistent_keepalive: keepalive,
                    failover_after: failover,
                    site: Some(m.site.clone()),
                });
            }
        }
    }
    // Counts, not one line per record: a registry flooded with records
    // would flood the log too.
    if left_out.len() > MAX_LEFT_OUT_LINES {
        let more = left_out.len() - MAX_LEFT_OUT_LINES;
        left_out.truncate(MAX_LEFT_OUT_LINES);
        left_out.push(format!("{more} more left out, for reasons like those above"));
    }
    if gateways_beyond > 0 {
        left_out.push(format!(
            "{gateways_beyond} gateway record(s), the last created: the registry adds at most {MAX_GATEWAYS} peers, \
             from its first {MAX_READ_GATEWAYS} gateway records"
        ));
    }
    if !sites_past.is_empty() {
        left_out.push(format!(
            "{} site record(s), the last created, and their {gateways_of_sites_past} gateway record(s): the registry \
             adds sites listing at most {MAX_PREFIXES} prefixes in all, whole sites with their gateways",
            sites_past.len()
        ));
    }
    Merged { config, left_out, uncarried }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::registry::record::{encode_site, Layout, Member};
    use causeway_config::{Endpoint, Interface, Registry};
    use causeway_wireguard::StaticSecret;
    use std::time::Duration;

    pub(crate) fn file_config(secret: &StaticSecret, site: &str, name: &str) -> Config {
        Config {
            interface: Interface {
                addresses: vec!["10.255.1.1/32".parse().unwrap()],
                dns_refresh: None,
                ..Interface::with_defaults(secret.clone())
            },
            peers: Vec::new(),
            ipsec_peers: Vec::new(),
            sites: Vec::new(),
            registry: Some(Registry {
                endpoints: vec!["http://127.0.0.1:2379".into()],
                prefix: "/causeway".into(),
                site: site.into(),
                name: name.into(),
                advertise: vec![Endpoint::Addr("198.18.0.1:51820".parse().unwrap())],
                lease_ttl: Duration::from_secs(10),
                tls: None,
                user: None,
                persistent_keepalive: 1,
                failover_after: Duration::from_secs(3),
            }),
        }
    }

    pub(crate) fn member(site: &str, name: &str, n: u8) -> Member {
        Member {
            site: site.into(),
            name: name.into(),
            public_key: StaticSecret::random(&mut rand_core::OsRng).public_key(),
            endpoints: vec![Endpoint::Addr(format!("198.18.0.{n}:51820").parse().unwrap())],
            tunnel_address: Some(format!("10.255.0.{n}/32").parse().unwrap()),
            version: "0.1.0".into(),
        }
    }

    /// An IPsec peer of the file that serves `site`, with `remote_ts`
    /// (none: the default, which reaches everything). It never initiates,
    /// so a test that runs it sends nothing.
    pub(crate) fn ipsec_peer(name: &str, site: &str, remote_ts: &[&str]) -> IpsecPeer {
        let ts: Vec<String> = remote_ts.iter().map(|t| format!("\"{t}\"")).collect();
        let ts = if ts.is_empty() { String::new() } else { format!("remote_ts = [{}]\n", ts.join(", ")) };
        let extra = format!("initiate = false\nremote_id = \"{name}.example\"\n{ts}");
        let mut p = crate::ipsec::convert::tests::parsed_peer(name, &extra);
        p.site = Some(site.into());
        p
    }

    /// A view as the store would give it, each record created in the
    /// order given, members first.
    pub(crate) fn view(members: Vec<Member>, sites: &[(&str, &[&str])]) -> View {
        let l = Layout::new("/causeway");
        let mut v = View::default();
        v.revision = 7;
        let mut created = 0;
        for m in members {
            created += 1;
            let o = v.put(&l, l.gateway(&m.site, &m.name).as_bytes(), &m.encode(), created);
            assert!(o.changed && o.refused.is_none(), "{o:?}");
        }
        for (site, nets) in sites {
            created += 1;
            let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
            let o = v.put(&l, l.site(site).as_bytes(), &encode_site(&nets), created);
            assert!(o.changed && o.refused.is_none(), "{o:?}");
        }
        v
    }

    #[test]
    fn the_registry_adds_so_many_peers_and_prefixes_the_oldest_first() {
        let me = StaticSecret::random(&mut rand_core::OsRng);
        let file = file_config(&me, "east", "gw1");
        let members: Vec<Member> = (0..MAX_GATEWAYS + 3)
            .map(|i| {
                let mut m = member("west", &format!("gw{i}"), 1);
                m.tunnel_address =
                    Some(IpNet::new(std::net::Ipv4Addr::from(0x0aff_0000 + i as u32).into(), 32).unwrap());
                m
            })
            .collect();
        // 64 prefixes a site, 10.S.P.0/24 (60 in the first): one site more
        // than fits, then a small one that would fit, but was created after it.
        let per_site = crate::registry::record::MAX_LIST;
        let mut nets: Vec<Vec<String>> = (0..MAX_PREFIXES / per_site + 1)
            .map(|s| (0..per_site).map(|p| format!("10.{}.{p}.0/24", s + 1)).collect())
            .collect();
        nets[0].truncate(per_site - 4);
        nets.push(vec!["10.200.0.0/24".into()]);
        let names: Vec<String> = (0..nets.len()).map(|s| format!("site{s}")).collect();
        let refs: Vec<Vec<&str>> = nets.iter().map(|n| n.iter().map(String::as_str).collect()).collect();
        let sites: Vec<(&str, &[&str])> = names.iter().zip(&refs).map(|(n, r)| (n.as_str(), &r[..])).collect();
        let m = merge(&file, &view(members.clone(), &sites), "east");
        assert_eq!(m.config.peers.len(), MAX_GATEWAYS);
        let first_created: Vec<String> = members[..MAX_GATEWAYS].iter().map(|g| g.peer_name()).collect();
        assert_eq!(m.config.peers.iter().map(|p| p.name.clone()).collect::<Vec<_>>(), first_created);
        assert_eq!(m.config.sites.len(), MAX_PREFIXES / per_site);
        assert!(m.config.sites.iter().zip(&nets).all(|(s, n)| s.prefixes.len() == n.len()), "whole sites only");
        assert_eq!(m.config.sites.last().unwrap().name, format!("site{}", MAX_PREFIXES / per_site - 1));
        assert_eq!(
            m.left_out,
            [
                format!(
                    "3 gateway record(s), the last created: the registry adds at most {MAX_GATEWAYS} peers, \
                     from its first {MAX_READ_GATEWAYS} gateway records"
                ),
                format!(
                    "2 site record(s), the last created, and their 0 gateway record(s): the registry adds sites \
                     listing at most {MAX_PREFIXES} prefixes in all, whole sites with their gateways"
                ),
            ]
        );
        // Records left out for another reason do not count against the bound.
        let mut clash = member("west", "clash", 1);
        clash.tunnel_address = members[0].tunnel_address;
        let mut fewer = vec![clash];
        fewer.extend(members[..MAX_GATEWAYS].iter().cloned());
        let m = merge(&file, &view(fewer, &[]), "east");
        assert_eq!(m.config.peers.len(), MAX_GATEWAYS, "{:?}", m.left_out);
        assert_eq!(m.left_out.len(), 1, "{:?}", m.left_out);
    }

    #[test]
    fn a_registry_gateway_of_a_file_site_joins_it_with_the_files_prefixes() {
        let me = StaticSecret::random(&mut rand_core::OsRng);
        let mut file = file_config(&me, "east", "gw1");
        file.sites.push(Site { name: "north".into(), prefixes: vec!["10.4.0.0/16".parse().unwrap()] });
        let m = merge(&file, &view(vec![member("north", "gw1", 1)], &[("north", &["10.40.0.0/16"])]), "east");
        let peers: Vec<_> = m.config.peers.iter().map(|p| (p.name.as_str(), p.site.as_deref())).collect();
        assert_eq!(peers, [("north.gw1", Some("north"))]);
        let sites: Vec<_> = m.config.sites.iter().map(|s| (s.name.as_str(), s.prefixes.clone())).collect();
        assert_eq!(sites, [("north", vec!["10.4.0.0/16".parse().unwrap()])]);
        assert_eq!(m.left_out, ["site north: the configuration file's [[site]] of that name is used instead"]);
    }

    #[test]
    fn a_site_past_the_prefix_limit_is_left_out_with_its_gateways() {
        let me = StaticSecret::random(&mut rand_core::OsRng);
        let file = file_config(&me, "east", "gw1");
        // Sites listing exactly MAX_PREFIXES, then one more: its gateway,
        // created before any site, is left out with it; a gateway of a
        // taken site and one of a site with no record yet are peers.
        let per_site = crate::registry::record::MAX_LIST;
        let mut nets: Vec<Vec<String>> = (0..MAX_PREFIXES / per_site)
            .map(|s| (0..per_site).map(|p| format!("10.{}.{p}.0/24", s + 1)).collect())
            .collect();
        nets.push(vec!["10.200.0.0/24".into()]);
        let names: Vec<String> = (0..nets.len()).map(|s| format!("site{s}")).collect();
        let refs: Vec<Vec<&str>> = nets.iter().map(|n| n.iter().map(String::as_str).collect()).collect();
        let sites: Vec<(&str, &[&str])> = names.iter().zip(&refs).map(|(n, r)| (n.as_str(), &r[..])).collect();
        let last = names.last().unwrap();
        let members = vec![member(last, "gw1", 1), member("site0", "gw1", 2), member("unlisted", "gw1", 3)];
        let m = merge(&file, &view(members, &sites), "east");
        let peers: Vec<&str> = m.config.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(peers, ["site0.gw1", "unlisted.gw1"], "{:?}", m.left_out);
        assert_eq!(m.config.sites.len(), MAX_PREFIXES / per_site);
        assert!(m.config.sites.iter().all(|s| s.name != *last));
        assert_eq!(
            m.left_out,
            [format!(
                "1 site record(s), the last created, and their 1 gateway record(s): the registry adds sites \
                 listing at most {MAX_PREFIXES} prefixes in all, whole sites with their gateways"
            )]
        );
    }

    #[test]
    fn records_left_out_still_count_against_what_the_merge_reads() {
        let me = StaticSecret::random(&mut rand_core::OsRng);
        let file = file_config(&me, "east", "gw1");
        // Every record claims the first one's tunnel address.
        let members: Vec<Member> = (0..MAX_READ_GATEWAYS + 5).map(|i| member("west", &format!("gw{i}"), 1)).collect();
        let m = merge(&file, &view(members, &[]), "east");
        assert_eq!(m.config.peers.len(), 1);
        assert_eq!(m.left_out.len(), MAX_LEFT_OUT_LINES + 2, "the reasons listed, their count, the records beyond");
        assert!(
            m.left_out[0].starts_with("gateway west.gw1: tunnel address 10.255.0.1/32 overlaps"),
            "{}",
            m.left_out[0]
        );
        let clashes = MAX_READ_GATEWAYS - 1;
        assert_eq!(
            m.left_out[MAX_LEFT_OUT_LINES],
            format!("{} more left out, for reasons like those above", clashes - MAX_LEFT_OUT_LINES)
        );
        assert!(m.left_out[MAX_LEFT_OUT_LINES + 1].starts_with("5 gateway record(s), the last created"));
    }

    #[test]
    fn other_sites_gateways_become_peers() {
        let me = StaticSecret::random(&mut rand_core::OsRng);
        let file = file_config(&me, "east", "gw1");
        let (w1, w2, e2) = (member("west", "gw1", 3), member("west", "gw2", 4), member("east", "gw2", 2));
        let v = view(vec![w1.clone(), w2, e2], &[("west", &["10.2.0.0/16"]), ("east", &["10.1.0.0/16"])]);
        let m = merge(&file, &v, "east");
        assert!(m.left_out.is_empty(), "{:?}", m.left_out);
        let names: Vec<_> = m.config.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["west.gw1", "west.gw2"], "not our own site's gateways");
        let p = &m.config.peers[0];
        assert_eq!((p.public_key, p.site.as_deref()), (w1.public_key, Some("west")));
        assert_eq!(
            (p.endpoints.clone(), p.allowed_ips.clone()),
            (w1.endpoints, vec!["10.255.0.3/32".parse().unwrap()])
        );
        assert_eq!((p.persistent_keepalive, p.failover_after), (1, Duration::from_secs(3)));
        assert_eq!(m.config.sites, [Site { name: "west".into(), prefixes: vec!["10.2.0.0/16".parse().unwrap()] }]);
    }

    #[test]
    fn the_file_wins_and_overlaps_are_left_out() {
        let me = StaticSecret::random(&mut rand_core::OsRng);
        let mut file = file_config(&me, "east", "gw1");
        file.sites.push(Site { name: "north".into(), prefixes: vec!["10.4.0.0/16".parse().unwrap()] });
        let fixed = member("x", "y", 9);
        file.peers.push(Peer {
            name: "west.gw9".into(),
            public_key: fixed.public_key,
            preshared_key: None,
            endpoints: Vec::new(),
            allowed_ips: vec!["10.9.0.0/16".parse().unwrap()],
            persistent_keepalive: 0,
            failover_after: Duration::from_secs(10),
            site: None,
        });
        let routed = "initiate = false\nremote_id = \"north.example\"\nallowed_ips = [\"10.7.0.0/16\"]\n";
        file.ipsec_peers.push(crate::ipsec::convert::tests::parsed_peer("north-srx", routed));
        let mut same_key = member("south", "gw1", 5);
        same_key.public_key = fixed.public_key;
        let mut mine = member("south", "gw2", 6);
        mine.public_key = me.public_key();
        let mut inside = member("south", "gw3", 7);
        inside.tunnel_address = Some("10.9.0.1/32".parse().unwrap());
        let v = view(
            vec![member("west", "gw9", 3), same_key, mine, inside, member("south", "gw4", 8)],
            &[
                ("north", &["10.40.0.0/16"]),
                ("south", &["10.5.0.0/16", "10.9.1.0/24", "10.7.1.0/24"]),
                ("west", &["10.5.1.0/24"]),
            ],
        );
        let m = merge(&file, &v, "east");
        let names: Vec<_> = m.config.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["west.gw9", "south.gw4"], "the file's peer and one clean record: {:?}", m.left_out);
        let sites: Vec<_> = m.config.sites.iter().map(|s| (s.name.as_str(), s.prefixes.len())).collect();
        assert_eq!(sites, [("north", 1), ("south", 1), ("west", 0)]);
        assert_eq!(m.config.sites[0].prefixes[0].to_string(), "10.4.0.0/16", "the file's north");
        let why = m.left_out.join("\n");
        for expected in [
            "site north: the configuration file's [[site]]",
            "site south: 10.9.1.0/24 overlaps 10.9.0.0/16 of peer west.gw9",
            "site south: 10.7.1.0/24 overlaps 10.7.0.0/16 of peer north-srx",
            "site west: 10.5.1.0/24 overlaps 10.5.0.0/16 of site south",
            "gateway south.gw1: its public key",
            "gateway south.gw2: its public key",
            "gateway south.gw3: tunnel address 10.9.0.1/32 overlaps 10.9.0.0/16 of peer west.gw9",
            "gateway west.gw9: a peer of the configuration file has that name",
        ] {
            assert!(why.contains(expected), "{expected:?} in\n{why}");
        }
    }

    // A site's prefix and a gateway's tunnel address that overlap go to
    // the older record, whichever kind it is: a site written later cannot
    // take a working gateway's address, nor a gateway registered later a
    // site's prefix.
    #[test]
    fn between_a_site_and_a_gateway_the_older_record_keeps_the_address() {
        let me = StaticSecret::random(&mut rand_core::OsRng);
        let file = file_config(&me, "east", "gw1");
        // West's gateway (10.255.0.2/32) first, then a site over it.
        let v = view(vec![member("west", "gw1", 2)], &[("south", &["10.255.0.0/16", "10.6.0.0/16"])]);
        let m = merge(&file, &v, "east");
        let names: Vec<_> = m.config.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["west.gw1"], "{:?}", m.left_out);
        assert_eq!(m.config.sites, [Site { name: "south".into(), prefixes: vec!["10.6.0.0/16".parse().unwrap()] }]);
        assert_eq!(m.left_out, ["site south: 10.255.0.0/16 overlaps 10.255.0.2/32 of peer west.gw1"]);

        // The site first, then the gateway inside it.
        let l = Layout::new("/causeway");
        let mut v = View::default();
        let south: Vec<IpNet> = vec!["10.255.0.0/16".parse().unwrap()];
        v.put(&l, l.site("south").as_bytes(), &encode_site(&south), 1);
        let west = member("west", "gw1", 2);
        v.put(&l, l.gateway("west", "gw1").as_bytes(), &west.encode(), 2);
        let m = merge(&file, &v, "east");
        assert!(m.config.peers.is_empty());
        assert_eq!(m.config.sites, [Site { name: "south".into(), prefixes: south }]);
        assert_eq!(m.left_out, ["gateway west.gw1: tunnel address 10.255.0.2/32 overlaps 10.255.0.0/16 of site south"]);
    }

    // Our own site's prefixes are our LAN: a remote site, or a remote
    // gateway's tunnel address, inside them is left out, not routed into
    // the tunnel.
    #[test]
    fn nothing_remote_takes_part_of_our_own_site() {
        let me = StaticSecret::random(&mut rand_core::OsRng);
        let file = file_config(&me, "east", "gw1");
        let mut inside = member("west", "gw2", 4);
        inside.tunnel_address = Some("10.1.9.9/32".parse().unwrap());
        let v = view(
            vec![member("west", "gw1", 3), inside],
            &[("east", &["10.1.0.0/16"]), ("west", &["10.2.0.0/16", "10.1.5.0/24"])],
        );
        let m = merge(&file, &v, "east");
        let names: Vec<_> = m.config.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["west.gw1"]);
        assert_eq!(m.config.sites, [Site { name: "west".into(), prefixes: vec!["10.2.0.0/16".parse().unwrap()] }]);
        let why = m.left_out.join("\n");
        assert!(why.contains("site west: 10.1.5.0/24 overlaps 10.1.0.0/16 of this gateway's own site east"), "{why}");
        assert!(
            why.contains(
                "gateway west.gw2: tunnel address 10.1.9.9/32 overlaps 10.1.0.0/16 of this gateway's own site east"
            ),
            "{why}"
        );
    }

    // Overlaps between registry records go to the record created first,
    // whatever the names: a site or gateway added later with an earlier
    // name does not push out one that carries traffic.
    #[test]
    fn the_record_created_first_keeps_what_it_claimed() {
        let me = StaticSecret::random(&mut rand_core::OsRng);
        let file = file_config(&me, "east", "gw1");
        let mut late = member("alpha", "gw1", 4);
        late.tunnel_address = Some("10.255.0.3/32".parse().unwrap());
        let v = view(vec![member("zulu", "gw1", 3), late], &[("zulu", &["10.5.0.0/16"]), ("alpha", &["10.5.1.0/24"])]);
        let m = merge(&file, &v, "east");
        let names: Vec<_> = m.config.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["zulu.gw1"]);
        let sites: Vec<_> = m.config.sites.iter().map(|s| (s.name.as_str(), s.prefixes.len())).collect();
        assert_eq!(sites, [("zulu", 1), ("alpha", 0)]);
        let why = m.left_out.join("\n");
        assert!(why.contains("site alpha: 10.5.1.0/24 overlaps 10.5.0.0/16 of site zulu"), "{why}");
        assert!(
            why.contains("gateway alpha.gw1: tunnel address 10.255.0.3/32 overlaps 10.255.0.3/32 of peer zulu.gw1"),
            "{why}"
        );
    }

    // An IPsec gateway's SA carries only what its remote_ts reaches: a
    // registry prefix beyond it is routed to the site as any other (taking
    // it away would withdraw its kernel route) and told, once per peer
    // however often the record lists it.
    #[test]
    fn a_site_prefix_an_ipsec_gateway_cannot_carry_is_told_and_stays_routed() {
        let me = StaticSecret::random(&mut rand_core::OsRng);
        let mut file = file_config(&me, "east", "gw1");
        file.ipsec_peers.push(ipsec_peer("west-srx", "west", &["10.2.0.0/16", "10.3.0.0/16[tcp/443]"]));
        file.ipsec_peers.push(ipsec_peer("west-any", "west", &[]));
        file.ipsec_peers.push(ipsec_peer("north-srx", "north", &["10.4.0.0/16"]));
        let v = view(
            vec![member("west", "gw1", 3)],
            &[
                ("west", &["10.2.0.0/16", "10.3.0.0/16", "10.9.0.0/16", "fd00:2::/48", "10.9.0.0/16"]),
                ("north", &["10.4.0.0/16"]),
                ("south", &["10.9.1.0/24", "10.8.0.0/16"]),
            ],
        );
        let m = merge(&file, &v, "east");
        let sites: Vec<(&str, Vec<String>)> = m
            .config
            .sites
            .iter()
            .map(|s| (s.name.as_str(), s.prefixes.iter().map(ToString::to_string).collect()))
            .collect();
        let west: &[&str] = &["10.2.0.0/16", "10.3.0.0/16", "10.9.0.0/16", "fd00:2::/48"];
        let expected: [(&str, &[&str]); 3] = [("west", west), ("north", &["10.4.0.0/16"]), ("south", &["10.8.0.0/16"])];
        assert_eq!(sites, expected.map(|(n, p)| (n, p.iter().map(ToString::to_string).collect::<Vec<_>>())));
        let held: Vec<(&str, String, &str, &str)> = m
            .uncarried
            .iter()
            .map(|u| (u.site.as_str(), u.prefix.to_string(), u.peer.as_str(), u.remote_ts.as_str()))
            .collect();
        let ts = "10.2.0.0/16, 10.3.0.0/16[tcp/443]";
        assert_eq!(
            held,
            [("west", "10.9.0.0/16".into(), "west-srx", ts), ("west", "fd00:2::/48".into(), "west-srx", ts)],
            "the default selectors reach everything"
        );
        assert!(
            m.uncarried[0].reason().starts_with(
                "10.9.0.0/16 lies outside every remote_ts selector of IPsec peer \"west-srx\" \
                 (10.2.0.0/16, 10.3.0.0/16[tcp/443])"
            ),
            "{}",
            m.uncarried[0].reason()
        );
        let why = m.left_out.join("\n");
        assert!(why.contains("site south: 10.9.1.0/24 overlaps 10.9.0.0/16 of site west"), "{why}");
        assert_eq!(m.left_out.len(), 1, "{why}");
        assert_eq!(m.config.peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["west.gw1"]);
    }
}
