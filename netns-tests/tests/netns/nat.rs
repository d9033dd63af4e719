//! A spoke behind NAT (masquerading router, short UDP conntrack timeouts)
//! with persistent keepalive: it opens the tunnel itself, and the hub can
//! still reach it long after the NAT would have forgotten an idle mapping.

use std::time::Duration;

use causeway_netns_tests::*;

#[test]
fn persistent_keepalive_holds_the_nat_mapping() {
    let Some(_lab) = lab_or_skip("persistent_keepalive_holds_the_nat_mapping") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hub = Netns::new("hub").unwrap();
    let spoke = Netns::new("spoke").unwrap();
    // Idle UDP mappings vanish after 3 s here, so only keepalives keep one.
    let _router = masquerading_router(&hub, "198.18.0.1", "198.18.0.2", &spoke, Some(3));

    let (kh, ph) = keypair();
    let (ks, ps) = keypair();
    // The hub does not know where the spoke is.
    let gh = Gateway::start(
        &hub,
        dir.path(),
        &kh,
        &["10.64.0.1/24"],
        51820,
        1420,
        &[PeerSpec::new("spoke", ps, None, &["10.64.0.2/32"])],
    )
    .unwrap();
    let _gs = Gateway::start(
        &spoke,
        dir.path(),
        &ks,
        &["10.64.0.2/24"],
        51820,
        1420,
        &[PeerSpec::new("hub", ph, Some("198.18.0.1:51820"), &["10.64.0.1/32"]).keepalive(1)],
    )
    .unwrap();

    assert!(
        hub.wait_for_ping("10.64.0.2", Duration::from_secs(10)),
        "the spoke's keepalive told the hub where it is: {}",
        gh.log_text()
    );
    let ep = wg_dump(&hub, &gh.ifname).unwrap()[0].endpoint.clone();
    assert!(ep.starts_with("198.18.0.2:"), "the hub sees the NAT's address, got {ep}");
    std::thread::sleep(Duration::from_secs(7));
    assert!(hub.ping("10.64.0.2", 3).is_some(), "after 7 idle seconds the hub still reaches the spoke through the NAT");
}
