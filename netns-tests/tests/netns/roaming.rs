//! Endpoint roaming and sticky source addresses.

use std::time::Duration;

use causeway_netns_tests::*;

fn endpoint_of(ns: &Netns, ifname: &str) -> String {
    wg_dump(ns, ifname).unwrap()[0].endpoint.clone()
}

/// A has two WAN addresses and B knows it by the secondary one: A's replies
/// must leave from that address (else B would see a new source and roam).
/// B then moves to a new address: A follows it. Last, A's secondary
/// address disappears: A's replies fall over to the other address and B
/// follows.
#[test]
fn sticky_source_and_roaming_both_ways() {
    let Some(_lab) = lab_or_skip("sticky_source_and_roaming_both_ways") else {
        return;
    };
    let (a, b) = two_sites(&["198.18.0.1/24", "198.18.0.11/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let ga = Gateway::start(
        &a,
        dir.path(),
        &ka,
        &["10.62.0.1/24"],
        51820,
        1420,
        &[PeerSpec::new("b", pb, Some("198.18.0.2:51820"), &["10.62.0.2/32"])],
    )
    .unwrap();
    let gb = Gateway::start(
        &b,
        dir.path(),
        &kb,
        &["10.62.0.2/24"],
        51820,
        1420,
        &[PeerSpec::new("a", pa, Some("198.18.0.11:51820"), &["10.62.0.1/32"])],
    )
    .unwrap();

    // B starts the handshake towards A's secondary address.
    assert!(b.wait_for_ping("10.62.0.1", Duration::from_secs(10)), "{}", gb.log_text());
    assert!(a.ping("10.62.0.2", 3).is_some());
    assert_eq!(endpoint_of(&b, &gb.ifname), "198.18.0.11:51820", "A answered from the address B reached");
    assert_eq!(endpoint_of(&a, &ga.ifname), "198.18.0.2:51820");

    // B roams to a new WAN address.
    b.ip(&["addr", "del", "198.18.0.2/24", "dev", "wan0"]).unwrap();
    b.ip(&["addr", "add", "198.18.0.3/24", "dev", "wan0"]).unwrap();
    assert!(b.wait_for_ping("10.62.0.1", Duration::from_secs(10)), "B's traffic resumes from its new address");
    assert_eq!(endpoint_of(&a, &ga.ifname), "198.18.0.3:51820", "A follows B to its new address");
    assert!(a.ping("10.62.0.2", 3).is_some(), "A reaches B at the new address");

    // A loses the address B knew it by: A's sends fall over to its other address.
    a.ip(&["addr", "del", "198.18.0.11/24", "dev", "wan0"]).unwrap();
    assert!(a.wait_for_ping("10.62.0.2", Duration::from_secs(10)), "A's traffic falls over to its remaining address");
    assert_eq!(endpoint_of(&b, &gb.ifname), "198.18.0.1:51820", "B follows A to the fallback address");
    assert!(b.ping("10.62.0.1", 3).is_some());
}
