//! `peer_add` and `peer_set`: a request's fields, checked by the
//! configuration's own rules, become a `causeway_config::Peer` applied as a
//! reload would apply it.

use std::collections::HashSet;
use std::sync::Arc;

use causeway_config::rules;
use causeway_dataplane::interface::Interface;
use causeway_dataplane::peer::PeerState;
use causeway_wireguard::{PresharedKey, PublicKey};
use ipnet::IpNet;

use super::error::ApiError;
use super::types::PeerChange;
use crate::endpoint_names::Resolved;
use crate::gateway::Gateway;

/// A peer description from a request, over `base` (the current peer for
/// `peer_set`).
fn peer_from_change(req: &PeerChange, base: Option<causeway_config::Peer>) -> Result<causeway_config::Peer, ApiError> {
    let key = |field: &'static str, text: Option<&str>| -> Result<Option<[u8; 32]>, ApiError> {
        text.map(|t| causeway_config::parse_key(t).map(|k| *k).map_err(|e| ApiError::field(field)(e.to_string())))
            .transpose()
    };
    let name = match (&req.name, &base) {
        (Some(n), _) => {
            rules::peer_name(n).map_err(ApiError::field("name"))?;
            n.clone()
        }
        (None, Some(b)) => b.name.clone(),
        (None, None) => return Err(ApiError::Missing("name")),
    };
    let public_key = match (key("public_key", req.public_key.as_deref())?, &base) {
        // Peers are found by key: "changing" it would add a second peer,
        // or change the one that has the new key.
        (Some(k), Some(b)) if PublicKey::from_bytes(k) != b.public_key => {
            return Err(ApiError::field("public_key")(
                "a peer's key cannot be changed; remove the peer and add it with the new key",
            ))
        }
        (Some(k), _) => PublicKey::from_bytes(k),
        (None, Some(b)) => b.public_key,
        (None, None) => return Err(ApiError::Missing("public_key")),
    };
    let preshared_key = match key("preshared_key", req.preshared_key.as_ref().map(|s| s.0.as_str()))? {
        Some(k) => Some(PresharedKey::from_bytes(k)),
        None => base.as_ref().and_then(|b| b.preshared_key.clone()),
    };
    let endpoints = match &req.endpoints {
        Some(list) => list.iter().map(|e| e.parse()).collect::<Result<_, _>>().map_err(ApiError::field("endpoints"))?,
        None => base.as_ref().map(|b| b.endpoints.clone()).unwrap_or_default(),
    };
    let allowed_ips = match &req.allowed_ips {
        Some(list) => list
            .iter()
            .map(|n| causeway_config::parse_allowed_ip(n))
            .collect::<Result<_, _>>()
            .map_err(ApiError::field("allowed_ips"))?,
        None => base.as_ref().map(|b| b.allowed_ips.clone()).unwrap_or_default(),
    };
    let persistent_keepalive = match req.persistent_keepalive {
        Some(secs) => secs,
        None => base.as_ref().map_or(0, |b| b.persistent_keepalive),
    };
    let failover_after = match req.failover_after {
        Some(secs) => rules::failover_after(secs).map_err(ApiError::field("failover_after"))?,
        None => base.as_ref().map_or(causeway_config::DEFAULT_FAILOVER_AFTER, |b| b.failover_after),
    };
    Ok(causeway_config::Peer {
        name,
        public_key,
        preshared_key,
        endpoints,
        allowed_ips,
        persistent_keepalive,
        failover_after,
        site: base.as_ref().and_then(|b| b.site.clone()),
    })
}

/// The running state of a peer as a configuration entry.
fn current(iface: &Interface, p: &Arc<PeerState>) -> causeway_config::Peer {
    let psk = p.crypto().preshared_key();
    causeway_config::Peer {
        name: p.name(),
        public_key: *p.public_key(),
        preshared_key: (!psk.is_zero()).then_some(psk),
        endpoints: p.configured_endpoints.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        allowed_ips: iface.allowed_ips_of(p),
        persistent_keepalive: p.crypto().timers.persistent_keepalive(),
        failover_after: p.failover_after(),
        site: iface.site_of(p).map(|s| s.name().to_string()),
    }
}

/// Adds (`existing` None) or changes a peer, refusing clashes of name,
/// key or prefixes with the other peers. Says what it did.
pub fn put_peer(gw: &Gateway, req: &PeerChange, existing: Option<Arc<PeerState>>) -> Result<String, ApiError> {
    let iface: &Interface = gw;
    // Its endpoint names are looked up before the change lock
    // (`endpoint_names`); the peer is built again under it.
    let resolved = match peer_from_change(req, existing.as_ref().map(|p| current(iface, p))) {
        Ok(p) => Resolved::ahead(gw, std::slice::from_ref(&p), &[]),
        Err(_) => Resolved::default(),
    };
    let _one_change = gw.changing();
    // Looked up before the lock was taken: a removal or reload in between
    // may have taken it away, and applying the change would add it back.
    if let Some(e) = &existing {
        if !iface.peer(e.public_key()).is_some_and(|now| Arc::ptr_eq(&now, e)) {
            let name = e.name();
            return Err(ApiError::NoSuchPeer(if name.is_empty() { e.public_key().to_base64() } else { name }));
        }
    }
    let base = existing.as_ref().map(|p| current(iface, p));
    let p = peer_from_change(req, base)?;
    if existing.is_none() && iface.peer(&p.public_key).is_some() {
        return Err(ApiError::PeerExists);
    }
    if iface.device.public_key() == Some(p.public_key) {
        return Err(ApiError::OwnKey);
    }
    if gw.name_in_use(&p.name, Some(&p.public_key)) {
        return Err(ApiError::NameTaken(p.name));
    }
    if let Some(clash) = crate::reload::overlap(iface, &p.public_key, &p.allowed_ips) {
        return Err(ApiError::Overlap(clash));
    }
    let have: Option<HashSet<IpNet>> = existing.as_ref().map(|e| iface.allowed_ips_of(e).into_iter().collect());
    let (_, changed) = crate::reload::apply_peer(iface, &p, have.as_ref(), &resolved).map_err(ApiError::Apply)?;
    Ok(match existing {
        None => format!("added {}", p.name),
        Some(_) if changed.is_empty() => format!("{}: nothing to change", p.name),
        Some(_) => format!("{}: changed {}", p.name, changed.join(", ")),
    })
}
