//! The control API's registry requests (`tunctl site join|leave|set|
//! remove`): checked with the configuration's rules here, carried out by
//! the registry client, which owns the connection and the credentials.

use causeway_config::{parse_allowed_ip, rules};
use ipnet::IpNet;

use super::record::MAX_LIST;
use super::{SiteChange, Uncarried};
use crate::api::types::Request;
use crate::api::ApiError;
use crate::gateway::Gateway;

fn site_name(site: &str) -> Result<String, ApiError> {
    rules::peer_name(site).map_err(ApiError::field("site"))?;
    Ok(site.to_string())
}

/// The change a request asks for, checked.
pub fn change_of(req: &Request) -> Result<SiteChange, ApiError> {
    Ok(match req {
        Request::SiteJoin { site } => SiteChange::Join(site_name(site)?),
        Request::SiteLeave => SiteChange::Leave,
        Request::SiteSet { site, prefixes } => {
            // What every gateway would refuse to read back (and then drop
            // the site whole, routes and all) is refused before the write.
            if prefixes.len() > MAX_LIST {
                return Err(ApiError::Field {
                    field: "prefixes",
                    message: format!("{} prefixes; a site record holds at most {MAX_LIST}", prefixes.len()),
                });
            }
            let nets = prefixes.iter().map(|p| parse_allowed_ip(p)).collect::<Result<Vec<_>, _>>();
            SiteChange::Set(site_name(site)?, nets.map_err(ApiError::field("prefixes"))?)
        }
        Request::SiteRemove { site } => SiteChange::Remove(site_name(site)?),
        _ => return Err(ApiError::Internal),
    })
}

/// Refuses prefixes that another site or a peer has, this gateway's own
/// site included: the registry would keep them, but gateways would leave
/// them out.
fn check_overlap(gw: &Gateway, site: &str, prefixes: &[IpNet]) -> Result<(), ApiError> {
    let Some(registry) = gw.registry() else { return Ok(()) };
    // The merged configuration has the remote sites only.
    let Some((cfg, own_site, own)) = registry.merged_with_own_site() else { return Ok(()) };
    let own = if own_site == site { Vec::new() } else { own };
    let taken = cfg
        .sites
        .iter()
        .filter(|s| s.name != site)
        .flat_map(|s| s.prefixes.iter().map(move |n| (*n, format!("site {}", s.name))))
        .chain(own.into_iter().map(|n| (n, format!("site {own_site}"))))
        .chain(cfg.peers.iter().flat_map(|p| p.allowed_ips.iter().map(move |n| (*n, format!("peer {}", p.name)))))
        // Routed to the IPsec peer as a WireGuard peer's are: the merge
        // would leave the site's overlapping prefix out.
        .chain(
            cfg.ipsec_peers.iter().flat_map(|p| p.allowed_ips.iter().map(move |n| (*n, format!("peer {}", p.name)))),
        );
    for (other, whose) in taken {
        if let Some(n) = prefixes.iter().find(|n| n.contains(&other) || other.contains(*n)) {
            return Err(ApiError::Registry(format!(
                "{n} overlaps {other} of {whose}; each address may belong to one site or peer only"
            )));
        }
    }
    Ok(())
}

/// Answers one `site_*` request.
pub fn answer(gw: &Gateway, req: &Request) -> Result<String, ApiError> {
    let change = change_of(req)?;
    let registry = gw.registry().ok_or(ApiError::NoRegistry)?;
    match &change {
        SiteChange::Join(site) => {
            let name = registry.identity().name;
            rules::peer_name(&format!("{site}.{name}")).map_err(|e| ApiError::Field {
                field: "site",
                message: format!("\"{site}.{name}\" (site.name, this gateway's name on the others) is too long: {e}"),
            })?;
        }
        SiteChange::Set(site, prefixes) => check_overlap(gw, site, prefixes)?,
        _ => {}
    }
    let done = registry.request(change.clone()).map_err(|e| ApiError::Registry(e.to_string()))?;
    Ok(match &change {
        // Written for the fleet, but the file wins here: say so, or the
        // operator sees no change on this gateway and wonders why.
        SiteChange::Set(site, _) | SiteChange::Remove(site) if registry.file_defines_site(site) => {
            format!("{done} (this gateway's configuration file defines site {site}, so it keeps the file's prefixes)")
        }
        SiteChange::Set(site, prefixes) => with_uncarried(done, &registry.uncarried_for(site, prefixes)),
        _ => done,
    })
}

/// A reply that also says what an IPsec gateway of the site cannot carry:
/// written all the same (the site's prefixes are the fleet's, the IPsec
/// peer this gateway's own), but not to be learnt from the log alone.
fn with_uncarried(done: String, uncarried: &[Uncarried]) -> String {
    let told: Vec<String> = uncarried.iter().map(Uncarried::reason).collect();
    if told.is_empty() {
        done
    } else {
        format!("{done}; on this gateway: {}", told.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_tells_what_an_ipsec_gateway_cannot_carry() {
        assert_eq!(with_uncarried("site west: 10.2.0.0/16".into(), &[]), "site west: 10.2.0.0/16");
        let u = Uncarried {
            site: "west".into(),
            prefix: "10.9.0.0/16".parse().unwrap(),
            peer: "west-srx".into(),
            remote_ts: "10.2.0.0/16".into(),
        };
        let reply = with_uncarried("site west: 10.2.0.0/16, 10.9.0.0/16".into(), &[u]);
        assert!(
            reply.starts_with(
                "site west: 10.2.0.0/16, 10.9.0.0/16; on this gateway: 10.9.0.0/16 lies outside every remote_ts \
                 selector of IPsec peer \"west-srx\""
            ),
            "{reply}"
        );
    }

    #[test]
    fn requests_are_checked_before_the_store_sees_them() {
        let set =
            |p: &[&str]| Request::SiteSet { site: "west".into(), prefixes: p.iter().map(|s| s.to_string()).collect() };
        assert_eq!(
            change_of(&set(&["10.2.0.0/16"])).unwrap(),
            SiteChange::Set("west".into(), vec!["10.2.0.0/16".parse().unwrap()])
        );
        assert!(change_of(&set(&["10.2.0.1/16"]))
            .unwrap_err()
            .to_string()
            .starts_with("prefixes: 10.2.0.1/16 has host bits"));
        let e = change_of(&Request::SiteJoin { site: "a b".into() }).unwrap_err().to_string();
        assert!(e.starts_with("site: expected a name"), "{e}");
        assert_eq!(change_of(&Request::SiteLeave).unwrap(), SiteChange::Leave);
        assert_eq!(change_of(&Request::SiteRemove { site: "west".into() }).unwrap(), SiteChange::Remove("west".into()));

        // As many prefixes as a record holds, and no more: what is written
        // is what every gateway reads back.
        let prefixes: Vec<String> = (0..=MAX_LIST).map(|i| format!("10.{i}.0.0/16")).collect();
        let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let SiteChange::Set(_, most) = change_of(&set(&refs[..MAX_LIST])).unwrap() else { panic!("a set") };
        assert_eq!(crate::registry::record::decode_site(&crate::registry::record::encode_site(&most)).unwrap(), most);
        let e = change_of(&set(&refs)).unwrap_err().to_string();
        assert_eq!(e, format!("prefixes: {} prefixes; a site record holds at most {MAX_LIST}", MAX_LIST + 1));
    }

    #[test]
    fn without_a_registry_the_request_is_refused() {
        let iface = causeway_dataplane::interface::Interface::new(
            "cwreg0".into(),
            Some(causeway_wireguard::StaticSecret::random(&mut rand_core::OsRng)),
            1420,
            1,
            0,
        )
        .unwrap();
        let gw = Gateway::new(std::sync::Arc::new(iface));
        let reply = crate::api::handle(&gw, r#"{"op":"site_join","site":"east"}"#);
        assert_eq!(
            reply,
            crate::api::types::Reply::Error("this gateway has no [registry] in its configuration".into())
        );
    }
}
