//! Issue #13's fleet tests: sites served by several gateways, an etcd
//! registry, routes that follow health, in the lab's fleet topology
//! (lab/src/fleet.rs: two sites of two gateways, a router per site
//! spreading its hosts' flows over its gateways, etcd on the WAN).
//!
//! They check the configuration syntax that lab/src/fleet/config.rs
//! writes, and its behaviour: a site's
//! traffic spread by flow over its gateways that are up; `tunctl sites
//! --json` with `{"sites": [...], "registry": {"state": ...}}`; learnt
//! peers named `{site}.{name}`; kernel routes of a site only while one of
//! its gateways is up; the registry stale while etcd is unreachable, its
//! changes applied on reconnection; `causeway_registry_stale` in the
//! metrics. Each test is bounded (every wait has a deadline) and the
//! module runs in about four minutes, most of it the 30 s etcd outage.
//!
//! Traffic goes from a host of site 1 to a host of site 2, so it crosses
//! a gateway of each site (which one, the routers' and the gateways' flow
//! hashes decide), and the replies may come back through others.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use causeway_netns_tests::*;
use lab::fleet::traffic::{stalls, stream_series, Pinger, Traffic};
use lab::fleet::{registry_state, Fleet, FleetSpec, SiteRouting, Transfer};

fn causewayd() -> PathBuf {
    lab::causewayd_path().unwrap()
}

/// Polls `cond` every 100 ms until it holds; fails after `timeout` with
/// `what` and the fleet's logs.
fn wait_until(fleet: &Fleet, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}\n{}", fleet.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// Until every gateway routes every other site into its tunnel (its
/// routes follow health: the other site has a gateway up).
fn wait_tunnels(fleet: &Fleet, timeout: Duration) {
    wait_until(fleet, "every gateway to route the other sites into its tunnel", timeout, || {
        fleet.gateways().all(|g| {
            let routes = g.tunnel_routes().unwrap_or_default();
            fleet.sites.iter().filter(|s| s.index != g.site).all(|s| routes.contains(&s.prefix()))
        })
    });
}

/// Each gateway's counters, in `fleet.indices()` order.
fn transfers(fleet: &Fleet) -> Vec<Transfer> {
    fleet.gateways().map(|g| g.transfer().unwrap_or_default()).collect()
}

/// The registry state every running gateway reports.
fn states(fleet: &Fleet) -> Vec<Option<String>> {
    fleet.gateways().map(|g| g.sites_json(&causewayd()).ok().as_ref().and_then(registry_state)).collect()
}

/// Whether `tunctl sites --json` shows `site` with `want` gateways, all up.
fn site_all_up(sites: &serde_json::Value, site: &str, want: usize) -> bool {
    let Some(entry) = sites["sites"].as_array().into_iter().flatten().find(|s| s["name"] == site) else {
        return false;
    };
    let gws = entry["gateways"].as_array().cloned().unwrap_or_default();
    gws.len() == want && gws.iter().all(|g| g["up"] == true)
}

/// An iperf3 run with 8 streams from host 1 of site 1 to host 1 of
/// site 2 must move bytes through every gateway of both sites: site 1's
/// send (tx), site 2's receive (rx). Flow hashing could put all 8 streams
/// on one gateway (about 1 in 60 runs), so up to three runs are made.
#[test]
fn eight_streams_use_all_four_gateways() {
    let Some(_lab) = fleet_lab("eight_streams_use_all_four_gateways", FleetNeeds { etcd: false, bird: false }) else {
        return;
    };
    let mut fleet = Fleet::build(FleetSpec::default()).unwrap();
    fleet.start_static().unwrap();
    wait_tunnels(&fleet, Duration::from_secs(20));
    let (h1, h2) = (fleet.site(1).unwrap().host(1), fleet.site(2).unwrap().host(1));
    let dst = fleet.site(2).unwrap().host_address(1);
    assert!(h1.wait_for_ping(&dst, Duration::from_secs(10)), "{}", fleet.logs());
    let sites = fleet.gateway(1, 1).sites_json(&causewayd()).unwrap();
    assert!(site_all_up(&sites, "site2", 2), "site2 has two gateways up: {sites}");

    let floor = 1 << 20;
    let mut moved = vec![];
    for attempt in 1..=3 {
        let before = transfers(&fleet);
        let run = lab::iperf3(h2, h1, &dst, 5, false, &["-P", "8"]).unwrap();
        let after = transfers(&fleet);
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
    for ((s, g), bytes) in &moved {
        assert!(*bytes > floor, "gateway {g} of site {s} carried {bytes} bytes: {moved:?}");
    }
    // `tunctl sites` counts, per gateway of site 2, the bytes that
    // site1.gw1's peers show in its status (its only peers are those two).
    let sites = fleet.gateway(1, 1).sites_json(&causewayd()).unwrap();
    let total = fleet.gateway(1, 1).transfer().unwrap().tx;
    let site2 = sites["sites"].as_array().into_iter().flatten().find(|s| s["name"] == "site2").expect("site2 listed");
    let per_gateway: u64 =
        site2["gateways"].as_array().into_iter().flatten().map(|g| g["tx_bytes"].as_u64().unwrap_or(0)).sum();
    assert!(per_gateway <= total && total - per_gateway < 1 << 16, "tunctl sites: {per_gateway}, status: {total}");
}

/// SIGKILL to one gateway of site 1 while 8 streams run: every stream
/// that stalled moves again within 15 s of the kill, and only streams
/// that crossed it stalled (site 1's router
/// drops the gateway when BIRD withdraws its routes; site 2's gateways
/// mark it down after `failover_after`), the other gateways keep their
/// sessions, and the dead gateway leaves the other site's peers once its
/// lease (5 s) expires.
#[test]
fn a_killed_gateway_s_streams_recover_and_its_record_expires() {
    let Some(_lab) =
        fleet_lab("a_killed_gateway_s_streams_recover_and_its_record_expires", FleetNeeds { etcd: true, bird: true })
    else {
        return;
    };
    lab::require("tshark", "tshark").unwrap();
    let spec = FleetSpec { etcd_members: 1, routing: SiteRouting::Bgp, lease_ttl: 5, ..FleetSpec::default() };
    let mut fleet = Fleet::build(spec).unwrap();
    fleet.start_registry().unwrap();
    fleet.wait_router_routes(2, Duration::from_secs(30)).unwrap();
    for (s, g) in fleet.indices() {
        let other = 3 - s;
        let want = vec![format!("site{other}.gw1"), format!("site{other}.gw2")];
        wait_until(&fleet, "the other site's gateways learnt from etcd", Duration::from_secs(10), || {
            fleet.gateway(s, g).peer_names().is_ok_and(|n| n == want)
        });
    }
    let dst = fleet.site(2).unwrap().host_address(1);
    assert!(fleet.site(1).unwrap().host(1).wait_for_ping(&dst, Duration::from_secs(10)), "{}", fleet.logs());

    let traffic = {
        let (h1, h2) = (fleet.site(1).unwrap().host(1), fleet.site(2).unwrap().host(1));
        Traffic::start(h2, h1, &dst, &["-t", "30", "-P", "8"], Duration::from_secs(60), fleet.dir()).unwrap()
    };
    std::thread::sleep(Duration::from_secs(7));
    // The TCP ports seen at the gateway about to die, either way, in the
    // second before the kill: the streams that cross it (their data, or
    // only their ACKs).
    let fields = ["-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport"];
    let capture = [&["-i", "any", "-s", "96", "-a", "duration:1", "-c", "4000", "-f", "tcp"][..], &fields[..]].concat();
    let seen = fleet.gateway(1, 1).ns.exec("tshark", &capture).unwrap();
    let crossing: HashSet<u64> = seen.split_whitespace().filter_map(|p| p.parse().ok()).collect();
    let killed_at = traffic.started().elapsed().as_secs_f64();
    fleet.gateway_mut(1, 1).kill();
    let killed = Instant::now();
    wait_until(&fleet, "site 1's router to drop the dead gateway", Duration::from_secs(5), || {
        fleet.site(1).unwrap().router_nexthops("10.2.0.0/16").is_ok_and(|h| h == ["10.1.0.12"])
    });
    // Its record expires with its lease: the other site forgets it.
    for g in 1..=2 {
        wait_until(&fleet, "the dead gateway to leave site 2's peers", Duration::from_secs(5 + 10), || {
            fleet.gateway(2, g).peer_names().is_ok_and(|n| n == ["site1.gw2"])
        });
    }
    eprintln!("the dead gateway left the peers {:.1} s after the kill", killed.elapsed().as_secs_f64());
    let record = fleet.etcd.as_mut().unwrap().get("/causeway/gateways/site1/gw1").unwrap();
    assert_eq!(record, None, "its record went with its lease");
    assert!(fleet.etcd.as_mut().unwrap().get("/causeway/gateways/site1/gw2").unwrap().is_some());

    let json = traffic.finish(Duration::from_secs(60)).unwrap();
    let series = stream_series(&json);
    assert_eq!(series.len(), 8, "8 streams");
    // "Stalled": an interval with under 1/50 of the stream's typical bytes.
    let mut typical: Vec<u64> =
        series.iter().flat_map(|s| s.intervals.iter().filter(|(t, _)| *t < killed_at - 1.0).map(|(_, b)| *b)).collect();
    typical.sort_unstable();
    let floor = typical.get(typical.len() / 2).copied().unwrap_or(0) / 50;
    let stalled = stalls(&series, floor.max(1), killed_at.floor());
    eprintln!("kill at {killed_at:.1} s; stalls after it: {stalled:?}; TCP ports at the dead gateway: {crossing:?}");
    for st in &stalled {
        let until = st.until.unwrap_or_else(|| panic!("stream {} never recovered: {stalled:?}", st.socket));
        // Interval starts are whole seconds: one interval of slack.
        assert!(
            until <= killed_at + 16.0,
            "stream {} moved again {:.1} s after the kill",
            st.socket,
            until - killed_at
        );
    }
    // Nothing else is interrupted: every stream that stalled crossed the
    // dead gateway.
    let port_of = |socket: u64| {
        let connected = json["start"]["connected"].as_array().into_iter().flatten();
        connected.clone().find(|c| c["socket"].as_u64() == Some(socket)).and_then(|c| c["local_port"].as_u64())
    };
    for st in &stalled {
        let port = port_of(st.socket).expect("iperf3 names each stream's port");
        assert!(
            crossing.contains(&port),
            "stream {} (port {port}) stalled without crossing the dead gateway; ports there: {crossing:?}",
            st.socket
        );
    }
    let last = series.iter().map(|s| s.intervals.last().map_or(0, |(_, b)| *b)).collect::<Vec<_>>();
    assert!(last.iter().all(|b| *b > 0), "every stream moves at the end: {last:?}");
}

/// A fifth gateway (a third for site 1) started during traffic with only
/// its own registry file joins: site 2's gateways learn it, its route
/// reaches site 1's router over BGP, and new flows cross it, with no
/// other gateway's file touched.
#[test]
fn a_fifth_gateway_joins_by_registering_alone() {
    let Some(_lab) = fleet_lab("a_fifth_gateway_joins_by_registering_alone", FleetNeeds { etcd: true, bird: true })
    else {
        return;
    };
    let spec = FleetSpec { etcd_members: 1, routing: SiteRouting::Bgp, ..FleetSpec::default() };
    let mut fleet = Fleet::build(spec).unwrap();
    fleet.start_registry().unwrap();
    fleet.wait_router_routes(2, Duration::from_secs(30)).unwrap();
    let files: Vec<(PathBuf, Vec<u8>)> =
        fleet.gateways().map(|g| (g.config.clone(), std::fs::read(&g.config).unwrap())).collect();
    let dst = fleet.site(2).unwrap().host_address(1);
    assert!(fleet.site(1).unwrap().host(1).wait_for_ping(&dst, Duration::from_secs(10)), "{}", fleet.logs());
    let background = {
        let (h1, h2) = (fleet.site(1).unwrap().host(1), fleet.site(2).unwrap().host(1));
        Traffic::start(h2, h1, &dst, &["-t", "25", "-P", "4"], Duration::from_secs(50), fleet.dir()).unwrap()
    };
    std::thread::sleep(Duration::from_secs(3));

    let g = fleet.add_gateway(1).unwrap();
    assert_eq!(g, 3);
    let config = fleet.registry_config(1, 3).unwrap();
    fleet.start_gateway(1, 3, &config).unwrap();
    let joined = Instant::now();
    for g in 1..=2 {
        wait_until(&fleet, "site 2's gateways to learn the new one", Duration::from_secs(10), || {
            fleet.gateway(2, g).peer_names().is_ok_and(|n| n.contains(&"site1.gw3".to_string()))
        });
    }
    wait_until(&fleet, "site 1's router to add the new gateway", Duration::from_secs(15), || {
        fleet.site(1).unwrap().router_nexthops("10.2.0.0/16").is_ok_and(|h| h.len() == 3)
    });
    eprintln!("the fifth gateway is in the router's route {:.1} s after it started", joined.elapsed().as_secs_f64());

    let (h1, h2) = (fleet.site(1).unwrap().host(2), fleet.site(2).unwrap().host(2));
    let dst2 = fleet.site(2).unwrap().host_address(2);
    let mut carried = 0;
    for attempt in 1..=3 {
        let before = fleet.gateway(1, 3).transfer().unwrap();
        lab::iperf3(h2, h1, &dst2, 3, false, &["-P", "8"]).unwrap();
        let after = fleet.gateway(1, 3).transfer().unwrap();
        carried = (after.tx - before.tx) + (after.rx - before.rx);
        eprintln!("run {attempt}: the new gateway carried {carried} bytes of new flows");
        if carried > 1 << 20 {
            break;
        }
    }
    assert!(carried > 1 << 20, "new flows cross the fifth gateway: {carried} bytes");
    let json = background.finish(Duration::from_secs(50)).unwrap();
    assert!(json["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0) > 0, "the background flows ran through");
    for (path, before) in files {
        assert_eq!(std::fs::read(&path).unwrap(), before, "{} was not edited", path.display());
    }
}

/// etcd stopped for 30 s during traffic: no ping is lost, every gateway
/// says its registry is stale (tunctl sites and the metric) and keeps its
/// peers, and is synced again once etcd is back. Then one gateway alone
/// is cut off from etcd while a site gains a prefix: the others apply it
/// at once, the cut-off one when it reconnects.
#[test]
fn etcd_stopped_for_30_s_loses_nothing_and_changes_apply_on_reconnect() {
    let Some(_lab) = fleet_lab(
        "etcd_stopped_for_30_s_loses_nothing_and_changes_apply_on_reconnect",
        FleetNeeds { etcd: true, bird: false },
    ) else {
        return;
    };
    let mut fleet = Fleet::build(FleetSpec { etcd_members: 1, ..FleetSpec::default() }).unwrap();
    fleet.start_registry().unwrap();
    wait_tunnels(&fleet, Duration::from_secs(30));
    wait_until(&fleet, "every registry synced", Duration::from_secs(15), || {
        states(&fleet).iter().all(|s| s.as_deref() == Some("synced"))
    });
    let dst = fleet.site(2).unwrap().host_address(1);
    assert!(fleet.site(1).unwrap().host(1).wait_for_ping(&dst, Duration::from_secs(10)), "{}", fleet.logs());

    let pinger =
        Pinger::start(fleet.site(1).unwrap().host(1), &dst, Duration::from_millis(100), 380, fleet.dir()).unwrap();
    let traffic = {
        let (h1, h2) = (fleet.site(1).unwrap().host(2), fleet.site(2).unwrap().host(2));
        let dst2 = fleet.site(2).unwrap().host_address(2);
        // Rate-limited, so the pings never queue behind a full tunnel.
        Traffic::start(h2, h1, &dst2, &["-t", "38", "-P", "4", "-b", "20M"], Duration::from_secs(60), fleet.dir())
            .unwrap()
    };
    std::thread::sleep(Duration::from_secs(2));
    fleet.etcd.as_mut().unwrap().stop_all();
    let stopped = Instant::now();
    wait_until(&fleet, "every registry stale", Duration::from_secs(20), || {
        states(&fleet).iter().all(|s| s.as_deref() == Some("stale"))
    });
    eprintln!("stale everywhere {:.1} s after etcd stopped", stopped.elapsed().as_secs_f64());
    let metrics = scrape_metrics(&fleet.gateway(1, 1).ns, "/metrics");
    let stale_gauge = |l: &str| {
        let l = l.trim();
        l.starts_with("causeway_registry_stale{")
            && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(1.0)
    };
    assert!(metrics.lines().any(stale_gauge), "{metrics}");
    while stopped.elapsed() < Duration::from_secs(30) {
        for (s, g) in fleet.indices() {
            assert_eq!(fleet.gateway(s, g).peer_names().unwrap().len(), 2, "gateway {g} of site {s} kept its peers");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    fleet.etcd.as_mut().unwrap().start_all().unwrap();
    wait_until(&fleet, "every registry synced again", Duration::from_secs(30), || {
        states(&fleet).iter().all(|s| s.as_deref() == Some("synced"))
    });
    let (sent, received) = pinger.finish(Duration::from_secs(30)).unwrap();
    eprintln!("pings during the outage: {received}/{sent}");
    assert!(sent >= 370, "the pinger ran: {sent}");
    assert_eq!(received, sent, "no ping lost while etcd was away");
    let json = traffic.finish(Duration::from_secs(30)).unwrap();
    assert!(json["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0) > 0);

    // One gateway cut off from etcd (its packets to the store dropped).
    let cut = &fleet.gateway(1, 1).ns;
    let rules = [
        ["OUTPUT", "-d", "198.18.0.100", "-p", "tcp", "--dport", "2379", "-j", "DROP"],
        ["INPUT", "-s", "198.18.0.100", "-p", "tcp", "--sport", "2379", "-j", "DROP"],
    ];
    for r in &rules {
        cut.exec("iptables", &[&["-I"][..], &r[..]].concat()).unwrap();
    }
    wait_until(&fleet, "the cut-off gateway to say stale", Duration::from_secs(30), || {
        fleet.gateway(1, 1).sites_json(&causewayd()).ok().as_ref().and_then(registry_state).as_deref() == Some("stale")
    });
    let wider = lab::fleet::config::site_record(&["10.2.0.0/16".into(), "10.22.0.0/16".into()]);
    fleet.etcd.as_mut().unwrap().put("/causeway/sites/site2", &wider).unwrap();
    wait_until(&fleet, "the connected gateway to route the new prefix", Duration::from_secs(10), || {
        fleet.gateway(1, 2).tunnel_routes().is_ok_and(|r| r.contains(&"10.22.0.0/16".to_string()))
    });
    assert!(!fleet.gateway(1, 1).tunnel_routes().unwrap().contains(&"10.22.0.0/16".to_string()), "cut off");
    for r in &rules {
        fleet.gateway(1, 1).ns.exec("iptables", &[&["-D"][..], &r[..]].concat()).unwrap();
    }
    let took = wait_until(&fleet, "the change to apply on reconnection", Duration::from_secs(30), || {
        fleet.gateway(1, 1).tunnel_routes().is_ok_and(|r| r.contains(&"10.22.0.0/16".to_string()))
    });
    eprintln!("applied {:.1} s after the store was reachable again", took.as_secs_f64());
    // The registry thread marks itself synced just after it applied the
    // change the route shows.
    wait_until(&fleet, "the registry to report synced", Duration::from_secs(5), || {
        fleet.gateway(1, 1).sites_json(&causewayd()).ok().as_ref().and_then(registry_state).as_deref() == Some("synced")
    });
}

/// A three-member etcd with one member (the first endpoint every gateway
/// lists) killed: no gateway's registry turns stale, no peer is lost, no
/// ping is lost, and a change written afterwards applies everywhere.
#[test]
fn a_killed_etcd_member_goes_unnoticed() {
    let Some(_lab) = fleet_lab("a_killed_etcd_member_goes_unnoticed", FleetNeeds { etcd: true, bird: false }) else {
        return;
    };
    let mut fleet = Fleet::build(FleetSpec { etcd_members: 3, ..FleetSpec::default() }).unwrap();
    fleet.start_registry().unwrap();
    wait_tunnels(&fleet, Duration::from_secs(30));
    wait_until(&fleet, "every registry synced", Duration::from_secs(15), || {
        states(&fleet).iter().all(|s| s.as_deref() == Some("synced"))
    });
    let dst = fleet.site(2).unwrap().host_address(1);
    assert!(fleet.site(1).unwrap().host(1).wait_for_ping(&dst, Duration::from_secs(10)));
    let pinger =
        Pinger::start(fleet.site(1).unwrap().host(1), &dst, Duration::from_millis(100), 200, fleet.dir()).unwrap();

    fleet.etcd.as_mut().unwrap().kill(0);
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_secs(15) {
        let st = states(&fleet);
        assert!(st.iter().all(|s| s.as_deref() == Some("synced")), "a gateway noticed: {st:?}\n{}", fleet.logs());
        for (s, g) in fleet.indices() {
            assert_eq!(fleet.gateway(s, g).peer_names().unwrap().len(), 2, "gateway {g} of site {s} kept its peers");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let wider = lab::fleet::config::site_record(&["10.2.0.0/16".into(), "10.22.0.0/16".into()]);
    fleet.etcd.as_mut().unwrap().put("/causeway/sites/site2", &wider).unwrap();
    for g in 1..=2 {
        wait_until(&fleet, "site 1's gateways to apply the change", Duration::from_secs(15), || {
            fleet.gateway(1, g).tunnel_routes().is_ok_and(|r| r.contains(&"10.22.0.0/16".to_string()))
        });
    }
    let (sent, received) = pinger.finish(Duration::from_secs(30)).unwrap();
    assert_eq!((sent, received), (200, 200), "no ping lost");
}

/// BIRD on site 1's gateways exports the route causewayd installs for
/// site 2 to site 1's router; when both of site 2's gateways die, site 1's
/// gateways mark them down, withdraw the route, and BIRD withdraws it at
/// the router; it comes back when they return.
#[test]
fn bird_withdraws_a_dead_site_at_the_router() {
    let Some(_lab) = fleet_lab("bird_withdraws_a_dead_site_at_the_router", FleetNeeds { etcd: false, bird: true })
    else {
        return;
    };
    let mut fleet = Fleet::build(FleetSpec { routing: SiteRouting::Bgp, hosts: 1, ..FleetSpec::default() }).unwrap();
    fleet.start_static().unwrap();
    fleet.wait_router_routes(2, Duration::from_secs(30)).unwrap();
    let dst = fleet.site(2).unwrap().host_address(1);
    assert!(fleet.site(1).unwrap().host(1).wait_for_ping(&dst, Duration::from_secs(10)), "{}", fleet.logs());

    fleet.gateway_mut(2, 1).kill();
    fleet.gateway_mut(2, 2).kill();
    let took = wait_until(&fleet, "site 1's router to lose its route to site 2", Duration::from_secs(15), || {
        fleet.site(1).unwrap().router_nexthops("10.2.0.0/16").is_ok_and(|h| h.is_empty())
    });
    eprintln!("route withdrawn at the router {:.1} s after site 2's gateways died", took.as_secs_f64());
    for g in 1..=2 {
        let routes = fleet.gateway(1, g).tunnel_routes().unwrap();
        assert!(!routes.contains(&"10.2.0.0/16".to_string()), "gateway {g} withdrew it: {routes:?}");
    }
    let shown = fleet.site(1).unwrap().router_bird.as_ref().unwrap().show_route().unwrap();
    assert!(!shown.contains("10.2.0.0/16"), "{shown}");

    for g in 1..=2 {
        fleet.gateway_mut(2, g).restart(&causewayd()).unwrap();
    }
    let took = wait_until(&fleet, "the route back at site 1's router", Duration::from_secs(20), || {
        fleet.site(1).unwrap().router_nexthops("10.2.0.0/16").is_ok_and(|h| h.len() == 2)
    });
    eprintln!("route back {:.1} s after site 2's gateways restarted", took.as_secs_f64());
    assert!(fleet.site(1).unwrap().host(1).wait_for_ping(&dst, Duration::from_secs(10)));
}
