//! The `sites` answer: every site this gateway sends to, its gateways'
//! health and share of the flows, whether its kernel routes are in, and
//! the registry's state.

use std::collections::BTreeSet;

use causeway_dataplane::buckets::BUCKETS;
use causeway_dataplane::peer::{Link, PeerState};
use causeway_dataplane::site::MemberStatus;
use ipnet::IpNet;

use super::types::{SiteGatewayStatus, SiteStatus, SitesStatus, UncarriedPrefix};
use crate::gateway::Gateway;
use crate::registry::Uncarried;

fn gateway(gw: &Gateway, m: &MemberStatus) -> SiteGatewayStatus {
    let now = gw.clock.now();
    let p: &PeerState = &m.peer;
    let (protocol, public_key, (rx_bytes, tx_bytes), (rx_packets, tx_packets)) = match &p.link {
        Link::WireGuard(wg) => {
            let s = wg.stats();
            ("wireguard", Some(wg.public_key().to_base64()), (s.rx_bytes, s.tx_bytes), (s.rx_packets, s.tx_packets))
        }
        Link::Ipsec(l) => ("ipsec", None, l.bytes(), l.packets()),
    };
    let (rx_rate, tx_rate) = p.rates();
    SiteGatewayStatus {
        peer: p.label(),
        protocol: protocol.into(),
        public_key,
        endpoint: p.endpoint().map(|e| e.addr.to_string()),
        up: m.health.is_up(),
        down_reason: m.health.reason().map(|r| r.name().to_string()),
        state_secs: now.saturating_since(m.health.since()).as_secs(),
        last_heard_secs: now.saturating_since(m.health.last_heard()).as_secs(),
        buckets: m.buckets,
        rx_bytes,
        tx_bytes,
        rx_packets,
        tx_packets,
        rx_bytes_per_sec: rx_rate,
        tx_bytes_per_sec: tx_rate,
    }
}

fn uncarried(u: &Uncarried) -> UncarriedPrefix {
    UncarriedPrefix { site: u.site.clone(), prefix: u.prefix.to_string(), peer: u.peer.clone(), reason: u.reason() }
}

/// Every site, by name.
pub fn sites(gw: &Gateway) -> SitesStatus {
    let installed: Option<BTreeSet<IpNet>> = gw.kernel_routes().map(|v| v.into_iter().collect());
    let sites = gw
        .sites()
        .iter()
        .map(|site| {
            let prefixes = gw.prefixes_of_site(site);
            let gateways: Vec<SiteGatewayStatus> = site.status().iter().map(|m| gateway(gw, m)).collect();
            SiteStatus {
                name: site.name().to_string(),
                routes_installed: installed
                    .as_ref()
                    .map(|i| !prefixes.is_empty() && prefixes.iter().all(|n| i.contains(n))),
                prefixes: prefixes.iter().map(ToString::to_string).collect(),
                gateways_up: gateways.iter().filter(|g| g.up).count(),
                gateways,
                buckets: BUCKETS,
            }
        })
        .collect();
    let uncarried = gw.registry().map(|r| r.uncarried().iter().map(uncarried).collect()).unwrap_or_default();
    SitesStatus { sites, registry: gw.registry_status(), uncarried }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_dataplane::interface::Interface;
    use causeway_wireguard::StaticSecret;
    use std::sync::Arc;

    #[test]
    fn a_site_with_one_gateway_down_and_the_others_share() {
        let iface = Interface::new("cwst0".into(), Some(StaticSecret::random(&mut rand_core::OsRng)), 1420, 1, 0);
        let gw = Gateway::new(Arc::new(iface.unwrap()));
        let key = || StaticSecret::random(&mut rand_core::OsRng).public_key();
        let members: Vec<_> = (1..=3).map(|i| gw.add_peer(key(), format!("west.gw{i}")).unwrap()).collect();
        members[0].set_endpoint("198.18.0.3:51820".parse().unwrap());
        let site = gw.add_site("west");
        gw.set_site_prefixes(&site, &["10.2.0.0/16".parse().unwrap()]);
        site.set_members(&members, gw.clock.now());
        site.mark(&members[1], false, gw.clock.now());
        gw.add_site("empty");

        let s = sites(&gw);
        assert_eq!(s.registry, None);
        let names: Vec<&str> = s.sites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["empty", "west"]);
        let west = &s.sites[1];
        assert_eq!(
            (west.prefixes.clone(), west.gateways_up, west.routes_installed),
            (vec!["10.2.0.0/16".into()], 2, None)
        );
        let g: Vec<(&str, bool, Option<&str>)> =
            west.gateways.iter().map(|g| (g.peer.as_str(), g.up, g.down_reason.as_deref())).collect();
        assert_eq!(g, [("west.gw1", true, None), ("west.gw2", false, Some("marked down")), ("west.gw3", true, None)]);
        assert_eq!(west.gateways[0].endpoint.as_deref(), Some("198.18.0.3:51820"));
        assert_eq!(west.gateways[0].public_key, Some(members[0].public_key().to_base64()));
        assert_eq!(west.gateways[1].buckets, 0);
        assert_eq!(west.gateways.iter().map(|g| g.buckets).sum::<usize>(), west.buckets);
        assert!(west.gateways[0].buckets > 300 && west.gateways[2].buckets > 300);
    }
}
