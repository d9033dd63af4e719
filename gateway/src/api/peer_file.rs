//! `peers_add`: the `[[peer]]` tables of a peer file (`tunctl peer
//! add-file`), of either protocol, added to the running gateway. The text
//! is checked by the configuration's rules (`causeway_config::parse_peers`)
//! and then against what runs: every peer is checked before any is added,
//! so a refused file changes nothing.

use std::path::Path;

use causeway_config::PeerFile;

use super::error::ApiError;
use crate::endpoint_names::Resolved;
use crate::gateway::Gateway;
use crate::report::Report;

/// Why one of the file's peers cannot join the running ones, if it cannot.
fn clash(gw: &Gateway, file: &PeerFile) -> Result<(), ApiError> {
    if let Some(name) = file.names().into_iter().find(|name| gw.name_in_use(name, None)) {
        return Err(ApiError::NameTaken(name.to_string()));
    }
    for p in &file.peers {
        if gw.peer(&p.public_key).is_some() {
            return Err(ApiError::PeerExists);
        }
        if gw.device.public_key() == Some(p.public_key) {
            return Err(ApiError::OwnKey);
        }
    }
    // One IPsec peer at most without endpoints (see the configuration's
    // own check): the file's against the running ones.
    if let Some(new) = file.ipsec_peers.iter().find(|p| p.endpoints.is_empty()) {
        let ike = gw.ike();
        let running = ike.as_ref().map(|ike| ike.peer_names()).unwrap_or_default();
        let taken = running
            .into_iter()
            .find(|n| ike.as_ref().and_then(|i| i.config(n)).is_some_and(|c| c.endpoints.is_empty()));
        if let Some(other) = taken {
            return Err(ApiError::Field {
                field: "endpoints",
                message: format!(
                    "IPsec peer \"{}\" has no endpoints, and neither has the running peer \"{other}\": only one IPsec \
                     peer may answer IKE from any address",
                    new.name
                ),
            });
        }
    }
    // Peers behind one address must stay apart for a responder, as in a
    // file of their own (`causeway_config::shared_address_clash`).
    if let Some(ike) = gw.ike().filter(|_| !file.ipsec_peers.is_empty()) {
        for name in ike.peer_names() {
            let Some(running) = ike.config(&name) else { continue };
            if let Some(why) = file.ipsec_peers.iter().find_map(|p| causeway_config::shared_address_clash(p, &running))
            {
                return Err(ApiError::Field { field: "endpoints", message: why });
            }
        }
    }
    let routed = file.peers.iter().map(|p| &p.allowed_ips).chain(file.ipsec_peers.iter().map(|p| &p.allowed_ips));
    for nets in routed {
        if let Some(c) = crate::reload::overlap_new(gw, nets) {
            return Err(ApiError::Overlap(c));
        }
    }
    Ok(())
}

/// Checks `text` (the file at `path`, whose directory anchors relative key
/// and PSK files; `exposed` its mode when others may read it) and adds its
/// peers. Says what it added.
pub fn add_peers(gw: &Gateway, text: &str, path: &Path, exposed: Option<u32>) -> Result<String, ApiError> {
    // The peer file's owner chose its PSK files, so may own them: looked up
    // here, not taken from the client.
    let owner = std::fs::metadata(path).ok().map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    let owners: Vec<u32> = owner.into_iter().collect();
    let file = causeway_config::parse_peers(text, path, exposed, &owners).map_err(ApiError::ConfigRejected)?;
    let resolved = Resolved::ahead(gw, &file.peers, &file.ipsec_peers);
    let _one_change = gw.changing();
    clash(gw, &file)?;
    // IKE starts before anything is added, so a gateway that cannot bind
    // its ports refuses the whole file.
    let ike = crate::ipsec::reconcile::ike_for(gw, &file.ipsec_peers).map_err(ApiError::IkeUnavailable)?;
    let mut report = Report::default();
    for p in &file.peers {
        crate::reload::apply_peer(gw, p, None, &resolved).map_err(ApiError::Apply)?;
        report.added.push(p.name.clone());
    }
    if let Some(ike) = ike {
        for p in &file.ipsec_peers {
            crate::ipsec::reconcile::apply_peer(gw, &ike, p, &resolved, &mut report);
        }
    }
    tracing::info!(file = %path.display(), %report, "peers added");
    Ok(format!("added {}", report.added.join(", ")))
}
