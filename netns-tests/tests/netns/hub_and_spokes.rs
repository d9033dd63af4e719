//! A primary-DC hub with three DC spokes. Each spoke routes every site's
//! prefix to the hub; the hub routes each spoke's prefix to that spoke. A
//! spoke reaches the hub's network and the other spokes through the hub.

use std::time::Duration;

use causeway_netns_tests::*;

#[test]
fn spokes_reach_the_hub_and_each_other() {
    let Some(_lab) = lab_or_skip("spokes_reach_the_hub_and_each_other") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hub = Netns::new("hub").unwrap();
    let spokes: Vec<Netns> = (1..=3).map(|i| Netns::new(&format!("spoke{i}")).unwrap()).collect();
    // One WAN link per spoke: 198.18.i.0/24, hub .1, spoke .2.
    for (i, s) in spokes.iter().enumerate() {
        let n = i + 1;
        lab::veth(&hub, &format!("wan{n}"), &[&format!("198.18.{n}.1/24")], s, "wan0", &[&format!("198.18.{n}.2/24")])
            .unwrap();
    }
    let (kh, ph) = keypair();
    let keys: Vec<_> = (0..3).map(|_| keypair()).collect();
    // Hub tunnel 10.50.0.1/24 and a "DC network" 10.50.100.1/24 behind it
    // (an address on lo: this kernel has no dummy interfaces); spoke i has
    // 10.50.0.(i+1) and network 10.5i.0.0/16.
    let hub_peers: Vec<PeerSpec> = keys
        .iter()
        .enumerate()
        .map(|(i, (_, p))| {
            let n = i + 1;
            PeerSpec::new(
                &format!("dc{n}"),
                *p,
                Some(&format!("198.18.{n}.2:51820")),
                &[&format!("10.50.0.{}/32", n + 1), &format!("10.5{n}.0.0/16")],
            )
        })
        .collect();
    let _gh = Gateway::start(&hub, dir.path(), &kh, &["10.50.0.1/24"], 51820, 1420, &hub_peers).unwrap();
    hub.ip(&["addr", "add", "10.50.100.1/24", "dev", "lo"]).unwrap();
    hub.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]).unwrap();
    for n in 1..=3 {
        hub.ip(&["route", "add", &format!("10.5{n}.0.0/16"), "dev", &_gh.ifname]).unwrap();
    }
    let mut gws = Vec::new();
    for (i, (s, (k, _))) in spokes.iter().zip(&keys).enumerate() {
        let n = i + 1;
        let everything = ["10.50.0.0/24", "10.50.100.0/24", "10.51.0.0/16", "10.52.0.0/16", "10.53.0.0/16"];
        let own = format!("10.5{n}.0.0/16");
        let allowed: Vec<&str> = everything.iter().copied().filter(|p| *p != own).collect();
        let g = Gateway::start(
            s,
            dir.path(),
            k,
            &[&format!("10.50.0.{}/24", n + 1)],
            51820,
            1420,
            &[PeerSpec::new("hub", ph, Some(&format!("198.18.{n}.1:51820")), &allowed)],
        )
        .unwrap();
        // The spoke's own DC network, and a route to every other site via the tunnel.
        s.ip(&["addr", "add", &format!("10.5{n}.0.1/16"), "dev", "lo"]).unwrap();
        for p in &allowed {
            if *p != "10.50.0.0/24" {
                s.ip(&["route", "add", p, "dev", &g.ifname]).unwrap();
            }
        }
        gws.push(g);
    }
    for (i, s) in spokes.iter().enumerate() {
        let n = i + 1;
        let src = format!("10.5{n}.0.1");
        assert!(s.wait_for_ping("10.50.0.1", Duration::from_secs(10)), "spoke {n} reaches the hub's tunnel address");
        assert!(
            s.command("ping")
                .args(["-c", "2", "-i", "0.2", "-W", "2", "-I", &src, "10.50.100.1"])
                .output()
                .unwrap()
                .status
                .success(),
            "spoke {n} reaches the hub's DC network"
        );
        for m in (1..=3).filter(|&m| m != n) {
            let dst = format!("10.5{m}.0.1");
            let ok = s
                .command("ping")
                .args(["-c", "2", "-i", "0.2", "-W", "3", "-I", &src, &dst])
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "spoke {n} reaches spoke {m}'s network through the hub");
        }
    }
}
