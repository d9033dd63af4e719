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

use crate::counters::Drop;
use crate::interface::Interface;

pub const SOCKET_DIR: &str = "/var/run/causeway";

pub fn socket_path(ifname: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{ifname}.sock"))
}

/// The interface's state as tunctl shows it.
pub fn status(iface: &Interface) -> Value {
    let now = iface.clock.now();
    let wall_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let peers: Vec<Value> = iface
        .peers()
        .iter()
        .map(|p| {
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
                "allowed_ips": iface.allowed_ips_of(p).iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "latest_handshake": handshake_unix,
                "latest_handshake_age_secs": handshake_unix.map(|h| wall_now.saturating_sub(h)),
                "rx_bytes": stats.rx_bytes,
                "tx_bytes": stats.tx_bytes,
                "persistent_keepalive": p.crypto.timers.persistent_keepalive(),
                "handshakes_initiated": p.handshakes_initiated.load(std::sync::atomic::Ordering::Relaxed),
                "state": state,
                "staged_packets": p.staged_len(),
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
        "peers": peers,
        "drops": drops,
        "worker_stats": workers,
    })
}

fn handle(iface: &Interface, line: &str) -> Value {
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
        Some(other) => json!({"error": format!("unknown op {other:?}; known: status, reload")}),
        None => json!({"error": "request needs an \"op\" field"}),
    }
}

pub async fn serve(iface: Arc<Interface>, listener: UnixListener) {
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
