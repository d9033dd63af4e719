//! Whole data planes driven in one process through in-memory TUN queues
//! and an in-memory UDP network (`causeway_dataplane::memory`): real
//! workers, real WireGuard handshakes and crypto, no root. Each test
//! checks a property of the shared pipeline that only shows end to end:
//! order across workers, how sends are cut into GSO runs, coalesced TUN
//! writes cut back into the packets sent, what happens when the batch
//! pools run dry, a send that fails part way, a rekey under traffic, and a
//! peer removed while its batches are in flight.
//!
//! Deadlines here bound liveness (a hung pipeline fails instead of
//! hanging the run); nothing is timed for speed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use causeway_dataplane::checksum::checksum;
use causeway_dataplane::counters::Drop as Dropped;
use causeway_dataplane::interface::{Interface, Options};
use causeway_dataplane::io::Offload;
use causeway_dataplane::memory::{self, MemNet, MemTunHost, SendRecord};
use causeway_dataplane::peer::PeerState;
use causeway_wireguard::{PublicKey, StaticSecret};
use ipnet::IpNet;

const PORT: u16 = 51820;
const MTU: u32 = 1420;
/// How long a test waits for traffic before it calls the pipeline hung.
const PATIENCE: Duration = Duration::from_secs(30);

/// One gateway: its data plane, the host side of its TUN, its workers.
struct Site {
    iface: Arc<Interface>,
    host: MemTunHost,
    wan: SocketAddr,
    key: PublicKey,
    /// Inner addresses of this site: 10.<n>.0.0/16.
    n: u8,
    workers: Vec<JoinHandle<()>>,
}

impl Site {
    fn new(net: &Arc<MemNet>, n: u8, workers: usize, gso: usize, pools: usize) -> Site {
        Site::with_tun(net, n, workers, gso, pools, Offload::default())
    }

    /// A site whose TUN takes the coalesced writes `offload` allows.
    fn with_tun(net: &Arc<MemNet>, n: u8, workers: usize, gso: usize, pools: usize, offload: Offload) -> Site {
        let ip: IpAddr = format!("198.18.0.{n}").parse().unwrap();
        let secret = StaticSecret::random(&mut rand_core::OsRng);
        let key = secret.public_key();
        let options = Options { mtu: MTU, workers, port: PORT, binder: net.host(ip, gso), batches_per_worker: pools };
        let iface = Arc::new(Interface::with_options(format!("mem{n}"), Some(secret), options).unwrap());
        let (host, tuns) = memory::tun_with_offload(workers, offload);
        let handles = causeway_dataplane::worker::spawn(&iface, tuns).unwrap();
        Site { iface, host, wan: SocketAddr::new(ip, PORT), key, n, workers: handles }
    }

    fn prefix(&self) -> IpNet {
        format!("10.{}.0.0/16", self.n).parse().unwrap()
    }

    /// Makes `other` a peer of this site, routing its prefix to it.
    fn add_peer(&self, other: &Site) -> Arc<PeerState> {
        let peer = self.iface.add_peer(other.key, format!("site{}", other.n)).unwrap();
        peer.set_endpoint(other.wan);
        let net = other.prefix();
        self.iface.update_routes(|r| {
            r.insert(net, peer.clone().into());
        });
        peer
    }

    /// Batch buffers back in the pools, of all there are.
    fn pools_full(&self, workers: usize, pools: usize) -> bool {
        let j = &self.iface.jobs;
        j.is_empty() && j.tx_pool.len() == workers * pools && j.rx_pool.len() == workers * pools
    }

    fn stat(&self, name: &str) -> u64 {
        self.iface.worker_stats.iter().map(|w| w.snapshot().iter().find(|(n, _)| *n == name).unwrap().1).sum()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.iface.shutdown();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn link(a: &Site, b: &Site) -> (Arc<PeerState>, Arc<PeerState>) {
    (a.add_peer(b), b.add_peer(a))
}

/// Two sites of `workers` workers and `pools` batch buffers each, peers
/// of each other with a session up, their TUNs taking `offload`.
fn pair(workers: usize, pools: usize, offload: Offload) -> (Arc<MemNet>, Site, Site) {
    let net = MemNet::new();
    let a = Site::with_tun(&net, 1, workers, 64, pools, offload);
    let b = Site::with_tun(&net, 2, workers, 64, pools, offload);
    link(&a, &b);
    handshake(&a, &b);
    (net, a, b)
}

/// An IPv4 UDP packet of `len` bytes from site `from` to site `to`,
/// carrying `seq` (the checksums are not checked on this path).
fn packet(from: u8, to: u8, seq: u32, len: usize) -> Vec<u8> {
    assert!(len >= 32);
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, from, 0, 1]);
    p[16..20].copy_from_slice(&[10, to, 0, 1]);
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    p[28..32].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[32..].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    p
}

fn seq_of(p: &[u8]) -> u32 {
    u32::from_be_bytes(p[28..32].try_into().unwrap())
}

/// Takes packets from `site`'s TUN until `count` arrived.
fn receive(site: &Site, count: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        match site.host.recv() {
            Some(p) => got.push(p),
            None if Instant::now() > deadline => {
                panic!("only {} of {count} packets arrived at site {}", got.len(), site.n)
            }
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    got
}

/// Waits until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The first packet starts the handshake and waits for it; once it
/// arrives the session is up on both sides.
fn handshake(a: &Site, b: &Site) {
    a.host.send(0, [packet(a.n, b.n, u32::MAX, 100)]);
    assert_eq!(seq_of(&receive(b, 1)[0]), u32::MAX);
}

/// Sends `count` packets of `len` bytes from `a` to `b` through TUN queue
/// 0 (one flow reaches one queue), paced so the receiver keeps up, and
/// returns the sequence numbers in the order they reached `b`.
fn stream(a: &Site, b: &Site, first: u32, count: u32, len: usize, between: impl FnMut(u32)) -> Vec<u32> {
    stream_to(a, b, first, count, len, between).into_iter().map(|p| seq_of(&p)).collect()
}

fn stream_to(a: &Site, b: &Site, first: u32, count: u32, len: usize, mut between: impl FnMut(u32)) -> Vec<Vec<u8>> {
    const CHUNK: u32 = 256;
    let mut got = Vec::new();
    let mut sent = 0;
    while sent < count {
        let n = CHUNK.min(count - sent);
        a.host.send(0, (first + sent..first + sent + n).map(|s| packet(a.n, b.n, s, len)));
        sent += n;
        between(sent);
        // At most a few chunks in flight.
        let behind = (sent as usize).saturating_sub(4 * CHUNK as usize);
        if got.len() < behind {
            got.extend(receive(b, behind - got.len()));
        }
    }
    got.extend(receive(b, count as usize - got.len()));
    got
}

fn assert_in_order(got: &[u32], first: u32, count: u32) {
    let inversions = got.windows(2).filter(|w| w[1] <= w[0]).count();
    assert_eq!(inversions, 0, "packets left their order");
    assert!(got.iter().copied().eq(first..first + count), "every packet arrived once");
}

/// A TCP segment of a bulk transfer from site `from` to site `to`, with
/// valid checksums (`seq` also numbers the IPv4 ID, as a sender's stack
/// and the kernel's segmentation do).
fn tcp_segment(from: u8, to: u8, seq: u32, payload: usize) -> Vec<u8> {
    let (src, dst) = ([10, from, 0, 1], [10, to, 0, 1]);
    let mut tcp = vec![0u8; 20 + payload];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&(seq * payload as u32).to_be_bytes());
    tcp[8..12].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10;
    tcp[14..16].copy_from_slice(&1000u16.to_be_bytes());
    for (i, b) in tcp[20..].iter_mut().enumerate() {
        *b = (seq as usize * 7 + i) as u8;
    }
    let words = |b: &[u8]| b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum::<u32>();
    let pseudo = words(&src) + words(&dst) + 6 + tcp.len() as u32;
    let c = checksum(&tcp, pseudo);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
    p[2..4].copy_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
    p[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let c = checksum(&p, 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&tcp);
    p
}

/// With a TUN that takes offloads, a TCP stream's segments reach the TUN
/// as coalesced writes, and the host gets back exactly the packets sent,
/// in order.
#[test]
fn a_tcp_stream_is_written_to_the_tun_coalesced_and_arrives_as_sent() {
    let net = MemNet::new();
    let offload = Offload { tcp: true, udp: true };
    let a = Site::with_tun(&net, 1, 2, 64, 12, offload);
    let b = Site::with_tun(&net, 2, 2, 64, 12, offload);
    link(&a, &b);
    handshake(&a, &b);
    let sent: Vec<Vec<u8>> = (0..4_000).map(|s| tcp_segment(1, 2, s, 1360)).collect();
    let mut got = Vec::new();
    for chunk in sent.chunks(256) {
        a.host.send(0, chunk.iter().cloned());
        got.extend(receive(&b, chunk.len()));
    }
    assert!(got == sent, "the host received other packets than were sent, or in another order");
    assert!(b.host.coalesced_writes() > 0, "no write was coalesced");
    assert!(
        b.stat("tun_packets_written") > b.stat("tun_writes"),
        "fewer packets than writes: {} packets in {} writes",
        b.stat("tun_packets_written"),
        b.stat("tun_writes")
    );
}

/// TSO super-packets read from the TUN (with a lone packet between each
/// two, as an ACK would come) are cut straight into batches: each spans
/// two batches, and with one batch buffer the reader stalls in its middle.
/// The far host gets every segment as tun-rs would have cut it, in order.
#[test]
fn tso_super_packets_are_cut_into_their_batches_and_arrive_as_segments() {
    const GSO: usize = 1360;
    let hdr = tun_rs::VirtioNetHdr {
        flags: 1,
        gso_type: tun_rs::VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: 40,
        gso_size: GSO as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    let offload = Offload { tcp: true, udp: true };
    for (workers, pools) in [(2, 12), (1, 1)] {
        let (net, a, b) = pair(workers, pools, offload);
        let mut want = Vec::new();
        for s in 0..20u32 {
            // 47 segments, their sequence numbers following on from the
            // lone packets' numbering; the last one pushes.
            let mut sp = tcp_segment(1, 2, s * 48, GSO * 47);
            sp[33] |= 0x08;
            let mut input = sp.clone();
            let mut out = vec![vec![0u8; 2_000]; 64];
            let mut sizes = vec![0usize; 64];
            let n = tun_rs::gso_split(&mut input, hdr, &mut out, &mut sizes, 0, false).unwrap();
            want.extend(out.into_iter().zip(sizes).take(n).map(|(mut p, len)| {
                p.truncate(len);
                p
            }));
            a.host.send_super(0, hdr, sp);
            let lone = tcp_segment(1, 2, s * 48 + 47, GSO);
            want.push(lone.clone());
            a.host.send(0, [lone]);
        }
        let got = receive(&b, want.len());
        assert_eq!(got.len(), 20 * 48);
        assert!(got == want, "the host received other packets than were cut, or in another order");
        assert_eq!(a.stat("tun_packets"), 1 + 20 * 48, "segments are counted as packets read");
        if pools == 1 {
            assert!(a.stat("pool_stalls") > 0, "the send pool never ran dry mid super-packet");
        }
        wait_for("the buffers to come back", || a.pools_full(workers, pools) && b.pools_full(workers, pools));
        assert_eq!(net.dropped(), 0);
    }
}

/// A super-packet whose virtio header does not describe it is dropped
/// and counted as malformed; the packets after it still go.
#[test]
fn a_malformed_super_packet_is_dropped_and_counted() {
    let (_net, a, b) = pair(1, 4, Offload::default());
    let bad = tun_rs::VirtioNetHdr { gso_type: tun_rs::VIRTIO_NET_HDR_GSO_TCPV6, gso_size: 1000, ..Default::default() };
    a.host.send_super(0, bad, tcp_segment(1, 2, 0, 3_000));
    a.host.send(0, [packet(1, 2, 7, 100)]);
    assert_eq!(seq_of(&receive(&b, 1)[0]), 7);
    assert_eq!(a.iface.counters.get(Dropped::Malformed), 1);
}

#[test]
fn one_peers_stream_arrives_whole_and_in_order_across_workers() {
    let (net, a, b) = pair(3, 12, Offload::default());
    let got = stream(&a, &b, 0, 20_000, 1000, |_| {});
    assert_in_order(&got, 0, 20_000);
    // The point of the shared jobs: other workers than the reader took
    // part in one peer's crypto, yet nothing left its order.
    assert!(a.stat("crypto_batches_helped") + b.stat("crypto_batches_helped") > 0, "no batch was helped");
    assert_eq!(net.dropped(), 0);
}

/// A GRO receive of datagrams nobody can open (data messages for a
/// receiver index nobody has) is judged datagram by datagram: each is
/// counted, and the real peer's traffic goes on.
#[test]
fn a_gro_receive_of_strangers_is_refused_datagram_by_datagram() {
    let (net, a, b) = pair(1, 12, Offload::default());
    let stranger = net.host("198.18.0.9".parse().unwrap(), 64);
    let (socks, _) = causeway_dataplane::io::Bind::bind(&*stranger, 1, 40000, 0).unwrap();
    const DATAGRAM: usize = 1032;
    let mut contents = vec![0u8; 20 * DATAGRAM];
    for (i, d) in contents.chunks_mut(DATAGRAM).enumerate() {
        d[0] = 4; // a data message, for index 0xdead00xx
        d[4..8].copy_from_slice(&[0xde, 0xad, 0, i as u8]);
    }
    socks[0].send(b.wan, None, &contents, Some(DATAGRAM)).unwrap();
    wait_for("the strangers' datagrams to be counted", || {
        b.iface.counters.nonzero().iter().map(|(_, n)| n).sum::<u64>() == 20
    });
    let got = stream(&a, &b, 0, 2_000, 1000, |_| {});
    assert_in_order(&got, 0, 2_000);
}

/// Wire length of a WireGuard data message carrying `len` bytes (16-byte
/// header, padding to 16, 16-byte tag).
fn wire(len: usize) -> usize {
    32 + len.div_ceil(16) * 16
}

fn runs_from(log: Vec<SendRecord>, from: SocketAddr) -> Vec<(Vec<usize>, Option<usize>)> {
    log.into_iter().filter(|r| r.from == from).map(|r| (r.datagrams, r.segment)).collect()
}

const SIZES: [usize; 8] = [1000, 1000, 1000, 500, 1000, 1000, 1400, 200];

/// Sends one TUN read of `SIZES` and returns the sends `a` made for it,
/// checking that every packet reached `b` intact and in order.
fn send_sizes(net: &MemNet, a: &Site, b: &Site) -> Vec<(Vec<usize>, Option<usize>)> {
    handshake(a, b);
    wait_for("the handshake's keepalive", || net.take_log().is_empty());
    let packets: Vec<_> = SIZES.iter().enumerate().map(|(i, &len)| packet(a.n, b.n, i as u32, len)).collect();
    a.host.send(0, packets.clone());
    assert_eq!(receive(b, SIZES.len()), packets, "every packet arrived intact and in order");
    runs_from(net.take_log(), a.wan)
}

#[test]
fn gso_runs_are_cut_where_a_datagram_is_shorter_or_longer() {
    let net = MemNet::new();
    let (a, b) = (Site::new(&net, 1, 1, 64, 12), Site::new(&net, 2, 1, 64, 12));
    link(&a, &b);
    let (w1000, w500, w1400, w200) = (wire(1000), wire(500), wire(1400), wire(200));
    assert_eq!(
        send_sizes(&net, &a, &b),
        [
            // A shorter datagram ends a run (only the last may be short)...
            (vec![w1000, w1000, w1000, w500], Some(w1000)),
            (vec![w1000, w1000], Some(w1000)),
            // ...and a longer one starts the next.
            (vec![w1400, w200], Some(w1400)),
        ]
    );
}

#[test]
fn without_gso_one_sendmmsg_takes_a_run_of_any_sizes() {
    let net = MemNet::new();
    let (a, b) = (Site::new(&net, 1, 1, 1, 12), Site::new(&net, 2, 1, 1, 12));
    link(&a, &b);
    assert_eq!(send_sizes(&net, &a, &b), [(SIZES.iter().map(|&l| wire(l)).collect::<Vec<_>>(), None)]);
}

/// A send that fails (the socket's queue full) counts each datagram once:
/// those a batched send got out before it stopped as sent, to the peer's
/// counters and the receiver; each one that did not leave as a drop. A
/// GSO send leaves whole or not at all.
#[test]
fn a_send_that_fails_part_way_counts_each_datagram_once() {
    for (gso, left) in [(1, 3), (64, 0)] {
        let net = MemNet::new();
        let (a, b) = (Site::new(&net, 1, 1, gso, 12), Site::new(&net, 2, 1, gso, 12));
        let (to_b, _) = link(&a, &b);
        handshake(&a, &b);
        wait_for("the handshake's keepalive", || net.take_log().is_empty());
        let (before, drops) = (to_b.crypto().stats(), a.iface.counters.get(Dropped::UdpSend));
        net.fail_sends_after(3);
        // One TUN read of one size: one run, one send.
        let packets: Vec<_> = (0..8).map(|i| packet(a.n, b.n, i, 1000)).collect();
        a.host.send(0, packets.clone());
        wait_for("the drops", || a.iface.counters.get(Dropped::UdpSend) == drops + 8 - left);
        assert_eq!(receive(&b, left as usize), packets[..left as usize], "gso {gso}: what left arrived");
        let after = to_b.crypto().stats();
        assert_eq!(after.tx_packets - before.tx_packets, left, "gso {gso}: sent as counted");
        assert_eq!(after.tx_bytes - before.tx_bytes, left * wire(1000) as u64, "gso {gso}: bytes as counted");
        net.allow_sends();
        // The pipeline goes on.
        a.host.send(0, [packet(a.n, b.n, 100, 1000)]);
        assert_eq!(seq_of(&receive(&b, 1)[0]), 100, "gso {gso}");
    }
}

#[test]
fn an_empty_pool_stalls_reading_and_resumes_where_it_stopped() {
    let net = MemNet::new();
    // One batch buffer per direction: a full TUN read (two batches) and a
    // full GRO receive (over 64 KiB) each run out of buffers.
    let (a, b) = (Site::new(&net, 1, 1, 64, 1), Site::new(&net, 2, 1, 64, 1));
    link(&a, &b);
    handshake(&a, &b);
    let got = stream(&a, &b, 0, 5_000, 1000, |_| {});
    assert_in_order(&got, 0, 5_000);
    assert!(a.stat("pool_stalls") > 0, "the send pool never ran dry");
    assert!(b.stat("pool_stalls") > 0, "the receive pool never ran dry");
    wait_for("the buffers to come back", || a.pools_full(1, 1) && b.pools_full(1, 1));
}

#[test]
fn a_rekey_mid_stream_loses_nothing() {
    let net = MemNet::new();
    let (a, b) = (Site::new(&net, 1, 2, 64, 12), Site::new(&net, 2, 2, 64, 12));
    let (to_b, _) = link(&a, &b);
    handshake(&a, &b);
    let first_session = to_b.crypto().current_keypair().unwrap();
    let handshakes = to_b.crypto().stats().handshakes;
    let got = stream(&a, &b, 0, 6_000, 1200, |sent| {
        if sent == 2048 {
            // Past REKEY_AFTER_TIME for the initiator's session (and still
            // inside REJECT_AFTER_TIME): the next send asks for a new one
            // while the old one carries on.
            a.iface.clock.advance(causeway_wireguard::REKEY_AFTER_TIME + Duration::from_secs(1));
            b.iface.clock.advance(causeway_wireguard::REKEY_AFTER_TIME + Duration::from_secs(1));
        }
    });
    assert_in_order(&got, 0, 6_000);
    // The rekey's handshake runs beside the stream; on a loaded machine the
    // stream may end before its response is handled. Keep the traffic
    // going (still checked whole and in order) until it is, within PATIENCE.
    let (mut next, deadline) = (6_000, Instant::now() + PATIENCE);
    while to_b.crypto().stats().handshakes == handshakes && Instant::now() < deadline {
        let more = stream(&a, &b, next, 1_000, 1200, |_| {});
        assert_in_order(&more, next, 1_000);
        next += 1_000;
    }
    assert!(to_b.crypto().stats().handshakes > handshakes, "no new handshake completed");
    let now = to_b.crypto().current_keypair().unwrap();
    assert!(!Arc::ptr_eq(&now, &first_session), "the stream ended on the first session");
    assert_eq!(a.iface.counters.nonzero(), [], "nothing was dropped at a");
    assert_eq!(b.iface.counters.nonzero(), [], "nothing was dropped at b");
}

// The sender found no session, the handshake's flush then found nothing
// staged, and only then was the packet staged: it goes out at once on the
// session, rather than waiting for the peer's next packet or handshake.
#[test]
fn a_packet_held_just_after_the_session_came_goes_out_at_once() {
    use causeway_dataplane::protocol::Protocol;
    use causeway_dataplane::session::Carrier;
    let (_net, a, b) = pair(1, 8, Offload::default());
    let peer = a.iface.peer(&b.key).unwrap();
    let sockets = a.iface.sockets_for(Carrier::WireGuard);
    let now = a.iface.clock.now();
    causeway_dataplane::wireguard::WireGuard.hold(&a.iface, &peer, &packet(1, 2, 7, 100), &*sockets.sockets[0], now);
    assert_eq!(seq_of(&receive(&b, 1)[0]), 7);
    assert!(!peer.has_staged());
}

#[test]
fn a_peer_removed_with_batches_in_flight_leaves_nothing_behind() {
    let net = MemNet::new();
    let a = Site::new(&net, 1, 2, 64, 4);
    let (b, c) = (Site::new(&net, 2, 2, 64, 4), Site::new(&net, 3, 2, 64, 4));
    let (to_b, _) = link(&a, &b);
    link(&a, &c);
    handshake(&a, &b);
    handshake(&a, &c);
    // Far more than the pools hold, so batches are queued when b goes.
    a.host.send(0, (0..20_000).map(|s| packet(1, 2, s, 1000)));
    wait_for("batches queued for b", || !to_b.tx.is_empty() || b.host.pending() > 0);
    a.iface.remove_peer(&b.key);
    wait_for("a to go idle with every buffer back", || a.pools_full(2, 4) && a.host.pending() == 0);
    assert!(to_b.tx.is_empty() && to_b.rx.is_empty(), "the removed peer's queues drained");
    // What reached b before and after is in order, once each.
    let mut at_b = Vec::new();
    while let Some(p) = b.host.recv() {
        at_b.push(seq_of(&p));
    }
    assert!(at_b.windows(2).all(|w| w[0] < w[1]), "b's packets left their order");
    assert!(at_b.len() < 20_000, "the removal stopped b's traffic");
    // The rest of the data plane is unharmed.
    let got = stream(&a, &c, 0, 2_000, 1000, |_| {});
    assert_in_order(&got, 0, 2_000);
}
