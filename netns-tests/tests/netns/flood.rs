//! A handshake flood from a third namespace at a gateway that carries an
//! established tunnel. Initiations with a bad MAC1 are dropped before any
//! public-key work and counted. Initiations with a valid MAC1 (anyone who
//! knows the public key can make them) push the gateway under load, where
//! it answers with cookie replies instead of computing. Meanwhile the tunnel
//! stays up.
//!
//! Its throughput during the flood, relative to before, is printed as a
//! measurement; timed figures are not asserted on this shared machine.

use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime};

use causeway_netns_tests::*;
use causeway_wireguard::{Device, StaticSecret, Time};

/// Packets per second the flood is held to, and for how long.
const FLOOD_RATE: u64 = 20_000;
const FLOOD_SECONDS: u64 = 6;

/// Distinct initiations to `target` from a key it does not know: each
/// carries a valid MAC1, since MAC1 needs only the target's public key.
fn valid_mac1_initiations(target: causeway_wireguard::PublicKey, count: usize) -> Vec<Vec<u8>> {
    let stranger = Device::new(Some(StaticSecret::random(&mut rand_core::OsRng)));
    let peer = stranger.add_peer(target, None, 0).unwrap();
    (0..count as u64)
        .map(|i| {
            // Far apart in (virtual) time, so none is "too soon" after the last.
            stranger.create_initiation(&peer, Time::from_secs(10 * (i + 1)), SystemTime::now()).unwrap().to_vec()
        })
        .collect()
}

/// Sends `packets` round-robin at FLOOD_RATE for FLOOD_SECONDS; returns how many.
fn flood(sock: &UdpSocket, packets: &[Vec<u8>]) -> u64 {
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(FLOOD_SECONDS) {
        // Send what the schedule allows so far, then yield briefly.
        let due = (start.elapsed().as_secs_f64() * FLOOD_RATE as f64) as u64;
        while sent < due {
            let _ = sock.send(&packets[(sent as usize) % packets.len()]);
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    sent
}

#[test]
fn handshake_flood_is_absorbed() {
    let Some(_lab) = lab_or_skip("handshake_flood_is_absorbed") else { return };
    let s = peered_sites(88, false, &[], &[]).unwrap();
    let c = Netns::new("c").unwrap();
    lab::veth(&s.b, "wan1", &["198.18.3.1/24"], &c, "wan0", &["198.18.3.2/24"]).unwrap();
    assert!(s.a.wait_for_ping("10.88.0.2", Duration::from_secs(10)));
    let sock = lab::in_netns(&c, || {
        let sock = UdpSocket::bind("198.18.3.2:0").unwrap();
        sock.connect("198.18.3.1:51820").unwrap();
        sock
    })
    .unwrap();
    let drops = |what: &str| lab::api_status(&s.gb.ifname).unwrap()["drops"][what].as_u64().unwrap();
    let cookies = || lab::api_status(&s.gb.ifname).unwrap()["cookie_replies_sent"].as_u64().unwrap();

    let before = lab::iperf3(&s.b, &s.a, "10.88.0.2", 5, false, &[]).unwrap().bits_per_second;

    // Bad MAC1: right type and length, random body.
    let garbage: Vec<Vec<u8>> = (0..256u32)
        .map(|i| {
            let mut p: Vec<u8> =
                (0..148u32).map(|j| (i.wrapping_mul(2_654_435_761) ^ j.wrapping_mul(40_503)) as u8).collect();
            p[..4].copy_from_slice(&[1, 0, 0, 0]);
            p
        })
        .collect();
    let bad_before = drops("bad_mac");
    let (during_bad, sent_bad) = std::thread::scope(|scope| {
        let f = scope.spawn(|| flood(&sock, &garbage));
        let r = lab::iperf3(&s.b, &s.a, "10.88.0.2", 5, false, &[]).unwrap().bits_per_second;
        (r, f.join().unwrap())
    });
    std::thread::sleep(Duration::from_millis(300));
    let bad = drops("bad_mac") - bad_before;
    eprintln!("bad MAC1: sent {sent_bad}, counted {bad}");
    assert!(bad > sent_bad / 2, "bad-MAC1 initiations were counted ({bad} of {sent_bad})");
    assert!(bad <= sent_bad);
    assert_eq!(cookies(), 0, "no cookie is spent on a bad MAC1");

    // Valid MAC1 from a stranger: the gateway goes under load and answers
    // with cookies.
    let valid = valid_mac1_initiations(s.gb.public, 512);
    let (during_valid, sent_valid) = std::thread::scope(|scope| {
        let f = scope.spawn(|| flood(&sock, &valid));
        let r = lab::iperf3(&s.b, &s.a, "10.88.0.2", 5, false, &[]).unwrap().bits_per_second;
        (r, f.join().unwrap())
    });
    let cookie_replies = cookies();
    eprintln!("valid MAC1: sent {sent_valid}, cookie replies {cookie_replies}");
    assert!(cookie_replies > sent_valid / 2, "under load, most were answered with a cookie ({cookie_replies})");
    assert!(s.a.wait_for_ping("10.88.0.2", Duration::from_secs(5)), "the tunnel is up after the flood");
    assert_eq!(lab::api_status(&s.gb.ifname).unwrap()["peers"][0]["state"], "up");

    let (b0, b1, b2) = (before, during_bad, during_valid);
    eprintln!(
        "tunnel TCP: {:.0} Mbit/s unloaded; {:.0} Mbit/s ({:.0}%) during the bad-MAC1 flood; \
         {:.0} Mbit/s ({:.0}%) during the valid-MAC1 flood ({FLOOD_RATE} initiations/s)",
        b0 / 1e6,
        b1 / 1e6,
        100.0 * b1 / b0,
        b2 / 1e6,
        100.0 * b2 / b0
    );
    assert!(b1 > 0.0 && b2 > 0.0, "traffic moved during both floods");
}
