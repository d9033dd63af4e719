//! Peers added, changed and removed on a running gateway with tunctl while
//! iperf3 runs to another peer: that session is untouched and traffic never
//! stops; `tunctl peers --json` agrees with `wg show dump`.

use std::time::Duration;

use causeway_netns_tests::*;
use serde_json::Value;

#[test]
fn add_change_remove_peers_live() {
    let Some(_lab) = lab_or_skip("add_change_remove_peers_live") else { return };
    let s = peered_sites(71, false, &[], &[]).unwrap();
    let third = third_site(&s, 71).unwrap();
    assert!(s.a.wait_for_ping("10.71.0.2", Duration::from_secs(10)));
    let b_before = lab::api_status(&s.ga.ifname).unwrap()["peers"][0]["latest_handshake"].clone();
    let if_a = s.ga.ifname.clone();
    let add_args = third.add_args(&if_a);
    let add_c: Vec<&str> = add_args.iter().map(String::as_str).collect();
    let run = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| lab::iperf3_json(&s.b, &s.a, "10.71.0.2", 5, false, &["-i", "1"]).unwrap());
        std::thread::sleep(Duration::from_secs(1));
        let added = tunctl_ok(&s.a, &add_c);
        assert!(added.contains("added c"), "{added}");
        assert!(s.a.wait_for_ping("10.71.0.3", Duration::from_secs(10)), "the new peer is reachable at once");
        // A clash is refused and changes nothing.
        let clash = tunctl(&s.a, &["peer", "set", &if_a, "c", "--allowed-ip", "10.71.0.2/32"]);
        assert_eq!(clash.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&clash.stderr).contains("overlaps 10.71.0.2/32 of peer b"));
        let changed = tunctl_ok(&s.a, &["peer", "set", &if_a, "c", "--keepalive", "5"]);
        assert!(changed.contains("changed persistent_keepalive"), "{changed}");
        let removed = tunctl_ok(&s.a, &["peer", "remove", &if_a, "c"]);
        assert!(removed.contains("removed c"), "{removed}");
        assert!(s.a.ping("10.71.0.3", 2).is_none(), "the removed peer is gone");
        traffic.join().unwrap()
    });
    for (i, iv) in run["intervals"].as_array().unwrap().iter().enumerate() {
        assert!(iv["sum"]["bits_per_second"].as_f64().unwrap() > 1e6, "traffic to b stalled in second {i}");
    }
    assert_eq!(
        lab::api_status(&s.ga.ifname).unwrap()["peers"][0]["latest_handshake"],
        b_before,
        "b's session untouched"
    );

    // With traffic stopped, tunctl's JSON and wg's dump describe the same peers.
    tunctl_ok(&s.a, &add_c);
    assert!(s.a.wait_for_ping("10.71.0.3", Duration::from_secs(10)));
    // Read as a pair until a late reply or keepalive does not land between
    // the two reads (their counters must then agree exactly).
    let same_counters = |peers: &[Value], dump: &[WgPeer]| {
        dump.iter().all(|d| {
            peers.iter().any(|p| {
                p["public_key"] == d.public_key.as_str()
                    && p["rx_bytes"].as_u64() == Some(d.rx)
                    && p["tx_bytes"].as_u64() == Some(d.tx)
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let read = || -> (Vec<Value>, Vec<WgPeer>) {
        let peers = serde_json::from_str(&tunctl_ok(&s.a, &["peers", &if_a, "--json"])).unwrap();
        (peers, wg_dump(&s.a, &if_a).unwrap())
    };
    let (peers, dump) = poll_until(Duration::from_millis(1500), read, |(p, d)| same_counters(p, d));
    assert_eq!(peers.len(), 2);
    assert_eq!(dump.len(), 2);
    for d in &dump {
        let p = peers.iter().find(|p| p["public_key"] == d.public_key.as_str()).expect("same peers");
        assert_eq!(p["endpoint"].as_str().unwrap_or("(none)"), d.endpoint);
        assert_eq!(p["latest_handshake"].as_u64().unwrap_or(0), d.latest_handshake);
        assert_eq!(p["rx_bytes"].as_u64().unwrap(), d.rx);
        assert_eq!(p["tx_bytes"].as_u64().unwrap(), d.tx);
        assert_eq!(p["state"], "up");
    }
    let table = tunctl_ok(&s.a, &["peers", &if_a]);
    assert!(table.starts_with("NAME") && table.contains("RATE RX / TX") && table.lines().count() == 3, "{table}");
}
