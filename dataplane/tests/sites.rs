//! Sites end to end, in one process without root: whole data planes over
//! in-memory TUN queues and an in-memory UDP network (see pipeline.rs),
//! with real WireGuard handshakes and crypto. Gateway `a` (10.1.0.0/16)
//! sends to site west (10.2.0.0/16), served by gateways `w1` and `w2`;
//! `n` is a gateway of no site (10.5.0.0/16).
//!
//! What only shows end to end: many flows use both gateways, each flow on
//! one of them and in order, even when one read from the TUN interleaves
//! flows of both; a gateway marked down gets nothing new and its flows
//! move to the other, and come back when it is up; packets from either
//! gateway of the site are accepted for the site's prefixes, and from
//! anyone else refused.
//!
//! Deadlines bound liveness; nothing is timed for speed.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use causeway_dataplane::counters::Drop as Dropped;
use causeway_dataplane::flow_hash::flow_hash;
use causeway_dataplane::interface::{Interface, Options};
use causeway_dataplane::memory::{self, MemNet, MemTunHost};
use causeway_dataplane::peer::PeerState;
use causeway_dataplane::site::Site;
use causeway_wireguard::{PublicKey, StaticSecret, Time};
use ipnet::IpNet;

const PORT: u16 = 51820;
const PATIENCE: Duration = Duration::from_secs(30);

/// One gateway: its data plane, the host side of its TUN, its workers.
struct Gw {
    iface: Arc<Interface>,
    host: MemTunHost,
    wan: SocketAddr,
    key: PublicKey,
    workers: Vec<JoinHandle<()>>,
}

impl Gw {
    fn new(net: &Arc<MemNet>, n: u8) -> Gw {
        let ip: IpAddr = format!("198.18.0.{n}").parse().unwrap();
        let secret = StaticSecret::random(&mut rand_core::OsRng);
        let key = secret.public_key();
        let options = Options { mtu: 1420, workers: 2, port: PORT, binder: net.host(ip, 64), batches_per_worker: 8 };
        let iface = Arc::new(Interface::with_options(format!("mem{n}"), Some(secret), options).unwrap());
        let (host, tuns) = memory::tun(2);
        let workers = causeway_dataplane::worker::spawn(&iface, tuns).unwrap();
        Gw { iface, host, wan: SocketAddr::new(ip, PORT), key, workers }
    }

    /// Makes `other` a peer, routing `prefixes` to it.
    fn peer(&self, other: &Gw, name: &str, prefixes: &[&str]) -> Arc<PeerState> {
        let peer = self.iface.add_peer(other.key, name.into()).unwrap();
        peer.set_endpoint(other.wan);
        self.iface.update_routes(|r| {
            for p in prefixes {
                r.insert(p.parse().unwrap(), peer.clone().into());
            }
        });
        peer
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.iface.shutdown();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Gateway `a`, the site's gateways and their peers on `a`.
struct Fleet {
    a: Gw,
    w1: Gw,
    w2: Gw,
    n: Gw,
    site: Arc<Site>,
    on_a: [Arc<PeerState>; 2],
}

fn fleet() -> Fleet {
    let net = MemNet::new();
    let (a, w1, w2, n) = (Gw::new(&net, 1), Gw::new(&net, 3), Gw::new(&net, 4), Gw::new(&net, 5));
    let on_a = [a.peer(&w1, "west.gw1", &[]), a.peer(&w2, "west.gw2", &[])];
    a.peer(&n, "north", &["10.5.0.0/16"]);
    let site = a.iface.add_site("west");
    a.iface.set_site_prefixes(&site, &["10.2.0.0/16".parse::<IpNet>().unwrap()]);
    site.set_members(&on_a, Time::ZERO);
    for g in [&w1, &w2, &n] {
        g.peer(&a, "east", &["10.1.0.0/16"]);
    }
    Fleet { a, w1, w2, n, site, on_a }
}

/// A UDP packet from 10.1.0.1 to 10.2.0.1, port `flow`, carrying the flow
/// and a sequence number.
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

fn to_west(flow: u16, seq: u32) -> Vec<u8> {
    packet([10, 1, 0, 1], [10, 2, 0, 1], flow, seq)
}

fn flow_seq(p: &[u8]) -> (u16, u32) {
    (u16::from_be_bytes([p[28], p[29]]), u32::from_be_bytes(p[30..34].try_into().unwrap()))
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Packets that reached each of the site's gateways, by flow, in arrival
/// order, until `count` arrived in all.
fn collect(f: &Fleet, count: usize) -> [BTreeMap<u16, Vec<u32>>; 2] {
    let mut got = [BTreeMap::new(), BTreeMap::new()];
    let mut n = 0;
    wait_for(&format!("{count} packets at the site"), || {
        for (i, g) in [&f.w1, &f.w2].into_iter().enumerate() {
            while let Some(p) = g.host.recv() {
                let (flow, seq) = flow_seq(&p);
                got[i].entry(flow).or_insert_with(Vec::new).push(seq);
                n += 1;
            }
        }
        n >= count
    });
    std::thread::sleep(Duration::from_millis(20));
    assert!(f.w1.host.recv().is_none() && f.w2.host.recv().is_none(), "more packets than were sent");
    got
}

/// Which of the site's gateways the table sends `flow` to now.
fn expected_gateway(f: &Fleet, flow: u16) -> usize {
    let table = f.site.table();
    let peer = table.pick(flow_hash(&to_west(flow, 0))).unwrap();
    f.on_a.iter().position(|p| Arc::ptr_eq(p, peer)).unwrap()
}

/// Sends `flows` flows of `per_flow` packets, interleaved packet by packet
/// (so one TUN read holds packets for both gateways), in chunks the
/// receivers keep up with; returns what arrived where.
fn send_flows(f: &Fleet, flows: u16, first_seq: u32, per_flow: u32) -> [BTreeMap<u16, Vec<u32>>; 2] {
    for seq in first_seq..first_seq + per_flow {
        f.a.host.send(0, (0..flows).map(|flow| to_west(flow, seq)));
        if seq % 8 == 7 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    collect(f, usize::from(flows) * per_flow as usize)
}

/// Starts both sessions: a packet of a flow that each gateway serves.
fn handshakes(f: &Fleet) {
    for gw in 0..2 {
        let flow = (1000..).find(|&fl| expected_gateway(f, fl) == gw).unwrap();
        f.a.host.send(0, [to_west(flow, 0)]);
    }
    collect(f, 2);
}

#[test]
fn many_flows_use_both_gateways_each_flow_one_gateway_in_order() {
    let f = fleet();
    handshakes(&f);
    let got = send_flows(&f, 64, 0, 200);
    for flow in 0..64 {
        let at: Vec<usize> = (0..2).filter(|&i| got[i].contains_key(&flow)).collect();
        assert_eq!(at.len(), 1, "flow {flow} reached gateways {at:?}");
        assert_eq!(at[0], expected_gateway(&f, flow), "flow {flow} is not where the table sends it");
        assert!(got[at[0]][&flow].iter().copied().eq(0..200), "flow {flow} arrived out of order or incomplete");
    }
    let flows = [got[0].len(), got[1].len()];
    assert!(flows[0] >= 16 && flows[1] >= 16, "64 flows split {flows:?} over two gateways");
    // And the peers' own counters say the same.
    for (i, p) in f.on_a.iter().enumerate() {
        assert!(p.crypto().stats().tx_packets as usize >= flows[i] * 200);
    }
}

#[test]
fn a_gateway_marked_down_gets_nothing_new_and_its_flows_come_back() {
    let f = fleet();
    handshakes(&f);
    let before = send_flows(&f, 64, 0, 20);
    let on_w1: Vec<u16> = before[0].keys().copied().collect();
    assert!(!on_w1.is_empty() && !before[1].is_empty());

    assert!(f.site.mark(&f.on_a[0], false, Time::ZERO));
    let during = send_flows(&f, 64, 20, 20);
    assert!(during[0].is_empty(), "the gateway that is down got {:?}", during[0].keys());
    assert_eq!(during[1].len(), 64, "every flow went to the other");
    for (flow, seqs) in &during[1] {
        assert!(seqs.iter().copied().eq(20..40), "flow {flow} incomplete or out of order");
    }

    assert!(f.site.mark(&f.on_a[0], true, Time::ZERO));
    let after = send_flows(&f, 64, 40, 20);
    assert_eq!(after[0].keys().copied().collect::<Vec<_>>(), on_w1, "its flows came back, and only those");
    assert_eq!(after[1].keys().collect::<Vec<_>>(), before[1].keys().collect::<Vec<_>>());
}

#[test]
fn packets_from_either_gateway_of_the_site_are_accepted_and_from_others_refused() {
    let f = fleet();
    let to_east = |src: [u8; 4], seq| packet(src, [10, 1, 0, 1], 7, seq);
    f.w1.host.send(0, [to_east([10, 2, 0, 11], 1)]);
    f.w2.host.send(0, [to_east([10, 2, 9, 12], 2)]);
    let mut seen = Vec::new();
    wait_for("both gateways' packets", || {
        while let Some(p) = f.a.host.recv() {
            seen.push(flow_seq(&p).1);
        }
        seen.len() >= 2
    });
    seen.sort_unstable();
    assert_eq!(seen, [1, 2]);

    let refused = |f: &Fleet| f.a.iface.counters.get(Dropped::SourceNotAllowed);
    assert_eq!(refused(&f), 0);
    // A gateway of no site may not speak for the site...
    f.n.host.send(0, [to_east([10, 2, 0, 13], 3)]);
    wait_for("a refusal", || refused(&f) == 1);
    // ...nor may a gateway of the site speak for another peer's prefix.
    f.w1.host.send(0, [to_east([10, 5, 0, 14], 4)]);
    wait_for("a second refusal", || refused(&f) == 2);
    // While the north gateway's own prefix is still its to use.
    f.n.host.send(0, [to_east([10, 5, 0, 15], 5)]);
    wait_for("north's own packet", || f.a.host.recv().is_some_and(|p| flow_seq(&p).1 == 5));
    assert_eq!(refused(&f), 2);
    assert_eq!(f.a.host.pending(), 0, "nothing refused reached the TUN");
}

#[test]
fn a_site_without_gateways_drops_its_traffic_as_unrouted() {
    let net = MemNet::new();
    let a = Gw::new(&net, 1);
    let site = a.iface.add_site("empty");
    a.iface.set_site_prefixes(&site, &["10.9.0.0/16".parse::<IpNet>().unwrap()]);
    a.host.send(0, [packet([10, 1, 0, 1], [10, 9, 0, 1], 1, 1)]);
    wait_for("the drop", || a.iface.counters.get(Dropped::NoRoute) == 1);
    // A gateway removed from the interface leaves its site too.
    let b = Gw::new(&net, 2);
    let p = a.peer(&b, "empty.gw1", &[]);
    site.set_members(&[p], Time::ZERO);
    assert_eq!(a.iface.site_of(&a.iface.peer(&b.key).unwrap()).map(|s| s.name().to_string()), Some("empty".into()));
    a.iface.remove_peer(&b.key);
    assert!(site.table().members().is_empty());
}
