//! `tunctl sites`: one block per site (its prefixes, those an IPsec
//! gateway of it cannot carry, how many gateways
//! are up, whether its kernel routes are in), a row per gateway (health,
//! share of the flows, traffic), and the registry's state.

use causeway_gateway::api::types::{RegistryStatus, SiteStatus, SitesStatus};

use super::{bytes, rate, table, text};

/// "5s", "3m", "2h".
fn span(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

fn site_line(s: &SiteStatus) -> String {
    let prefixes = if s.prefixes.is_empty() { "no prefixes".to_string() } else { s.prefixes.join(", ") };
    let routes = match s.routes_installed {
        Some(true) => ", routes installed",
        Some(false) => ", routes not installed",
        None => "",
    };
    format!("site {}: {prefixes}; {} of {} gateways up{routes}", s.name, s.gateways_up, s.gateways.len())
}

fn gateway_rows(s: &SiteStatus) -> Vec<Vec<String>> {
    s.gateways
        .iter()
        .map(|g| {
            let state = match (&g.down_reason, g.up) {
                (_, true) => format!("up {}", span(g.state_secs)),
                (Some(why), false) => format!("down ({why}) {}", span(g.state_secs)),
                (None, false) => format!("down {}", span(g.state_secs)),
            };
            let share = if s.buckets == 0 { 0.0 } else { 100.0 * g.buckets as f64 / s.buckets as f64 };
            vec![
                format!("  {}", g.peer),
                text(g.endpoint.as_deref()),
                state,
                format!("{share:.1}%"),
                format!("{} ago", span(g.last_heard_secs)),
                format!("{} / {}", bytes(g.rx_bytes), bytes(g.tx_bytes)),
                format!("{} / {}", rate(g.rx_bytes_per_sec), rate(g.tx_bytes_per_sec)),
            ]
        })
        .collect()
}

fn registry_line(r: Option<&RegistryStatus>) -> String {
    let Some(r) = r else { return "registry: none (sites from the configuration file only)".into() };
    let why = r.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
    let site = if r.site.is_empty() { "no site".to_string() } else { format!("site {}", r.site) };
    format!(
        "registry: {} for {}{why}; {} gateways at revision {}; this gateway is {} in {site} ({})",
        r.state,
        span(r.since_secs),
        r.gateways,
        r.revision,
        r.name,
        r.endpoints.join(", ")
    )
}

/// A site's registry prefixes that one of its IPsec gateways cannot
/// carry, a line each.
fn uncarried_lines(status: &SitesStatus, site: &str) -> Vec<String> {
    let held = status.uncarried.iter().filter(|u| u.site == site);
    held.map(|u| format!("  not carried: {}", u.reason)).collect()
}

pub fn print(status: &SitesStatus) {
    if status.sites.is_empty() {
        println!("no sites");
    }
    for s in &status.sites {
        println!("{}", site_line(s));
        for line in uncarried_lines(status, &s.name) {
            println!("{line}");
        }
        if !s.gateways.is_empty() {
            table(&["  GATEWAY", "ENDPOINT", "STATE", "SHARE", "HEARD", "RX / TX", "RATE RX / TX"], &gateway_rows(s));
        }
        println!();
    }
    println!("{}", registry_line(status.registry.as_ref()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_gateway::api::types::SiteGatewayStatus;

    fn site() -> SiteStatus {
        let g = |peer: &str, up: bool, buckets| SiteGatewayStatus {
            peer: peer.into(),
            protocol: "wireguard".into(),
            public_key: None,
            endpoint: Some("198.18.0.3:51820".into()),
            up,
            down_reason: (!up).then(|| "silent".into()),
            state_secs: 300,
            last_heard_secs: 4,
            buckets,
            rx_bytes: 2048,
            tx_bytes: 0,
            rx_packets: 2,
            tx_packets: 0,
            rx_bytes_per_sec: 0,
            tx_bytes_per_sec: 0,
        };
        SiteStatus {
            name: "west".into(),
            prefixes: vec!["10.2.0.0/16".into(), "fd00:2::/48".into()],
            gateways: vec![g("west.gw1", true, 1024), g("west.gw2", false, 0)],
            gateways_up: 1,
            buckets: 1024,
            routes_installed: Some(true),
        }
    }

    #[test]
    fn a_site_reads_as_a_line_and_rows() {
        let s = site();
        assert_eq!(site_line(&s), "site west: 10.2.0.0/16, fd00:2::/48; 1 of 2 gateways up, routes installed");
        let rows = gateway_rows(&s);
        assert_eq!(rows[0][2..5], ["up 5m".to_string(), "100.0%".into(), "4s ago".into()]);
        assert_eq!(rows[1][2..4], ["down (silent) 5m".to_string(), "0.0%".into()]);
        assert_eq!(rows[0][5], "2.0 KiB / 0 B");
    }

    #[test]
    fn a_prefix_an_ipsec_gateway_cannot_carry_is_told_under_its_site() {
        use causeway_gateway::api::types::UncarriedPrefix;
        let held = |site: &str, prefix: &str| UncarriedPrefix {
            site: site.into(),
            prefix: prefix.into(),
            peer: "west-srx".into(),
            reason: format!("{prefix} lies outside every remote_ts selector of IPsec peer \"west-srx\""),
        };
        let status = SitesStatus {
            sites: vec![site()],
            registry: None,
            uncarried: vec![held("west", "10.9.0.0/16"), held("north", "10.4.0.0/16")],
        };
        assert_eq!(
            uncarried_lines(&status, "west"),
            ["  not carried: 10.9.0.0/16 lies outside every remote_ts selector of IPsec peer \"west-srx\""]
        );
        assert!(uncarried_lines(&status, "east").is_empty());
    }

    #[test]
    fn the_registry_line_says_stale_and_why() {
        assert!(registry_line(None).starts_with("registry: none"));
        let r = RegistryStatus {
            endpoints: vec!["http://198.18.0.100:2379".into()],
            site: "east".into(),
            name: "east-gw1".into(),
            state: "stale".into(),
            since_secs: 30,
            last_error: Some("connection refused".into()),
            gateways: 4,
            revision: 17,
        };
        assert_eq!(
            registry_line(Some(&r)),
            "registry: stale for 30s: connection refused; 4 gateways at revision 17; this gateway is east-gw1 in site east (http://198.18.0.100:2379)"
        );
    }
}
