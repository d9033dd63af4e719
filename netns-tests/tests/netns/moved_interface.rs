//! The classic WireGuard arrangement: the daemon and its UDP sockets stay
//! in one namespace while the interface is moved into another. Also jumbo
//! MTUs over loopback, the daemon's exit when its interface is deleted,
//! and its staying when the interface is only set down.

use std::time::Duration;

use causeway_netns_tests::*;

fn move_and_address(from: &Netns, ifname: &str, to: &Netns, addr: &str) {
    from.ip(&["link", "set", ifname, "netns", &to.name]).unwrap();
    to.ip(&["addr", "add", addr, "dev", ifname]).unwrap();
    to.ip(&["link", "set", ifname, "up"]).unwrap();
}

#[test]
fn interface_moved_to_another_namespace() {
    let Some(_lab) = lab_or_skip("interface_moved_to_another_namespace") else {
        return;
    };
    let (a, b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let inner = Netns::new("inner").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let mut ga = Gateway::start(
        &a,
        dir.path(),
        &ka,
        &[],
        51820,
        1420,
        &[PeerSpec::new("b", pb, Some("198.18.0.2:51820"), &["10.65.0.2/32"])],
    )
    .unwrap();
    let _gb = Gateway::start(
        &b,
        dir.path(),
        &kb,
        &["10.65.0.2/24"],
        51820,
        1420,
        &[PeerSpec::new("a", pa, Some("198.18.0.1:51820"), &["10.65.0.1/32"])],
    )
    .unwrap();
    move_and_address(&a, &ga.ifname, &inner, "10.65.0.1/24");
    assert!(
        inner.wait_for_ping("10.65.0.2", Duration::from_secs(10)),
        "traffic from the moved interface: {}",
        ga.log_text()
    );
    assert!(b.ping("10.65.0.1", 3).is_some(), "and towards it");
    assert!(
        a.exec("wg", &["show", &ga.ifname]).unwrap().contains("latest handshake"),
        "wg still talks to the daemon's socket"
    );

    inner.ip(&["link", "del", &ga.ifname]).unwrap();
    assert_eq!(
        ga.process.wait_exit(Duration::from_secs(5)),
        Some(0),
        "the daemon exits cleanly once its interface is deleted"
    );
    assert!(!causeway_gateway::sockets::uapi_socket_path(&ga.ifname).exists(), "and removes its socket");
}

/// `ip link set DEV down` is not a deletion: while the link is down the
/// kernel refuses TUN writes (EIO) and what arrives for it is dropped, but
/// the daemon goes on, and once the link is up again the tunnel carries
/// traffic. A flood of pings keeps the workers writing through the outage.
#[test]
fn interface_set_down_under_traffic_and_up_again() {
    let Some(_lab) = lab_or_skip("interface_set_down_under_traffic_and_up_again") else {
        return;
    };
    let (a, b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let mut ga = Gateway::start(
        &a,
        dir.path(),
        &ka,
        &["10.68.0.1/24"],
        51820,
        1420,
        &[PeerSpec::new("b", pb, Some("198.18.0.2:51820"), &["10.68.0.2/32"])],
    )
    .unwrap();
    let _gb = Gateway::start(
        &b,
        dir.path(),
        &kb,
        &["10.68.0.2/24"],
        51820,
        1420,
        &[PeerSpec::new("a", pa, Some("198.18.0.1:51820"), &["10.68.0.1/32"])],
    )
    .unwrap();
    assert!(b.wait_for_ping("10.68.0.1", Duration::from_secs(10)), "{}", ga.log_text());
    let flood = b.spawn("ping flood", "ping", &["-q", "-i", "0.002", "-w", "4", "10.68.0.1"], None).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    a.ip(&["link", "set", &ga.ifname, "down"]).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(ga.process.running(), "the daemon outlived its link going down: {}", ga.log_text());
    a.ip(&["link", "set", &ga.ifname, "up"]).unwrap();
    drop(flood);
    assert!(b.wait_for_ping("10.68.0.1", Duration::from_secs(10)), "traffic once the link is up: {}", ga.log_text());
    assert!(a.ping("10.68.0.2", 3).is_some(), "both ways");
}

/// Both daemons in one namespace talking over loopback (MTU 65536), their
/// interfaces moved out, tunnel MTU 34,000: full-size packets cross whole.
#[test]
fn jumbo_mtu_over_loopback() {
    let Some(_lab) = lab_or_skip("jumbo_mtu_over_loopback") else {
        return;
    };
    let gateways = Netns::new("gw").unwrap();
    let a = Netns::new("a").unwrap();
    let b = Netns::new("b").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let ga = Gateway::start(
        &gateways,
        dir.path(),
        &ka,
        &[],
        51820,
        34000,
        &[PeerSpec::new("b", pb, Some("127.0.0.1:51821"), &["10.66.0.2/32"])],
    )
    .unwrap();
    let gb = Gateway::start(
        &gateways,
        dir.path(),
        &kb,
        &[],
        51821,
        34000,
        &[PeerSpec::new("a", pa, Some("127.0.0.1:51820"), &["10.66.0.1/32"])],
    )
    .unwrap();
    move_and_address(&gateways, &ga.ifname, &a, "10.66.0.1/24");
    move_and_address(&gateways, &gb.ifname, &b, "10.66.0.2/24");
    assert!(a.ip(&["link", "show", &ga.ifname]).unwrap().contains("mtu 34000"));
    assert!(a.wait_for_ping("10.66.0.2", Duration::from_secs(10)), "{}", ga.log_text());
    // 33,972 bytes of ICMP payload + 28 of headers = 34,000, with DF set.
    let ok = a
        .command("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", "-M", "do", "-s", "33972", "10.66.0.2"])
        .output()
        .unwrap()
        .status;
    assert!(ok.success(), "a full 34,000-byte packet crosses the tunnel unfragmented");
    let too_big =
        a.command("ping").args(["-c", "1", "-W", "1", "-M", "do", "-s", "33973", "10.66.0.2"]).output().unwrap();
    assert!(!too_big.status.success(), "one byte more exceeds the tunnel MTU");
    let run = lab::iperf3(&b, &a, "10.66.0.2", 2, false, &[]).unwrap();
    eprintln!("TCP over a 34,000-byte MTU tunnel: {:.2} Gbit/s", run.bits_per_second / 1e9);
    assert!(run.bits_per_second > 10e6);
}
