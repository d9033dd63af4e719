//! A site served by IPsec gateways, end to end in one process without
//! root: three gateways over in-memory TUNs and an in-memory UDP network
//! (`causeway_dataplane::memory`), each with its IKE thread, applying its
//! configuration through `reload::reconcile` and running its timers
//! (`control::run_timers`, which ticks the sites' health) as causewayd
//! does. Gateway `a` (site east, 10.1.0.0/16) has site west
//! (10.2.0.0/16) served by `b1` and `b2`, each an IPsec peer (IKEv2, ESP
//! in UDP: raw ESP would need a raw socket) whose own configuration has
//! `a` as its peer; `a` initiates, dead peer detection every 2 s,
//! failover_after 3 s.
//!
//! Checked: many flows spread over both gateways, each flow wholly at one
//! of them and in order; replies from either gateway are accepted for the
//! site's prefixes and a source outside them is refused; a gateway that
//! stops as under SIGKILL (it says goodbye to nobody) is marked down in
//! `tunctl sites`' answer within seconds, with nothing sent to it
//! meanwhile, and every flow then reaches the other; started again with
//! the same configuration it is up again and gets its flows back.
//!
//! Deadlines bound liveness and are loose for a loaded two-core machine;
//! nothing is timed for speed.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use causeway_config::proposals::{EspProposal, IkeProposal};
use causeway_config::{Config, Encap, Endpoint, Identity, IpsecPeer, Psk, Site};
use causeway_dataplane::counters::Drop as Dropped;
use causeway_dataplane::flow_hash::flow_hash;
use causeway_dataplane::interface::{Interface, Options};
use causeway_dataplane::memory::{self, MemNet, MemTunHost};
use causeway_gateway::api::types::{Answer, Reply, SiteGatewayStatus, SiteStatus};
use causeway_gateway::gateway::Gateway;
use causeway_wireguard::StaticSecret;
use zeroize::Zeroizing;

const FLOWS: u16 = 64;
const PER_FLOW: u32 = 100;
const DPD: Duration = Duration::from_secs(2);
const FAILOVER_AFTER: Duration = Duration::from_secs(3);

fn ip(n: u8) -> IpAddr {
    format!("198.18.0.{n}").parse().unwrap()
}

/// One gateway "process": its data plane, IKE thread and timers.
struct Node {
    n: u8,
    net: Arc<MemNet>,
    gw: Arc<Gateway>,
    host: MemTunHost,
    workers: Vec<JoinHandle<()>>,
    timers: Option<JoinHandle<()>>,
    killed: bool,
}

impl Node {
    /// Starts gateway `n` afresh with `cfg`, as causewayd would.
    fn start(net: &Arc<MemNet>, n: u8, cfg: &Config) -> Node {
        // The machine is on the network again (after a `kill`).
        net.plug(ip(n));
        let options =
            Options { mtu: 1420, workers: 2, port: 51820, binder: net.host(ip(n), 64), batches_per_worker: 8 };
        let secret = cfg.interface.private_key.clone();
        let iface = Arc::new(Interface::with_options(format!("mem{n}"), Some(secret), options).unwrap());
        let (host, tuns) = memory::tun(2);
        let workers = causeway_dataplane::worker::spawn(&iface, tuns).unwrap();
        let gw = Arc::new(Gateway::new(iface));
        // IKE on the in-memory network; reconcile then finds it started.
        gw.ensure_ike(&*net.host(ip(n), 64), false).unwrap();
        let report = causeway_gateway::reload::reconcile(&gw, cfg);
        assert!(report.needs_restart.is_empty(), "{report}");
        let g = gw.clone();
        let timers = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(causeway_gateway::control::run_timers(g));
        });
        Node { n, net: net.clone(), gw, host, workers, timers: Some(timers), killed: false }
    }

    /// Stops everything as SIGKILL would: off the network first, so that
    /// nothing of the shutdown (IKE's Deletes) reaches anyone.
    fn kill(&mut self) {
        if std::mem::replace(&mut self.killed, true) {
            return;
        }
        self.net.unplug(ip(self.n));
        self.gw.shutdown();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(t) = self.timers.take() {
            let _ = t.join();
        }
        self.gw.stop_ike();
    }

    /// Site west as `tunctl sites` gets it: the control API's answer.
    fn west(&self) -> SiteStatus {
        match causeway_gateway::api::handle(&self.gw, r#"{"op":"sites"}"#) {
            Reply::Ok(Answer::Sites(s)) => s.sites.into_iter().find(|s| s.name == "west").expect("site west"),
            _ => panic!("no sites answer"),
        }
    }

    fn west_gateway(&self, name: &str) -> SiteGatewayStatus {
        self.west().gateways.into_iter().find(|g| g.peer == name).unwrap_or_else(|| panic!("no gateway {name}"))
    }

    /// Whether this gateway has a child SA to send to its IPsec peer `peer`.
    fn has_sa(&self, peer: &str) -> bool {
        self.gw.ipsec.peer(peer).and_then(|p| p.ipsec().and_then(|l| l.sending())).is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An IPsec peer of gateway `me`: gateway `other`, named `name`.
fn ipsec_peer(me: u8, other: u8, name: &str, site: Option<&str>, allowed_ips: &[&str], ts: (&str, &str)) -> IpsecPeer {
    let net = |s: &str| s.parse().unwrap();
    IpsecPeer {
        name: name.into(),
        endpoints: vec![Endpoint::Addr(SocketAddr::new(ip(other), 500))],
        allowed_ips: allowed_ips.iter().map(|s| net(s)).collect(),
        local_id: Identity::Fqdn(format!("gw{me}.example")),
        remote_id: Identity::Fqdn(format!("gw{other}.example")),
        psk: Psk(Zeroizing::new(b"a test key of plenty of bytes".to_vec())),
        ike_proposals: vec!["aes256gcm16-prfsha256-x25519".parse::<IkeProposal>().unwrap()],
        esp_proposals: vec!["aes256gcm16".parse::<EspProposal>().unwrap()],
        local_ts: vec![net(ts.0).into()],
        remote_ts: vec![net(ts.1).into()],
        ike_lifetime: Duration::from_secs(3600),
        child_lifetime: Duration::from_secs(3600),
        dpd_interval: DPD,
        nat_keepalive: Duration::from_secs(20),
        // The site's side initiates; its gateways answer.
        initiate: me == 1,
        encap: Encap::Always,
        failover_after: FAILOVER_AFTER,
        site: site.map(Into::into),
    }
}

fn config(sites: Vec<Site>, ipsec_peers: Vec<IpsecPeer>) -> Config {
    Config {
        interface: causeway_config::Interface {
            dns_refresh: None,
            ..causeway_config::Interface::with_defaults(StaticSecret::random(&mut rand_core::OsRng))
        },
        peers: Vec::new(),
        ipsec_peers,
        sites,
        registry: None,
    }
}

/// Gateway `a`: site west served by gateways 3 and 4.
fn config_a() -> Config {
    let west = Site { name: "west".into(), prefixes: vec!["10.2.0.0/16".parse().unwrap()] };
    let ts = ("10.1.0.0/16", "10.2.0.0/16");
    let peers =
        vec![ipsec_peer(1, 3, "west.gw1", Some("west"), &[], ts), ipsec_peer(1, 4, "west.gw2", Some("west"), &[], ts)];
    config(vec![west], peers)
}

/// A gateway of site west: `a` routes 10.1.0.0/16.
fn config_west(n: u8) -> Config {
    config(Vec::new(), vec![ipsec_peer(n, 1, "east.gw1", None, &["10.1.0.0/16"], ("10.2.0.0/16", "10.1.0.0/16"))])
}

/// A UDP packet from `src` to `dst` carrying its flow and sequence number.
fn packet(src: [u8; 4], dst: [u8; 4], flow: u16, seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; 100];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&100u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&(20_000 + flow).to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[24..26].copy_from_slice(&80u16.to_be_bytes());
    p[28..30].copy_from_slice(&flow.to_be_bytes());
    p[30..34].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Flow `flow` from a host of east to one of many hosts of west.
fn to_west(flow: u16, seq: u32) -> Vec<u8> {
    packet([10, 1, 0, 1], [10, 2, (flow >> 4) as u8, (flow & 15) as u8 + 1], flow, seq)
}

fn flow_seq(p: &[u8]) -> (u16, u32) {
    (u16::from_be_bytes([p[28], p[29]]), u32::from_be_bytes(p[30..34].try_into().unwrap()))
}

fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// What reached each of `gateways`, by flow in arrival order, once
/// `count` packets arrived in all; then checks that no more come.
fn collect(gateways: [&Node; 2], count: usize) -> [BTreeMap<u16, Vec<u32>>; 2] {
    let mut got = [BTreeMap::new(), BTreeMap::new()];
    let mut n = 0;
    wait_for(&format!("{count} packets at the site"), Duration::from_secs(60), || {
        for (i, g) in gateways.iter().enumerate() {
            while let Some(p) = g.host.recv() {
                let (flow, seq) = flow_seq(&p);
                got[i].entry(flow).or_insert_with(Vec::new).push(seq);
                n += 1;
            }
        }
        n >= count
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(gateways.iter().all(|g| g.host.recv().is_none()), "more packets than were sent");
    got
}

/// Sends every flow's packets `first..first + PER_FLOW` from `a`'s TUN,
/// interleaved packet by packet (one TUN read holds packets for both
/// gateways), and returns what arrived where among `gateways`.
fn send_flows(a: &Node, gateways: [&Node; 2], first: u32) -> [BTreeMap<u16, Vec<u32>>; 2] {
    for seq in first..first + PER_FLOW {
        a.host.send(0, (0..FLOWS).map(|flow| to_west(flow, seq)));
        std::thread::sleep(Duration::from_millis(1));
    }
    collect(gateways, usize::from(FLOWS) * PER_FLOW as usize)
}

/// Checks that every flow arrived wholly at one gateway, the one `a`'s
/// site table picks for it now, complete and in order from `first`.
fn check_flows(a: &Node, got: &[BTreeMap<u16, Vec<u32>>; 2], first: u32) {
    let site = a.gw.site("west").unwrap();
    for flow in 0..FLOWS {
        let at: Vec<usize> = (0..2).filter(|&i| got[i].contains_key(&flow)).collect();
        assert_eq!(at.len(), 1, "flow {flow} reached gateways {at:?}");
        let picked = site.table().pick(flow_hash(&to_west(flow, 0))).unwrap().name();
        assert_eq!(picked, format!("west.gw{}", at[0] + 1), "flow {flow} is not where the table sends it");
        assert!(
            got[at[0]][&flow].iter().copied().eq(first..first + PER_FLOW),
            "flow {flow} incomplete or out of order"
        );
    }
}

#[test]
fn a_site_of_ipsec_gateways_spreads_flows_fails_over_and_takes_a_gateway_back() {
    let net = MemNet::new();
    let a = Node::start(&net, 1, &config_a());
    let mut b1 = Node::start(&net, 3, &config_west(3));
    let b2 = Node::start(&net, 4, &config_west(4));
    let refused = || a.gw.counters.get(Dropped::SourceNotAllowed);

    // IKE up with both gateways, both up in the site.
    let ike_up = || a.has_sa("west.gw1") && a.has_sa("west.gw2") && b1.has_sa("east.gw1") && b2.has_sa("east.gw1");
    wait_for("child SAs with both gateways", Duration::from_secs(30), ike_up);
    wait_for("both gateways up", Duration::from_secs(5), || a.west().gateways_up == 2);
    let west = a.west();
    assert_eq!(west.prefixes, ["10.2.0.0/16"]);
    assert!(west.gateways.iter().all(|g| g.protocol == "ipsec" && g.buckets > 0), "{:?}", west.gateways);

    // (1) Many flows over both gateways, each wholly at one, in order.
    let before = send_flows(&a, [&b1, &b2], 0);
    check_flows(&a, &before, 0);
    let on_b1: Vec<u16> = before[0].keys().copied().collect();
    let flows = [before[0].len(), before[1].len()];
    assert!(flows[0] >= 12 && flows[1] >= 12, "{FLOWS} flows split {flows:?} over two gateways");
    let sent = |name: &str| a.west_gateway(name).tx_packets as usize;
    assert!(sent("west.gw1") >= flows[0] * PER_FLOW as usize && sent("west.gw2") >= flows[1] * PER_FLOW as usize);

    // (2) Replies from either gateway, from anywhere in the site's
    // prefixes, are accepted; a source outside them is refused, here by
    // b1 already, whose SA's selectors (the site's prefixes) do not cover
    // it: it never goes on the wire. (a's own check of such a source is
    // tested in the data plane, `ipsec.rs`.)
    let to_east = |src: [u8; 4], seq| packet(src, [10, 1, 0, 1], 7, seq);
    b1.host.send(0, [to_east([10, 2, 0, 11], 1)]);
    b2.host.send(0, [to_east([10, 2, 9, 12], 2)]);
    let mut seen = Vec::new();
    wait_for("both gateways' replies", Duration::from_secs(10), || {
        seen.extend(std::iter::from_fn(|| a.host.recv()).map(|p| flow_seq(&p).1));
        seen.len() >= 2
    });
    seen.sort_unstable();
    assert_eq!(seen, [1, 2]);
    assert_eq!(refused(), 0);
    b1.host.send(0, [to_east([10, 9, 0, 13], 3)]);
    let not_sent = || b1.gw.counters.get(Dropped::OutboundOutsideSelectors);
    wait_for("the refusal", Duration::from_secs(10), || not_sent() == 1);
    assert_eq!(refused(), 0, "it never reached a");
    std::thread::sleep(Duration::from_millis(100));
    assert!(a.host.recv().is_none(), "a refused packet reached the TUN");

    // (3) b1 stops as under SIGKILL, while nothing is sent to it: dead
    // peer detection finds it, and a is without an SA for failover_after.
    let since = |name: &str| {
        let site = a.gw.site("west").unwrap();
        site.status().iter().find(|m| m.peer.name() == name).map(|m| (m.health.is_up(), m.health.since())).unwrap()
    };
    let b2_up_since = since("west.gw2");
    b1.kill();
    let down = wait_for("b1 marked down", Duration::from_secs(25), || {
        assert!(a.west_gateway("west.gw2").up, "b2 went down");
        !a.west_gateway("west.gw1").up
    });
    // Not before failover_after without an SA, which begins once a
    // liveness check went unanswered (for up to DPD, usually after one
    // more DPD of quiet): about 5-7 s.
    assert!(down >= FAILOVER_AFTER, "down after {down:?}");
    let gw1 = a.west_gateway("west.gw1");
    assert_eq!((gw1.buckets, a.west().gateways_up), (0, 1), "{gw1:?}");
    assert_eq!(gw1.down_reason.as_deref(), Some("handshakes failing"), "{gw1:?}");
    eprintln!("b1 down {down:?} after it stopped");
    // Every flow now reaches b2, whole and in order.
    let during = send_flows(&a, [&b1, &b2], 1000);
    assert!(during[0].is_empty(), "the dead gateway got {:?}", during[0].keys());
    assert_eq!(during[1].len(), usize::from(FLOWS));
    check_flows(&a, &during, 1000);

    // (4) b1 again, a new process with the same configuration: a's IKE
    // retries find it, it is up again and its flows come back to it.
    let b1 = Node::start(&net, 3, &config_west(3));
    let up = wait_for("b1 up again", Duration::from_secs(30), || a.west_gateway("west.gw1").up);
    eprintln!("b1 up {up:?} after it returned");
    wait_for("b1's child SA", Duration::from_secs(10), || b1.has_sa("east.gw1"));
    let after = send_flows(&a, [&b1, &b2], 2000);
    check_flows(&a, &after, 2000);
    assert_eq!(after[0].keys().copied().collect::<Vec<_>>(), on_b1, "its flows came back, and only those");
    assert_eq!(since("west.gw2"), b2_up_since, "b2 stayed up all along");
    assert_eq!(refused(), 0, "nothing refused");
}

/// A reload that widens what both ends carry (west's 10.2.0.0/24 to
/// 10.2.0.0/16) takes effect: the SAs are negotiated anew with the new
/// traffic selectors, where the old ones would otherwise live on through
/// every rekey and drop the newly routed prefix. A reload that changes
/// nothing keeps the SAs.
#[test]
fn a_reload_that_changes_what_was_negotiated_negotiates_it_anew() {
    let net = MemNet::new();
    let with_west = |cfg: &Config, west: &str| {
        let mut c = cfg.clone();
        let p = &mut c.ipsec_peers[0];
        let west: Vec<ipnet::IpNet> = vec![west.parse().unwrap()];
        let selectors = west.iter().map(|&n| n.into()).collect();
        if p.name == "west.gw1" {
            (p.remote_ts, p.allowed_ips) = (selectors, west);
        } else {
            p.local_ts = selectors;
        }
        c
    };
    let mut east = config(vec![], vec![ipsec_peer(1, 3, "west.gw1", None, &[], ("10.1.0.0/16", "10.2.0.0/16"))]);
    // Given as a name, it is looked up off the IKE thread (a literal
    // address as a name, so that no resolver is asked).
    east.ipsec_peers[0].endpoints = vec![Endpoint::Host { host: ip(3).to_string(), port: 500 }];
    let (east_narrow, east_wide) = (with_west(&east, "10.2.0.0/24"), with_west(&east, "10.2.0.0/16"));
    let (west_narrow, west_wide) =
        (with_west(&config_west(3), "10.2.0.0/24"), with_west(&config_west(3), "10.2.0.0/16"));
    let a = Node::start(&net, 1, &east_narrow);
    let b = Node::start(&net, 3, &west_narrow);
    wait_for("child SAs", Duration::from_secs(30), || a.has_sa("west.gw1") && b.has_sa("east.gw1"));
    let spi = |n: &Node, peer: &str| {
        n.gw.ipsec.peer(peer).and_then(|p| p.ipsec().and_then(|l| l.sending())).map(|sa| sa.spi_in())
    };
    let first = spi(&a, "west.gw1");

    // Unchanged: the same SAs.
    let report = causeway_gateway::reload::reconcile(&a.gw, &east_narrow);
    assert!(report.changed.is_empty(), "{report}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(spi(&a, "west.gw1"), first);

    // Widened on both ends: a packet into the new part of west arrives.
    for (node, cfg) in [(&b, &west_wide), (&a, &east_wide)] {
        let report = causeway_gateway::reload::reconcile(&node.gw, cfg);
        assert!(report.changed.iter().any(|c| c.contains("SAs negotiated anew")), "{report}");
    }
    let into_new_part = |seq| packet([10, 1, 0, 1], [10, 2, 7, 1], 1, seq);
    let mut seq = 0;
    wait_for("a packet to 10.2.7.1 through new SAs", Duration::from_secs(30), || {
        seq += 1;
        a.host.send(0, [into_new_part(seq)]);
        std::iter::from_fn(|| b.host.recv()).count() > 0
    });
    assert_ne!(spi(&a, "west.gw1"), first, "a new child SA");
}
