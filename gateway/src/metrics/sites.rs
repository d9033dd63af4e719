//! The sites' metrics: per site, its gateways, how many are up and
//! whether it is routed; per gateway, whether it is up; and, with a
//! registry, whether the registry is stale. Read from the sites' tables
//! and health at scrape time, like every other metric.
//!
//! A site is routed when its prefixes are in the kernel routing table
//! (with `install_routes`), or, without route installation, when one of
//! its gateways is up (the data plane then carries its traffic).

use std::collections::BTreeSet;

use ipnet::IpNet;
use prometheus_client::registry::Registry;

use super::{gauge_family, Labels};
use crate::gateway::Gateway;

pub(super) fn render(r: &mut Registry, gw: &Gateway, base: &Labels) {
    let gateways = gauge_family(r, "site_gateways", "Gateways (peers) serving the site");
    let gateways_up = gauge_family(r, "site_gateways_up", "Gateways of the site that are up");
    let routed = gauge_family(
        r,
        "site_routed",
        "1 while the site's prefixes are routed: installed in the kernel (install_routes), else any gateway up",
    );
    let gateway_up =
        gauge_family(r, "site_gateway_up", "1 while the site's gateway is up (carries its share of flows)");
    let installed: Option<BTreeSet<IpNet>> = gw.kernel_routes().map(|v| v.into_iter().collect());
    for site in gw.sites() {
        let mut l = base.clone();
        l.push(("site".into(), site.name().to_string()));
        let members = site.status();
        let up = members.iter().filter(|m| m.health.is_up()).count();
        gateways.get_or_create(&l).set(members.len() as f64);
        gateways_up.get_or_create(&l).set(up as f64);
        let prefixes = gw.prefixes_of_site(&site);
        let is_routed = match &installed {
            Some(i) => !prefixes.is_empty() && prefixes.iter().all(|n| i.contains(n)),
            None => up > 0 && !prefixes.is_empty(),
        };
        routed.get_or_create(&l).set(if is_routed { 1.0 } else { 0.0 });
        for m in &members {
            let mut gl = l.clone();
            gl.push(("peer".into(), m.peer.label()));
            gateway_up.get_or_create(&gl).set(if m.health.is_up() { 1.0 } else { 0.0 });
        }
    }
    if let Some(status) = gw.registry_status() {
        let stale = gauge_family(r, "registry_stale", "1 while the registry is unreachable and its last state is kept");
        stale.get_or_create(base).set(if status.state == "stale" { 1.0 } else { 0.0 });
    }
}
