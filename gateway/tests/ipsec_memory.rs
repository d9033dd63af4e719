//! IPsec end to end in one process, without root: two gateways whose data
//! planes run over in-memory TUN queues and an in-memory UDP network,
//! each with its IKE thread. IKE negotiates, the child SAs go into the
//! data planes, and packets cross as ESP in UDP; a child SA rekey under
//! traffic loses nothing; the first packets on a new SA are not lost to
//! its race with IKE; a WireGuard peer and an IPsec peer share one
//! interface.
//!
//! Deadlines here bound liveness; nothing is timed for speed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use causeway_config::proposals::{EspProposal, IkeProposal};
use causeway_config::{Config, Encap, Endpoint, Identity, IpsecPeer, Psk};
use causeway_dataplane::interface::{Interface, Options};
use causeway_dataplane::memory::{self, MemNet, MemTunHost};
use causeway_gateway::gateway::Gateway;
use causeway_wireguard::StaticSecret;
use zeroize::Zeroizing;

const MTU: u32 = 1420;
const PATIENCE: Duration = Duration::from_secs(30);

struct Site {
    gw: Arc<Gateway>,
    host: MemTunHost,
    ip: IpAddr,
    n: u8,
    secret: StaticSecret,
    workers: Vec<JoinHandle<()>>,
}

impl Site {
    fn new(net: &Arc<MemNet>, n: u8) -> Site {
        let ip: IpAddr = format!("198.18.0.{n}").parse().unwrap();
        let secret = StaticSecret::random(&mut rand_core::OsRng);
        let options = Options { mtu: MTU, workers: 2, port: 51820, binder: net.host(ip, 64), batches_per_worker: 8 };
        let iface = Arc::new(Interface::with_options(format!("mem{n}"), Some(secret.clone()), options).unwrap());
        let (host, tuns) = memory::tun(2);
        let workers = causeway_dataplane::worker::spawn(&iface, tuns).unwrap();
        let gw = Arc::new(Gateway::new(iface));
        gw.ensure_ike(&*net.host(ip, 64), false).unwrap();
        Site { gw, host, ip, n, secret, workers }
    }

    /// A configuration whose one IPsec peer is `other`.
    fn config(&self, other: &Site, child_lifetime: Duration, ike: &str, esp: &str) -> Config {
        let p = IpsecPeer {
            name: format!("site{}", other.n),
            endpoints: vec![Endpoint::Addr(SocketAddr::new(other.ip, 500))],
            allowed_ips: vec![format!("10.{}.0.0/16", other.n).parse().unwrap()],
            local_id: Identity::Fqdn(format!("gw{}.example", self.n)),
            remote_id: Identity::Fqdn(format!("gw{}.example", other.n)),
            psk: Psk(Zeroizing::new(b"a test key of plenty of bytes".to_vec())),
            ike_proposals: vec![ike.parse::<IkeProposal>().unwrap()],
            esp_proposals: vec![esp.parse::<EspProposal>().unwrap()],
            local_ts: vec![format!("10.{}.0.0/16", self.n).parse().unwrap()],
            remote_ts: vec![format!("10.{}.0.0/16", other.n).parse().unwrap()],
            ike_lifetime: Duration::from_secs(3600),
            child_lifetime,
            dpd_interval: Duration::from_secs(30),
            nat_keepalive: Duration::from_secs(20),
            initiate: self.n < other.n,
            encap: Encap::Always,
            failover_after: Duration::from_secs(10),
            site: None,
        };
        Config {
            interface: causeway_config::Interface {
                mtu: MTU,
                dns_refresh: None,
                ..causeway_config::Interface::with_defaults(self.secret.clone())
            },
            peers: Vec::new(),
            ipsec_peers: vec![p],
            sites: Vec::new(),
            registry: None,
        }
    }

    fn apply(&self, cfg: &Config) {
        causeway_gateway::reload::reconcile(&self.gw, cfg);
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.gw.stop_ike();
        self.gw.shutdown();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// An IPv4 UDP packet of `len` bytes from site `from` to site `to`, carrying `seq`.
fn packet(from: u8, to: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, from, 0, 1]);
    p[16..20].copy_from_slice(&[10, to, 0, 1]);
    p[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    p[28..32].copy_from_slice(&seq.to_be_bytes());
    p
}

fn seq_of(p: &[u8]) -> u32 {
    u32::from_be_bytes(p[28..32].try_into().unwrap())
}

/// Sites 1 and 2 configured at the same moment, each the other's IPsec
/// peer, 1 initiating, and 2 too when `both`.
fn configured_together(both: bool) -> (Arc<MemNet>, Site, Site) {
    let ike = "aes256gcm16-prfsha256-x25519";
    let net = MemNet::new();
    let (a, b) = (Site::new(&net, 1), Site::new(&net, 2));
    let (mut ca, mut cb) = (
        a.config(&b, Duration::from_secs(3600), ike, "aes256gcm16"),
        b.config(&a, Duration::from_secs(3600), ike, "aes256gcm16"),
    );
    ca.ipsec_peers[0].initiate = true;
    cb.ipsec_peers[0].initiate = both;
    std::thread::scope(|s| {
        s.spawn(|| a.apply(&ca));
        s.spawn(|| b.apply(&cb));
    });
    (net, a, b)
}

/// Sends packets from `a` to `b` until the first arrives (the SA is up).
fn wait_for_sa(a: &Site, b: &Site) {
    let deadline = Instant::now() + PATIENCE;
    let mut seq = 0;
    loop {
        a.host.send(0, [packet(a.n, b.n, seq, 100)]);
        seq += 1;
        std::thread::sleep(Duration::from_millis(50));
        if let Some(p) = b.host.recv() {
            assert_eq!(&p[12..16], &[10, a.n, 0, 1]);
            while b.host.recv().is_some() {}
            return;
        }
        assert!(Instant::now() < deadline, "no packet crossed from site {} to site {}", a.n, b.n);
    }
}

/// Sends `count` packets from `a` to `b` in bursts and checks they all
/// arrive, in order.
fn stream(a: &Site, b: &Site, count: u32, pace: Duration) {
    let mut next = 0;
    let mut got = Vec::new();
    let deadline = Instant::now() + PATIENCE * 2;
    while got.len() < count as usize {
        if next < count {
            let burst: Vec<_> = (next..(next + 32).min(count)).map(|s| packet(a.n, b.n, s, 1200)).collect();
            next += burst.len() as u32;
            // One flow, one TUN queue, as the kernel hashes it: order holds
            // per queue, whichever worker seals.
            a.host.send(0, burst);
            std::thread::sleep(pace);
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
        while let Some(p) = b.host.recv() {
            got.push(seq_of(&p));
        }
        assert!(Instant::now() < deadline, "{} of {count} packets arrived", got.len());
    }
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), count as usize, "duplicates or losses");
    if let Some(i) = got.windows(2).position(|w| w[0] > w[1]) {
        panic!("out of order at {i}: {:?}", &got[i.saturating_sub(3)..(i + 4).min(got.len())]);
    }
}

#[test]
fn ike_negotiates_and_esp_carries_packets_both_ways() {
    for (ike, esp) in [("aes256gcm16-prfsha256-x25519", "aes256gcm16"), ("aes256-sha256-modp2048", "aes256-sha256")] {
        let net = MemNet::new();
        let (a, b) = (Site::new(&net, 1), Site::new(&net, 2));
        b.apply(&b.config(&a, Duration::from_secs(3600), ike, esp));
        a.apply(&a.config(&b, Duration::from_secs(3600), ike, esp));
        wait_for_sa(&a, &b);
        wait_for_sa(&b, &a);
        stream(&a, &b, 2000, Duration::from_micros(200));
        stream(&b, &a, 2000, Duration::from_micros(200));
        let ike_a = a.gw.ike().unwrap();
        let st = ike_a.status("site2").unwrap();
        assert_eq!(st.children.len(), 1, "{st:?}");
        assert!(st.children[0].encap);
        let link = a.gw.ipsec.peer("site2").unwrap();
        let (rx, tx) = link.ipsec().unwrap().packets();
        assert!(rx >= 2000 && tx >= 2000, "rx {rx} tx {tx}");
        let log = net.take_log();
        assert!(log.iter().any(|r| r.to.port() == 4500 && r.datagrams.len() > 1), "ESP left in batches");
        assert!(log.iter().any(|r| r.to.port() == 500), "IKE went to port 500");
    }
}

/// The data plane holds IKE messages from strangers on port 4500 to a
/// share of its queue; it learns from IKE which addresses are the peers'.
#[test]
fn the_data_plane_knows_the_peers_addresses_for_its_ike_queue() {
    let net = MemNet::new();
    let (a, b) = (Site::new(&net, 1), Site::new(&net, 2));
    let ike = "aes256gcm16-prfsha256-x25519";
    // Site 2 answers site 1 from any address: it learns the address only
    // from the SA.
    let mut open_b = b.config(&a, Duration::from_secs(3600), ike, "aes256gcm16");
    open_b.ipsec_peers[0].endpoints.clear();
    b.apply(&open_b);
    assert!(!b.gw.ipsec.is_ike_source(a.ip));
    a.apply(&a.config(&b, Duration::from_secs(3600), ike, "aes256gcm16"));
    assert!(a.gw.ipsec.is_ike_source(b.ip), "a configured endpoint counts at once");
    assert!(!a.gw.ipsec.is_ike_source("198.18.0.9".parse().unwrap()));
    wait_for_sa(&a, &b);
    assert!(b.gw.ipsec.is_ike_source(a.ip), "the negotiated address of a peer without endpoints");
    let mut none = a.config(&b, Duration::from_secs(3600), ike, "aes256gcm16");
    none.ipsec_peers.clear();
    a.apply(&none);
    assert!(!a.gw.ipsec.is_ike_source(b.ip), "a removed peer's address no longer counts");
}

/// `encap = "auto"` means raw ESP where no NAT lies between. On a network
/// without raw ESP (the in-memory one; a host without CAP_NET_RAW) the
/// peer's child SAs are negotiated for UDP 4500 instead, as with
/// `encap = "always"`, and carry packets, rather than coming up with
/// nothing to carry them.
#[test]
fn encap_auto_without_raw_esp_negotiates_udp_and_carries_packets() {
    let net = MemNet::new();
    let (a, b) = (Site::new(&net, 1), Site::new(&net, 2));
    let (ike, esp) = ("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let auto = |mut c: Config| {
        c.ipsec_peers[0].encap = Encap::Auto;
        c
    };
    b.apply(&auto(b.config(&a, Duration::from_secs(3600), ike, esp)));
    a.apply(&auto(a.config(&b, Duration::from_secs(3600), ike, esp)));
    wait_for_sa(&a, &b);
    wait_for_sa(&b, &a);
    stream(&a, &b, 500, Duration::from_micros(200));
    for (s, other) in [(&a, "site2"), (&b, "site1")] {
        let st = s.gw.ike().unwrap().status(other).unwrap();
        assert_eq!(st.children.len(), 1, "{st:?}");
        assert!(st.children[0].encap, "in UDP, for want of raw ESP: {st:?}");
    }
    assert!(net.take_log().iter().any(|r| r.to.port() == 4500 && r.datagrams.len() > 1), "ESP went to port 4500");
}

#[test]
fn a_child_sa_rekey_under_traffic_loses_nothing() {
    let net = MemNet::new();
    let (a, b) = (Site::new(&net, 1), Site::new(&net, 2));
    let (ike, esp) = ("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    // A short child SA lifetime: rekeys fall inside the stream.
    b.apply(&b.config(&a, Duration::from_secs(4), ike, esp));
    a.apply(&a.config(&b, Duration::from_secs(4), ike, esp));
    wait_for_sa(&a, &b);
    let first = a.gw.ipsec.spis();
    // About 8 s of traffic: at least one rekey on the way.
    stream(&a, &b, 40_000, Duration::from_micros(6000));
    let st = a.gw.ike().unwrap().status("site2").unwrap();
    assert!(st.child_rekeys >= 1 || b.gw.ike().unwrap().status("site1").unwrap().child_rekeys >= 1, "{st:?}");
    assert_ne!(a.gw.ipsec.spis(), first, "the SPIs changed");
    // A replaced SA still opens what trails its Delete.
    for site in [&a, &b] {
        assert_eq!(site.gw.counters.get(causeway_dataplane::counters::Drop::UnknownSpi), 0);
    }
}

#[test]
fn a_wireguard_peer_and_an_ipsec_peer_share_one_interface() {
    let net = MemNet::new();
    let (a, b, c) = (Site::new(&net, 1), Site::new(&net, 2), Site::new(&net, 3));
    // a–b over IPsec, a–c over WireGuard, on a's one interface.
    b.apply(&b.config(&a, Duration::from_secs(3600), "aes256gcm16-prfsha256-x25519", "aes256gcm16"));
    a.apply(&a.config(&b, Duration::from_secs(3600), "aes256gcm16-prfsha256-x25519", "aes256gcm16"));
    let wg = |from: &Site, to: &Site| {
        let peer = from.gw.add_peer(to.secret.public_key(), format!("site{}", to.n)).unwrap();
        peer.set_endpoint(SocketAddr::new(to.ip, 51820));
        let net: ipnet::IpNet = format!("10.{}.0.0/16", to.n).parse().unwrap();
        from.gw.update_routes(|r| {
            r.insert(net, peer.clone().into());
        });
    };
    wg(&a, &c);
    wg(&c, &a);
    wait_for_sa(&a, &b);
    wait_for_sa(&a, &c);
    stream(&a, &b, 1000, Duration::from_micros(200));
    stream(&a, &c, 1000, Duration::from_micros(200));
    stream(&b, &a, 1000, Duration::from_micros(200));
    stream(&c, &a, 1000, Duration::from_micros(200));
    assert!(a.gw.peers()[0].crypto().stats().rx_packets >= 1000);
    assert!(a.gw.ipsec.peer("site2").unwrap().ipsec().unwrap().packets().0 >= 1000);
}

/// Both gateways initiate, configured at the same moment (two sites
/// started together): their IKE_AUTH requests may cross, each carrying
/// INITIAL_CONTACT. Packets must cross both ways every time, and soon;
/// where two IKE SAs came up, one is deleted (the duplicate rule), and
/// the ends settle on one child SA, the same at both, still carrying
/// packets both ways. (Threads decide whether the initiations cross; the
/// IKE core's own test makes them cross every time. With the rule's
/// Vendor ID ignored, the first round here kept two child SAs at both
/// ends.)
#[test]
fn both_ends_initiating_at_once_carry_packets_both_ways() {
    let children = |s: &Site| s.gw.ike().unwrap().status(if s.n == 1 { "site2" } else { "site1" }).unwrap().children;
    for _ in 0..8 {
        let (_net, a, b) = configured_together(true);
        wait_for_sa(&a, &b);
        wait_for_sa(&b, &a);
        stream(&a, &b, 500, Duration::from_micros(200));
        stream(&b, &a, 500, Duration::from_micros(200));
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (ca, cb) = (children(&a), children(&b));
            if ca.len() == 1 && cb.len() == 1 {
                assert_eq!((ca[0].spi_in, ca[0].spi_out), (cb[0].spi_out, cb[0].spi_in), "one child SA, both ends");
                break;
            }
            assert!(Instant::now() < deadline, "the ends kept {} and {} child SAs", ca.len(), cb.len());
            std::thread::sleep(Duration::from_millis(20));
        }
        stream(&a, &b, 500, Duration::from_micros(200));
        stream(&b, &a, 500, Duration::from_micros(200));
    }
}

/// The first packet each way, sent once when both gateways start (both
/// initiating, or one), arrives: a peer's first ESP can overtake the IKE
/// answer that gives the other end its SA, and is kept until that SA is
/// published (`early_esp.rs`). Before, it was dropped as of an unknown
/// SPI in about half the tries.
#[test]
fn the_first_packets_on_new_sas_are_not_lost_to_the_race_with_ike() {
    for both in [true, false] {
        for _ in 0..8 {
            let (_net, a, b) = configured_together(both);
            a.host.send(0, [packet(1, 2, 7, 100)]);
            b.host.send(0, [packet(2, 1, 9, 100)]);
            let (mut at_b, mut at_a) = (None, None);
            let deadline = Instant::now() + PATIENCE;
            while at_a.is_none() || at_b.is_none() {
                at_b = at_b.or_else(|| b.host.recv());
                at_a = at_a.or_else(|| a.host.recv());
                assert!(
                    Instant::now() < deadline,
                    "both initiating: {both}; arrived at b: {}, at a: {}; drops a {:?}, b {:?}",
                    at_b.is_some(),
                    at_a.is_some(),
                    a.gw.counters.nonzero(),
                    b.gw.counters.nonzero()
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            assert_eq!((seq_of(&at_b.unwrap()), seq_of(&at_a.unwrap())), (7, 9));
        }
    }
}

/// A peer file (`tunctl peer add-file`) is held to the configuration's
/// rule for peers behind one address: one whose address and remote_id are
/// a running peer's is refused, as it would be in the file, and nothing is
/// added; another remote_id at that address with the same proposals joins.
#[test]
fn a_peer_file_cannot_add_a_peer_the_responder_could_not_tell_apart() {
    use causeway_gateway::api::types::{Request, SecretText};
    let net = MemNet::new();
    let (a, b) = (Site::new(&net, 1), Site::new(&net, 2));
    a.apply(&a.config(&b, Duration::from_secs(3600), "aes256gcm16-prfsha256-x25519", "aes256gcm16"));
    let dir = tempfile::tempdir().unwrap();
    let psk = dir.path().join("second.psk");
    std::fs::write(&psk, "a test key of plenty of bytes\n").unwrap();
    std::fs::set_permissions(&psk, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let file = |remote_id: &str| Request::PeersAdd {
        path: dir.path().join("second.toml"),
        text: SecretText(Zeroizing::new(format!(
            "[[peer]]\nname = \"second\"\nprotocol = \"ipsec\"\nendpoints = [\"198.18.0.2\"]\n\
             allowed_ips = [\"10.9.0.0/16\"]\nlocal_id = \"gw1.example\"\nremote_id = \"{remote_id}\"\n\
             psk_file = \"second.psk\"\nike_proposals = [\"aes256gcm16-prfsha256-x25519\"]\n"
        ))),
        exposed: None,
    };
    let Err(e) = causeway_gateway::api::answer(&a.gw, &file("gw2.example")) else { panic!("refused") };
    let e = e.to_string();
    assert!(e.contains("share the address 198.18.0.2 and the remote_id gw2.example"), "{e}");
    assert!(a.gw.ike().unwrap().config("second").is_none(), "nothing added");
    causeway_gateway::api::answer(&a.gw, &file("gw9.example")).expect("another identity at that address joins");
    assert!(a.gw.ike().unwrap().config("second").is_some());
}

/// Waits until `done` holds, or panics after PATIENCE.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `tunctl peer rekey` and `tunctl peer reset` through the control API: a
/// rekey of the child and IKE SAs with traffic flowing loses nothing; a
/// reset deletes the SAs at both ends and the initiator sets up new ones
/// at once; a reset on the end that does not initiate says so, and the
/// other end, told by the Delete, starts over.
#[test]
fn an_operators_rekey_and_reset_through_the_control_api() {
    use causeway_gateway::api::types::{Answer, Request};
    use causeway_gateway::api::{answer, ApiError};
    let net = MemNet::new();
    let (a, b) = (Site::new(&net, 1), Site::new(&net, 2));
    let (ike, esp) = ("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    b.apply(&b.config(&a, Duration::from_secs(3600), ike, esp));
    a.apply(&a.config(&b, Duration::from_secs(3600), ike, esp));
    wait_for_sa(&a, &b);
    let status = |s: &Site, peer: &str| s.gw.ike().unwrap().status(peer).unwrap();
    let done = |r: Result<Answer, ApiError>| match r {
        Ok(Answer::Done(text)) => text,
        other => panic!("{other:?}"),
    };

    let before = status(&a, "site2");
    let rekey = answer(&a.gw, &Request::PeerRekey { peer: "site2".into(), ike: true });
    assert_eq!(done(rekey), "site2: rekeying 1 child SA and the IKE SA");
    stream(&a, &b, 3000, Duration::from_micros(200));
    wait_until("the rekeys", || {
        let now = status(&a, "site2");
        now.spi_i != before.spi_i && now.children.len() == 1 && now.children[0].spi_in != before.children[0].spi_in
    });
    stream(&a, &b, 1000, Duration::from_micros(200));
    for site in [&a, &b] {
        assert_eq!(site.gw.counters.get(causeway_dataplane::counters::Drop::UnknownSpi), 0);
    }

    let before = status(&a, "site2");
    let reset = answer(&a.gw, &Request::PeerReset { peer: "site2".into() });
    assert_eq!(done(reset), "site2: IKE SA and its child SAs deleted, the peer told; setting up a new one now");
    wait_until("a new IKE SA at both ends", || {
        let (x, y) = (status(&a, "site2"), status(&b, "site1"));
        x.state == causeway_ikev2::IkeState::Established
            && x.spi_i != before.spi_i
            && (x.spi_i, x.spi_r) == (y.spi_i, y.spi_r)
    });
    wait_for_sa(&a, &b);
    wait_for_sa(&b, &a);

    // Site 2 does not initiate: its reset says who starts over, and site
    // 1, told by the Delete, does.
    let before = status(&a, "site2");
    let reset = done(answer(&b.gw, &Request::PeerReset { peer: "site1".into() }));
    assert!(
        reset.starts_with("site1: IKE SA and its child SAs deleted, the peer told; this gateway does not initiate"),
        "{reset}"
    );
    wait_until("site 1 starting over", || {
        let now = status(&a, "site2");
        now.state == causeway_ikev2::IkeState::Established && now.spi_i != before.spi_i
    });
    wait_for_sa(&a, &b);

    assert!(matches!(
        answer(&a.gw, &Request::PeerRekey { peer: "nobody".into(), ike: false }),
        Err(ApiError::NoSuchPeer(_))
    ));
}

/// The same requests for a WireGuard peer: a rekey is a new handshake (at
/// most one per REKEY_TIMEOUT, so refused just after one), a reset drops
/// the sessions and sends one; `--ike` is for IPsec peers.
#[test]
fn a_wireguard_peer_is_rekeyed_and_reset_through_the_control_api() {
    use causeway_gateway::api::types::{Answer, Request};
    use causeway_gateway::api::{answer, ApiError};
    let net = MemNet::new();
    let (a, c) = (Site::new(&net, 1), Site::new(&net, 3));
    for (from, to) in [(&a, &c), (&c, &a)] {
        let peer = from.gw.add_peer(to.secret.public_key(), format!("site{}", to.n)).unwrap();
        peer.set_endpoint(SocketAddr::new(to.ip, 51820));
        let prefix: ipnet::IpNet = format!("10.{}.0.0/16", to.n).parse().unwrap();
        from.gw.update_routes(|r| {
            r.insert(prefix, peer.clone().into());
        });
    }
    wait_for_sa(&a, &c);
    // By when it was made: a freed index may be handed out again.
    let session = || a.gw.peers()[0].crypto().current_keypair().map(|k| k.created);
    let rekey = |ike| answer(&a.gw, &Request::PeerRekey { peer: "site3".into(), ike });
    assert!(matches!(rekey(false), Err(ApiError::HandshakeTooSoon(_))), "an initiation just left");
    assert!(matches!(rekey(true), Err(ApiError::Field { field: "ike", .. })));

    // Past REKEY_TIMEOUT at a, and at c past the 20 ms it leaves between
    // two initiations it takes (no timer task runs here to retry one).
    let later = || [&a, &c].map(|s| s.gw.clock.advance(Duration::from_secs(6)));
    later();
    let first = session();
    assert!(matches!(rekey(false), Ok(Answer::Done(t)) if t == "handshake initiation sent to site3"));
    wait_until("the new session", || session() != first);
    stream(&a, &c, 500, Duration::from_micros(200));

    later();
    let second = session();
    let reset = answer(&a.gw, &Request::PeerReset { peer: "site3".into() });
    assert!(matches!(reset, Ok(Answer::Done(t)) if t == "site3: sessions dropped; handshake initiation sent to site3"));
    wait_until("a session after the reset", || session().is_some_and(|s| Some(s) != second));
    stream(&a, &c, 500, Duration::from_micros(200));
    stream(&c, &a, 500, Duration::from_micros(200));
}

/// Packets routed to an IPsec peer that IKE cannot reach are held, and
/// dropped once they have waited 90 s (counted as held_without_session),
/// as WireGuard drops its held packets after REKEY_ATTEMPT_TIME: the peer
/// must not get them hours later when it comes back.
#[test]
fn packets_held_for_an_unreachable_ipsec_peer_are_dropped_after_90_s() {
    use causeway_dataplane::counters::Drop;
    let net = MemNet::new();
    let (a, b) = (Site::new(&net, 1), Site::new(&net, 2));
    // Site 2 has no peer: it answers none of site 1's IKE.
    a.apply(&a.config(&b, Duration::from_secs(3600), "aes256gcm16-prfsha256-x25519", "aes256gcm16"));
    a.host.send(0, (0..5).map(|seq| packet(1, 2, seq, 100)).collect::<Vec<_>>());
    let held = || a.gw.ipsec.peer("site2").map_or(0, |p| p.staged_len());
    wait_until("the packets held", || held() == 5);
    // 85 s on, and a real second and more for the IKE thread's rounds
    // (each looks at least every 500 ms): still held.
    a.gw.clock.advance(Duration::from_secs(85));
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(held(), 5, "not yet: about 86 s");
    a.gw.clock.advance(Duration::from_secs(5));
    wait_until("the held packets dropped", || held() == 0);
    assert_eq!(a.gw.counters.get(Drop::StagedExpired), 5);
    assert!(b.host.recv().is_none());
}
