//! Reloading a gateway's configuration while iperf3 runs through it: the
//! difference is applied, the existing session and its counters survive,
//! traffic never stops, and an invalid file is rejected with the running
//! configuration kept.

use std::time::Duration;

use causeway_netns_tests::*;

#[test]
fn reload_under_traffic() {
    let Some(_lab) = lab_or_skip("reload_under_traffic") else { return };
    let s = peered_sites(69, false, &[], &[]).unwrap();
    assert!(s.a.wait_for_ping("10.69.0.2", Duration::from_secs(10)));
    let config = s.dir.path().join(format!("{}.toml", s.ga.ifname));
    let original = std::fs::read_to_string(&config).unwrap();
    let before = lab::api_status(&s.ga.ifname).unwrap()["peers"][0].clone();

    let (_, extra) = keypair();
    let run = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| lab::iperf3_json(&s.b, &s.a, "10.69.0.2", 6, false, &["-i", "1"]).unwrap());
        std::thread::sleep(Duration::from_secs(2));
        // A new peer, and a change to the existing one.
        let grown = original.replace("persistent_keepalive = 0", "persistent_keepalive = 25")
            + &format!(
                "\n[[peer]]\nname = \"extra\"\npublic_key = \"{}\"\nallowed_ips = [\"10.69.5.0/24\"]\n",
                b64(extra.as_bytes())
            );
        lab::write_private(&config, &grown).unwrap();
        let out = tunctl(&s.a, &["reload", &s.ga.ifname]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("added: extra") && text.contains("changed: b (persistent_keepalive)"), "{text}");

        // An invalid file: rejected with its location, nothing changes.
        std::thread::sleep(Duration::from_secs(1));
        lab::write_private(&config, &grown.replace(&b64(extra.as_bytes()), "not-a-key")).unwrap();
        let out = tunctl(&s.a, &["reload", &s.ga.ifname]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.contains("the running one stays") && err.contains(".toml:") && err.contains("peer[2].public_key"),
            "{err}"
        );
        assert_eq!(lab::api_status(&s.ga.ifname).unwrap()["peers"].as_array().unwrap().len(), 2);

        // SIGHUP re-reads too: back to the original, the extra peer goes.
        std::thread::sleep(Duration::from_secs(1));
        lab::write_private(&config, &original).unwrap();
        s.a.exec("kill", &["-HUP", &s.ga.process.pid().to_string()]).unwrap();
        traffic.join().unwrap()
    });

    let intervals = run["intervals"].as_array().unwrap();
    assert!(intervals.len() >= 5);
    for (i, iv) in intervals.iter().enumerate() {
        let bps = iv["sum"]["bits_per_second"].as_f64().unwrap();
        assert!(bps > 1e6, "traffic stalled in second {i} across the reloads: {bps} bit/s");
    }
    // The reload SIGHUP asked for may still be running when iperf3 ends.
    let after = poll_until(
        Duration::from_secs(10),
        || lab::api_status(&s.ga.ifname).unwrap(),
        |st| st["peers"].as_array().unwrap().len() == 1,
    );
    let peers = after["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "SIGHUP removed the extra peer");
    assert_eq!(peers[0]["latest_handshake"], before["latest_handshake"], "the session was kept, not renegotiated");
    assert!(peers[0]["rx_bytes"].as_u64() > before["rx_bytes"].as_u64(), "counters kept counting");
    assert_eq!(peers[0]["persistent_keepalive"], 0);
}
