//! Sites: `[[site]]` tables (a name and the prefixes behind it) and the
//! `site = "..."` of the peers that serve one.
//!
//! Invariants of a validated file: site names are unique and follow the
//! peer-name rule; every peer's `site` names a `[[site]]` of the file
//! (unless `[registry]` is set, when the store may define it) and is not
//! this gateway's own registry site; no two sites' prefixes overlap, and
//! no site prefix overlaps a peer's `allowed_ips` (one containing the
//! other counts, since longest-prefix match would silently split the
//! traffic between them).

use std::collections::HashMap;
use std::ops::Range;

use ipnet::IpNet;
use toml::Spanned;

use crate::checker::Checker;
use crate::locate::join;
use crate::rules;
use crate::schema::{RawPeer, RawSite};
use crate::types::Site;

/// A peer as the site checks see it: its 1-based table index, name, site
/// and prefixes, whichever its protocol.
pub(crate) struct Member<'a> {
    pub index: usize,
    pub name: &'a str,
    pub site: Option<&'a str>,
    pub allowed_ips: &'a [IpNet],
}

/// Who a prefix belongs to, by 1-based table index.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Peer(usize),
    Site(usize),
}

impl Checker<'_> {
    /// One `[[site]]` table; `index` counts them from 1.
    pub(crate) fn site(&mut self, index: usize, raw: &Spanned<RawSite>) -> Option<Site> {
        let t = format!("site[{index}]");
        let span = raw.span();
        let raw = raw.get_ref();
        let before = self.problems.len();
        let name = match &raw.name {
            Some(n) => rules::peer_name(n.get_ref())
                .map(|()| n.get_ref().clone())
                .map_err(|e| self.report(n.span(), join(&t, "name"), e))
                .ok(),
            None => {
                self.report(span.clone(), &t, "missing name: every site needs one, such as name = \"west\"");
                None
            }
        };
        if raw.prefixes.is_empty() {
            self.report(
                span,
                &t,
                "missing prefixes: the networks behind the site, such as prefixes = [\"10.2.0.0/16\"]",
            );
        }
        let prefixes = self.prefixes(&join(&t, "prefixes"), &raw.prefixes, crate::prefix::parse_allowed_ip);
        if self.problems.len() != before {
            return None;
        }
        Some(Site { name: name?, prefixes })
    }

    /// A peer's `site = "..."`, checked for its form only (whether the site
    /// exists is `site_checks`' question, once every table is read).
    pub(crate) fn peer_site(&mut self, table: &str, raw: &RawPeer) -> Option<String> {
        let s = raw.site.as_ref()?;
        match rules::peer_name(s.get_ref()) {
            Ok(()) => Some(s.get_ref().clone()),
            Err(e) => {
                self.report(s.span(), join(table, "site"), e);
                None
            }
        }
    }

    /// Across sites and peers: unique site names, sites that peers name
    /// exist, and no prefix shared between a site and anything else.
    /// `registry` says whether `[registry]` is there (even if invalid: the
    /// store may then define sites, so none is reported missing), and
    /// `own_site` is its site when it is valid.
    pub(crate) fn site_checks(
        &mut self,
        raw_sites: &[Spanned<RawSite>],
        sites: &[(usize, Site)],
        raw_peers: &[Spanned<RawPeer>],
        members: &[Member<'_>],
        registry: bool,
        own_site: Option<&str>,
    ) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, s) in sites {
            if let Some(first) = names.insert(s.name.as_str(), *i) {
                let span = raw_sites[i - 1].get_ref().name.as_ref().map_or(0..0, |n| n.span());
                self.report(
                    span,
                    join(&format!("site[{i}]"), "name"),
                    format!("name \"{}\" is already used by site[{first}]", s.name),
                );
            }
        }
        let site_span = |i: usize| raw_peers[i - 1].get_ref().site.as_ref().map_or(0..0, |s| s.span());
        for m in members {
            let Some(site) = m.site else { continue };
            if own_site == Some(site) {
                self.report(
                    site_span(m.index),
                    join(&format!("peer[{}]", m.index), "site"),
                    format!(
                        "\"{site}\" is this gateway's own site ([registry] site): the other gateways of one's own \
                         site are not its peers"
                    ),
                );
            } else if !registry && !names.contains_key(site) {
                let mut known: Vec<&str> = names.keys().copied().collect();
                known.sort_unstable();
                let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                self.report(
                    site_span(m.index),
                    join(&format!("peer[{}]", m.index), "site"),
                    format!("no [[site]] named \"{site}\" (sites in this file: {known})"),
                );
            }
        }
        self.site_overlaps(raw_sites, sites, raw_peers, members);
    }

    /// Prefix clashes that involve a site (those between two peers are
    /// `cross_checks`' to report). Sorted so that every prefix comes after
    /// the prefixes containing it; CIDR blocks are nested or disjoint, so
    /// a stack finds containment. Nested prefixes of one owner are fine.
    fn site_overlaps(
        &mut self,
        raw_sites: &[Spanned<RawSite>],
        sites: &[(usize, Site)],
        raw_peers: &[Spanned<RawPeer>],
        members: &[Member<'_>],
    ) {
        let mut all: Vec<(IpNet, Owner, usize)> = Vec::new();
        for (i, s) in sites {
            all.extend(s.prefixes.iter().enumerate().map(|(j, n)| (*n, Owner::Site(*i), j)));
        }
        if all.is_empty() {
            return;
        }
        for m in members {
            all.extend(m.allowed_ips.iter().enumerate().map(|(j, n)| (*n, Owner::Peer(m.index), j)));
        }
        all.sort_by_key(|(net, owner, j)| (net.addr().is_ipv6(), net.network(), net.prefix_len(), *owner, *j));
        let mut stack: Vec<(IpNet, Owner)> = Vec::new();
        let mut clashes = Vec::new();
        for (net, owner, j) in all {
            while stack.last().is_some_and(|(outer, _)| !outer.contains(&net)) {
                stack.pop();
            }
            let involves_site = |o: &Owner| matches!(o, Owner::Site(_)) || matches!(owner, Owner::Site(_));
            if let Some((outer, other)) = stack.iter().rev().find(|(_, o)| *o != owner && involves_site(o)) {
                clashes.push((owner, j, net, *outer, *other));
            }
            stack.push((net, owner));
        }
        clashes.sort();
        let describe = |o: Owner| match o {
            Owner::Site(i) => {
                format!("site[{i}] ({})", sites.iter().find(|(k, _)| *k == i).map_or("", |(_, s)| &s.name))
            }
            Owner::Peer(i) => format!("peer[{i}] ({})", members.iter().find(|m| m.index == i).map_or("", |m| m.name)),
        };
        for (owner, j, net, outer, other) in clashes {
            let (field, span): (String, Range<usize>) = match owner {
                Owner::Site(i) => {
                    (join(&format!("site[{i}]"), "prefixes"), raw_sites[i - 1].get_ref().prefixes[j].span())
                }
                Owner::Peer(i) => {
                    (join(&format!("peer[{i}]"), "allowed_ips"), raw_peers[i - 1].get_ref().allowed_ips[j].span())
                }
            };
            let how = if outer == net { "is also routed to".to_string() } else { format!("lies inside {outer} of") };
            self.report(
                span,
                field,
                format!("{net} {how} {}; each address may belong to one peer or site only", describe(other)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::Member;
    use crate::{Config, ConfigError};

    const KEY_A: &str = "CE5vbW26f1Ayh5znQQ3b1pWt4oE+w3ScwymAsBl6lkU=";
    const PUB_B: &str = "429kEP7A6Eoqwhuq9S1svBRBfglokdMLy0ksTS3R2S8=";
    const PUB_C: &str = "lUClSgFDcN7sDt4Foo3D12hlo6Zmrh3rFXYS9g8nj1s=";
    const PUB_D: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

    fn parse(src: &str) -> Result<Config, ConfigError> {
        crate::parse(src, Path::new("/etc/causeway/gw.toml"))
    }

    fn problems(src: &str) -> Vec<String> {
        parse(src).unwrap_err().problems().iter().map(|p| p.to_string()).collect()
    }

    fn file(rest: &str) -> String {
        format!("[interface]\nprivate_key = \"{KEY_A}\"\n\n{rest}")
    }

    /// The contract's example, less the registry: a site served by two
    /// gateways (one of each protocol), and a plain peer.
    #[cfg(unix)]
    #[test]
    fn a_site_and_its_gateways() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let psk = dir.path().join("west-gw2.psk");
        std::fs::write(&psk, "0sc2l4dGVlbiBieXRlcyBzZWNyZXQ=\n").unwrap();
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = parse(&file(&format!(
            "[[site]]\nname = \"west\"\nprefixes = [\"10.2.0.0/16\"]\n\n\
             [[peer]]\nname = \"west-gw1\"\nsite = \"west\"\npublic_key = \"{PUB_B}\"\nendpoints = [\"198.18.0.3:51820\"]\n\
             allowed_ips = [\"10.255.2.1/32\"]\npersistent_keepalive = 1\nfailover_after = 3\n\n\
             [[peer]]\nname = \"west-gw2\"\nsite = \"west\"\nprotocol = \"ipsec\"\nlocal_id = \"198.18.0.1\"\n\
             remote_id = \"198.18.0.4\"\npsk_file = \"{}\"\n",
            psk.display()
        )))
        .unwrap();
        assert_eq!((c.peers[0].site.as_deref(), c.peers[0].failover_after.as_secs()), (Some("west"), 3));
        assert_eq!(c.ipsec_peers[0].site.as_deref(), Some("west"));
        // The IPsec gateway carries the site's prefixes: its selectors
        // must reach them.
        let e = parse(&file(&format!(
            "[[site]]\nname = \"west\"\nprefixes = [\"10.2.0.0/16\"]\n\n\
             [[peer]]\nname = \"west-gw2\"\nsite = \"west\"\nprotocol = \"ipsec\"\nlocal_id = \"198.18.0.1\"\n\
             remote_id = \"198.18.0.4\"\npsk_file = \"{}\"\nremote_ts = [\"10.1.0.0/16\"]\n",
            psk.display()
        )))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(":10: peer[1].site: site \"west\"'s prefix 10.2.0.0/16 lies outside every remote_ts"),
            "{e}"
        );

        let c = parse(&file(&format!(
            "[[site]]\nname = \"west\"\nprefixes = [\"10.2.0.0/16\", \"fd00:2::/48\"]\n\n\
             [[site]]\nname = \"empty\"\nprefixes = [\"10.9.0.0/16\"]\n\n\
             [[peer]]\nname = \"west-gw1\"\nsite = \"west\"\npublic_key = \"{PUB_B}\"\nallowed_ips = [\"10.255.2.1/32\"]\n\n\
             [[peer]]\nname = \"west-gw2\"\nsite = \"west\"\npublic_key = \"{PUB_C}\"\n\n\
             [[peer]]\nname = \"hub\"\npublic_key = \"{PUB_D}\"\nallowed_ips = [\"10.1.0.0/16\"]\n"
        )))
        .unwrap();
        assert_eq!(c.sites.len(), 2);
        assert_eq!(c.sites[0].name, "west");
        assert_eq!(c.sites[0].prefixes, vec!["10.2.0.0/16".parse().unwrap(), "fd00:2::/48".parse().unwrap()]);
        assert!(c.sites[1].name == "empty", "a site without gateways is fine");
        let site: Vec<_> = c.peers.iter().map(|p| p.site.as_deref()).collect();
        assert_eq!(site, vec![Some("west"), Some("west"), None]);
        assert_eq!(c.registry, None);
    }

    #[test]
    fn an_unknown_site_is_located_and_the_known_ones_listed() {
        let p = problems(&file(&format!(
            "[[site]]\nname = \"west\"\nprefixes = [\"10.2.0.0/16\"]\n\n\
             [[peer]]\nname = \"a\"\npublic_key = \"{PUB_B}\"\nsite = \"wets\"\n"
        )));
        assert_eq!(
            p,
            vec!["/etc/causeway/gw.toml:11: peer[1].site: no [[site]] named \"wets\" (sites in this file: west)"]
        );
        let p = problems(&file(&format!("[[peer]]\nname = \"a\"\npublic_key = \"{PUB_B}\"\nsite = \"w\"\n")));
        assert_eq!(
            p,
            vec!["/etc/causeway/gw.toml:7: peer[1].site: no [[site]] named \"w\" (sites in this file: none)"]
        );
    }

    #[test]
    fn site_tables_are_checked_field_by_field() {
        let p = problems(&file(
            "[[site]]\nprefixes = [\"10.2.0.0/16\"]\n\n[[site]]\nname = \"b c\"\nprefixes = [\"10.3.0.1/16\", \"x\"]\n\n\
             [[site]]\nname = \"d\"\n",
        ));
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(p[0].starts_with("/etc/causeway/gw.toml:4: site[1]: missing name"), "{p:#?}");
        assert!(p[1].starts_with("/etc/causeway/gw.toml:8: site[2].name: expected a name"), "{p:#?}");
        assert!(p[2].starts_with("/etc/causeway/gw.toml:9: site[2].prefixes: 10.3.0.1/16 has host bits set"), "{p:#?}");
        assert!(p[3].starts_with("/etc/causeway/gw.toml:9: site[2].prefixes: \"x\" is not an IP prefix"), "{p:#?}");
        assert!(p[4].starts_with("/etc/causeway/gw.toml:11: site[3]: missing prefixes"), "{p:#?}");
        // An unknown field is the parser's error, reported alone.
        let p = problems(&file("[[site]]\nname = \"d\"\nprefixes = [\"10.4.0.0/16\"]\nweight = 2\n"));
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("/etc/causeway/gw.toml:7: site[1].weight: unknown field `weight`"), "{}", p[0]);
    }

    /// With `[registry]`, a peer may name a site only the store knows,
    /// but not this gateway's own. (Called directly: `[registry]` itself is
    /// parsed by the registry's part of validation.)
    #[test]
    fn with_a_registry_sites_may_come_from_the_store_but_not_be_our_own() {
        use crate::checker::Checker;
        use crate::schema::RawConfig;
        let src = "[[peer]]\nname = \"a\"\nsite = \"west\"\n[[peer]]\nname = \"b\"\nsite = \"east\"\n";
        let raw: RawConfig = toml::from_str(src).unwrap();
        let members: Vec<Member<'_>> = raw
            .peer
            .iter()
            .enumerate()
            .map(|(i, p)| Member {
                index: i + 1,
                name: p.get_ref().name.as_ref().unwrap().get_ref(),
                site: p.get_ref().site.as_ref().map(|s| s.get_ref().as_str()),
                allowed_ips: &[],
            })
            .collect();
        let check = |registry, own| {
            let mut c = Checker {
                source: src,
                file: Path::new("/gw.toml"),
                exposed: None,
                owners: Default::default(),
                lookup_user: false,
                problems: Vec::new(),
            };
            c.site_checks(&raw.site, &[], &raw.peer, &members, registry, own);
            c.problems.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        assert_eq!(check(false, None).len(), 2, "without a registry both sites are unknown");
        assert!(check(true, None).is_empty(), "the store may define both");
        assert_eq!(
            check(true, Some("east")),
            ["/gw.toml:6: peer[2].site: \"east\" is this gateway's own site ([registry] site): the other gateways of \
              one's own site are not its peers"]
        );
    }

    #[test]
    fn duplicate_site_names() {
        let p = problems(&file(
            "[[site]]\nname = \"w\"\nprefixes = [\"10.2.0.0/16\"]\n[[site]]\nname = \"w\"\nprefixes = [\"10.3.0.0/16\"]\n",
        ));
        assert_eq!(p, vec!["/etc/causeway/gw.toml:8: site[2].name: name \"w\" is already used by site[1]"]);
    }

    #[test]
    fn overlapping_site_prefixes() {
        let p = problems(&file(
            "[[site]]\nname = \"west\"\nprefixes = [\"10.2.0.0/16\", \"10.2.1.0/24\", \"fd00:2::/48\"]\n\n\
             [[site]]\nname = \"north\"\nprefixes = [\"10.2.3.0/24\",\n  \"fd00:2::/48\"]\n",
        ));
        assert_eq!(
            p,
            vec![
                "/etc/causeway/gw.toml:10: site[2].prefixes: 10.2.3.0/24 lies inside 10.2.0.0/16 of site[1] (west); each address may belong to one peer or site only",
                "/etc/causeway/gw.toml:11: site[2].prefixes: fd00:2::/48 is also routed to site[1] (west); each address may belong to one peer or site only",
            ]
        );
    }

    #[test]
    fn a_site_prefix_may_not_overlap_a_peer() {
        // Either way round: the peer's prefix inside the site's, and the
        // site's inside the peer's.
        let p = problems(&file(&format!(
            "[[site]]\nname = \"west\"\nprefixes = [\"10.2.0.0/16\", \"192.0.2.0/25\"]\n\n\
             [[peer]]\nname = \"west-gw1\"\nsite = \"west\"\npublic_key = \"{PUB_B}\"\nallowed_ips = [\"10.2.0.1/32\"]\n\n\
             [[peer]]\nname = \"hub\"\npublic_key = \"{PUB_C}\"\nallowed_ips = [\"192.0.2.0/24\"]\n"
        )));
        assert_eq!(
            p,
            vec![
                "/etc/causeway/gw.toml:6: site[1].prefixes: 192.0.2.0/25 lies inside 192.0.2.0/24 of peer[2] (hub); each address may belong to one peer or site only",
                "/etc/causeway/gw.toml:12: peer[1].allowed_ips: 10.2.0.1/32 lies inside 10.2.0.0/16 of site[1] (west); each address may belong to one peer or site only",
            ]
        );
    }

    #[test]
    fn a_bad_site_reference_is_reported_with_the_peers_other_problems() {
        let p = problems(&file("[[peer]]\nname = \"a\"\nsite = \"no spaces\"\n"));
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p.iter().any(|l| l.contains("gw.toml:6: peer[1].site: expected a name")), "{p:#?}");
        assert!(p.iter().any(|l| l.contains("peer[1]: missing public_key")), "{p:#?}");
    }
}
