//! The control API for tunctl: one JSON request per line on a root-only
//! Unix socket, one JSON response per line. It carries what the WireGuard
//! UAPI has no words for (peer names, drop counters, state), and never a
//! private or pre-shared key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use causeway_dataplane::counters::Drop;
use causeway_wireguard::{PresharedKey, PublicKey};

use crate::gateway::Gateway;
use causeway_dataplane::interface::Interface;
use causeway_dataplane::peer::PeerState;

pub const SOCKET_DIR: &str = "/var/run/causeway";

pub fn socket_path(ifname: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{ifname}.sock"))
}

/// The interface's state as tunctl shows it.
pub fn status(iface: &Gateway) -> Value {
    let now = iface.clock.now();
    let wall_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let by_peer = iface.allowed_ips_by_peer();
    let peers: Vec<Value> = iface
        .peers()
        .iter()
        .map(|p| {
            let (rx_rate, tx_rate) = p.rates();
            let allowed = by_peer.get(&Arc::as_ptr(p)).map(Vec::as_slice).unwrap_or_default();
            let stats = p.crypto.stats();
            let handshake_unix = stats
                .last_handshake
                .map(|t| iface.clock.wall_time_of(t).duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
            let has_session = p.crypto.keypair_for_sending(now).is_ok();
            let state = match (has_session, stats.last_handshake, p.crypto.handshake_in_flight()) {
                (true, _, _) => "up",
                (false, _, true) => "handshaking",
                (false, Some(_), false) => "stale",
                (false, None, false) => "configured",
            };
            json!({
                "name": p.name(),
                "public_key": p.public_key().to_base64(),
                "endpoint": p.endpoint().map(|e| e.addr.to_string()),
                "allowed_ips": allowed.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "latest_handshake": handshake_unix,
                "latest_handshake_age_secs": handshake_unix.map(|h| wall_now.saturating_sub(h)),
                "rx_bytes": stats.rx_bytes,
                "tx_bytes": stats.tx_bytes,
                "rx_packets": stats.rx_packets,
                "tx_packets": stats.tx_packets,
                "persistent_keepalive": p.crypto.timers.persistent_keepalive(),
                "handshakes_initiated": p.handshakes_initiated.load(std::sync::atomic::Ordering::Relaxed),
                "state": state,
                "staged_packets": p.staged_len(),
                "tx_batches_queued": p.tx.len(),
                "rx_batches_queued": p.rx.len(),
                "endpoint_failovers": p.failovers(),
                "rx_bytes_per_sec": rx_rate,
                "tx_bytes_per_sec": tx_rate,
            })
        })
        .collect();
    let drops: serde_json::Map<String, Value> =
        Drop::ALL.iter().map(|d| (d.name().to_string(), json!(iface.counters.get(*d)))).collect();
    let workers: Vec<Value> = iface
        .worker_stats
        .iter()
        .map(|w| Value::Object(w.snapshot().iter().map(|(k, v)| (k.to_string(), json!(v))).collect()))
        .collect();
    json!({
        "interface": iface.name,
        "public_key": iface.device.public_key().map(|k| k.to_base64()),
        "listen_port": iface.listen_port(),
        "mtu": iface.mtu(),
        "workers": iface.workers,
        "udp_gso_segments": iface.sockets().sockets[0].max_gso_segments(),
        "kernel_routes": iface.route_table().map(|table| json!({
            "table": table,
            "installed": iface.kernel_routes().unwrap_or_default().iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        })),
        "peers": peers,
        "drops": drops,
        "cookie_replies_sent": iface.counters.cookie_replies.load(std::sync::atomic::Ordering::Relaxed),
        "worker_stats": workers,
    })
}

/// A peer by its name or its base64 public key.
fn find_peer(iface: &Interface, who: &str) -> Option<Arc<PeerState>> {
    iface.peers().into_iter().find(|p| p.name() == who || p.public_key().to_base64() == who)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A peer description from a request, over `base` (the current peer for
/// `peer_set`). Every field is checked as the configuration file checks it.
fn peer_from_request(req: &Value, base: Option<causeway_config::Peer>) -> Result<causeway_config::Peer, String> {
    let strings = |key: &str| -> Option<Result<Vec<String>, String>> {
        req.get(key).map(|v| {
            v.as_array()
                .ok_or(format!("{key} must be a list"))?
                .iter()
                .map(|x| x.as_str().map(String::from).ok_or(format!("{key} must hold strings")))
                .collect()
        })
    };
    let key = |field: &str| -> Result<Option<[u8; 32]>, String> {
        match req.get(field).and_then(Value::as_str) {
            None => Ok(None),
            Some(t) => causeway_config::parse_key(t).map(|k| Some(*k)).map_err(|e| format!("{field}: {e}")),
        }
    };
    let name = match req.get("name").and_then(Value::as_str) {
        Some(n) if valid_name(n) => n.to_string(),
        Some(_) => return Err("name: expected 1 to 64 characters from a-z, A-Z, 0-9, '-', '_', '.'".into()),
        None => base.as_ref().map(|b| b.name.clone()).ok_or("a new peer needs a name")?,
    };
    let public_key = match (key("public_key")?, &base) {
        (Some(k), _) => PublicKey::from_bytes(k),
        (None, Some(b)) => b.public_key,
        (None, None) => return Err("a new peer needs a public_key".into()),
    };
    let preshared_key = match key("preshared_key")? {
        Some(k) => Some(PresharedKey::from_bytes(k)),
        None => base.as_ref().and_then(|b| b.preshared_key.clone()),
    };
    let endpoints = match strings("endpoints") {
        Some(list) => {
            list?.iter().map(|e| e.parse().map_err(|m| format!("endpoints: {m}"))).collect::<Result<_, _>>()?
        }
        None => base.as_ref().map(|b| b.endpoints.clone()).unwrap_or_default(),
    };
    let allowed_ips = match strings("allowed_ips") {
        Some(list) => list?
            .iter()
            .map(|n| causeway_config::parse_allowed_ip(n).map_err(|m| format!("allowed_ips: {m}")))
            .collect::<Result<_, _>>()?,
        None => base.as_ref().map(|b| b.allowed_ips.clone()).unwrap_or_default(),
    };
    let persistent_keepalive = match req.get("persistent_keepalive") {
        Some(v) => {
            v.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or("persistent_keepalive: expected 0 to 65535 seconds")?
        }
        None => base.as_ref().map_or(0, |b| b.persistent_keepalive),
    };
    let failover_after = match req.get("failover_after") {
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=3600).contains(n))
            .map(std::time::Duration::from_secs)
            .ok_or("failover_after: expected 1 to 3600 seconds")?,
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
    })
}

/// The running state of a peer as a configuration entry.
fn current(iface: &Interface, p: &Arc<PeerState>) -> causeway_config::Peer {
    let psk = p.crypto.preshared_key();
    causeway_config::Peer {
        name: p.name(),
        public_key: *p.public_key(),
        preshared_key: (!psk.is_zero()).then_some(psk),
        endpoints: p.configured_endpoints.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        allowed_ips: iface.allowed_ips_of(p),
        persistent_keepalive: p.crypto.timers.persistent_keepalive(),
        failover_after: p.failover_after(),
    }
}

/// Adds (`existing` None) or changes a peer, refusing clashes of name,
/// key or prefixes with the other peers.
fn put_peer(iface: &Interface, req: &Value, existing: Option<Arc<PeerState>>) -> Result<String, String> {
    let base = existing.as_ref().map(|p| current(iface, p));
    let p = peer_from_request(req, base)?;
    if existing.is_none() && iface.peer(&p.public_key).is_some() {
        return Err("a peer with this public key exists: use `tunctl peer set`".into());
    }
    if iface.device.public_key() == Some(p.public_key) {
        return Err("this is the interface's own public key".into());
    }
    if iface.peers().iter().any(|o| o.name() == p.name && o.public_key() != &p.public_key) {
        return Err(format!("name {} is used by another peer", p.name));
    }
    if let Some(clash) = crate::reload::overlap(iface, &p.public_key, &p.allowed_ips) {
        return Err(format!("allowed_ips: {clash}; each address may belong to one peer only"));
    }
    let have: Option<std::collections::HashSet<ipnet::IpNet>> =
        existing.as_ref().map(|e| iface.allowed_ips_of(e).into_iter().collect());
    let (_, changed) = crate::reload::apply_peer(iface, &p, have.as_ref()).map_err(|e| e.to_string())?;
    Ok(match existing {
        None => format!("added {}", p.name),
        Some(_) if changed.is_empty() => format!("{}: nothing to change", p.name),
        Some(_) => format!("{}: changed {}", p.name, changed.join(", ")),
    })
}

/// Answers one request line with `{"ok": …}` or `{"error": …}`.
pub fn handle(iface: &Gateway, line: &str) -> Value {
    let req: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return json!({"error": format!("request is not JSON: {e}")}),
    };
    match req.get("op").and_then(Value::as_str) {
        Some("status") => json!({"ok": status(iface)}),
        Some("reload") => match iface.config_path() {
            None => {
                json!({"error": "this interface was not started from a configuration file (causewayd up --config); use wg to change it"})
            }
            Some(path) => match crate::reload::reload(iface, &path) {
                Ok(report) => json!({"ok": report.to_string()}),
                Err(e) => json!({"error": format!("configuration rejected, the running one stays:\n{e}")}),
            },
        },
        Some("peer_add") => match put_peer(iface, &req, None) {
            Ok(m) => json!({"ok": m}),
            Err(e) => json!({"error": e}),
        },
        Some(op @ ("peer_set" | "peer_remove")) => {
            let who = req.get("peer").and_then(Value::as_str).unwrap_or_default();
            let Some(peer) = find_peer(iface, who) else {
                return json!({"error": format!("no peer named or keyed {who:?}")});
            };
            if op == "peer_remove" {
                iface.remove_peer(peer.public_key());
                return json!({"ok": format!("removed {}", if peer.name().is_empty() { who.to_string() } else { peer.name() })});
            }
            match put_peer(iface, &req, Some(peer)) {
                Ok(m) => json!({"ok": m}),
                Err(e) => json!({"error": e}),
            }
        }
        Some(other) => {
            json!({"error": format!("unknown op {other:?}; known: status, reload, peer_add, peer_set, peer_remove")})
        }
        None => json!({"error": "request needs an \"op\" field"}),
    }
}

pub async fn serve(iface: Arc<Gateway>, listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let iface = iface.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // A reload reads files and may resolve names: keep it off
                // the runtime that drives the timers.
                let iface = iface.clone();
                let reply = tokio::task::spawn_blocking(move || handle(&iface, &line)).await;
                let mut out = reply.unwrap_or_else(|_| json!({"error": "internal error"})).to_string();
                out.push('\n');
                if write.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}
