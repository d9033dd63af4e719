//! Endpoint failover: a remote DC with an active and a standby gateway
//! (same key, same tunnel address). The hub lists both; when the active one
//! stops mid-transfer, traffic moves to the standby without an operator.

use std::time::{Duration, Instant};

use causeway_netns_tests::*;

#[test]
fn traffic_moves_to_the_standby_gateway() {
    let Some(_lab) = lab_or_skip("traffic_moves_to_the_standby_gateway") else { return };
    let dir = tempfile::tempdir().unwrap();
    let hub = Netns::new("hub").unwrap();
    let active = Netns::new("active").unwrap();
    let standby = Netns::new("standby").unwrap();
    lab::veth(&hub, "wan1", &["198.18.1.1/24"], &active, "wan0", &["198.18.1.2/24"]).unwrap();
    lab::veth(&hub, "wan2", &["198.18.2.1/24"], &standby, "wan0", &["198.18.2.2/24"]).unwrap();
    let (kh, ph) = keypair();
    let (kdc, pdc) = keypair();
    // The remote DC's gateways share one key and one tunnel address.
    let dc_gateway = |ns: &Netns| {
        Gateway::start(
            ns,
            dir.path(),
            &kdc,
            &["10.74.0.2/24"],
            51820,
            1420,
            &[PeerSpec::new("hub", ph, None, &["10.74.0.1/32"])],
        )
        .unwrap()
    };
    let mut ga = dc_gateway(&active);
    let _gs = dc_gateway(&standby);
    // The hub last: it initiates as it starts, and with the active gateway
    // not yet there it would (rightly) fail over to the standby.
    let dc = PeerSpec::new("dc", pdc, None, &["10.74.0.2/32"]).failover(&["198.18.1.2:51820", "198.18.2.2:51820"], 3);
    let gh = Gateway::start(&hub, dir.path(), &kh, &["10.74.0.1/24"], 51820, 1420, &[dc]).unwrap();
    assert!(hub.wait_for_ping("10.74.0.2", Duration::from_secs(10)), "{}", gh.log_text());
    assert_eq!(wg_dump(&hub, &gh.ifname).unwrap()[0].endpoint, "198.18.1.2:51820", "the active gateway first");

    // Mid-transfer: traffic is flowing when the active gateway stops.
    let mut pinger = hub.spawn("ping", "ping", &["-i", "0.2", "10.74.0.2"], None).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(ga.process.stop(), Some(0));
    let stopped = Instant::now();
    // Detection takes the protocol's KEEPALIVE + REKEY_TIMEOUT (15 s) of
    // silence; then 3 s of failed handshakes (failover_after) and at most
    // one REKEY_TIMEOUT (5 s) until the retry reaches the standby.
    let recovered = hub.wait_for_ping("10.74.0.2", Duration::from_secs(40));
    pinger.stop();
    assert!(recovered, "no traffic through the standby: {}", gh.log_text());
    eprintln!("traffic moved to the standby {:.1} s after the active gateway stopped", stopped.elapsed().as_secs_f64());
    assert!(stopped.elapsed() < Duration::from_secs(30));
    assert_eq!(wg_dump(&hub, &gh.ifname).unwrap()[0].endpoint, "198.18.2.2:51820");
    let status = lab::api_status(&gh.ifname).unwrap();
    assert!(status["peers"][0]["endpoint_failovers"].as_u64().unwrap() >= 1);
    assert!(gh.log_text().contains("trying the next endpoint"));
}
