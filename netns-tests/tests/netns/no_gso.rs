//! Without UDP GSO (turned off with CAUSEWAY_UDP_GSO=off, as on a system
//! that lacks it), the send path batches datagrams of any size into one
//! sendmmsg, and the tunnel works as before, sticky source included.

use std::time::Duration;

use causeway_netns_tests::*;

#[test]
fn sendmmsg_path_without_gso() {
    let Some(lab) = lab_or_skip("sendmmsg_path_without_gso") else { return };
    // Both gateways get the switch, in their environment only: other tests
    // of this binary start processes meanwhile.
    lab.child_env(causeway_dataplane::udp::GSO_ENV, "off");
    let s = peered_sites(92, false, &[], &[]).unwrap();
    assert!(s.a.wait_for_ping("10.92.0.2", Duration::from_secs(10)));
    let bps = lab::iperf3(&s.b, &s.a, "10.92.0.2", 3, false, &[]).unwrap().bits_per_second;
    eprintln!("TCP a -> b without GSO: {:.0} Mbit/s", bps / 1e6);
    assert!(bps > 0.0);

    let status = lab::api_status(&s.ga.ifname).unwrap();
    assert_eq!(status["udp_gso_segments"], 1, "GSO is off on a");
    let sum = |k: &str| status["worker_stats"].as_array().unwrap().iter().map(|w| w[k].as_u64().unwrap()).sum::<u64>();
    let per_call = sum("udp_datagrams_sent") as f64 / sum("udp_sends") as f64;
    eprintln!("datagrams per send syscall on a: {per_call:.1}");
    assert!(per_call > 1.5, "sendmmsg carried several datagrams per call ({per_call:.2})");
    assert_eq!(status["drops"]["udp_send_error"], 0);
    // The sticky source survived: a keeps replying from the address b reached.
    let peers = wg_dump(&s.a, &s.ga.ifname).unwrap();
    assert_eq!(peers[0].endpoint, "198.18.0.2:51820");
}
