//! IPsec (ESP) on the shared pipeline. A child SA pair is the `Session`
//! that seals and opens ESP packets (`causeway-esp` does the bytes), and
//! `Ipsec` is the `Protocol` that picks a peer's outbound SA, finds an
//! inbound one by SPI, holds packets while there is none, and runs the
//! replay window on the drain.
//!
//! Unlike WireGuard, IPsec negotiates nothing here: IKE runs on the control
//! plane (the gateway), the way an IKE daemon feeds a kernel's SA table.
//! The data plane only asks for an SA (`Request::Negotiate`) or, when one
//! runs low on sequence numbers, its rekey (`Request::Rekey`), hands up IKE
//! messages that arrive on port 4500 behind the non-ESP marker
//! (`Request::Ike`), and has SAs installed and removed (`install_child`,
//! `remove_child`). A child SA that replaces another (a rekey) takes over
//! sending at once, while the old one keeps opening what is still in
//! flight until IKE deletes it, so a rekey loses no packet.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use causeway_esp::Arrival;
use causeway_wireguard::Time;

pub use crate::child_sa::ChildSa;
use crate::counters::Drop;
pub use crate::esp_link::EspLink;
use crate::interface::Interface;
use crate::io::Socket;
pub use crate::ipsec_table::{IpsecTable, Request, SendOn};
use crate::peer::PeerState;
use crate::protocol::{Accepted, Inbound, Protocol, Sending};
use crate::session::{Carrier, Session};

/// IKE followed the peer to `to` (an authenticated request came from
/// there): ESP in UDP follows, sent from the same local address. Raw ESP
/// (an endpoint without a port) has no port and no NAT to follow. Returns
/// whether the peer moved; a move is logged ("peer roamed").
pub fn follow_ike(peer: &PeerState, to: SocketAddr) -> bool {
    let Some(now) = peer.endpoint().filter(|e| e.addr.port() != 0) else { return false };
    peer.observe(to, now.local)
}

/// Sends the packets held for `peer` with its new SA, through its send
/// queue (`send::send_held`). Called by IKE when it installs an SA, and by
/// a worker that staged a packet just after one came.
pub fn flush_staged(iface: &Interface, peer: &Arc<PeerState>) {
    let Some(sa) = peer.ipsec().and_then(EspLink::sending) else { return };
    // Without an endpoint they stay held: IKE sets it before any SA.
    if peer.endpoint().is_none() {
        return;
    }
    let staged = peer.take_staged();
    if staged.is_empty() {
        return;
    }
    let set = iface.sockets_for(sa.carrier());
    let Some(sock) = set.sockets.first() else {
        iface.counters.count_many(Drop::UdpSend, staged.len());
        return;
    };
    let held: Vec<Vec<u8>> = staged.into();
    crate::send::send_held(&Ipsec, iface, peer, &held, &**sock, iface.clock.now());
}

/// The ESP protocol; its state is the interface's `IpsecTable` and each
/// peer's `EspLink`.
#[derive(Default, Clone, Copy)]
pub struct Ipsec;

impl Protocol for Ipsec {
    type Owner = Arc<PeerState>;

    fn sending_session(&self, peer: &PeerState, _now: Time) -> Option<Sending> {
        let sa = peer.ipsec()?.sending()?;
        // IKE rekeys by time on the control plane; the data plane asks only
        // when an SA's sequence numbers run low first (2^32 packets).
        let rekey = sa.wearing_out();
        Some(Sending { session: sa, rekey })
    }

    fn hold(&self, iface: &Interface, peer: &Arc<PeerState>, packet: &[u8], _sock: &dyn Socket, now: Time) {
        if !peer.stage(packet, now) {
            iface.counters.count(Drop::StagedQueueFull);
        }
        // The SA may have come between the sender finding none and the
        // packet being staged, after IKE flushed the staged queue: the
        // packet would then wait for the next SA, an hour away. The staged
        // queue's lock orders the two: either IKE's flush comes after the
        // staging and takes the packet, or this look sees the SA.
        if peer.ipsec().is_some_and(|l| l.sending().is_some()) {
            flush_staged(iface, peer);
            return;
        }
        if peer.ipsec().is_some_and(|l| l.should_ask(now)) {
            iface.ipsec.request(Request::Negotiate(peer.name()));
        }
    }

    fn rekey(&self, iface: &Interface, peer: &PeerState, _sock: &dyn Socket, now: Time) {
        let Some(link) = peer.ipsec() else { return };
        let Some(sa) = link.sending() else { return };
        if link.should_ask_rekey(now) {
            iface.ipsec.request(Request::Rekey { spi_in: sa.spi_in() });
        }
    }

    fn on_sent(&self, peer: &PeerState, _now: Time, wire_bytes: u64, packets: u64) {
        if let Some(l) = peer.ipsec() {
            l.tx_bytes.fetch_add(wire_bytes, Ordering::Relaxed);
            l.tx_packets.fetch_add(packets, Ordering::Relaxed);
        }
    }

    /// An SA is found only on the carrier it was negotiated for, as the
    /// kernel's SA lookup matches the encapsulation: raw ESP that names
    /// an SA of ESP in UDP is refused, or roaming would move the peer to
    /// port 0. The zero SPI is RFC 3948's non-ESP marker in UDP and is
    /// reserved in raw ESP (RFC 4303 §2.1), where IKE never comes.
    fn classify(&self, iface: &Interface, carrier: Carrier, datagram: &[u8], _now: Time) -> Inbound<Self::Owner> {
        let Some(spi) = causeway_esp::spi_of(datagram) else {
            return match carrier {
                Carrier::EspInUdp => Inbound::Control,
                _ => Inbound::Refused(Drop::Malformed),
            };
        };
        match iface.ipsec.child(spi) {
            Some((peer, sa)) if sa.carrier() == carrier => Inbound::Data { owner: peer, session: sa },
            // Counted apart: a peer that encapsulates otherwise than was
            // negotiated is a different problem from a stale SPI.
            Some(_) => Inbound::Refused(Drop::WrongCarrier),
            None => Inbound::Refused(Drop::UnknownSpi),
        }
    }

    /// ESP on an unknown SPI that IKE has reserved may be for an SA about
    /// to be published (`early_esp.rs`).
    fn keep_refused(
        &self,
        iface: &Interface,
        carrier: Carrier,
        from: (SocketAddr, Option<IpAddr>),
        datagram: &[u8],
        reason: Drop,
        reader: usize,
        now: Time,
    ) -> bool {
        let Some(spi) = causeway_esp::spi_of(datagram).filter(|_| reason == Drop::UnknownSpi) else { return false };
        let (kept, expired) = iface.ipsec.keep_early(spi, from, carrier, datagram, reader, now);
        iface.counters.count_many(Drop::UnknownSpi, expired);
        kept
    }

    fn owns(&self, peer: &PeerState, owner: &Self::Owner) -> bool {
        std::ptr::eq(peer, &**owner)
    }

    fn peer_of(&self, _iface: &Interface, owner: &Self::Owner) -> Option<Arc<PeerState>> {
        Some(owner.clone())
    }

    /// IKE behind the non-ESP marker, and NAT keepalives (one 0xff byte,
    /// RFC 3948 §2.3), which only keep a mapping open.
    fn handle_control(
        &self,
        iface: &Interface,
        sock: &dyn Socket,
        (remote, local): (SocketAddr, Option<IpAddr>),
        datagram: &mut [u8],
        _now: Time,
    ) {
        if datagram.len() > 4 && datagram[..4] == [0, 0, 0, 0] {
            let local = local.unwrap_or_else(|| crate::source::unspecified_for(remote));
            let local = SocketAddr::new(local, sock.local_port());
            if let Err(why) = iface.ipsec.ike_message(local, remote, &datagram[4..]) {
                iface.refuse(remote, why);
            }
        } else if datagram != [0xff] {
            iface.refuse(remote, Drop::Malformed);
        }
    }

    fn accept(
        &self,
        _iface: &Interface,
        peer: &PeerState,
        session: &dyn Session,
        counter: u64,
        wire_len: usize,
        _is_data: bool,
        _sock: &dyn Socket,
        now: Time,
    ) -> Result<Accepted, Drop> {
        let sa = session.as_any().downcast_ref::<ChildSa>().ok_or(Drop::Malformed)?;
        let arrival = sa.accept(counter)?;
        let Some(l) = peer.ipsec() else { return Ok(Accepted::Late) };
        l.used(sa);
        l.rx_bytes.fetch_add(wire_len as u64, Ordering::Relaxed);
        l.rx_packets.fetch_add(1, Ordering::Relaxed);
        l.last_rx.store(now.as_nanos().max(1), Ordering::Relaxed);
        // The newest of its SA, and its SA the newest the peer has sent
        // on: a packet still arriving on an SA a rekey replaced was sent
        // before the peer moved to the new one, so its source may be a
        // mapping the peer has left.
        // Every SA counts, roaming or not: a peer can hold both kinds (its
        // IKE SA roams, ours does not), and moving to one that does not
        // roam still makes the other's late packets late.
        let newest_sa = l.heard_on(sa);
        Ok(match arrival {
            Arrival::Newest if newest_sa => Accepted::Current,
            _ => Accepted::Late,
        })
    }

    fn on_authenticated(&self, _iface: &Interface, _peer: &Arc<PeerState>, _sock: &dyn Socket, _now: Time) {}

    /// IKE follows where ESP found the peer, or its next request (a
    /// liveness check, a rekey) goes to the mapping the peer left.
    fn on_moved(&self, iface: &Interface, peer: &PeerState, to: SocketAddr) {
        iface.ipsec.request(Request::Moved { peer: peer.name(), to });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interface::Options;
    use crate::memory::MemNet;
    use crate::session::Carrier;

    fn child_sa(spi: u32) -> Arc<ChildSa> {
        Arc::new(ChildSa::for_tests(spi))
    }

    /// A one-worker interface at 198.18.0.1 on `net`.
    fn interface(net: &Arc<MemNet>) -> Interface {
        interface_at(net, 1, 0)
    }

    /// A one-worker interface at 198.18.0.`n` on `net`, WireGuard on `port`.
    fn interface_at(net: &Arc<MemNet>, n: u8, port: u16) -> Interface {
        let binder = net.host(format!("198.18.0.{n}").parse().unwrap(), 1);
        let options = Options { mtu: 1420, workers: 1, port, binder, batches_per_worker: 4 };
        Interface::with_options(format!("mem{n}"), None, options).unwrap()
    }

    // A worker found no SA for a packet; IKE then installed one and
    // flushed the staged packets (none yet); only then did the worker
    // stage its packet. It must leave now, not with the next SA.
    #[test]
    fn a_packet_held_after_its_sa_came_is_sent_at_once() {
        let net = MemNet::new();
        let iface = interface(&net);
        iface.bind_esp(0).unwrap();
        let peer = iface.add_ipsec_peer("west");
        let to: SocketAddr = "198.18.0.2:4500".parse().unwrap();
        peer.set_endpoint(to);
        iface.ipsec.install_child(&peer, child_sa(0x100), SendOn::Now);
        flush_staged(&iface, &peer);
        net.take_log();

        let mut packet = vec![0u8; 60];
        packet[0] = 0x45;
        let sock = iface.sockets_for(Carrier::EspInUdp).sockets[0].clone();
        Ipsec.hold(&iface, &peer, &packet, &*sock, Time::from_secs(1));
        assert_eq!(peer.staged_len(), 0, "the packet waits for another SA");
        let sent = net.take_log();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!((sent[0].to, sent[0].datagrams.len()), (to, 1));
    }

    // A datagram reaches an SA only by the carrier the SA was negotiated
    // for, and the zero SPI is IKE's only inside UDP.
    #[test]
    fn the_socket_a_datagram_came_by_must_be_its_sas_carrier() {
        use crate::tunnels::Tunnels;
        let net = MemNet::new();
        let iface = interface(&net);
        let peer = iface.add_ipsec_peer("west");
        iface.ipsec.install_child(&peer, child_sa(0x100), SendOn::Now);
        let now = Time::from_secs(1);
        let esp = [0, 0, 1, 0, 0, 0, 0, 1, 0xaa, 0xbb];
        let ike = [0, 0, 0, 0, 0x11, 0x22];
        let classify = |carrier, datagram: &[u8]| match Tunnels.classify(&iface, carrier, datagram, now) {
            Inbound::Data { .. } => Ok(()),
            Inbound::Control => Err(None),
            Inbound::Refused(r) => Err(Some(r)),
        };
        assert_eq!(classify(Carrier::EspInUdp, &esp), Ok(()), "an SA of ESP in UDP, in UDP");
        assert_eq!(classify(Carrier::RawEsp, &esp), Err(Some(Drop::WrongCarrier)), "the same SA, as raw ESP");
        assert_eq!(classify(Carrier::WireGuard, &esp), Err(Some(Drop::Malformed)), "ESP on WireGuard's port");
        assert_eq!(classify(Carrier::EspInUdp, &ike), Err(None), "IKE behind the non-ESP marker");
        assert_eq!(classify(Carrier::RawEsp, &ike), Err(Some(Drop::Malformed)), "SPI 0 in raw ESP");
        assert_eq!(classify(Carrier::EspInUdp, &[1, 0, 0, 0, 9, 9]), Err(Some(Drop::UnknownSpi)), "WireGuard on 4500");
    }

    // IKE hashes the local address for NAT detection: one the kernel did
    // not report is the wildcard of the family the datagram came by.
    #[test]
    fn ike_without_its_destination_gets_its_familys_wildcard() {
        let net = MemNet::new();
        let iface = interface(&net);
        iface.bind_esp(0).unwrap();
        let sock = iface.sockets_for(Carrier::EspInUdp).sockets[0].clone();
        let mut ike = [0, 0, 0, 0, 0x11, 0x22];
        for remote in ["198.18.0.2:4500", "[fd00::2]:4500"] {
            let remote: SocketAddr = remote.parse().unwrap();
            Ipsec.handle_control(&iface, &*sock, (remote, None), &mut ike, Time::from_secs(1));
            let got = iface.ipsec.take_requests();
            let Some(Request::Ike { local, data, .. }) = got.front() else { panic!("{remote}: no IKE request") };
            assert!(local.ip().is_unspecified() && local.is_ipv6() == remote.is_ipv6(), "{remote}: {local}");
            assert_eq!(data[..], ike[4..]);
        }
    }

    /// A UDP packet from 10.1.0.1 to `dst`, `len` bytes.
    fn inner(dst: [u8; 4], len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (p[8], p[9]) = (64, 17);
        p[12..16].copy_from_slice(&[10, 1, 0, 1]);
        p[16..20].copy_from_slice(&dst);
        p[20..24].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
        p
    }

    type Site = (Arc<Interface>, crate::memory::MemTunHost, Vec<std::thread::JoinHandle<()>>);

    /// Site `n` (1 or 2) of a pair on `net`, at 198.18.0.`n`, with
    /// 10.(3 - n).0.0/16 routed to the other over one ESP-in-UDP SA of
    /// `selectors`, and one worker.
    fn selector_site(net: &Arc<MemNet>, n: u8, selectors: Option<crate::selectors::Selectors>) -> Site {
        esp_site(net, n, ChildSa::for_tests(0x100).with_selectors(selectors))
    }

    /// Site `n` as `selector_site` makes it, over the SA `sa`.
    fn esp_site(net: &Arc<MemNet>, n: u8, sa: ChildSa) -> Site {
        let iface = Arc::new(interface_at(net, n, 51820));
        iface.bind_esp(4500).unwrap();
        let peer = iface.add_ipsec_peer("other");
        peer.set_endpoint(format!("198.18.0.{}:4500", 3 - n).parse().unwrap());
        let other: ipnet::IpNet = format!("10.{}.0.0/16", 3 - n).parse().unwrap();
        iface.update_routes(|r| {
            r.insert(other, peer.clone().into());
        });
        iface.ipsec.install_child(&peer, Arc::new(sa), SendOn::Now);
        let (host, tuns) = crate::memory::tun(1);
        let workers = crate::worker::spawn(&iface, tuns).unwrap();
        (iface, host, workers)
    }

    /// Selectors of every address from `local` to `remote` (inclusive ranges).
    fn narrowed(local: (&str, &str), remote: (&str, &str)) -> Option<crate::selectors::Selectors> {
        let range = |(a, b): (&str, &str)| crate::selectors::Selector {
            proto: 0,
            ports: (0, u16::MAX),
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
        };
        crate::selectors::Selectors::new(vec![range(local)], vec![range(remote)])
    }

    /// Sends three packets from site 1 to 10.2.2.9, 10.2.1.9 and 10.2.3.9
    /// and returns what site 2's TUN got once `done` holds of the two
    /// sites' counters (and 20 ms more).
    fn send_three(a: &Site, b: &Site, done: impl Fn(&Interface, &Interface) -> bool) -> Vec<Vec<u8>> {
        a.1.send(0, [inner([10, 2, 2, 9], 100), inner([10, 2, 1, 9], 101), inner([10, 2, 3, 9], 102)]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut got = vec![];
        while !done(&a.0, &b.0) || got.is_empty() {
            got.extend(std::iter::from_fn(|| b.1.recv()));
            assert!(std::time::Instant::now() < deadline, "got {got:?}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        got.extend(std::iter::from_fn(|| b.1.recv()));
        got
    }

    fn stop(sites: [Site; 2]) {
        for (iface, _, workers) in sites {
            iface.shutdown();
            workers.into_iter().for_each(|w| w.join().unwrap());
        }
    }

    // RFC 4301 §5.2: what an SA's selectors do not cover is dropped after
    // decryption, though the source is in the peer's allowed IPs.
    #[test]
    fn packets_outside_the_sas_traffic_selectors_are_dropped() {
        let net = MemNet::new();
        // Site 2 agreed to carry 10.1.0.0/16 to 10.2.1.0/24 only; site 1
        // (route-based) sends everything for 10.2.0.0/16.
        let a = selector_site(&net, 1, None);
        let b = selector_site(&net, 2, narrowed(("10.2.1.0", "10.2.1.255"), ("10.1.0.0", "10.1.255.255")));
        let got = send_three(&a, &b, |_, b| b.counters.get(Drop::OutsideSelectors) >= 2);
        assert_eq!(got, vec![inner([10, 2, 1, 9], 101)], "only the covered packet");
        assert_eq!(b.0.counters.get(Drop::OutsideSelectors), 2);
        assert_eq!(b.0.counters.get(Drop::SourceNotAllowed), 0, "the source was allowed");
        stop([a, b]);
    }

    // RFC 7296 §2.23: an SA follows the peer to the source of its
    // authenticated packets only where IKE said so.
    #[test]
    fn the_peers_endpoint_follows_its_packets_only_on_a_roaming_sa() {
        for roams in [false, true] {
            let net = MemNet::new();
            let a = selector_site(&net, 1, None);
            let b = esp_site(&net, 2, ChildSa::for_tests(0x100).with_roaming(roams));
            let peer = b.0.ipsec.peer("other").unwrap();
            let configured: SocketAddr = "198.18.0.9:4500".parse().unwrap();
            peer.set_endpoint(configured);
            let got = send_three(&a, &b, |_, _| true);
            assert_eq!(got.len(), 3, "roams {roams}: delivered either way");
            b.0.sample_rates(1.0);
            assert!(peer.rates().0 > 0, "an IPsec peer's receive rate is taken");
            let now = peer.endpoint().map(|e| e.addr);
            let expected = if roams { "198.18.0.1:4500".parse().unwrap() } else { configured };
            assert_eq!(now, Some(expected), "roams {roams}");
            // IKE is told where ESP found the peer, once.
            let moved: Vec<_> =
                b.0.ipsec.take_requests().into_iter().filter(|r| matches!(r, Request::Moved { .. })).collect();
            let told = matches!(&moved[..], [Request::Moved { peer, to }] if peer == "other" && *to == expected);
            assert_eq!((moved.len(), told), (usize::from(roams), roams), "roams {roams}");
            stop([a, b]);
        }
    }

    // RFC 7296 §2.23 moves the address only for new packets, meaning not
    // replayed; ESP asks more: a packet overtaken on the way (reordered
    // across a NAT's remapping) is new to the replay window and
    // delivered, but does not move the peer back to the mapping it left.
    #[test]
    fn a_late_packet_from_an_old_mapping_does_not_move_the_peer_back() {
        let net = MemNet::new();
        let b = esp_site(&net, 2, ChildSa::for_tests(0x100).with_roaming(true));
        let peer = b.0.ipsec.peer("other").unwrap();
        let gateway: SocketAddr = "198.18.0.2:4500".parse().unwrap();
        let old: SocketAddr = "198.18.0.7:4500".parse().unwrap();
        let new: SocketAddr = "198.18.0.8:4500".parse().unwrap();
        let (from_old, from_new) = (wan_socket(&net, old), wan_socket(&net, new));
        for (from, seq, endpoint) in [(&from_old, 1, old), (&from_new, 3, new), (&from_old, 2, new)] {
            deliver(&b, &**from, gateway, 0x100, seq);
            assert_eq!(peer.endpoint().map(|e| e.addr), Some(endpoint), "after seq {seq}");
        }
        // IKE is told where the peer is (the queue keeps a peer's latest
        // move only), and the late packet did not undo it.
        let moves: Vec<SocketAddr> =
            b.0.ipsec
                .take_requests()
                .into_iter()
                .filter_map(|r| match r {
                    Request::Moved { to, .. } => Some(to),
                    _ => None,
                })
                .collect();
        assert_eq!(moves, vec![new]);
        b.0.shutdown();
        b.2.into_iter().for_each(|w| w.join().unwrap());
    }

    /// A socket of `net` at `at`, as a peer's NAT mapping.
    fn wan_socket(net: &Arc<MemNet>, at: SocketAddr) -> Arc<dyn Socket> {
        crate::io::Bind::bind(&*net.host(at.ip(), 1), 1, at.port(), 0).unwrap().0.remove(0)
    }

    /// Sends ESP packet `seq` of SA `spi` from `from` to site `to` at
    /// `gateway` and waits until its TUN has it.
    fn deliver(to: &Site, from: &dyn Socket, gateway: SocketAddr, spi: u32, seq: u32) {
        let packet = crate::child_sa::sealed_for_tests(spi, &inner([10, 2, 2, 9], 100), 4, seq);
        from.send(gateway, None, &packet, None).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while to.1.recv().is_none() {
            assert!(std::time::Instant::now() < deadline, "SPI {spi:#x} seq {seq} not delivered");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Waits until `done` holds, for at most 30 s.
    fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    // The peer's first ESP on an SA can come before IKE publishes it here
    // (`early_esp.rs`): on an SPI IKE has reserved it is kept, and read
    // again once the SA is published; on any other it is dropped at once;
    // one whose SPI IKE lets go, or that no SA claims in time, is dropped
    // then.
    #[test]
    fn esp_before_its_sa_is_kept_on_a_reserved_spi_and_read_once_published() {
        let net = MemNet::new();
        let b = esp_site(&net, 2, ChildSa::for_tests(0x100));
        let peer = b.0.ipsec.peer("other").unwrap();
        let gateway: SocketAddr = "198.18.0.2:4500".parse().unwrap();
        let from_peer = wan_socket(&net, "198.18.0.1:4500".parse().unwrap());
        let esp = |spi: u32, seq: u32| crate::child_sa::sealed_for_tests(spi, &inner([10, 2, 2, 9], 100), 4, seq);
        let unknown = || b.0.counters.get(Drop::UnknownSpi);
        assert_eq!(b.0.ipsec.set_reserved_spis([0x100, 0x300, 0x400, 0x500].into()), 0);

        from_peer.send(gateway, None, &esp(0x600, 1), None).unwrap();
        until("the datagram on an SPI not reserved dropped", || unknown() == 1);
        from_peer.send(gateway, None, &esp(0x300, 2), None).unwrap();
        until("the datagram on a reserved SPI kept", || b.0.ipsec.early.len() == 1);
        assert!(b.1.recv().is_none());
        b.0.ipsec.install_child(&peer, Arc::new(ChildSa::for_tests(0x300)), SendOn::Now);
        until("the kept datagram delivered", || b.1.recv().is_some());
        assert_eq!(b.0.ipsec.early.len(), 0);
        assert_eq!(unknown(), 1, "only the one on an SPI not reserved was dropped");

        // IKE lets 0x400 go (its negotiation failed): dropped and told.
        from_peer.send(gateway, None, &esp(0x400, 1), None).unwrap();
        until("kept", || b.0.ipsec.early.len() == 1);
        assert_eq!(b.0.ipsec.set_reserved_spis([0x100, 0x300, 0x500].into()), 1);
        assert_eq!(b.0.ipsec.early.len(), 0);

        // Unclaimed past KEPT_FOR: counted when the next one is kept.
        from_peer.send(gateway, None, &esp(0x500, 1), None).unwrap();
        until("kept", || b.0.ipsec.early.len() == 1);
        b.0.clock.advance(crate::early_esp::KEPT_FOR);
        from_peer.send(gateway, None, &esp(0x500, 2), None).unwrap();
        until("the unclaimed one dropped", || unknown() == 2);
        assert_eq!(b.0.ipsec.early.len(), 1, "the new one kept");
        b.0.shutdown();
        b.2.into_iter().for_each(|w| w.join().unwrap());
    }

    // After a rekey the peer sends on the new SA; a packet still in flight
    // on the old one is the newest of its SA, but older than the traffic
    // on the new one, and must not move the peer back either.
    #[test]
    fn a_packet_on_the_sa_a_rekey_replaced_does_not_move_the_peer_back() {
        let net = MemNet::new();
        let b = esp_site(&net, 2, ChildSa::for_tests(0x100).with_roaming(true));
        let peer = b.0.ipsec.peer("other").unwrap();
        // We answered the rekey: the new SA takes over once the peer uses it.
        b.0.ipsec.install_child(&peer, Arc::new(ChildSa::for_tests(0x200).with_roaming(true)), SendOn::OnceUsed);
        let gateway: SocketAddr = "198.18.0.2:4500".parse().unwrap();
        let old: SocketAddr = "198.18.0.7:4500".parse().unwrap();
        let new: SocketAddr = "198.18.0.8:4500".parse().unwrap();
        let (from_old, from_new) = (wan_socket(&net, old), wan_socket(&net, new));
        let steps = [(&from_old, 0x100, 1, old), (&from_new, 0x200, 1, new), (&from_old, 0x100, 2, new)];
        for (from, spi, seq, endpoint) in steps {
            deliver(&b, &**from, gateway, spi, seq);
            assert_eq!(peer.endpoint().map(|e| e.addr), Some(endpoint), "after SPI {spi:#x} seq {seq}");
        }
        let link = peer.ipsec().unwrap();
        assert_eq!(link.sending().map(|s| s.spi_in()), Some(0x200), "the new SA took over sending");
        // Until the peer has used the new SA, the old one is still the
        // one in use, and its packets still move the peer.
        let net = MemNet::new();
        let c = esp_site(&net, 2, ChildSa::for_tests(0x100).with_roaming(true));
        let peer = c.0.ipsec.peer("other").unwrap();
        c.0.ipsec.install_child(&peer, Arc::new(ChildSa::for_tests(0x200).with_roaming(true)), SendOn::OnceUsed);
        deliver(&c, &*wan_socket(&net, old), gateway, 0x100, 1);
        assert_eq!(peer.endpoint().map(|e| e.addr), Some(old));
        stop([b, c]);
    }

    // Both ends initiated at once: we send on one child SA, the peer on
    // the other (each took its own IKE SA's last). Its packets still move
    // it: which SA we send on says nothing of how old its packets are.
    #[test]
    fn a_peer_sending_on_another_sa_than_ours_is_still_followed() {
        let net = MemNet::new();
        let b = esp_site(&net, 2, ChildSa::for_tests(0x100).with_roaming(true));
        let peer = b.0.ipsec.peer("other").unwrap();
        b.0.ipsec.install_child(&peer, Arc::new(ChildSa::for_tests(0x200).with_roaming(true)), SendOn::Now);
        assert_eq!(peer.ipsec().unwrap().sending().map(|s| s.spi_in()), Some(0x200));
        let gateway: SocketAddr = "198.18.0.2:4500".parse().unwrap();
        for (at, seq) in [("198.18.0.7:4500", 1), ("198.18.0.8:4500", 2)] {
            let at: SocketAddr = at.parse().unwrap();
            deliver(&b, &*wan_socket(&net, at), gateway, 0x100, seq);
            assert_eq!(peer.endpoint().map(|e| e.addr), Some(at), "after seq {seq}");
        }
        // The peer moves to the newer SA; once that goes, the older one is
        // the newest left, and its packets are followed again.
        let at: SocketAddr = "198.18.0.9:4500".parse().unwrap();
        deliver(&b, &*wan_socket(&net, at), gateway, 0x200, 1);
        assert_eq!(peer.endpoint().map(|e| e.addr), Some(at));
        b.0.ipsec.remove_child(0x200);
        let at: SocketAddr = "198.18.0.10:4500".parse().unwrap();
        deliver(&b, &*wan_socket(&net, at), gateway, 0x100, 3);
        assert_eq!(peer.endpoint().map(|e| e.addr), Some(at));
        b.0.shutdown();
        b.2.into_iter().for_each(|w| w.join().unwrap());
    }

    // A peer can hold an SA that roams and one that does not (its IKE SA
    // roams, ours does not). Once it has moved to the newer one, a late
    // packet on the older, roaming one must not move it back.
    #[test]
    fn a_late_packet_on_a_roaming_sa_after_a_newer_one_carried_traffic_stays_late() {
        let net = MemNet::new();
        let b = esp_site(&net, 2, ChildSa::for_tests(0x100).with_roaming(true));
        let peer = b.0.ipsec.peer("other").unwrap();
        b.0.ipsec.install_child(&peer, Arc::new(ChildSa::for_tests(0x200)), SendOn::Now);
        let gateway: SocketAddr = "198.18.0.2:4500".parse().unwrap();
        let (first, second): (SocketAddr, SocketAddr) =
            ("198.18.0.7:4500".parse().unwrap(), "198.18.0.8:4500".parse().unwrap());
        deliver(&b, &*wan_socket(&net, first), gateway, 0x100, 1);
        assert_eq!(peer.endpoint().map(|e| e.addr), Some(first));
        deliver(&b, &*wan_socket(&net, first), gateway, 0x200, 1);
        deliver(&b, &*wan_socket(&net, second), gateway, 0x100, 2);
        assert_eq!(peer.endpoint().map(|e| e.addr), Some(first), "the late packet moved the peer");
        b.0.shutdown();
        b.2.into_iter().for_each(|w| w.join().unwrap());
    }

    // An IKE request from a new mapping moves ESP in UDP with it, from
    // the local address ESP was sent from; raw ESP has nothing to follow.
    #[test]
    fn esp_in_udp_follows_where_ike_found_the_peer_and_raw_esp_does_not() {
        let net = MemNet::new();
        let iface = interface(&net);
        let peer = iface.add_ipsec_peer("west");
        let local: IpAddr = "198.18.0.1".parse().unwrap();
        let (mapped, remapped): (SocketAddr, SocketAddr) =
            ("198.18.0.2:4500".parse().unwrap(), "198.18.0.2:40001".parse().unwrap());
        peer.observe(mapped, Some(local));
        assert!(follow_ike(&peer, remapped));
        assert_eq!(peer.endpoint().map(|e| (e.addr, e.local)), Some((remapped, Some(local))));
        assert!(!follow_ike(&peer, remapped), "already there");
        let raw: SocketAddr = "198.18.0.2:0".parse().unwrap();
        peer.set_endpoint(raw);
        assert!(!follow_ike(&peer, remapped));
        assert_eq!(peer.endpoint().map(|e| e.addr), Some(raw));
    }

    // RFC 4301 §5.1: the sender drops what its SA may not carry, though
    // the destination is routed to the peer; the peer never sees it.
    #[test]
    fn packets_the_sa_may_not_carry_are_not_sent() {
        let net = MemNet::new();
        let a = selector_site(&net, 1, narrowed(("10.1.0.0", "10.1.255.255"), ("10.2.1.0", "10.2.1.255")));
        let b = selector_site(&net, 2, None);
        let got = send_three(&a, &b, |a, _| a.counters.get(Drop::OutboundOutsideSelectors) >= 2);
        assert_eq!(got, vec![inner([10, 2, 1, 9], 101)], "only the covered packet");
        assert_eq!(a.0.counters.get(Drop::OutboundOutsideSelectors), 2);
        let on_the_wire = net.take_log().iter().map(|r| r.datagrams.len()).sum::<usize>();
        assert_eq!(on_the_wire, 1, "one packet went on the wire");
        assert_eq!(b.0.counters.get(Drop::OutsideSelectors), 0);
        stop([a, b]);
    }

    // Packets held until the first SA came are checked against its
    // selectors as the send path checks the others.
    #[test]
    fn held_packets_the_new_sa_may_not_carry_are_not_sent() {
        let net = MemNet::new();
        let iface = interface(&net);
        iface.bind_esp(0).unwrap();
        let peer = iface.add_ipsec_peer("west");
        peer.set_endpoint("198.18.0.2:4500".parse().unwrap());
        let sock = iface.sockets_for(Carrier::EspInUdp).sockets[0].clone();
        for dst in [[10, 2, 1, 9], [10, 2, 3, 9]] {
            Ipsec.hold(&iface, &peer, &inner(dst, 100), &*sock, Time::from_secs(1));
        }
        assert_eq!(peer.staged_len(), 2);
        let selectors = narrowed(("10.1.0.0", "10.1.255.255"), ("10.2.1.0", "10.2.1.255"));
        iface.ipsec.install_child(&peer, Arc::new(ChildSa::for_tests(0x100).with_selectors(selectors)), SendOn::Now);
        net.take_log();
        flush_staged(&iface, &peer);
        let sent = net.take_log().iter().map(|r| r.datagrams.len()).sum::<usize>();
        assert_eq!(sent, 1, "only the packet to 10.2.1.9");
        assert_eq!(iface.counters.get(Drop::OutboundOutsideSelectors), 1);
    }

    /// An interface with ESP sockets and peer "west" at 198.18.0.2:4500,
    /// and a socket there that receives what is sent to the peer.
    fn esp_peer_with_wan(net: &Arc<MemNet>) -> (Interface, Arc<PeerState>, Arc<dyn Socket>) {
        let iface = interface(net);
        iface.bind_esp(0).unwrap();
        let at: SocketAddr = "198.18.0.2:4500".parse().unwrap();
        let wan = wan_socket(net, at);
        let peer = iface.add_ipsec_peer("west");
        peer.set_endpoint(at);
        (iface, peer, wan)
    }

    /// The ESP sequence numbers of the datagrams waiting on `wan`, in order.
    fn sequence_numbers(wan: &dyn Socket) -> Vec<u32> {
        let mut seqs = Vec::new();
        let (mut buf, mut meta) = (vec![0u8; 65_536], [quinn_udp::RecvMeta::default()]);
        while wan.recv(&mut [std::io::IoSliceMut::new(&mut buf)], &mut meta).is_ok() {
            for d in buf[..meta[0].len].chunks(meta[0].stride) {
                seqs.push(u32::from_be_bytes(d[4..8].try_into().unwrap()));
            }
        }
        seqs
    }

    // Held packets take their place in the peer's send queue: a batch a
    // worker queued before IKE's flush, and sealed after it, still leaves
    // first, and the sequence numbers on the wire only rise. Sent beside
    // the queue, the held packets went first with the higher numbers, and
    // a peer with a 32-packet replay window dropped the worker's batch.
    #[test]
    fn held_packets_keep_their_place_in_the_send_queue() {
        use crate::jobs::Job;
        use crate::send::{seal_batch, Sender};
        let net = MemNet::new();
        let (iface, peer, wan) = esp_peer_with_wan(&net);
        iface.update_routes(|r| {
            r.insert("10.2.0.0/16".parse().unwrap(), peer.clone().into());
        });
        let sock = iface.sockets_for(Carrier::EspInUdp).sockets[0].clone();
        let now = Time::from_secs(1);
        for _ in 0..100 {
            Ipsec.hold(&iface, &peer, &inner([10, 2, 1, 9], 100), &*sock, now);
        }
        iface.ipsec.install_child(&peer, child_sa(0x100), SendOn::Now);
        let mut worker = Sender::new(0);
        let (mut bufs, sizes) = (vec![inner([10, 2, 1, 8], 100); 40], vec![100; 40]);
        assert_eq!(worker.enqueue(&Ipsec, &iface, &*sock, &mut bufs, &sizes, now), 40);

        flush_staged(&iface, &peer);
        assert_eq!(peer.staged_len(), 0);
        assert!(net.take_log().is_empty(), "held packets wait behind the batch queued first");
        while let Some(Job::Seal(b)) = iface.jobs.pop() {
            let p = seal_batch(&iface, &b, 0).unwrap();
            drop(b);
            p.tx.drain(&mut |b| worker.transmit_batch(&Ipsec, &iface, b, now));
        }

        let seqs = sequence_numbers(&*wan);
        assert_eq!(seqs, (1..=140).collect::<Vec<u32>>(), "in sequence-number order, none lost");
    }

    // With every pooled batch in flight, held packets get batches of their
    // own rather than wait or be dropped, and those never join the pool.
    #[test]
    fn held_packets_leave_when_every_pooled_batch_is_in_flight() {
        let net = MemNet::new();
        let (iface, peer, wan) = esp_peer_with_wan(&net);
        let sock = iface.sockets_for(Carrier::EspInUdp).sockets[0].clone();
        for _ in 0..200 {
            Ipsec.hold(&iface, &peer, &inner([10, 2, 1, 9], 100), &*sock, Time::from_secs(1));
        }
        let in_flight: Vec<_> = std::iter::from_fn(|| iface.jobs.tx_pool.pop()).collect();
        iface.ipsec.install_child(&peer, child_sa(0x100), SendOn::Now);
        flush_staged(&iface, &peer);

        let seqs = sequence_numbers(&*wan);
        assert_eq!(seqs, (1..=200).collect::<Vec<u32>>());
        assert_eq!(iface.jobs.tx_pool.len(), 0, "no batch made for them joined the pool");
        assert_eq!(iface.counters.get(Drop::StagedQueueFull), 0);
        for b in in_flight {
            iface.jobs.tx_pool.push(b).ok().unwrap();
        }
    }

    // An SA low on sequence numbers asks IKE for its rekey (once a
    // second, though every batch sent on it asks), well before the last
    // number, after which nothing could be sent until its lifetime ended.
    #[test]
    fn an_sa_running_out_of_sequence_numbers_asks_for_its_rekey() {
        let net = MemNet::new();
        let iface = interface(&net);
        let peer = iface.add_ipsec_peer("west");
        let sa = child_sa(0x100);
        iface.ipsec.install_child(&peer, sa.clone(), SendOn::Now);
        let sock = iface.sockets().sockets[0].clone();
        let rekeys = |iface: &Interface| {
            iface.ipsec.take_requests().into_iter().filter(|r| matches!(r, Request::Rekey { spi_in: 0x100 })).count()
        };
        assert!(!Ipsec.sending_session(&peer, Time::from_secs(1)).unwrap().rekey);

        // Used up to where the rekey is due.
        let left = causeway_esp::MAX_SEQ + 1 - sa.reserve(1).unwrap();
        sa.reserve(left - (1 << 29)).unwrap();
        assert!(Ipsec.sending_session(&peer, Time::from_secs(1)).unwrap().rekey);
        Ipsec.rekey(&iface, &peer, &*sock, Time::from_secs(1));
        Ipsec.rekey(&iface, &peer, &*sock, Time::from_nanos(1_500_000_000));
        assert_eq!(rekeys(&iface), 1, "asked once in the second");
        Ipsec.rekey(&iface, &peer, &*sock, Time::from_nanos(2_100_000_000));
        assert_eq!(rekeys(&iface), 1, "and again a second later");
    }
}
