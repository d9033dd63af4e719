//! Bad input from the network: a fake peer, running the protocol core
//! in-process inside the peer's namespace, sends every kind of bad packet
//! to a causewayd. Each is dropped and counted under its reason, and the
//! gateway keeps serving the genuine peer.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use causeway_netns_tests::*;
use causeway_wireguard::{Device, Received, StaticSecret, Time};

fn drops(ifname: &str) -> serde_json::Value {
    lab::api_status(ifname).unwrap()["drops"].clone()
}

#[test]
fn bad_packets_are_dropped_and_counted_by_reason() {
    let Some(_lab) = lab_or_skip("bad_packets_are_dropped_and_counted_by_reason") else {
        return;
    };
    let (a, b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let mut gw = Gateway::start(
        &a,
        dir.path(),
        &ka,
        &["10.68.0.1/24"],
        51820,
        1420,
        &[PeerSpec::new("b", pb, Some("198.18.0.2:51820"), &["10.68.0.2/32"])],
    )
    .unwrap();
    let before = drops(&gw.ifname);

    let replies = lab::in_netns(&b, move || {
        let sock = UdpSocket::bind("198.18.0.2:51820").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let gw_addr: SocketAddr = "198.18.0.1:51820".parse().unwrap();
        let start = Instant::now();
        let now = || Time::from_nanos(start.elapsed().as_nanos() as u64 + 1);
        let me = Device::new(Some(kb));
        let peer = me.add_peer(pa, None, 0).unwrap();
        let send = |d: &[u8]| {
            sock.send_to(d, gw_addr).unwrap();
        };
        // Malformed: garbage, and a truncated initiation.
        send(&[0x55; 100]);
        let init = me.create_initiation(&peer, now(), SystemTime::now()).unwrap();
        send(&init[..60]);
        // A data message for a receiver index nobody issued.
        let mut unknown = [0u8; 64];
        unknown[0] = 4;
        unknown[4..8].copy_from_slice(&0xfeed_beefu32.to_le_bytes());
        send(&unknown);
        // A stranger who knows the gateway's public key: MAC1 verifies, the peer is unknown.
        let stranger = Device::new(Some(StaticSecret::random(&mut rand_core::OsRng)));
        let sp = stranger.add_peer(pa, None, 0).unwrap();
        send(&stranger.create_initiation(&sp, now(), SystemTime::now()).unwrap());
        // An initiation with a broken MAC1.
        let mut bad_mac = init;
        bad_mac[120] ^= 1;
        send(&bad_mac);
        // Now the genuine handshake.
        send(&init);
        let mut buf = vec![0u8; 2048];
        let (n, _) = sock.recv_from(&mut buf).unwrap();
        assert!(matches!(me.receive(gw_addr, &mut buf[..n], now()).unwrap(), Received::SessionEstablished { .. }));
        let seal = |payload: &[u8]| {
            let mut m = vec![0u8; payload.len() + 64];
            m[16..16 + payload.len()].copy_from_slice(payload);
            let s = me.seal(&peer, &mut m, payload.len(), 1420, now()).unwrap();
            m.truncate(s.len);
            m
        };
        let mut replies = 0;
        let mut ping = |seq: u16, datagram: &[u8]| {
            send(datagram);
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                return;
            };
            if let Ok(Received::Data { plaintext, .. }) = me.receive(gw_addr, &mut buf[..n], now()) {
                if plaintext[20] == 0 && plaintext[26..28] == seq.to_be_bytes() {
                    replies += 1;
                }
            }
        };
        let first = seal(&lab::icmp_echo([10, 68, 0, 2], [10, 68, 0, 1], 1, false));
        ping(1, &first);
        // Replay of that very datagram.
        send(&first);
        // A flipped bit in the ciphertext.
        let mut tampered = seal(&lab::icmp_echo([10, 68, 0, 2], [10, 68, 0, 1], 2, false));
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        send(&tampered);
        // An inner source outside the peer's allowed IPs.
        send(&seal(&lab::icmp_echo([10, 99, 99, 99], [10, 68, 0, 1], 3, false)));
        // An inner packet that is not IP.
        send(&seal(&[0x00; 40]));
        // The gateway still answers the genuine peer.
        ping(4, &seal(&lab::icmp_echo([10, 68, 0, 2], [10, 68, 0, 1], 4, false)));
        replies
    })
    .unwrap();

    assert_eq!(replies, 2, "the gateway answered both genuine pings");
    // Counts only grow: wait until every one has reached what it should,
    // then require it exactly (another worker may still be counting the
    // last of them when the replies are in).
    let expected = [
        ("malformed", 2),
        ("unknown_receiver_index", 1),
        ("unknown_peer", 1),
        ("bad_mac", 1),
        ("replay", 1),
        ("decryption_failed", 1),
        ("source_not_allowed", 1),
        ("invalid_inner_packet", 1),
    ];
    let reached = |after: &serde_json::Value| {
        expected.iter().all(|(r, n)| after[r].as_u64().unwrap() - before[r].as_u64().unwrap() >= *n)
    };
    let after = poll_until(Duration::from_secs(5), || drops(&gw.ifname), reached);
    let grew = |reason: &str| after[reason].as_u64().unwrap() - before[reason].as_u64().unwrap();
    assert_eq!(grew("malformed"), 2, "{after}");
    assert_eq!(grew("unknown_receiver_index"), 1, "{after}");
    assert_eq!(grew("unknown_peer"), 1, "{after}");
    assert_eq!(grew("bad_mac"), 1, "{after}");
    assert_eq!(grew("replay"), 1, "{after}");
    assert_eq!(grew("decryption_failed"), 1, "{after}");
    assert_eq!(grew("source_not_allowed"), 1, "{after}");
    assert_eq!(grew("invalid_inner_packet"), 1, "{after}");
    assert!(gw.process.running(), "the gateway is still up");
    let shown =
        a.command(lab::causewayd_path().unwrap().with_file_name("tunctl")).args(["show", &gw.ifname]).output().unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("replay=1") && text.contains("b "), "tunctl show lists the peer and the drops:\n{text}");
}
