//! The WireGuard cross-platform userspace API (the text protocol `wg` and
//! wg-quick speak over /var/run/wireguard/IFNAME.sock).
//!
//! A `set` request is parsed completely before anything is applied, so a
//! request with any bad line changes nothing (wireguard-go applies line by
//! line and can leave an interface half-configured).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use causeway_wireguard::{PresharedKey, PublicKey, StaticSecret};
use ipnet::IpNet;
use thiserror::Error;
use zeroize::Zeroizing;

use causeway_dataplane::interface::Interface;
use causeway_dataplane::peer::PeerState;

/// What `errno=` reports; wg prints the matching strerror.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UapiError {
    #[error("line {line}: {message}")]
    Invalid { line: usize, message: String },
    #[error("cannot bind listen port: {0}")]
    Bind(String),
    #[error("cannot set fwmark: {0}")]
    Fwmark(String),
    #[error("cannot add peer: {0}")]
    Peer(String),
}

impl UapiError {
    pub fn errno(&self) -> i32 {
        match self {
            UapiError::Invalid { .. } | UapiError::Peer(_) => libc::EINVAL,
            UapiError::Bind(_) => libc::EADDRINUSE,
            UapiError::Fwmark(_) => libc::EPERM,
        }
    }
}

#[derive(Default)]
pub struct SetRequest {
    /// Some(None) removes the private key.
    pub private_key: Option<Option<StaticSecret>>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub replace_peers: bool,
    pub peers: Vec<PeerChange>,
}

pub struct PeerChange {
    pub key: PublicKey,
    pub remove: bool,
    pub update_only: bool,
    pub preshared_key: Option<Option<PresharedKey>>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    pub replace_allowed_ips: bool,
    pub allowed_ips: Vec<IpNet>,
}

/// 64 hex digits (either case) into a key, decoded straight into a buffer
/// wiped on drop, so no copy of a private or preshared key is left behind.
fn hex_key(v: &str) -> Option<Zeroizing<[u8; 32]>> {
    let mut out = Zeroizing::new([0u8; 32]);
    // Refuses any length but 64 and any non-hex byte.
    hex::decode_to_slice(v, &mut out[..]).ok()?;
    Some(out)
}

/// A key in lower-case hex, kept on the stack and wiped on drop: private
/// and preshared keys pass through it on their way into a `get` response.
struct Hex(Zeroizing<[u8; 64]>);

fn hex(key: &[u8; 32]) -> Hex {
    let mut digits = Zeroizing::new([0u8; 64]);
    hex::encode_to_slice(key, &mut digits[..]).expect("64 bytes hold 32 bytes in hex");
    Hex(digits)
}

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.0[..]).expect("hex digits are ASCII"))
    }
}

/// Parses the body of a `set=1` request (the lines after `set=1`, up to the
/// blank line).
pub fn parse_set<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<SetRequest, UapiError> {
    let mut req = SetRequest::default();
    for (i, line) in lines.into_iter().enumerate() {
        let line_no = i + 2;
        let bad = |message: String| UapiError::Invalid { line: line_no, message };
        // The line is not echoed: a key pasted without its name would be
        // a secret in the error, which is logged.
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| bad(format!("expected key=value, got {} characters without '='", line.chars().count())))?;
        let peer = req.peers.last_mut();
        let need_peer = |p: Option<&mut PeerChange>| -> Result<(), UapiError> {
            p.map(|_| ())
                .ok_or_else(|| UapiError::Invalid { line: line_no, message: format!("{key} before any public_key") })
        };
        let flag = |v: &str| match v {
            "true" => Ok(true),
            _ => Err(UapiError::Invalid { line: line_no, message: format!("{key} takes only \"true\"") }),
        };
        match key {
            "private_key" => {
                let k = hex_key(value).ok_or_else(|| bad("private_key: expected 64 hex digits".into()))?;
                req.private_key = Some((!all_zero(&k)).then(|| StaticSecret::from_bytes(*k)));
            }
            "listen_port" => {
                req.listen_port = Some(value.parse().map_err(|_| bad(format!("listen_port: {value:?} is not a port")))?)
            }
            "fwmark" => {
                req.fwmark = Some(value.parse().map_err(|_| bad(format!("fwmark: {value:?} is not a number")))?)
            }
            "replace_peers" => req.replace_peers = flag(value)?,
            "public_key" => {
                let k = hex_key(value).ok_or_else(|| bad("public_key: expected 64 hex digits".into()))?;
                req.peers.push(PeerChange {
                    key: PublicKey::from_bytes(*k),
                    remove: false,
                    update_only: false,
                    preshared_key: None,
                    endpoint: None,
                    persistent_keepalive: None,
                    replace_allowed_ips: false,
                    allowed_ips: Vec::new(),
                });
            }
            "remove" => {
                let v = flag(value)?;
                need_peer(req.peers.last_mut())?;
                req.peers.last_mut().expect("checked").remove = v;
            }
            "update_only" => {
                let v = flag(value)?;
                need_peer(req.peers.last_mut())?;
                req.peers.last_mut().expect("checked").update_only = v;
            }
            "preshared_key" => {
                need_peer(peer)?;
                let k = hex_key(value).ok_or_else(|| bad("preshared_key: expected 64 hex digits".into()))?;
                let psk = (!all_zero(&k)).then(|| PresharedKey::from_bytes(*k));
                req.peers.last_mut().expect("checked").preshared_key = Some(psk);
            }
            "endpoint" => {
                need_peer(peer)?;
                let a: SocketAddr =
                    value.parse().map_err(|_| bad(format!("endpoint: {value:?} is not ip:port or [ipv6]:port")))?;
                req.peers.last_mut().expect("checked").endpoint = Some(a);
            }
            "persistent_keepalive_interval" => {
                need_peer(peer)?;
                let v = value
                    .parse()
                    .map_err(|_| bad(format!("persistent_keepalive_interval: {value:?} is not 0 to 65535")))?;
                req.peers.last_mut().expect("checked").persistent_keepalive = Some(v);
            }
            "replace_allowed_ips" => {
                let v = flag(value)?;
                need_peer(req.peers.last_mut())?;
                req.peers.last_mut().expect("checked").replace_allowed_ips = v;
            }
            "allowed_ip" => {
                need_peer(peer)?;
                let n: IpNet = value.parse().map_err(|_| bad(format!("allowed_ip: {value:?} is not a prefix")))?;
                req.peers.last_mut().expect("checked").allowed_ips.push(n.trunc());
            }
            "protocol_version" => {
                need_peer(peer)?;
                if value != "1" {
                    return Err(bad(format!("protocol_version {value} is not supported (only 1)")));
                }
            }
            other => return Err(bad(format!("unknown key {other:?}"))),
        }
    }
    Ok(req)
}

/// Applies a parsed request. Socket changes come first: they are the only
/// steps that can fail for reasons outside the request.
pub fn apply_set(iface: &Interface, req: SetRequest) -> Result<(), UapiError> {
    let old_mark = iface.fwmark();
    if let Some(mark) = req.fwmark {
        iface.set_fwmark(mark).map_err(|e| UapiError::Fwmark(e.to_string()))?;
    }
    if let Some(port) = req.listen_port {
        if port != iface.listen_port() || port == 0 {
            if let Err(e) = iface.rebind(port) {
                // A refused request changes nothing: the mark goes back.
                if req.fwmark.is_some_and(|m| m != old_mark) {
                    let _ = iface.set_fwmark(old_mark);
                }
                return Err(UapiError::Bind(e.to_string()));
            }
        }
    }
    if let Some(key) = req.private_key {
        let unchanged = match &key {
            Some(k) => iface.device.has_private_key(k),
            None => iface.device.public_key().is_none(),
        };
        if !unchanged {
            // A peer with our new public key would be ourselves: WireGuard drops it.
            if let Some(own) = key.as_ref().map(|k| k.public_key()) {
                iface.remove_peer(&own);
            }
            iface.device.set_private_key(key);
        }
    }
    if req.replace_peers {
        iface.remove_all_peers();
    }
    let mut route_changes: Vec<(Arc<PeerState>, bool, Vec<IpNet>)> = Vec::new();
    for change in req.peers {
        if change.remove {
            iface.remove_peer(&change.key);
            // Allowed IPs given to it earlier in this request go with it
            // (`wg set … peer K allowed-ips … peer K remove`), as in
            // wireguard-go, rather than routing to a peer that is gone.
            route_changes.retain(|(peer, _, _)| peer.public_key() != &change.key);
            continue;
        }
        if iface.device.public_key() == Some(change.key) {
            continue;
        }
        let peer = match iface.peer(&change.key) {
            Some(p) => p,
            None if change.update_only => continue,
            None => iface.add_peer(change.key, String::new()).map_err(|e| UapiError::Peer(e.to_string()))?,
        };
        if let Some(psk) = change.preshared_key {
            iface.set_preshared_key(&peer, psk);
        }
        if let Some(ep) = change.endpoint {
            peer.set_endpoint(ep);
        }
        if let Some(k) = change.persistent_keepalive {
            let was = peer.crypto().timers.persistent_keepalive();
            peer.crypto().timers.set_persistent_keepalive(k);
            if k > 0 && was == 0 {
                tracing::debug!(peer = %peer.public_key(), "persistent keepalive on");
            }
        }
        if change.replace_allowed_ips || !change.allowed_ips.is_empty() {
            route_changes.push((peer, change.replace_allowed_ips, change.allowed_ips));
        }
    }
    if !route_changes.is_empty() {
        iface.update_routes(|routes| {
            for (peer, replace, nets) in route_changes {
                if replace {
                    routes.retain(|_, owner| !owner.is_peer(&peer));
                }
                for n in nets {
                    routes.insert(n, peer.clone().into());
                }
            }
        });
    }
    Ok(())
}

/// The response body to `get=1` (without the trailing errno line). It
/// holds the private key and the PSKs, so it is written twice: once to
/// measure it and once into a string of that capacity, which then never
/// grows and so leaves no copy of a key in freed memory; it is wiped when
/// dropped.
pub fn get(iface: &Interface) -> Zeroizing<String> {
    let mut measure = Measure(0);
    write_get(iface, &mut measure);
    // Room for the errno line the caller appends, and for a peer added
    // between the two passes.
    let mut out = Zeroizing::new(String::with_capacity(measure.0 + GET_SLACK));
    write_get(iface, &mut *out);
    out
}

/// Spare capacity of `get`'s answer.
const GET_SLACK: usize = 4096;

/// A `fmt::Write` that only counts.
struct Measure(usize);

impl std::fmt::Write for Measure {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

fn write_get(iface: &Interface, out: &mut dyn std::fmt::Write) {
    // The private key leaves only through this root-only socket, because
    // `wg showconf` needs it; it is never logged.
    if let Some(s) = iface.device.private_key_bytes() {
        let _ = writeln!(out, "private_key={}", hex(&s));
    }
    let port = iface.listen_port();
    if port != 0 {
        let _ = writeln!(out, "listen_port={port}");
    }
    if iface.fwmark() != 0 {
        let _ = writeln!(out, "fwmark={}", iface.fwmark());
    }
    let by_peer = iface.allowed_ips_by_peer();
    for peer in iface.peers() {
        let stats = peer.crypto().stats();
        let _ = writeln!(out, "public_key={}", hex(peer.public_key().as_bytes()));
        let psk = peer.crypto().preshared_key();
        let _ = writeln!(out, "preshared_key={}", hex(psk.as_bytes()));
        let _ = writeln!(out, "protocol_version=1");
        if let Some(ep) = peer.endpoint() {
            let _ = writeln!(out, "endpoint={}", ep.addr);
        }
        let (sec, nsec) = match stats.last_handshake {
            Some(t) => {
                let d = iface.clock.wall_time_of(t).duration_since(UNIX_EPOCH).unwrap_or_default();
                (d.as_secs(), d.subsec_nanos())
            }
            None => (0, 0),
        };
        let _ = writeln!(out, "last_handshake_time_sec={sec}");
        let _ = writeln!(out, "last_handshake_time_nsec={nsec}");
        let _ = writeln!(out, "tx_bytes={}", stats.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", stats.rx_bytes);
        let _ = writeln!(out, "persistent_keepalive_interval={}", peer.crypto().timers.persistent_keepalive());
        for net in by_peer.get(&Arc::as_ptr(&peer)).into_iter().flatten() {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
}

/// Whether a key is all zeros ("remove" in the UAPI), in time that does
/// not depend on where its first non-zero byte is.
fn all_zero(k: &[u8; 32]) -> bool {
    k.iter().fold(0u8, |acc, b| acc | b) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> String {
        hex(&[b; 32]).to_string()
    }

    #[test]
    fn parses_a_full_request() {
        let text = format!(
            "private_key={}\nlisten_port=51820\nfwmark=7\nreplace_peers=true\npublic_key={}\npreshared_key={}\nendpoint=[fd00::2]:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.1.2.3/16\nallowed_ip=fd00:1::/64\nprotocol_version=1\npublic_key={}\nremove=true",
            k(1),
            k(2),
            k(3),
            k(4)
        );
        let r = parse_set(text.lines()).unwrap();
        assert!(r.private_key.unwrap().is_some());
        assert_eq!(r.listen_port, Some(51820));
        assert_eq!(r.fwmark, Some(7));
        assert!(r.replace_peers);
        assert_eq!(r.peers.len(), 2);
        let p = &r.peers[0];
        assert_eq!(p.key, PublicKey::from_bytes([2; 32]));
        assert!(p.preshared_key.as_ref().unwrap().is_some());
        assert_eq!(p.endpoint, Some("[fd00::2]:51820".parse().unwrap()));
        assert_eq!(p.persistent_keepalive, Some(25));
        assert_eq!(p.allowed_ips, vec!["10.1.0.0/16".parse::<IpNet>().unwrap(), "fd00:1::/64".parse().unwrap()]);
        assert!(r.peers[1].remove);
    }

    #[test]
    fn zero_keys_mean_none() {
        let r = parse_set(
            format!("private_key={}\npublic_key={}\npreshared_key={}", k(0), k(2), k(0)).lines().collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(r.private_key.unwrap().is_none());
        assert!(r.peers[0].preshared_key.as_ref().unwrap().is_none());
    }

    #[test]
    fn bad_lines_name_the_line() {
        let bad = |t: &str| parse_set(t.lines()).err().unwrap().to_string();
        assert_eq!(bad("listen_port=x"), "line 2: listen_port: \"x\" is not a port");
        assert!(bad("endpoint=1.2.3.4:5").contains("endpoint before any public_key"));
        assert!(bad(&format!("public_key={}\nallowed_ip=10.0.0.0/33", k(1))).starts_with("line 3: allowed_ip"));
        assert!(bad("bogus=1").contains("unknown key"));
        assert!(bad("noequals").contains("expected key=value"));
        assert!(bad("public_key=abc").contains("64 hex digits"));
        assert!(bad(&format!("public_key={}\nprotocol_version=2", k(1))).contains("not supported"));
        assert!(bad("replace_peers=false").contains("only \"true\""));
    }

    #[test]
    fn hex_round_trip() {
        let key = [0xabu8; 32];
        assert_eq!(hex(&key).to_string(), "ab".repeat(32));
        assert_eq!(*hex_key(&hex(&key).to_string()).unwrap(), key);
        assert_eq!(*hex_key(&"AB".repeat(32)).unwrap(), key, "wg may send upper case");
        assert!(hex_key(&"g".repeat(64)).is_none());
        assert!(hex_key(&"a".repeat(63)).is_none());
        assert!(hex_key(&"a".repeat(66)).is_none());
        assert!(hex_key("").is_none());
        // u8::from_str_radix, used before, took a sign: "+a" was 0x0a.
        assert!(hex_key(&"+a".repeat(32)).is_none());
    }

    /// The private key of `memory_gateway`.
    const MEMORY_KEY: [u8; 32] = [7; 32];

    /// A gateway at 198.18.0.1, port 51820, on an in-memory network.
    fn memory_gateway() -> (Arc<causeway_dataplane::memory::MemNet>, crate::gateway::Gateway) {
        use causeway_dataplane::interface::Options;
        let net = causeway_dataplane::memory::MemNet::new();
        let binder = net.host("198.18.0.1".parse().unwrap(), 64);
        let options = Options { mtu: 1420, workers: 1, port: 51820, binder, batches_per_worker: 8 };
        let iface =
            Interface::with_options("mem0".into(), Some(StaticSecret::from_bytes(MEMORY_KEY)), options).unwrap();
        (net, crate::gateway::Gateway::new(Arc::new(iface)))
    }

    #[test]
    fn get_answers_with_keys_in_a_string_that_never_grew() {
        let (_net, gw) = memory_gateway();
        let secret = StaticSecret::from_bytes(MEMORY_KEY);
        for n in 2..40u8 {
            let body = format!("public_key={}\npreshared_key={}\nallowed_ip=10.{n}.0.0/16\n", k(n), k(n + 100));
            apply_set(&gw, parse_set(body.lines()).unwrap()).unwrap();
        }
        let mut answer = get(&gw);
        let capacity = answer.capacity();
        answer.push_str("errno=0\n\n");
        assert_eq!(answer.capacity(), capacity, "the errno line fits without growing");
        assert!(answer.len() > 38 * 200, "every peer answered: {} bytes", answer.len());
        assert!(answer.starts_with(&format!("private_key={}\n", hex(secret.as_bytes()))));
        assert!(answer.contains(&format!("preshared_key={}\n", k(139))));
        assert!(answer.lines().filter(|l| !l.is_empty()).all(|l| l.contains('=')));
    }

    // What `wg set wg0 peer K allowed-ips 10.9.0.0/16 peer K remove`
    // sends: the peer goes, and so do the prefixes given to it first.
    #[test]
    fn a_peer_removed_later_in_the_request_takes_its_new_allowed_ips_with_it() {
        let (_net, gw) = memory_gateway();
        let body = format!("public_key={}\nallowed_ip=10.9.0.0/16\npublic_key={}\nremove=true\n", k(2), k(2));
        apply_set(&gw, parse_set(body.lines()).unwrap()).unwrap();
        assert!(gw.peers().is_empty());
        assert!(gw.routes().lookup("10.9.0.1".parse().unwrap()).is_none(), "a route to the removed peer");
        // Removed and added again in one request: the new peer has them.
        let body = format!("public_key={}\nallowed_ip=10.8.0.0/16\npublic_key={}\nremove=true\npublic_key={}\nallowed_ip=10.9.0.0/16\n", k(2), k(2), k(2));
        apply_set(&gw, parse_set(body.lines()).unwrap()).unwrap();
        assert!(gw.routes().lookup("10.8.0.1".parse().unwrap()).is_none());
        assert!(gw.routes().lookup("10.9.0.1".parse().unwrap()).is_some());
    }

    // A bare line is not echoed into the error (which is logged): it may
    // be a key pasted without its name.
    #[test]
    fn a_line_without_a_key_name_is_not_echoed() {
        let secret = k(9);
        let err = parse_set([secret.as_str()]).err().unwrap().to_string();
        assert!(!err.contains(&secret[..16]), "{err}");
        assert!(err.starts_with("line 2: expected key=value"), "{err}");
    }

    // A refused request changes nothing: the fwmark set before a port that
    // cannot be bound goes back.
    #[test]
    fn a_port_that_cannot_be_bound_leaves_the_fwmark_as_it_was() {
        let (net, gw) = memory_gateway();
        gw.set_fwmark(3).unwrap();
        net.hold("198.18.0.1:51821".parse().unwrap());
        let err = apply_set(&gw, parse_set(["fwmark=5", "listen_port=51821"]).unwrap());
        assert!(matches!(err, Err(UapiError::Bind(_))), "{err:?}");
        assert_eq!((gw.fwmark(), gw.listen_port()), (3, 51820));
        apply_set(&gw, parse_set(["fwmark=5", "listen_port=51822"]).unwrap()).unwrap();
        assert_eq!((gw.fwmark(), gw.listen_port()), (5, 51822));
    }
}
