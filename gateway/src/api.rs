//! The control API for tunctl: one JSON request per line on a root-only
//! Unix socket, one JSON reply per line. It carries what the WireGuard
//! UAPI has no words for (peer names, drop counters, state), and never a
//! private or pre-shared key. The messages are the types in [`types`],
//! which tunctl shares.

mod error;
mod peer_change;
mod peer_file;
mod sa_requests;
mod sites;
mod status;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// daemon.rs still calls it by this name; new code uses `sockets`.
pub use error::ApiError;
pub use sites::sites;
pub use status::status;
use types::{Answer, Reply, Request};

use crate::gateway::Gateway;
use causeway_dataplane::interface::Interface;
use causeway_dataplane::peer::PeerState;

/// A peer by its name or its base64 public key.
fn find_peer(iface: &Interface, who: &str) -> Result<Arc<PeerState>, ApiError> {
    iface
        .peers()
        .into_iter()
        .find(|p| p.name() == who || p.public_key().to_base64() == who)
        .ok_or_else(|| ApiError::NoSuchPeer(who.to_string()))
}

/// The IKE driver of `who` when it names an IPsec peer.
fn ipsec_peer(gw: &Gateway, who: &str) -> Option<Arc<crate::ipsec::Ike>> {
    gw.ike().filter(|ike| ike.config(who).is_some())
}

/// Carries out one request.
pub fn answer(iface: &Gateway, req: &Request) -> Result<Answer, ApiError> {
    Ok(match req {
        Request::Status => Answer::Status(Box::new(status(iface))),
        Request::Reload => {
            let path = iface.config_path().ok_or(ApiError::NoConfigFile)?;
            let report = crate::reload::reload(iface, &path).map_err(ApiError::ConfigRejected)?;
            if let Some(why) = report.refused {
                return Err(ApiError::ReloadRefused(why));
            }
            Answer::Done(report.to_string())
        }
        Request::PeerAdd(change) => Answer::Done(peer_change::put_peer(iface, change, None)?),
        Request::PeersAdd { path, text, exposed } => {
            Answer::Done(peer_file::add_peers(iface, &text.0, path, *exposed)?)
        }
        Request::PeerSet { peer, change } => {
            let existing = find_peer(iface, peer)?;
            Answer::Done(peer_change::put_peer(iface, change, Some(existing))?)
        }
        Request::PeerRemove { peer: who } => {
            let _one_change = iface.changing();
            // An IPsec peer by its name: IKE deletes its SAs, telling the peer.
            if let Some(ike) = ipsec_peer(iface, who) {
                ike.remove_peer(who);
                return Ok(Answer::Done(format!("removed {who}")));
            }
            let peer = find_peer(iface, who)?;
            iface.remove_peer(peer.public_key());
            Answer::Done(format!("removed {}", if peer.name().is_empty() { who.clone() } else { peer.name() }))
        }
        // Under the change lock, as a removal is: a peer removed between
        // the lookup and the request would otherwise get an answer about a
        // peer that is no longer there.
        Request::PeerRekey { peer, ike } => {
            let _one_change = iface.changing();
            Answer::Done(sa_requests::rekey(iface, peer, *ike)?)
        }
        Request::PeerReset { peer } => {
            let _one_change = iface.changing();
            Answer::Done(sa_requests::reset(iface, peer)?)
        }
        Request::Sites => Answer::Sites(sites(iface)),
        Request::SiteJoin { .. } | Request::SiteLeave | Request::SiteSet { .. } | Request::SiteRemove { .. } => {
            Answer::Done(crate::registry::requests::answer(iface, req)?)
        }
    })
}

/// Answers one request line.
pub fn handle(iface: &Gateway, line: &str) -> Reply<Answer> {
    let result = serde_json::from_str(line).map_err(ApiError::BadRequest).and_then(|req| answer(iface, &req));
    match result {
        Ok(a) => Reply::Ok(a),
        Err(e) => Reply::Error(e.to_string()),
    }
}

/// The most one request line may be. A peer of thousands of prefixes is a
/// fraction of it; the cap keeps a client (the socket is root's only, but
/// may be buggy) from growing the daemon without bound.
const MAX_REQUEST_BYTES: u64 = 16 << 20;

/// How long a connection may sit without sending its next request. tunctl
/// sends its one request at once; a connection left open holds a
/// descriptor, and enough of them would stop every accept.
const IDLE_PATIENCE: Duration = Duration::from_secs(60);

pub async fn serve(iface: Arc<Gateway>, listener: UnixListener) {
    crate::sockets::serve_each(listener, "control API", |stream| answer_client(iface.clone(), stream)).await
}

async fn answer_client(iface: Arc<Gateway>, stream: tokio::net::UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read.take(MAX_REQUEST_BYTES));
    let mut line = Vec::new();
    loop {
        // Each request has the whole allowance (bytes already buffered
        // count against the one before).
        read.get_mut().set_limit(MAX_REQUEST_BYTES);
        line.clear();
        match tokio::time::timeout(IDLE_PATIENCE, read.read_until(b'\n', &mut line)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
        // The allowance used up: the line was cut there (or ended exactly
        // at it, which no request does). Answered, not applied, and the
        // connection ends, since the rest of the line would follow.
        let cut = read.get_ref().limit() == 0;
        let reply = if cut {
            Reply::Error(format!("request longer than {} MiB; nothing was changed", MAX_REQUEST_BYTES >> 20))
        } else {
            match String::from_utf8(std::mem::take(&mut line)) {
                Err(_) => Reply::Error("request is not UTF-8; nothing was changed".into()),
                Ok(text) => {
                    // A reload reads files and may resolve names: keep it
                    // off the runtime that drives the timers.
                    let iface = iface.clone();
                    let text = text.trim_end_matches(['\n', '\r']).to_string();
                    tokio::task::spawn_blocking(move || handle(&iface, &text))
                        .await
                        .unwrap_or_else(|_| Reply::Error(ApiError::Internal.to_string()))
                }
            }
        };
        // These types have string keys and no floats, so this does not
        // fail; if it ever did, the client still gets a reply.
        let mut out = serde_json::to_string(&reply)
            .unwrap_or_else(|e| serde_json::json!({ "error": format!("cannot encode the reply: {e}") }).to_string());
        out.push('\n');
        // A client that sends but never reads would hold the task and its
        // descriptor for good.
        let written = tokio::time::timeout(IDLE_PATIENCE, write.write_all(out.as_bytes())).await;
        if !matches!(written, Ok(Ok(()))) || cut {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_wireguard::StaticSecret;
    use types::{PeerState as State, Status};

    fn gateway() -> Gateway {
        let iface =
            Interface::new("cwapi0".into(), Some(StaticSecret::random(&mut rand_core::OsRng)), 1420, 1, 0).unwrap();
        Gateway::new(Arc::new(iface))
    }

    fn public_key() -> String {
        StaticSecret::random(&mut rand_core::OsRng).public_key().to_base64()
    }

    /// The reply as a client reads it.
    fn ask<T: serde::de::DeserializeOwned>(gw: &Gateway, req: serde_json::Value) -> Reply<T> {
        serde_json::from_str(&serde_json::to_string(&handle(gw, &req.to_string())).unwrap()).unwrap()
    }

    fn refused(gw: &Gateway, req: serde_json::Value) -> String {
        match ask::<serde_json::Value>(gw, req) {
            Reply::Error(e) => e,
            Reply::Ok(v) => panic!("accepted: {v}"),
        }
    }

    #[test]
    fn status_reads_back_as_the_shared_type() {
        let gw = gateway();
        let key = public_key();
        let added = ask::<String>(
            &gw,
            serde_json::json!({"op": "peer_add", "name": "dc-east", "public_key": key, "allowed_ips": ["10.1.0.0/16"], "persistent_keepalive": 25}),
        );
        assert_eq!(added, Reply::Ok("added dc-east".into()));
        let Reply::Ok(status) = ask::<Status>(&gw, serde_json::json!({"op": "status"})) else { panic!("refused") };
        assert_eq!(status.interface, "cwapi0");
        assert_eq!(status.worker_stats.len(), 1);
        let p = &status.peers[0];
        assert_eq!((p.name.as_str(), p.public_key.as_str(), p.persistent_keepalive), ("dc-east", key.as_str(), 25));
        assert_eq!(
            (p.allowed_ips.clone(), p.state, p.endpoint.clone()),
            (vec!["10.1.0.0/16".into()], State::Configured, None)
        );
        assert_eq!(status.drops.len(), causeway_dataplane::counters::Drop::ALL.len());
    }

    #[test]
    fn peer_fields_follow_the_configuration_rules() {
        let gw = gateway();
        let key = public_key();
        let add = |extra: serde_json::Value| {
            let mut req = serde_json::json!({"op": "peer_add", "name": "x", "public_key": key});
            req.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            req
        };
        let e = refused(&gw, add(serde_json::json!({"name": "no spaces"})));
        assert_eq!(e, format!("name: {}", causeway_config::rules::peer_name("no spaces").unwrap_err()));
        let e = refused(&gw, add(serde_json::json!({"failover_after": 0})));
        assert_eq!(e, "failover_after: expected 1 to 3600 seconds, got 0");
        assert!(refused(&gw, add(serde_json::json!({"allowed_ips": ["10.1.2.3/16"]}))).contains("host bits"));
        // A valid IPv6 address: its last group is not taken for a port.
        assert!(
            refused(&gw, add(serde_json::json!({"endpoints": ["fd00::1:5"]}))).contains("in brackets with its port")
        );
        assert!(
            refused(&gw, add(serde_json::json!({"persistent_keepalive": 70000}))).starts_with("request is not valid")
        );
        assert!(refused(&gw, serde_json::json!({"op": "peer_add", "name": "x"})).contains("needs a public_key"));
        let own = gw.device.public_key().unwrap().to_base64();
        assert_eq!(
            refused(&gw, serde_json::json!({"op": "peer_add", "name": "me", "public_key": own})),
            "this is the interface's own public key"
        );
        assert!(gw.peers().is_empty(), "nothing refused was added");
    }

    // Two clients add a peer of one name at once (different keys): the
    // name check and the add are one step, so exactly one gets it.
    #[test]
    fn two_adds_of_one_name_at_once_leave_one_peer_of_that_name() {
        let gw = Arc::new(gateway());
        for round in 0..200 {
            let name = format!("p{round}");
            let start = Arc::new(std::sync::Barrier::new(2));
            let adds: Vec<_> = (0..2)
                .map(|_| {
                    let (gw, start, name, key) = (gw.clone(), start.clone(), name.clone(), public_key());
                    std::thread::spawn(move || {
                        start.wait();
                        handle(&gw, &serde_json::json!({"op": "peer_add", "name": name, "public_key": key}).to_string())
                    })
                })
                .collect();
            let ok = adds.into_iter().map(|t| t.join().unwrap()).filter(|r| matches!(r, Reply::Ok(_))).count();
            let named = gw.peers().iter().filter(|p| p.name() == name).count();
            assert_eq!((ok, named), (1, 1), "round {round}");
        }
    }

    // A peer found for a change, then removed before the change takes the
    // lock (a concurrent remove or reload), is not brought back by it.
    #[test]
    fn a_change_to_a_peer_removed_meanwhile_does_not_bring_it_back() {
        let gw = gateway();
        ask::<String>(&gw, serde_json::json!({"op": "peer_add", "name": "c", "public_key": public_key()}));
        let found = find_peer(&gw, "c").unwrap();
        ask::<String>(&gw, serde_json::json!({"op": "peer_remove", "peer": "c"}));
        let change: types::PeerChange = serde_json::from_value(serde_json::json!({"persistent_keepalive": 5})).unwrap();
        let e = peer_change::put_peer(&gw, &change, Some(found)).unwrap_err();
        assert_eq!(e.to_string(), "no peer named or keyed \"c\"");
        assert!(gw.peers().is_empty());
    }

    // A client that sends without end gets an answer at the cap and the
    // connection closed, rather than a daemon growing with it.
    #[tokio::test]
    async fn a_request_past_the_cap_is_answered_and_the_connection_ends() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let server = tokio::spawn(serve(Arc::new(gateway()), UnixListener::bind(&path).unwrap()));
        let (mut read, mut write) = tokio::net::UnixStream::connect(&path).await.unwrap().into_split();
        let flood = tokio::spawn(async move {
            let chunk = vec![b' '; 1 << 20];
            for _ in 0..(MAX_REQUEST_BYTES >> 20) + 8 {
                if write.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut read = BufReader::new(&mut read);
        let mut reply = String::new();
        let answered = tokio::time::timeout(Duration::from_secs(20), read.read_line(&mut reply));
        answered.await.expect("answered at the cap").unwrap();
        // Ended: closed, or reset for the bytes the daemon left unread.
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut rest));
        assert!(ended.await.expect("the daemon ended the connection").map_or(true, |n| n == 0));
        assert_eq!(reply, "{\"error\":\"request longer than 16 MiB; nothing was changed\"}\n");
        flood.abort();
        // A line that is not UTF-8 is answered too, and the next one served.
        let (read, mut write) = tokio::net::UnixStream::connect(&path).await.unwrap().into_split();
        write.write_all(b"{\"op\":\xff}\n{\"op\":\"status\"}\n").await.unwrap();
        let mut read = BufReader::new(read);
        let (mut first, mut second) = (String::new(), String::new());
        read.read_line(&mut first).await.unwrap();
        read.read_line(&mut second).await.unwrap();
        assert_eq!(first, "{\"error\":\"request is not UTF-8; nothing was changed\"}\n");
        assert!(second.starts_with("{\"ok\":{\"interface\":\"cwapi0\""), "{second}");
        server.abort();
    }

    #[test]
    fn set_and_remove_by_name() {
        let gw = gateway();
        ask::<String>(&gw, serde_json::json!({"op": "peer_add", "name": "c", "public_key": public_key()}));
        let set = ask::<String>(&gw, serde_json::json!({"op": "peer_set", "peer": "c", "persistent_keepalive": 5}));
        assert_eq!(set, Reply::Ok("c: changed persistent_keepalive".into()));
        let (key_c, key_d) = (find_peer(&gw, "c").unwrap().public_key().to_base64(), public_key());
        let same_key = serde_json::json!({"op": "peer_set", "peer": "c", "public_key": key_c});
        assert_eq!(ask::<String>(&gw, same_key), Reply::Ok("c: nothing to change".into()));
        let rekey = serde_json::json!({"op": "peer_set", "peer": "c", "name": "c2", "public_key": key_d});
        assert_eq!(
            refused(&gw, rekey),
            "public_key: a peer's key cannot be changed; remove the peer and add it with the new key"
        );
        assert_eq!(gw.peers().iter().map(|p| p.name()).collect::<Vec<_>>(), ["c"], "no second peer");
        assert_eq!(refused(&gw, serde_json::json!({"op": "peer_remove", "peer": "d"})), "no peer named or keyed \"d\"");
        assert_eq!(
            ask::<String>(&gw, serde_json::json!({"op": "peer_remove", "peer": "c"})),
            Reply::Ok("removed c".into())
        );
    }

    #[test]
    fn a_peer_file_adds_both_protocols_or_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let gw = gateway();
        // Ephemeral IKE ports, so the test needs neither root nor free 500/4500.
        gw.set_ipsec_ports(0, 0);
        let dir = tempfile::tempdir().unwrap();
        let psk = dir.path().join("west.psk");
        std::fs::write(&psk, "a long enough passphrase for the test\n").unwrap();
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("peers.toml");
        let add = |text: String| serde_json::json!({"op": "peers_add", "path": path, "text": text});
        ask::<String>(
            &gw,
            serde_json::json!({"op": "peer_add", "name": "north", "public_key": public_key(), "allowed_ips": ["10.4.0.0/16"]}),
        );
        let west = "[[peer]]\nname = \"west\"\nprotocol = \"ipsec\"\nencap = \"always\"\nendpoints = [\"198.18.0.9\"]\npsk_file = \"west.psk\"\nallowed_ips = [\"10.6.0.0/16\"]\nlocal_id = \"gw1.main.example\"\nremote_id = \"gw1.west.example\"\n";
        let south =
            format!("[[peer]]\nname = \"south\"\npublic_key = \"{}\"\nallowed_ips = [\"10.5.0.0/16\"]\n", public_key());
        // Refused as a whole: a clash with a running peer, a bad table.
        let e = refused(&gw, add(format!("{south}\n{west}").replace("10.6.0.0/16", "10.4.1.0/24")));
        assert!(e.contains("10.4.1.0/24 overlaps 10.4.0.0/16 of peer north"), "{e}");
        let e = refused(&gw, add(format!("{south}\n{west}").replace("west.psk", "missing.psk")));
        assert!(e.starts_with("configuration rejected") && e.contains("peers.toml:11: peer[2].psk_file"), "{e}");
        let e = refused(&gw, add(south.replace("south", "north")));
        assert_eq!(e, "name north is used by another peer");
        assert_eq!(gw.peers().len(), 1, "nothing of a refused file was added");
        assert!(gw.ike().is_none(), "nor IKE started for it");
        assert_eq!(ask::<String>(&gw, add(format!("{south}\n{west}"))), Reply::Ok("added south, west".into()));
        let ike = gw.ike().expect("IKE started for the IPsec peer");
        assert_eq!(ike.peer_names(), ["west"]);
        let routes = gw.routes();
        let owner = |ip: &str| routes.lookup(ip.parse().unwrap()).and_then(|r| r.peer()).map(|p| p.label());
        assert_eq!(owner("10.5.1.1").as_deref(), Some("south"));
        assert_eq!(owner("10.6.1.1").as_deref(), Some("west"));
        let e = refused(&gw, add(west.to_string()));
        assert_eq!(e, "name west is used by another peer", "an IPsec peer's name is taken too");
        let e = refused(&gw, serde_json::json!({"op": "peer_add", "name": "west", "public_key": public_key()}));
        assert_eq!(e, "name west is used by another peer", "by `peer add` as well");
        assert_eq!(
            ask::<String>(&gw, serde_json::json!({"op": "peer_remove", "peer": "west"})),
            Reply::Ok("removed west".into())
        );
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let gw = gateway();
        assert!(refused(&gw, serde_json::json!({"op": "bogus"})).contains("unknown variant `bogus`"));
        assert!(refused(&gw, serde_json::json!({})).contains("missing field `op`"));
        assert!(refused(&gw, serde_json::json!({"op": "reload"})).contains("not started from a configuration file"));
        match handle(&gw, "not json") {
            Reply::Error(e) => assert!(e.starts_with("request is not valid"), "{e}"),
            Reply::Ok(_) => panic!("accepted"),
        }
    }
}
