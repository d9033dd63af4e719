//! The bodies of Causeway's fuzz targets, one per parser of outside input,
//! each checking a property beyond "does not crash". The cargo-fuzz binaries
//! in `fuzz_targets/` call these, and `tests/corpus.rs` replays the kept
//! corpus through them on the stable toolchain. IKE's body, with the
//! responder it drives, is in `ike.rs`; the TUN's super-packets, checked
//! against tun-rs's cut, in `super_packet.rs`; ESP's lives with the ESP
//! core.
//!
//! Targets that build an interface (UAPI, control API) first move their
//! thread into a fresh network namespace where possible, so that names the
//! fuzzer invents are never looked up on a real network.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use base64::Engine;
use causeway_dataplane::interface::Interface;
use causeway_gateway::gateway::Gateway;
use causeway_wireguard::{Device, Peer, Received, StaticSecret, Time};

pub mod ike;
pub mod super_packet;

/// A responder (`b`) with an established, confirmed session from `a`.
struct Wire {
    a: Device,
    b: Device,
    a_peer: std::sync::Arc<Peer>,
    now: Time,
    buf: Mutex<Vec<u8>>,
}

const A_ADDR: &str = "198.18.0.1:51820";
const B_ADDR: &str = "198.18.0.2:51820";
/// Payload bytes sealed per input at most, like an MTU.
const MAX_SEALED: usize = 1500;

fn wire_state() -> &'static Wire {
    static WIRE: OnceLock<Wire> = OnceLock::new();
    WIRE.get_or_init(|| {
        let (ka, kb) = (StaticSecret::from_bytes([1; 32]), StaticSecret::from_bytes([2; 32]));
        let (pa, pb) = (ka.public_key(), kb.public_key());
        let a = Device::new(Some(ka));
        let b = Device::new(Some(kb));
        let a_peer = a.add_peer(pb, None, 0).expect("peer b");
        b.add_peer(pa, None, 0).expect("peer a");
        let now = Time::from_secs(1_000);
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut init = a.create_initiation(&a_peer, now, wall).expect("initiation");
        let Ok(Received::HandshakeResponse { mut response, .. }) = b.receive(addr(A_ADDR), &mut init, now) else {
            panic!("b refused a's initiation")
        };
        assert!(matches!(a.receive(addr(B_ADDR), &mut response, now), Ok(Received::SessionEstablished { .. })));
        let wire = Wire { a, b, a_peer, now, buf: Mutex::new(vec![0; 16 + MAX_SEALED + 16 + 16]) };
        // A keepalive confirms the session on b's side.
        let sealed = seal(&wire, &[]);
        assert!(matches!(wire.b.receive(addr(A_ADDR), &mut sealed.clone(), now), Ok(Received::Keepalive { .. })));
        wire
    })
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// A's data message carrying `payload`.
fn seal(w: &Wire, payload: &[u8]) -> Vec<u8> {
    let mut buf = w.buf.lock().unwrap_or_else(|e| e.into_inner());
    buf[16..16 + payload.len()].copy_from_slice(payload);
    let sealed = w.a.seal(&w.a_peer, &mut buf, payload.len(), MAX_SEALED, w.now).expect("seal");
    buf[..sealed.len].to_vec()
}

/// Datagrams arriving at a gateway. The first byte picks the mode:
/// - even: the rest is a raw datagram. Whatever it is, an error must leave
///   the responder's state as it was (no index, counter or session change).
/// - odd: the rest is an inner packet, sealed by the real peer. It must
///   decrypt to exactly those bytes, and the inner-packet checks of the
///   receive path (length, source, MSS clamp) must hold on it.
pub fn wire(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let w = wire_state();
    if mode % 2 == 0 {
        let peer = w.b.peers()[0].clone();
        let (indices, rx) = (w.b.index_count(), peer.stats().rx_bytes);
        let mut packet = rest.to_vec();
        if w.b.receive(addr(A_ADDR), &mut packet, w.now).is_err() {
            assert_eq!(w.b.index_count(), indices, "a refused datagram changed the index table");
            assert_eq!(peer.stats().rx_bytes, rx, "a refused datagram was counted");
        }
        return;
    }
    let payload = &rest[..rest.len().min(MAX_SEALED)];
    let mut packet = seal(w, payload);
    match w.b.receive(addr(A_ADDR), &mut packet, w.now) {
        Ok(Received::Data { plaintext, .. }) => {
            assert_eq!(&plaintext[..payload.len()], payload, "decrypted bytes differ from what was sealed");
            assert!(plaintext[payload.len()..].iter().all(|&b| b == 0), "padding is zeros");
            inner(plaintext);
        }
        Ok(Received::Keepalive { .. }) => assert!(payload.is_empty()),
        other => panic!("a sealed packet was refused: {:?}", other.err()),
    }
}

/// The receive path's view of a decrypted packet, and the MSS clamp that
/// rewrites SYNs in both directions.
fn inner(plain: &[u8]) {
    if let Some((len, _source)) = causeway_dataplane::receive::inner_packet(plain) {
        assert!(len <= plain.len() && len >= 20);
    }
    let mut packet = plain.to_vec();
    let limits = causeway_dataplane::mss::max_mss(1420);
    if causeway_dataplane::mss::clamp(&mut packet, limits) {
        assert_eq!(packet.len(), plain.len(), "clamping never changes the length");
        let once = packet.clone();
        assert!(!causeway_dataplane::mss::clamp(&mut packet, limits), "a clamped SYN is clamped again");
        assert_eq!(packet, once);
    }
    let _ = causeway_dataplane::send::destination(plain);
}

/// ESP datagrams at an SA of each cipher, and payloads sealed and opened
/// again; the body and its properties live with the ESP core
/// (`causeway_esp::fuzz`).
pub fn esp(data: &[u8]) {
    causeway_esp::fuzz::esp(data);
    // What a child SA opens meets its traffic selectors next: any bytes
    // are judged without a panic, and never taken by selectors that
    // cover no address.
    use causeway_dataplane::selectors::{Selector, Selectors};
    let range =
        |a: &str, b: &str, proto, ports| Selector { proto, ports, start: a.parse().unwrap(), end: b.parse().unwrap() };
    let narrowed = Selectors::new(
        vec![range("10.2.0.0", "10.2.255.255", 6, (80, 443)), range("fd00:2::", "fd00:2::ffff", 0, (0, u16::MAX))],
        vec![range("10.1.0.0", "10.1.255.255", 0, (0, u16::MAX)), range("fd00:1::", "fd00:1::ffff", 17, (53, 53))],
    )
    .expect("narrowed");
    let _ = narrowed.admits(data);
    let none = Selectors::new(vec![], vec![]).expect("empty lists select nothing");
    assert!(!none.admits(data));
}

/// Moves this thread into a new network namespace (root only); true when
/// that worked. Namespaces are per thread, and so is the interface below.
pub fn isolated() -> bool {
    thread_local! {
        static ISOLATED: bool = {
            // SAFETY: unshare takes flags only and affects the calling thread.
            unsafe { libc::unshare(libc::CLONE_NEWNET) == 0 }
        };
    }
    ISOLATED.with(|i| *i)
}

/// The private key of the fuzzed interface (before clamping).
const INTERFACE_KEY: [u8; 32] = [3; 32];

/// Prefixes of an IPsec peer on the fuzzed interface, which the UAPI
/// must refuse to give a WireGuard peer.
const IPSEC_PREFIXES: [&str; 2] = ["10.99.0.0/16", "fd00:99::/32"];

/// An interface with no TUN and no workers: the control plane's view.
/// Each input starts from the same state (the interface's key, no mark,
/// no WireGuard peers, one IPsec peer with `IPSEC_PREFIXES`), so that what
/// an input does cannot depend on the inputs run before it; only the
/// listen port stays as an earlier input may have set it.
fn with_interface(f: impl FnOnce(&Gateway)) {
    thread_local! {
        static IFACE: RefCell<Option<Gateway>> = const { RefCell::new(None) };
    }
    if !isolated() {
        return;
    }
    IFACE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let iface = cell.get_or_insert_with(|| {
            let iface = Interface::new("cwfuzz0".into(), Some(StaticSecret::from_bytes(INTERFACE_KEY)), 1420, 1, 0)
                .expect("an interface without a TUN");
            Gateway::new(std::sync::Arc::new(iface))
        });
        iface.device.set_private_key(Some(StaticSecret::from_bytes(INTERFACE_KEY)));
        iface.set_fwmark(0).expect("the mark is cleared");
        let ipsec = iface.add_ipsec_peer("fuzz-ipsec");
        iface.update_routes(|routes| {
            for n in IPSEC_PREFIXES {
                routes.insert(n.parse().expect("a prefix"), ipsec.clone().into());
            }
        });
        f(iface);
        // Also keeps memory bounded.
        iface.remove_all_peers();
    });
}

/// The wg UAPI `set=1` body, applied to an interface when it parses:
/// - a request refused (by the parser or when applied) changes nothing;
/// - `get` answers key=value lines;
/// - what `get` answers, given back as a `set` that replaces the peers
///   (`wg showconf | wg setconf`, as `wg-quick save` and restores do),
///   changes nothing: every line `get` writes is one `set` reads back to
///   the same state.
pub fn uapi(data: &[u8]) {
    use causeway_gateway::uapi::{apply_set, get, parse_set};
    let text = String::from_utf8_lossy(data);
    // Framed as the socket frames it (`control.rs`): lines without their
    // "\n" or "\r\n", up to the blank line that ends the request.
    let body = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).take_while(|l| !l.is_empty());
    let parsed = parse_set(body);
    with_interface(|iface| {
        let before = get(iface);
        let applied = parsed.and_then(|req| apply_set(iface, req));
        let after = get(iface);
        if let Err(e) = applied {
            assert_eq!(*before, *after, "a refused request ({e}) changed the interface");
        }
        assert!(after.lines().all(|l| l.contains('=')), "get answers key=value lines: {after:?}");
        let replay = showconf_as_set(&after);
        let req = parse_set(replay.lines()).unwrap_or_else(|e| panic!("get's lines do not parse as a set: {e}"));
        apply_set(iface, req).unwrap_or_else(|e| panic!("get's lines are refused as a set: {e}"));
        assert_eq!(*after, *get(iface), "get's lines given back as a set changed the interface");
    });
}

/// `get`'s answer as a `set` body that replaces every peer: its
/// configuration lines, without the counters and handshake times a `set`
/// does not take.
fn showconf_as_set(get: &str) -> String {
    const STATE: [&str; 4] = ["last_handshake_time_sec=", "last_handshake_time_nsec=", "tx_bytes=", "rx_bytes="];
    let mut out = String::from("replace_peers=true\n");
    for line in get.lines().filter(|l| !STATE.iter().any(|s| l.starts_with(s))) {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("public_key=") {
            // The peer's prefixes become exactly those listed after it.
            out.push_str("replace_allowed_ips=true\n");
        }
    }
    out
}

/// One line of the tunctl control API: every answer is an object with
/// exactly one of "ok" or "error", and never shows the private key.
pub fn control_api(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let line = text.split('\n').next().unwrap_or_default();
    with_interface(|iface| {
        let reply = serde_json::to_value(causeway_gateway::api::handle(iface, line)).expect("a reply encodes");
        let obj = reply.as_object().expect("an object");
        assert_eq!(obj.len(), 1, "{reply}");
        assert!(obj.contains_key("ok") || obj.contains_key("error"), "{reply}");
        // The key as stored (clamped), in the forms a leak would take;
        // unless the request itself carried it (errors may quote requests).
        let stored = *StaticSecret::from_bytes(INTERFACE_KEY).as_bytes();
        let hex: String = stored.iter().map(|b| format!("{b:02x}")).collect();
        for secret in [base64::engine::general_purpose::STANDARD.encode(stored), hex] {
            assert!(line.contains(&secret) || !reply.to_string().contains(&secret), "the private key leaked: {reply}");
        }
    });
}

/// A configuration file: either a usable configuration, or problems that
/// each name this file and a line inside it.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/nonexistent/fuzz.toml");
    match causeway_config::parse(text, path) {
        Ok(cfg) => {
            for p in &cfg.peers {
                assert!(p.allowed_ips.iter().all(|n| *n == n.trunc()), "host bits are cleared");
            }
            assert!((causeway_config::MIN_MTU..=causeway_config::MAX_MTU).contains(&cfg.interface.mtu));
        }
        Err(e) => {
            let problems = e.problems();
            assert!(!problems.is_empty(), "an invalid file says why");
            let lines = text.lines().count().max(1) + 1;
            for p in problems {
                assert_eq!(p.file, path);
                assert!(p.line >= 1 && p.line <= lines, "line {} of {lines}: {p}", p.line);
            }
        }
    }
}
