//! The sites half of a reload (`reload::reconcile`): sites added, changed
//! or removed as a difference. A site whose prefixes and gateways did not
//! change is left as it is, health and bucket table included; a gateway
//! that stays in its site keeps its health; peers themselves (sessions,
//! endpoints) are the peers' half's business and are never touched here.
//!
//! Runs after the peers of both protocols are applied, so that every
//! gateway a site names exists. A site named only by peers (a registry
//! site whose prefixes are not known yet) is kept with no prefixes, so its
//! gateways still show in `tunctl sites`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use causeway_config::Config;
use causeway_dataplane::peer::PeerState;
use ipnet::IpNet;

use crate::gateway::Gateway;
use crate::report::Report;

/// Makes the running sites match `cfg`.
pub fn reconcile(gw: &Gateway, cfg: &Config, report: &mut Report) {
    let now = gw.clock.now();
    let mut wanted: BTreeMap<&str, (BTreeSet<IpNet>, Vec<Arc<PeerState>>)> = BTreeMap::new();
    for s in &cfg.sites {
        wanted.entry(&s.name).or_default().0.extend(s.prefixes.iter().map(IpNet::trunc));
    }
    for p in &cfg.peers {
        if let (Some(site), Some(peer)) = (&p.site, gw.peer(&p.public_key)) {
            wanted.entry(site).or_default().1.push(peer);
        }
    }
    for p in &cfg.ipsec_peers {
        if let (Some(site), Some(peer)) = (&p.site, gw.ipsec.peer(&p.name)) {
            // The data plane's copy: health reads it (IKE has its own).
            peer.set_failover_after(p.failover_after);
            wanted.entry(site).or_default().1.push(peer);
        }
    }
    for site in gw.sites() {
        if !wanted.contains_key(site.name()) {
            gw.remove_site(site.name());
            report.removed.push(format!("site {}", site.name()));
        }
    }
    for (name, (prefixes, members)) in wanted {
        let existed = gw.site(name).is_some();
        let site = gw.add_site(name);
        let mut changed = Vec::new();
        let have: BTreeSet<IpNet> = gw.prefixes_of_site(&site).into_iter().collect();
        if have != prefixes {
            gw.set_site_prefixes(&site, &prefixes.into_iter().collect::<Vec<_>>());
            changed.push("prefixes");
        }
        if site.set_members(&members, now) {
            changed.push("gateways");
        }
        if !existed {
            report.added.push(format!("site {name}"));
        } else if !changed.is_empty() {
            report.changed.push(format!("site {name} ({})", changed.join(", ")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_dataplane::health::Down;
    use causeway_dataplane::interface::Interface;
    use causeway_wireguard::{StaticSecret, Time};

    const KEY_A: &str = "CE5vbW26f1Ayh5znQQ3b1pWt4oE+w3ScwymAsBl6lkU=";
    const PUB_B: &str = "429kEP7A6Eoqwhuq9S1svBRBfglokdMLy0ksTS3R2S8=";
    const PUB_C: &str = "lUClSgFDcN7sDt4Foo3D12hlo6Zmrh3rFXYS9g8nj1s=";
    const PUB_D: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

    fn gateway() -> Gateway {
        let iface = Interface::new("cwsite0".into(), Some(StaticSecret::random(&mut rand_core::OsRng)), 1420, 1, 0);
        Gateway::new(Arc::new(iface.unwrap()))
    }

    /// A file with sites and peers: (name, key, site, allowed IPs).
    fn config(sites: &str, peers: &[(&str, &str, Option<&str>, &str)]) -> Config {
        let mut text = format!("[interface]\nprivate_key = \"{KEY_A}\"\n\n{sites}\n");
        for (name, key, site, allowed) in peers {
            text += &format!("[[peer]]\nname = \"{name}\"\npublic_key = \"{key}\"\nallowed_ips = [{allowed}]\n");
            text += "endpoints = [\"198.18.0.9:51820\"]\n";
            if let Some(s) = site {
                text += &format!("site = \"{s}\"\n");
            }
        }
        causeway_config::parse(&text, std::path::Path::new("/test.toml")).unwrap()
    }

    const WEST: &str = "[[site]]\nname = \"west\"\nprefixes = [\"10.2.0.0/16\"]\n";

    fn members(gw: &Gateway, site: &str) -> Vec<String> {
        gw.site(site).map(|s| s.members().iter().map(|p| p.name()).collect()).unwrap_or_default()
    }

    #[test]
    fn a_site_is_added_changed_and_removed_without_touching_other_peers() {
        let gw = gateway();
        let hub = ("hub", PUB_D, None, "\"10.1.0.0/16\"");
        let gw1 = ("west.gw1", PUB_B, Some("west"), "");
        let gw2 = ("west.gw2", PUB_C, Some("west"), "");
        let r = crate::reload::reconcile(&gw, &config(WEST, &[hub, gw1]));
        assert!(r.added.contains(&"site west".to_string()), "{r}");
        assert_eq!(members(&gw, "west"), ["west.gw1"]);
        let site = gw.site("west").unwrap();
        assert_eq!(gw.prefixes_of_site(&site), ["10.2.0.0/16".parse::<IpNet>().unwrap()]);
        let hub_key = causeway_wireguard::PublicKey::from_bytes(*causeway_config::parse_key(PUB_D).unwrap());
        let hub_peer = gw.peer(&hub_key).unwrap();
        site.mark(&site.members()[0], false, Time::ZERO);

        // The same again: nothing changes, health included.
        let r = crate::reload::reconcile(&gw, &config(WEST, &[hub, gw1]));
        assert!(r.changed.is_empty() && r.added.is_empty() && r.removed.is_empty(), "{r}");
        assert!(Arc::ptr_eq(&gw.site("west").unwrap(), &site), "the same site");
        assert_eq!(site.status()[0].health.reason(), Some(Down::Marked), "health kept");

        // A second gateway: the first keeps its health; the hub peer is
        // the same peer with the same prefixes.
        let r = crate::reload::reconcile(&gw, &config(WEST, &[hub, gw1, gw2]));
        assert!(r.changed.contains(&"site west (gateways)".to_string()), "{r}");
        assert_eq!(members(&gw, "west"), ["west.gw1", "west.gw2"]);
        assert_eq!(site.status()[0].health.reason(), Some(Down::Marked));
        assert!(site.status()[1].health.is_up());
        assert!(Arc::ptr_eq(&gw.peer(hub_peer.public_key()).unwrap(), &hub_peer));

        // New prefixes: swapped in, members kept.
        let wider = "[[site]]\nname = \"west\"\nprefixes = [\"10.2.0.0/16\", \"fd00:2::/48\"]\n";
        let r = crate::reload::reconcile(&gw, &config(wider, &[hub, gw1, gw2]));
        assert!(r.changed.contains(&"site west (prefixes)".to_string()), "{r}");
        assert_eq!(gw.prefixes_of_site(&site).len(), 2);
        assert_eq!(gw.allowed_ips_of(&hub_peer), ["10.1.0.0/16".parse::<IpNet>().unwrap()]);

        // A gateway moved to no site, and the site gone: its prefixes go
        // with it; peers stay.
        let gw2_alone = ("west.gw2", PUB_C, None, "");
        let gw1_alone = ("west.gw1", PUB_B, None, "");
        let r = crate::reload::reconcile(&gw, &config("", &[hub, gw1_alone, gw2_alone]));
        assert!(r.removed.contains(&"site west".to_string()), "{r}");
        assert!(gw.site("west").is_none() && gw.routes().iter().all(|(_, o)| o.site().is_none()));
        assert_eq!(gw.peers().len(), 3);
    }

    #[test]
    fn a_prefix_moves_between_a_peer_and_a_site_in_one_reload() {
        let gw = gateway();
        let hub = |allowed| ("hub", PUB_D, None, allowed);
        let gw1 = ("west.gw1", PUB_B, Some("west"), "");
        let no_sites = "[[site]]\nname = \"west\"\nprefixes = [\"10.3.0.0/16\"]\n";
        crate::reload::reconcile(&gw, &config(no_sites, &[hub("\"10.2.0.0/16\""), gw1]));
        let lookup = |gw: &Gateway| gw.routes().lookup("10.2.0.1".parse().unwrap()).map(|r| r.label());
        assert_eq!(lookup(&gw).as_deref(), Some("peer hub"));
        crate::reload::reconcile(&gw, &config(WEST, &[hub(""), gw1]));
        assert_eq!(lookup(&gw).as_deref(), Some("site west"));
        crate::reload::reconcile(&gw, &config(no_sites, &[hub("\"10.2.0.0/16\""), gw1]));
        assert_eq!(lookup(&gw).as_deref(), Some("peer hub"));
    }

    #[test]
    fn removing_a_gateway_peer_takes_it_out_of_its_site() {
        let gw = gateway();
        let gw1 = ("west.gw1", PUB_B, Some("west"), "");
        let gw2 = ("west.gw2", PUB_C, Some("west"), "");
        crate::reload::reconcile(&gw, &config(WEST, &[gw1, gw2]));
        let r = crate::reload::reconcile(&gw, &config(WEST, &[gw2]));
        assert!(r.removed.contains(&"west.gw1".to_string()), "{r}");
        assert_eq!(members(&gw, "west"), ["west.gw2"]);
        assert_eq!(gw.site("west").unwrap().table().shares(), [causeway_dataplane::buckets::BUCKETS]);
    }
}
