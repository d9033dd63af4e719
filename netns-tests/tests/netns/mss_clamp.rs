//! MSS clamping: hosts on 1500-byte LANs behind each gateway would agree on
//! a 1460-byte MSS, more than the 1420-byte tunnel carries. The gateways
//! lower the MSS in the SYNs, so the connection starts at 1380.

use std::time::Duration;

use causeway_netns_tests::*;

#[test]
fn syns_through_the_tunnel_are_clamped() {
    let Some(_lab) = lab_or_skip("syns_through_the_tunnel_are_clamped") else { return };
    let s = peered_sites(76, false, &["10.76.2.0/24"], &["10.76.1.0/24"]).unwrap();
    let client = Netns::new("lan1").unwrap();
    let server = Netns::new("lan2").unwrap();
    lab::veth(&client, "lan0", &["10.76.1.2/24"], &s.a, "lan0", &["10.76.1.1/24"]).unwrap();
    lab::veth(&server, "lan0", &["10.76.2.2/24"], &s.b, "lan0", &["10.76.2.1/24"]).unwrap();
    client.ip(&["route", "add", "default", "via", "10.76.1.1"]).unwrap();
    server.ip(&["route", "add", "default", "via", "10.76.2.1"]).unwrap();
    for (ns, gw, lan) in [(&s.a, &s.ga, "10.76.2.0/24"), (&s.b, &s.gb, "10.76.1.0/24")] {
        ns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]).unwrap();
        ns.ip(&["route", "add", lan, "dev", &gw.ifname]).unwrap();
    }
    assert!(client.wait_for_ping("10.76.2.2", Duration::from_secs(10)), "LAN to LAN through the tunnel");

    let mss = std::thread::scope(|scope| {
        let run = scope.spawn(|| lab::iperf3(&server, &client, "10.76.2.2", 3, false, &[]).unwrap());
        // Once iperf3's connections are up (its start takes a while on a
        // loaded machine); established only: a socket still in SYN-SENT
        // shows the default MSS of 536, which would pass unclamped.
        let ss = poll_until(
            Duration::from_secs(10),
            || client.exec("ss", &["-tin", "state", "established", "dst", "10.76.2.2"]).unwrap(),
            |ss| ss.contains("mss:"),
        );
        let result = run.join().unwrap();
        assert!(result.bits_per_second > 1e6);
        ss.split_whitespace()
            .filter_map(|w| w.strip_prefix("mss:"))
            .filter_map(|v| v.parse::<u32>().ok())
            .collect::<Vec<_>>()
    });
    assert!(!mss.is_empty(), "ss showed the connections");
    assert!(mss.iter().all(|&m| m <= 1380), "MSS {mss:?} exceeds what the 1420-byte tunnel carries");
}
