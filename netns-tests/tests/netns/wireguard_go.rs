//! Causeway against Debian's wireguard-go, configured with `wg`: each side
//! initiating the handshake, ping and iperf3 both ways.

use std::time::Duration;

use causeway_netns_tests::*;

/// Fields drop in order: the daemons stop (SIGTERM, removing their
/// sockets) before their namespaces are deleted.
struct Topology {
    cw: Gateway,
    wggo: Process,
    wg_if: String,
    _dir: tempfile::TempDir,
    a: Netns,
    b: Netns,
}

/// Causeway in `a` (10.61.0.1), wireguard-go in `b` (10.61.0.2). Only the
/// side named by `initiator` knows the other's endpoint, so it must start
/// the handshake.
fn topology(causeway_initiates: bool) -> Topology {
    let (a, b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let cw_endpoint = causeway_initiates.then_some("198.18.0.2:51821");
    let cw = Gateway::start(
        &a,
        dir.path(),
        &ka,
        &["10.61.0.1/24"],
        51820,
        1420,
        &[PeerSpec::new("wggo", pb, cw_endpoint, &["10.61.0.2/32"])],
    )
    .unwrap();

    let wg_if = lab::unique("wgg");
    let wggo = b.spawn("wireguard-go", "wireguard-go", &["-f", &wg_if], Some(&dir.path().join("wggo.log"))).unwrap();
    assert!(lab::wait_for_socket(&wg_if, Duration::from_secs(10)), "wireguard-go did not start");
    let key_file = dir.path().join("wggo.key");
    lab::write_private(&key_file, &b64(kb.as_bytes())).unwrap();
    let mut args = vec![
        "set".to_string(),
        wg_if.clone(),
        "private-key".into(),
        key_file.display().to_string(),
        "listen-port".into(),
        "51821".into(),
    ];
    args.extend(["peer".into(), b64(pa.as_bytes()), "allowed-ips".into(), "10.61.0.1/32".into()]);
    if !causeway_initiates {
        args.extend(["endpoint".into(), "198.18.0.1:51820".into()]);
    }
    b.exec("wg", &args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    b.ip(&["addr", "add", "10.61.0.2/24", "dev", &wg_if]).unwrap();
    b.ip(&["link", "set", &wg_if, "up"]).unwrap();
    Topology { a, b, _dir: dir, cw, wggo, wg_if }
}

fn exercise(causeway_initiates: bool) {
    let t = topology(causeway_initiates);
    let (first, addr) = if causeway_initiates { (&t.a, "10.61.0.2") } else { (&t.b, "10.61.0.1") };
    assert!(
        first.wait_for_ping(addr, Duration::from_secs(15)),
        "handshake and ping from the initiating side: {}",
        t.cw.log_text()
    );
    assert!(t.a.ping("10.61.0.2", 3).is_some());
    assert!(t.b.ping("10.61.0.1", 3).is_some());
    let to_wggo = lab::iperf3(&t.b, &t.a, "10.61.0.2", 3, false, &[]).unwrap();
    let from_wggo = lab::iperf3(&t.b, &t.a, "10.61.0.2", 3, true, &[]).unwrap();
    eprintln!(
        "causeway -> wireguard-go {:.2} Gbit/s, wireguard-go -> causeway {:.2} Gbit/s",
        to_wggo.bits_per_second / 1e9,
        from_wggo.bits_per_second / 1e9
    );
    assert!(to_wggo.bits_per_second > 10e6 && from_wggo.bits_per_second > 10e6);
    // wireguard-go's own view of the session.
    let dump = wg_dump(&t.b, &t.wg_if).unwrap();
    assert_eq!(dump.len(), 1);
    assert!(dump[0].latest_handshake > 0, "wireguard-go records a handshake");
    assert_eq!(dump[0].endpoint, "198.18.0.1:51820", "wireguard-go sees Causeway's endpoint");
    drop(t.wggo);
}

#[test]
fn causeway_initiates() {
    let Some(_lab) = lab_or_skip("causeway_initiates") else {
        return;
    };
    exercise(true);
}

#[test]
fn wireguard_go_initiates() {
    let Some(_lab) = lab_or_skip("wireguard_go_initiates") else {
        return;
    };
    exercise(false);
}
