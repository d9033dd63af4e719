//! Cryptokey routing in both directions: a decrypted packet whose source is
//! not in the sending peer's allowed IPs is dropped, and a packet for an
//! address no peer owns is not sent.

use std::time::Duration;

use causeway_netns_tests::*;

#[test]
fn sources_outside_allowed_ips_are_dropped() {
    let Some(_lab) = lab_or_skip("sources_outside_allowed_ips_are_dropped") else {
        return;
    };
    let (a, b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    // A accepts only 10.63.0.2 from B; B routes the whole /24 to A.
    let ga = Gateway::start(
        &a,
        dir.path(),
        &ka,
        &["10.63.0.1/24"],
        51820,
        1420,
        &[PeerSpec::new("b", pb, Some("198.18.0.2:51820"), &["10.63.0.2/32"])],
    )
    .unwrap();
    let gb = Gateway::start(
        &b,
        dir.path(),
        &kb,
        &["10.63.0.2/24", "10.63.0.99/24"],
        51820,
        1420,
        &[PeerSpec::new("a", pa, Some("198.18.0.1:51820"), &["10.63.0.0/24"])],
    )
    .unwrap();
    assert!(b.wait_for_ping("10.63.0.1", Duration::from_secs(10)), "{}", gb.log_text());
    let from_allowed = b
        .command("ping")
        .args(["-c", "2", "-i", "0.2", "-W", "1", "-I", "10.63.0.2", "10.63.0.1"])
        .output()
        .unwrap()
        .status;
    assert!(from_allowed.success(), "source in B's allowed IPs passes");
    let spoofed = b
        .command("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "1", "-I", "10.63.0.99", "10.63.0.1"])
        .output()
        .unwrap()
        .status;
    assert!(!spoofed.success(), "source outside B's allowed IPs is dropped by A");
    let drops = |reason: &str| lab::api_status(&ga.ifname).unwrap()["drops"][reason].as_u64().unwrap();
    assert!(drops("source_not_allowed") >= 1, "A counted the spoofed sources");
    // From A, 10.63.0.99 belongs to no peer: nothing is sent, and it is counted.
    let no_route = drops("no_route");
    assert!(a.ping("10.63.0.99", 2).is_none(), "no peer owns 10.63.0.99");
    assert!(drops("no_route") >= no_route + 2, "both pings counted as no_route");
    assert!(a.ping("10.63.0.2", 2).is_some(), "the tunnel still works");
}
