//! Prometheus metrics scraped during traffic: per-peer counters that agree
//! with the gateway's own status, peers up, drops by reason, worker batches.

use std::time::Duration;

use causeway_netns_tests::*;

fn value(text: &str, metric: &str, label: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(metric) && l.contains(label)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn metrics_scraped_during_traffic() {
    let Some(_lab) = lab_or_skip("metrics_scraped_during_traffic") else { return };
    let (a, b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let ifname = lab::unique("cwm");
    let cfg = dir.path().join("a.toml");
    lab::write_private(
        &cfg,
        &format!(
            "[interface]\nname = \"{ifname}\"\nprivate_key = \"{}\"\naddresses = [\"10.77.0.1/24\"]\nmetrics_listen = \"127.0.0.1:9586\"\n\n[[peer]]\nname = \"b\"\npublic_key = \"{}\"\nendpoints = [\"198.18.0.2:51820\"]\nallowed_ips = [\"10.77.0.2/32\"]\n",
            b64(ka.as_bytes()),
            b64(pb.as_bytes())
        ),
    )
    .unwrap();
    let _ga = a
        .spawn(
            "causewayd",
            lab::causewayd_path().unwrap(),
            &["up", "--config", cfg.to_str().unwrap()],
            Some(&dir.path().join("a.log")),
        )
        .unwrap();
    assert!(lab::wait_for_socket(&ifname, Duration::from_secs(10)));
    let _gb = Gateway::start(
        &b,
        dir.path(),
        &kb,
        &["10.77.0.2/24"],
        51820,
        1420,
        &[PeerSpec::new("a", pa, Some("198.18.0.1:51820"), &["10.77.0.1/32"])],
    )
    .unwrap();
    assert!(a.wait_for_ping("10.77.0.2", Duration::from_secs(10)));

    let during = std::thread::scope(|s| {
        let run = s.spawn(|| lab::iperf3(&b, &a, "10.77.0.2", 6, false, &[]).unwrap());
        // The first scrape once traffic flows (iperf3's start takes a
        // while on a loaded machine), the second half a second later,
        // both within iperf3's 6 s.
        let tx = |m: &str| value(m, "causeway_peer_tx_bytes_total", "peer=\"b\"").unwrap_or(0.0);
        let first = poll_until(Duration::from_secs(5), || scrape_metrics(&a, "/metrics"), |m| tx(m) > 1e6);
        std::thread::sleep(Duration::from_millis(500));
        let second = scrape_metrics(&a, "/metrics");
        run.join().unwrap();
        (first, second)
    });
    assert!(during.0.starts_with("HTTP/1.1 200 OK"), "{}", &during.0[..during.0.len().min(200)]);
    let tx1 = value(&during.0, "causeway_peer_tx_bytes_total", "peer=\"b\"").expect("per-peer tx bytes");
    let tx2 = value(&during.1, "causeway_peer_tx_bytes_total", "peer=\"b\"").unwrap();
    assert!(tx2 > tx1 && tx1 > 1e6, "the counter moves with the traffic: {tx1} then {tx2}");
    assert_eq!(value(&during.0, "causeway_peers_up", "interface"), Some(1.0));
    assert_eq!(value(&during.0, "causeway_peers_configured", "interface"), Some(1.0));
    assert!(value(&during.0, "causeway_peer_handshakes_total", "peer=\"b\"").unwrap() >= 1.0);
    assert!(value(&during.0, "causeway_peer_latest_handshake_seconds", "peer=\"b\"").unwrap() > 1.6e9);
    assert!(during.0.contains("causeway_dropped_packets_total{") && during.0.contains("reason=\"replay\""));
    assert!(value(&during.0, "causeway_worker_operations_total", "what=\"udp_sends\"").is_some());

    // At rest, the scrape and the status API agree exactly. A keepalive
    // or a late segment between the two reads would move the counters: a
    // few tries, each reading both anew.
    let agree = || {
        let text = scrape_metrics(&a, "/metrics");
        let status = lab::api_status(&ifname).unwrap();
        let peer = &status["peers"][0];
        let scraped = (
            value(&text, "causeway_peer_rx_bytes_total", "peer=\"b\""),
            value(&text, "causeway_peer_tx_bytes_total", "peer=\"b\""),
        );
        (scraped, (peer["rx_bytes"].as_f64(), peer["tx_bytes"].as_f64()))
    };
    let mut last = None;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(300));
        let (scraped, status) = agree();
        assert!(scraped.0.is_some() && scraped.1.is_some(), "the scrape has the peer's byte counters");
        if scraped == status {
            last = None;
            break;
        }
        last = Some((scraped, status));
    }
    assert_eq!(last, None, "scrape (rx, tx) against status (rx, tx), at the last try");
    assert!(scrape_metrics(&a, "/other").starts_with("HTTP/1.1 404"));
}
