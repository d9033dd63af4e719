//! Configuration files of a fleet gateway, in the syntax of issue #13's
//! contract (CONTRACT-13.md): `[interface]`, static `[[site]]` tables with
//! `[[peer]]`s that name their `site`, or a `[registry]` table from which
//! the gateway learns the other sites' gateways. And the site record the
//! lab seeds into etcd (`{prefix}/sites/{site}`).
//!
//! Invariants: the text is assembled from typed fields and every string is
//! written as a TOML basic string through `toml_str` (quotes and
//! backslashes escaped), so a name cannot break out of its value. The
//! private key appears only in the returned text, which the fleet writes
//! to a 0600 file, never in a log or a panic message.

use std::fmt::Write;

use zeroize::Zeroizing;

/// `[interface]`
pub struct InterfaceSection {
    pub ifname: String,
    /// Base64, as `wg genkey` prints it.
    pub private_key: Zeroizing<String>,
    pub listen_port: u16,
    /// The tunnel address with its length ("10.255.1.1/32").
    pub address: String,
    pub install_routes: bool,
    /// "127.0.0.1:9586" in the gateway's namespace, or none.
    pub metrics_listen: Option<String>,
}

/// `[[site]]`: a site the file declares.
pub struct SiteSection {
    pub name: String,
    pub prefixes: Vec<String>,
}

/// `[[peer]]`: a gateway of another site (with `site =`), or a plain peer
/// (without, its `allowed_ips` routing whatever is behind it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SitePeer {
    pub name: String,
    pub site: Option<String>,
    /// Base64.
    pub public_key: String,
    pub endpoints: Vec<String>,
    /// Its own tunnel address ("10.255.2.1/32").
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: u16,
    pub failover_after: Option<u32>,
}

/// `[registry]`
pub struct RegistrySection {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub site: String,
    pub name: String,
    pub advertise: Vec<String>,
    pub lease_ttl: u32,
    /// Given to the peers learnt from the registry.
    pub persistent_keepalive: u16,
    pub failover_after: Option<u32>,
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", "))
}

/// The whole file: the interface, the static sites and their gateways, and
/// the registry when one is given.
pub fn gateway_config(
    iface: &InterfaceSection,
    sites: &[SiteSection],
    peers: &[SitePeer],
    registry: Option<&RegistrySection>,
) -> Zeroizing<String> {
    let mut t = Zeroizing::new(String::new());
    let _ = writeln!(t, "# Written by causeway-lab (lab/src/fleet/config.rs).");
    let _ = writeln!(t, "[interface]");
    let _ = writeln!(t, "name = {}", toml_str(&iface.ifname));
    let _ = writeln!(t, "private_key = {}", toml_str(&iface.private_key));
    let _ = writeln!(t, "listen_port = {}", iface.listen_port);
    let _ = writeln!(t, "addresses = {}", toml_list(std::slice::from_ref(&iface.address)));
    let _ = writeln!(t, "install_routes = {}", iface.install_routes);
    if let Some(m) = &iface.metrics_listen {
        let _ = writeln!(t, "metrics_listen = {}", toml_str(m));
    }
    for s in sites {
        let _ = writeln!(t, "\n[[site]]\nname = {}\nprefixes = {}", toml_str(&s.name), toml_list(&s.prefixes));
    }
    for p in peers {
        let _ = writeln!(t, "\n[[peer]]\nname = {}", toml_str(&p.name));
        if let Some(site) = &p.site {
            let _ = writeln!(t, "site = {}", toml_str(site));
        }
        let _ = writeln!(
            t,
            "public_key = {}\nendpoints = {}\nallowed_ips = {}\npersistent_keepalive = {}",
            toml_str(&p.public_key),
            toml_list(&p.endpoints),
            toml_list(&p.allowed_ips),
            p.persistent_keepalive,
        );
        if let Some(f) = p.failover_after {
            let _ = writeln!(t, "failover_after = {f}");
        }
    }
    if let Some(r) = registry {
        let _ = writeln!(
            t,
            "\n[registry]\nendpoints = {}\nprefix = {}\nsite = {}\nname = {}\nadvertise = {}\nlease_ttl = {}\n\
             persistent_keepalive = {}",
            toml_list(&r.endpoints),
            toml_str(&r.prefix),
            toml_str(&r.site),
            toml_str(&r.name),
            toml_list(&r.advertise),
            r.lease_ttl,
            r.persistent_keepalive
        );
        if let Some(f) = r.failover_after {
            let _ = writeln!(t, "failover_after = {f}");
        }
    }
    t
}

/// The value of `{prefix}/sites/{site}`: `{"prefixes": [...]}`.
pub fn site_record(prefixes: &[String]) -> String {
    serde_json::json!({ "prefixes": prefixes }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface() -> InterfaceSection {
        InterfaceSection {
            ifname: "cw1".into(),
            private_key: Zeroizing::new("a2V5".into()),
            listen_port: 51820,
            address: "10.255.1.1/32".into(),
            install_routes: true,
            metrics_listen: Some("127.0.0.1:9586".into()),
        }
    }

    #[test]
    fn static_file_has_sites_and_site_peers() {
        let sites = [SiteSection { name: "site2".into(), prefixes: vec!["10.2.0.0/16".into()] }];
        let peers = [SitePeer {
            name: "site2.gw1".into(),
            site: Some("site2".into()),
            public_key: "cHVi".into(),
            endpoints: vec!["198.18.0.21:51820".into()],
            allowed_ips: vec!["10.255.2.1/32".into()],
            persistent_keepalive: 1,
            failover_after: Some(3),
        }];
        let text = gateway_config(&iface(), &sites, &peers, None);
        let want = "[interface]\nname = \"cw1\"\nprivate_key = \"a2V5\"\nlisten_port = 51820\n\
                    addresses = [\"10.255.1.1/32\"]\ninstall_routes = true\nmetrics_listen = \"127.0.0.1:9586\"\n\n\
                    [[site]]\nname = \"site2\"\nprefixes = [\"10.2.0.0/16\"]\n\n\
                    [[peer]]\nname = \"site2.gw1\"\nsite = \"site2\"\npublic_key = \"cHVi\"\n\
                    endpoints = [\"198.18.0.21:51820\"]\nallowed_ips = [\"10.255.2.1/32\"]\n\
                    persistent_keepalive = 1\nfailover_after = 3\n";
        assert!(text.ends_with(want), "{}", *text);
        assert!(!text.contains("[registry]"));
        let plain = SitePeer { site: None, failover_after: None, ..peers[0].clone() };
        let text = gateway_config(&iface(), &[], &[plain], None);
        assert!(text.contains("name = \"site2.gw1\"\npublic_key = \"cHVi\""), "{}", *text);
        assert!(!text.contains("site =") && !text.contains("failover_after"), "{}", *text);
    }

    #[test]
    fn registry_file_has_the_registry_table() {
        let r = RegistrySection {
            endpoints: vec!["http://198.18.0.100:2379".into(), "http://198.18.0.101:2379".into()],
            prefix: "/causeway".into(),
            site: "site1".into(),
            name: "gw1".into(),
            advertise: vec!["198.18.0.11:51820".into()],
            lease_ttl: 10,
            persistent_keepalive: 1,
            failover_after: Some(3),
        };
        let text = gateway_config(&iface(), &[], &[], Some(&r));
        let want = "\n[registry]\nendpoints = [\"http://198.18.0.100:2379\", \"http://198.18.0.101:2379\"]\n\
                    prefix = \"/causeway\"\nsite = \"site1\"\nname = \"gw1\"\nadvertise = [\"198.18.0.11:51820\"]\n\
                    lease_ttl = 10\npersistent_keepalive = 1\nfailover_after = 3\n";
        assert!(text.ends_with(want), "{}", *text);
        assert!(!text.contains("[[site]]") && !text.contains("[[peer]]"));
    }

    #[test]
    fn strings_cannot_break_out() {
        assert_eq!(toml_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
        let value: toml::Value = toml::from_str(&format!("x = {}", toml_str("a\"]\n[evil]"))).unwrap();
        assert_eq!(value["x"].as_str(), Some("a\"]\n[evil]"));
    }

    #[test]
    fn site_record_is_the_contract_json() {
        let v: serde_json::Value = serde_json::from_str(&site_record(&["10.2.0.0/16".into()])).unwrap();
        assert_eq!(v, serde_json::json!({"prefixes": ["10.2.0.0/16"]}));
    }
}
