//! The fleet topology (lab/src/fleet.rs) without causewayd: every link
//! and route the fleet tests rely on, the router's flow hashing over its
//! gateways, the etcd member reachable from the gateways, a gateway
//! joining a site, the generated files naming the right peers, and
//! nothing left behind once the fleet is dropped.

use std::time::Duration;

use causeway_netns_tests::*;
use lab::fleet::traffic::{stalls, stream_series, Pinger, Traffic};
use lab::fleet::{Fleet, FleetSpec, SiteRouting};

/// The gateway `ip route get` picks at `router` for a TCP flow from
/// `src:sport` (arriving on `iif`) to `dst:5201`.
fn hashed_gateway(router: &Netns, iif: &str, src: &str, dst: &str, sport: u16) -> String {
    let sport = sport.to_string();
    let out = router
        .ip(&["route", "get", dst, "from", src, "iif", iif, "ipproto", "tcp", "sport", &sport, "dport", "5201"])
        .unwrap();
    let words: Vec<&str> = out.split_whitespace().collect();
    let via = words.iter().position(|w| *w == "via").expect("a gateway");
    words[via + 1].to_string()
}

fn netns_names() -> Vec<String> {
    let out = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next().map(String::from)).collect()
}

#[test]
fn the_topology_is_wired() {
    let Some(_lab) = fleet_lab("the_topology_is_wired", FleetNeeds { etcd: true, bird: false }) else {
        return;
    };
    let mut fleet =
        Fleet::build(FleetSpec { etcd_members: 1, routing: SiteRouting::Static, ..FleetSpec::default() }).unwrap();
    let mut names: Vec<String> = fleet.gateways().map(|g| g.ns.name.clone()).collect();
    names.push(fleet.wan_netns().name.clone());
    for site in &fleet.sites {
        names.push(site.router.name.clone());
        names.extend(site.hosts.iter().map(|h| h.name.clone()));
    }
    names.extend(fleet.etcd.as_ref().unwrap().members.iter().map(|m| m.ns.name.clone()));
    assert_eq!(names.len(), 1 + 2 * (1 + 2 + 2) + 1);

    for site in &fleet.sites {
        let s = site.index;
        // Hosts reach each other through the router, and the gateways on the LAN.
        assert!(site.host(1).ping(&site.host_address(2), 1).is_some(), "site {s}: host 1 → host 2");
        for g in &site.gateways {
            assert!(site.host(2).ping(&g.lan_address().to_string(), 1).is_some(), "site {s}: host → {}", g.name);
            assert!(g.ns.ping(&site.host_address(1), 1).is_some(), "site {s}: {} → a host, via the router", g.name);
        }
        // The router spreads its hosts' flows over both gateways, by port.
        let other = format!("10.{}.1.2", 3 - s);
        assert_eq!(
            site.router_nexthops(&format!("10.{}.0.0/16", 3 - s)).unwrap(),
            [format!("10.{s}.0.11"), format!("10.{s}.0.12")]
        );
        let policy = site.router.exec("sysctl", &["-n", "net.ipv4.fib_multipath_hash_policy"]).unwrap();
        assert_eq!(policy.trim(), "1");
        let picked: std::collections::BTreeSet<String> =
            (40000..40032).map(|p| hashed_gateway(&site.router, "h1", &site.host_address(1), &other, p)).collect();
        assert_eq!(picked.len(), 2, "32 flows from one host use both gateways: {picked:?}");
    }
    // The WAN: gateways of both sites and the etcd member.
    let (a, b) = (fleet.gateway(1, 1), fleet.gateway(2, 2));
    assert_eq!(b.wan_address().to_string(), "198.18.0.22");
    assert!(a.ns.ping("198.18.0.22", 1).is_some(), "WAN between sites");
    let url = fleet.etcd.as_ref().unwrap().client_urls()[0].clone();
    assert_eq!(url, "http://198.18.0.100:2379");
    let health =
        a.ns.exec("etcdctl", &["--endpoints", &url, "--dial-timeout=2s", "endpoint", "health", "-w", "json"]).unwrap();
    assert!(health.contains("\"health\":true"), "etcd from a gateway's namespace: {health}");

    // Files: the static one lists the other site and both its gateways;
    // the registry one names no peer, only the store and itself.
    let text = fleet.static_config(1, 1);
    assert_eq!(text.matches("[[site]]").count(), 1, "{}", *text);
    assert!(text.contains("name = \"site2\"\nprefixes = [\"10.2.0.0/16\"]"));
    assert_eq!(text.matches("site = \"site2\"").count(), 2);
    for ep in ["198.18.0.21:51820", "198.18.0.22:51820"] {
        assert!(text.contains(ep), "{ep}");
    }
    assert!(text.contains("addresses = [\"10.255.1.1/32\"]") && text.contains("install_routes = true"));
    let text = fleet.registry_config(2, 1).unwrap();
    assert!(text.contains("[registry]") && !text.contains("[[peer]]"));
    assert!(text.contains("endpoints = [\"http://198.18.0.100:2379\"]"));
    assert!(text.contains("site = \"site2\"\nname = \"gw1\"\nadvertise = [\"198.18.0.21:51820\"]"));
    fleet.seed_registry().unwrap();
    let seeded = fleet.etcd.as_mut().unwrap().get_prefix("/causeway/sites/").unwrap();
    assert_eq!(seeded.len(), 2);
    assert_eq!(seeded[1], ("/causeway/sites/site2".into(), r#"{"prefixes":["10.2.0.0/16"]}"#.into()));

    // A third gateway joins site 1: on both segments, in the router's route.
    let g = fleet.add_gateway(1).unwrap();
    assert_eq!(g, 3);
    let gw3 = fleet.gateway(1, 3);
    names.push(gw3.ns.name.clone());
    assert_eq!(gw3.wan_address().to_string(), "198.18.0.13");
    assert!(gw3.ns.wait_for_ping("198.18.0.21", Duration::from_secs(5)));
    assert!(gw3.ns.ping("10.1.2.2", 1).is_some());
    assert_eq!(fleet.site(1).unwrap().router_nexthops("10.2.0.0/16").unwrap().len(), 3);
    assert!(fleet.static_config(2, 1).contains("name = \"site1.gw3\""), "the others' files would list it");

    let dir = fleet.dir().to_path_buf();
    assert!(dir.exists());
    drop(fleet);
    let left: Vec<String> = netns_names().into_iter().filter(|n| names.contains(n)).collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!dir.exists(), "the fleet's directory is removed");
}

/// The fleet with causewayd as it is before sites: gateway G of site 1
/// paired with gateway G of site 2, each routing the other site's /16 to
/// its pair (one prefix, one peer). Enough to check the lab against the
/// real daemon: causewayd's own routes reach each router through BIRD,
/// the router spreads 8 streams over both pairs so that all four gateways
/// carry bytes (their control-API counters), and a SIGKILLed causewayd's
/// route leaves its router until it is back.
#[test]
fn paired_gateways_spread_flows_and_bird_follows_causewayd() {
    let Some(_lab) =
        fleet_lab("paired_gateways_spread_flows_and_bird_follows_causewayd", FleetNeeds { etcd: false, bird: true })
    else {
        return;
    };
    let mut fleet = Fleet::build(FleetSpec { routing: SiteRouting::Bgp, ..FleetSpec::default() }).unwrap();
    for (s, g) in fleet.indices() {
        let t = 3 - s;
        let mut pair = fleet.peer_entry(t, g);
        pair.site = None;
        pair.failover_after = None;
        pair.allowed_ips.push(lab::fleet::site_prefix(t));
        let text = fleet.config_with(s, g, &[], &[pair], None);
        fleet.start_gateway(s, g, &text).unwrap();
    }
    fleet.wait_router_routes(2, Duration::from_secs(20)).unwrap();
    let (h1, h2) = (fleet.site(1).unwrap().host(1), fleet.site(2).unwrap().host(1));
    let dst = fleet.site(2).unwrap().host_address(1);
    assert!(h1.wait_for_ping(&dst, Duration::from_secs(10)), "{}", fleet.logs());

    let floor = 1 << 20;
    let mut moved = vec![];
    for attempt in 1..=3 {
        let before: Vec<_> = fleet.gateways().map(|g| g.transfer().unwrap()).collect();
        let run = lab::iperf3(h2, h1, &dst, 4, false, &["-P", "8"]).unwrap();
        let after: Vec<_> = fleet.gateways().map(|g| g.transfer().unwrap()).collect();
        moved = fleet
            .indices()
            .into_iter()
            .zip(before.iter().zip(&after))
            .map(|((s, g), (b, a))| ((s, g), if s == 1 { a.tx - b.tx } else { a.rx - b.rx }))
            .collect();
        eprintln!("run {attempt}: {:.2} Gbit/s; bytes per gateway: {moved:?}", run.bits_per_second / 1e9);
        if moved.iter().all(|(_, bytes)| *bytes > floor) {
            break;
        }
    }
    assert!(moved.iter().all(|(_, bytes)| *bytes > floor), "every gateway carries a share: {moved:?}");

    // The background traffic and ping the fleet tests break things under,
    // read from iperf3's and ping's real output.
    let traffic = Traffic::start(h2, h1, &dst, &["-t", "3", "-P", "2"], Duration::from_secs(20), fleet.dir()).unwrap();
    let series = stream_series(&traffic.finish(Duration::from_secs(20)).unwrap());
    assert_eq!(series.len(), 2, "{series:?}");
    for s in &series {
        assert_eq!(s.intervals.len(), 3, "{s:?}");
        assert!(s.intervals.iter().all(|(_, bytes)| *bytes > 0), "{s:?}");
    }
    assert!(stalls(&series, 1, 0.0).is_empty(), "{series:?}");
    // After the streams, which could fill the tunnel's queues.
    let pinger = Pinger::start(h1, &dst, Duration::from_millis(100), 20, fleet.dir()).unwrap();
    assert_eq!(pinger.finish(Duration::from_secs(10)).unwrap(), (20, 20));

    let router = &fleet.site(1).unwrap().router;
    assert!(router.ip(&["route", "show", "10.2.0.0/16"]).unwrap().contains("proto bird"));
    fleet.gateway_mut(1, 1).kill();
    let killed = std::time::Instant::now();
    let deadline = killed + Duration::from_secs(5);
    while fleet.site(1).unwrap().router_nexthops("10.2.0.0/16").unwrap() != ["10.1.0.12"] {
        assert!(std::time::Instant::now() < deadline, "the dead gateway stays in the router's route\n{}", fleet.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("dead gateway out of the router's route after {:.0} ms", killed.elapsed().as_secs_f64() * 1e3);
    fleet.gateway_mut(1, 1).restart(&lab::causewayd_path().unwrap()).unwrap();
    fleet.wait_router_routes(2, Duration::from_secs(10)).unwrap();
}
