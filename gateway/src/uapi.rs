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
    /// A prefix a site or an IPsec peer has: not a WireGuard peer's to take.
    #[error("allowed_ip {0}")]
    Taken(String),
}

impl UapiError {
    pub fn errno(&self) -> i32 {
        match self {
            UapiError::Invalid { .. } | UapiError::Peer(_) | UapiError::Taken(_) => libc::EINVAL,
            UapiError::Bind(_) => libc::EADDRINUSE,
            UapiError::Fwmark(_) => libc::EPERM,
        }
    }
}

/// A number as wireguard-go's `strconv.ParseUint(v, 10, …)` reads one:
/// decimal digits only. Rust's parse would also take a leading `+`.
fn decimal<T: std::str::FromStr>(v: &str) -> Option<T> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
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
    /// In the order given: wireguard-go applies each line as it comes, so
    /// `replace_allowed_ips` drops only what came before it.
    pub allowed_ips: Vec<AllowedIpStep>,
}

/// One `replace_allowed_ips` or `allowed_ip` line of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedIpStep {
    /// `replace_allowed_ips=true`: the peer's prefixes so far go.
    Replace,
    /// `allowed_ip=PREFIX`: routed to the peer, taken from any other.
    Add(IpNet),
    /// `allowed_ip=-PREFIX` (wg's `allowed-ips -PREFIX`): no longer
    /// routed to the peer, if it was.
    Remove(IpNet),
}

/// What of a key name may be logged: the name if it looks like one, else
/// only its length. A key pasted without its name (or as the operation
/// line) holds '=' too, being base64, and must never reach the log.
pub fn loggable_name(name: &str) -> String {
    let plain = (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if plain {
        format!("{name:?}")
    } else {
        format!("(a name of {} characters, not shown)", name.chars().count())
    }
}

/// An endpoint as `wg` writes it: `ip:port`, `[ipv6]:port`, or
/// `[ipv6%zone]:port` with a numeric zone or an interface name, as
/// getnameinfo writes a link-local address.
fn parse_endpoint(value: &str) -> Option<SocketAddr> {
    if let Ok(a) = value.parse() {
        return Some(a);
    }
    let (inside, port) = value.strip_prefix('[')?.split_once("]:")?;
    let (ip, zone) = inside.split_once('%')?;
    let ip: std::net::Ipv6Addr = ip.parse().ok()?;
    let port: u16 = port.parse().ok()?;
    let scope = match zone.parse::<u32>() {
        Ok(n) => n,
        Err(_) => {
            let name = std::ffi::CString::new(zone).ok()?;
            // SAFETY: `name` is a NUL-terminated string that outlives the call.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            (index != 0).then_some(index)?
        }
    };
    Some(SocketAddr::V6(std::net::SocketAddrV6::new(ip, port, 0, scope)))
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
        // wireguard-go reads interface keys only before the first peer.
        let interface_key = matches!(key, "private_key" | "listen_port" | "fwmark" | "replace_peers");
        if interface_key && !req.peers.is_empty() {
            return Err(bad(format!("{key} after a public_key: interface keys come first")));
        }
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
                req.listen_port =
                    Some(decimal(value).ok_or_else(|| bad(format!("listen_port: {value:?} is not a port")))?)
            }
            "fwmark" => {
                req.fwmark = Some(decimal(value).ok_or_else(|| bad(format!("fwmark: {value:?} is not a number")))?)
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
                let a = parse_endpoint(value)
                    .ok_or_else(|| bad(format!("endpoint: {value:?} is not ip:port or [ipv6]:port")))?;
                req.peers.last_mut().expect("checked").endpoint = Some(a);
            }
            "persistent_keepalive_interval" => {
                need_peer(peer)?;
                let v = decimal(value)
                    .ok_or_else(|| bad(format!("persistent_keepalive_interval: {value:?} is not 0 to 65535")))?;
                req.peers.last_mut().expect("checked").persistent_keepalive = Some(v);
            }
            "replace_allowed_ips" => {
                flag(value)?;
                need_peer(req.peers.last_mut())?;
                req.peers.last_mut().expect("checked").allowed_ips.push(AllowedIpStep::Replace);
            }
            "allowed_ip" => {
                need_peer(peer)?;
                let (remove, prefix) = match value.strip_prefix('-') {
                    Some(p) => (true, p),
                    None => (false, value),
                };
                let n: IpNet = prefix.parse().map_err(|_| bad(format!("allowed_ip: {value:?} is not a prefix")))?;
                let step = if remove { AllowedIpStep::Remove(n.trunc()) } else { AllowedIpStep::Add(n.trunc()) };
                req.peers.last_mut().expect("checked").allowed_ips.push(step);
            }
            "protocol_version" => {
                need_peer(peer)?;
                if value != "1" {
                    return Err(bad(format!("protocol_version {value} is not supported (only 1)")));
                }
            }
            other => return Err(bad(format!("unknown key {}", loggable_name(other)))),
        }
    }
    Ok(req)
}

/// Applies a parsed request. Socket changes come first: they are the only
/// steps that can fail for reasons outside the request.
pub fn apply_set(iface: &crate::gateway::Gateway, req: SetRequest) -> Result<(), UapiError> {
    // Checked before anything changes. WireGuard peers take prefixes from
    // each other, as in wireguard-go; a site's or an IPsec peer's are not
    // theirs to take (the control API and reloads refuse the same).
    let added: Vec<IpNet> = req
        .peers
        .iter()
        .flat_map(|c| c.allowed_ips.iter())
        .filter_map(|s| if let AllowedIpStep::Add(n) = s { Some(*n) } else { None })
        .collect();
    if let Some(why) = crate::reload::overlap_beyond_wireguard(iface, &added) {
        return Err(UapiError::Taken(why));
    }
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
    // Applied in one swap at the end, in the request's order, as
    // wireguard-go applies its lines one by one.
    let mut route_changes: Vec<(Arc<PeerState>, RouteChange)> = Vec::new();
    // A run of removals (`wg syncconf` sends one per peer it drops) goes
    // in one `remove_peers`, one copy of the routing table for the run;
    // the run ends before any other line, which keeps the lines' order.
    let mut removals: Vec<PublicKey> = Vec::new();
    for change in req.peers {
        if change.remove {
            // Prefixes given to it earlier in this request go with it
            // (`wg set … peer K allowed-ips … peer K remove`), including
            // ones it took from another peer, as in wireguard-go.
            if let Some(peer) = iface.peer(&change.key) {
                route_changes.push((peer, RouteChange::Forget));
            }
            removals.push(change.key);
            continue;
        }
        if !removals.is_empty() {
            iface.remove_peers(&std::mem::take(&mut removals));
        }
        if iface.device.public_key() == Some(change.key) {
            continue;
        }
        let peer = match iface.peer(&change.key) {
            Some(p) => p,
            None if change.update_only => continue,
            // Cannot fail here: add_peer refuses only the interface's own
            // key, skipped above. A refusal it may gain (a peer limit, say)
            // must be checked before anything changes, as `Taken` is: from
            // here on a request is half applied (the UAPI fuzz target
            // checks that a refused request changes nothing).
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
        if !change.allowed_ips.is_empty() {
            route_changes.push((peer, RouteChange::Steps(change.allowed_ips)));
        }
    }
    iface.remove_peers(&removals);
    if !route_changes.is_empty() {
        iface.update_routes(|routes| {
            for (peer, change) in route_changes {
                let steps = match change {
                    RouteChange::Forget => {
                        routes.retain(|_, owner| !owner.is_peer(&peer));
                        continue;
                    }
                    RouteChange::Steps(steps) => steps,
                };
                for step in steps {
                    match step {
                        AllowedIpStep::Replace => routes.retain(|_, owner| !owner.is_peer(&peer)),
                        AllowedIpStep::Add(n) => {
                            routes.insert(n, peer.clone().into());
                        }
                        AllowedIpStep::Remove(n) => {
                            if routes.get(n).is_some_and(|owner| owner.is_peer(&peer)) {
                                routes.remove(n);
                            }
                        }
                    }
                }
            }
        });
    }
    Ok(())
}

/// What a set does to one peer's prefixes.
enum RouteChange {
    Steps(Vec<AllowedIpStep>),
    /// The peer was removed: every prefix still routed to it goes.
    Forget,
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
        assert_eq!(
            p.allowed_ips,
            [
                AllowedIpStep::Replace,
                AllowedIpStep::Add("10.1.0.0/16".parse().unwrap()),
                AllowedIpStep::Add("fd00:1::/64".parse().unwrap())
            ]
        );
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
        assert!(bad(&format!("public_key={}\nallowed_ip=-x", k(1))).contains("\"-x\" is not a prefix"));
        assert_eq!(
            bad(&format!("public_key={}\nreplace_peers=true", k(1))),
            "line 3: replace_peers after a public_key: interface keys come first"
        );
        // Decimal digits only, as wireguard-go's ParseUint reads numbers.
        assert_eq!(bad("listen_port=+51820"), "line 2: listen_port: \"+51820\" is not a port");
        assert!(bad("fwmark=+1").contains("is not a number"));
        assert!(bad("listen_port=").contains("is not a port"));
        assert!(bad(&format!("public_key={}\npersistent_keepalive_interval=+25", k(1))).contains("is not 0 to 65535"));
        assert_eq!(parse_set(["listen_port=051820"].into_iter()).unwrap().listen_port, Some(51820));
    }

    // A key pasted without its name still holds '=' (base64 ends with
    // it): the error, which is logged, must not carry it.
    #[test]
    fn an_unknown_key_that_may_be_a_secret_is_not_echoed() {
        let b64 = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        let err = parse_set([b64]).err().unwrap().to_string();
        assert_eq!(err, "line 2: unknown key (a name of 43 characters, not shown)");
        assert_eq!(parse_set(["bogus=1"]).err().unwrap().to_string(), "line 2: unknown key \"bogus\"");
    }

    // How `wg` writes a link-local endpoint (getnameinfo): with a zone,
    // numeric or an interface name.
    #[test]
    fn link_local_endpoints_take_their_zone() {
        let ep = |v: &str| {
            parse_endpoint(v).map(|a| match a {
                SocketAddr::V6(a) => (a.ip().to_string(), a.port(), a.scope_id()),
                SocketAddr::V4(a) => (a.ip().to_string(), a.port(), 0),
            })
        };
        assert_eq!(ep("[fe80::1%3]:51820"), Some(("fe80::1".into(), 51820, 3)));
        // SAFETY: a NUL-terminated literal.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert_ne!(lo, 0);
        assert_eq!(ep("[fe80::1%lo]:51820"), Some(("fe80::1".into(), 51820, lo)));
        assert_eq!(ep("[fe80::1%no-such-if9]:51820"), None);
        assert_eq!(ep("198.18.0.2:51820"), Some(("198.18.0.2".into(), 51820, 0)));
        assert_eq!(ep("[fe80::1%lo]"), None, "no port");
    }

    fn owner_of(gw: &crate::gateway::Gateway, ip: &str) -> Option<u8> {
        gw.routes().lookup(ip.parse().unwrap()).and_then(|r| r.peer().map(|p| p.public_key().as_bytes()[0]))
    }

    // `wg set wg0 peer K allowed-ips -10.1.0.0/16` (wireguard-tools sends
    // `allowed_ip=-PREFIX`): the prefix leaves that peer, and only that
    // peer; and the lines of a peer apply in their order.
    #[test]
    fn allowed_ips_are_removed_one_by_one_and_apply_in_order() {
        let (_net, gw) = memory_gateway();
        let set = |body: String| apply_set(&gw, parse_set(body.lines()).unwrap()).unwrap();
        set(format!(
            "public_key={}\nallowed_ip=10.1.0.0/16\nallowed_ip=10.2.0.0/16\npublic_key={}\nallowed_ip=10.3.0.0/16\n",
            k(2),
            k(3)
        ));
        set(format!("public_key={}\nallowed_ip=-10.1.0.0/16\nallowed_ip=-10.3.0.0/16\n", k(2)));
        assert_eq!(owner_of(&gw, "10.1.0.1"), None);
        assert_eq!(owner_of(&gw, "10.2.0.1"), Some(2));
        assert_eq!(owner_of(&gw, "10.3.0.1"), Some(3), "another peer's prefix stays");
        // replace_allowed_ips drops what came before it, not what follows.
        set(format!("public_key={}\nallowed_ip=10.4.0.0/16\nreplace_allowed_ips=true\nallowed_ip=10.5.0.0/16\n", k(2)));
        assert_eq!((owner_of(&gw, "10.2.0.1"), owner_of(&gw, "10.4.0.1")), (None, None));
        assert_eq!(owner_of(&gw, "10.5.0.1"), Some(2));
        // A prefix taken from a peer by one removed later in the request
        // goes with it, as in wireguard-go.
        set(format!("public_key={}\nallowed_ip=10.3.0.0/16\npublic_key={}\nremove=true\n", k(2), k(2)));
        assert_eq!((owner_of(&gw, "10.3.0.1"), owner_of(&gw, "10.5.0.1")), (None, None));
    }

    // A site's prefixes are not a WireGuard peer's to take over the UAPI;
    // the request is refused whole.
    #[test]
    fn a_sites_prefix_is_refused_and_nothing_changes() {
        let (_net, gw) = memory_gateway();
        let site = gw.add_site("west");
        gw.set_site_prefixes(&site, &["10.7.0.0/16".parse().unwrap()]);
        let body = format!("listen_port=51823\npublic_key={}\nallowed_ip=10.7.1.0/24\n", k(2));
        let err = apply_set(&gw, parse_set(body.lines()).unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "allowed_ip 10.7.1.0/24 overlaps 10.7.0.0/16 of site west");
        assert_eq!(err.errno(), libc::EINVAL);
        assert!(gw.peers().is_empty() && gw.listen_port() == 51820, "nothing applied");
        assert!(gw.routes().lookup("10.7.1.1".parse().unwrap()).is_some_and(|r| r.site().is_some()));
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

    // `wg syncconf` removes each peer the new file lacks with a line of
    // its own; a run of them goes at once, and the peers around it stay.
    #[test]
    fn a_run_of_removals_takes_those_peers_only() {
        let (_net, gw) = memory_gateway();
        let add: String = (2..6).map(|i| format!("public_key={}\nallowed_ip=10.{i}.0.0/16\n", k(i))).collect();
        apply_set(&gw, parse_set(add.lines()).unwrap()).unwrap();
        let body = format!(
            "public_key={}\nremove=true\npublic_key={}\nremove=true\npublic_key={}\npersistent_keepalive_interval=5\npublic_key={}\nremove=true\n",
            k(2),
            k(3),
            k(4),
            k(5)
        );
        apply_set(&gw, parse_set(body.lines()).unwrap()).unwrap();
        assert_eq!(gw.peers().len(), 1);
        assert_eq!(gw.peers()[0].crypto().timers.persistent_keepalive(), 5);
        assert_eq!(owner_of(&gw, "10.4.0.1"), Some(4));
        for ip in ["10.2.0.1", "10.3.0.1", "10.5.0.1"] {
            assert_eq!(owner_of(&gw, ip), None, "{ip}");
        }
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

    // Policy routing that keeps marked packets out of the tunnel must see
    // IKE's too: `wg set fwmark` marks its socket as well as ESP's.
    #[test]
    fn the_fwmark_reaches_ikes_socket() {
        let (net, gw) = memory_gateway();
        gw.set_ipsec_ports(500, 4500);
        gw.ensure_ike(&*net.host("198.18.0.1".parse().unwrap(), 64), false).unwrap();
        apply_set(&gw, parse_set(["fwmark=7"]).unwrap()).unwrap();
        for port in [500, 4500, 51820] {
            assert_eq!(net.fwmark_of(format!("198.18.0.1:{port}").parse().unwrap()), 7, "port {port}");
        }
        gw.stop_ike();
    }
}
