//! Two Causeway gateways over a veth WAN: IPv4 and IPv6 inside, iperf3 both
//! ways, a file whose hash must match, the same over an IPv6 WAN, and
//! `wg show` reading the gateway's counters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use causeway_netns_tests::*;

fn sha256(ns: &Netns, path: &str) -> String {
    ns.exec("sha256sum", &[path]).unwrap().split_whitespace().next().unwrap().to_string()
}

fn exercise(v6_wan: bool) {
    let mut s = peered_sites(60, v6_wan, &[], &[]).unwrap();
    assert!(
        s.a.wait_for_ping("10.60.0.2", Duration::from_secs(10)),
        "IPv4 ping through the tunnel: {}",
        s.ga.log_text()
    );
    assert!(s.a.ping("fd00:60::2", 3).is_some(), "IPv6 inside the tunnel");
    assert!(s.b.ping("10.60.0.1", 3).is_some(), "ping from the other side");

    let up = lab::iperf3(&s.b, &s.a, "10.60.0.2", 3, false, &[]).unwrap();
    let down = lab::iperf3(&s.b, &s.a, "10.60.0.2", 3, true, &[]).unwrap();
    eprintln!(
        "iperf3 over {} WAN: {:.2} Gbit/s up, {:.2} Gbit/s down",
        if v6_wan { "IPv6" } else { "IPv4" },
        up.bits_per_second / 1e9,
        down.bits_per_second / 1e9
    );
    assert!(up.bits_per_second > 10e6 && down.bits_per_second > 10e6, "TCP moves both ways");
    // TCP over IPv6 inside: the receiving gateway writes its segments to
    // the TUN coalesced as TCPv6 runs, which the kernel must take.
    let inner_v6 = lab::iperf3(&s.b, &s.a, "fd00:60::2", 2, false, &[]).unwrap();
    assert!(inner_v6.bits_per_second > 10e6, "TCP moves over IPv6 inside the tunnel");

    // A 32 MiB file across the tunnel, byte for byte.
    let src = s.dir.path().join("payload.bin");
    let dst = s.dir.path().join("received.bin");
    s.a.exec("sh", &["-c", &format!("head -c 33554432 /dev/urandom > {}", src.display())]).unwrap();
    let mut server =
        s.b.spawn(
            "ncat server",
            "sh",
            &["-c", &format!("exec ncat -l 10.60.0.2 9000 --recv-only > {}", dst.display())],
            None,
        )
        .unwrap();
    s.b.wait_listening(&mut server, 9000, Duration::from_secs(30)).unwrap();
    s.a.exec("timeout", &["60", "sh", "-c", &format!("ncat --send-only 10.60.0.2 9000 < {}", src.display())]).unwrap();
    // The server exits once the sender's end of the stream arrives; the
    // last of 4 MB may still be in flight when the sender returns.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server.running() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!server.running(), "the receiving ncat has not finished");
    assert_eq!(sha256(&s.a, src.to_str().unwrap()), sha256(&s.b, dst.to_str().unwrap()), "file arrived intact");

    assert_eq!(s.ga.process.stop(), Some(0), "clean exit on SIGTERM");
    assert_eq!(s.gb.process.stop(), Some(0));
    assert!(s.a.ip(&["link", "show", &s.ga.ifname]).is_err(), "interface removed on shutdown");
}

#[test]
fn ipv4_wan() {
    let Some(_lab) = lab_or_skip("ipv4_wan") else {
        return;
    };
    exercise(false);
}

#[test]
fn ipv6_wan() {
    let Some(_lab) = lab_or_skip("ipv6_wan") else {
        return;
    };
    exercise(true);
}

/// `wg show` against causewayd: the peer, a recent handshake, and transfer
/// counters consistent with what iperf3 moved.
#[test]
fn wg_show_reports_handshake_and_transfer() {
    let Some(_lab) = lab_or_skip("wg_show_reports_handshake_and_transfer") else {
        return;
    };
    let s = peered_sites(60, false, &[], &[]).unwrap();
    assert!(s.a.wait_for_ping("10.60.0.2", Duration::from_secs(10)));
    let before = wg_dump(&s.a, &s.ga.ifname).unwrap();
    let run = lab::iperf3(&s.b, &s.a, "10.60.0.2", 0, false, &["-n", "200M"]).unwrap();
    assert!(run.bits_per_second > 0.0);
    let after = wg_dump(&s.a, &s.ga.ifname).unwrap();
    assert_eq!(after.len(), 1);
    let WgPeer { public_key: key, endpoint, latest_handshake: handshake, rx, tx } = after[0].clone();
    assert_eq!(key, b64(s.gb.public.as_bytes()));
    assert_eq!(endpoint, "198.18.0.2:51820");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(handshake > 0 && now - handshake < 60, "latest handshake {handshake} vs now {now}");
    let moved = 200u64 << 20;
    let sent = tx - before[0].tx;
    // Wire bytes: payload plus TCP/IP headers (~4%), WireGuard's 32 bytes and padding (~3%).
    assert!(sent >= moved && sent < moved + moved / 6, "tx counter {sent} for {moved} bytes of payload");
    assert!(rx > before[0].rx, "ACKs came back");
    let text = s.a.exec("wg", &["show", &s.ga.ifname]).unwrap();
    assert!(text.contains("latest handshake:") && text.contains("transfer:"), "{text}");
}
