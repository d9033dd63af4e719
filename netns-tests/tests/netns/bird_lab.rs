//! The lab's BIRD (lab/src/bird.rs) in the fleet topology with BGP
//! routing, with no causewayd: a TUN named as causewayd's interface and a
//! `proto static` route through it, as causewayd's `install_routes` adds,
//! stand in for the daemon. The route reaches the site router over BGP,
//! two gateways' routes merge into one multipath route, other routes stay
//! home, and the route is withdrawn when deleted or when the TUN goes
//! away with it (what a SIGKILLed causewayd does).

use std::time::{Duration, Instant};

use causeway_netns_tests::*;
use lab::fleet::{Fleet, FleetGateway, FleetSpec, SiteRouting};

/// Waits until the router of site 1 routes `prefix` through `want`.
fn wait_nexthops(fleet: &Fleet, prefix: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hops = fleet.site(1).unwrap().router_nexthops(prefix).unwrap();
        if hops == want {
            return;
        }
        assert!(Instant::now() < deadline, "router's next hops for {prefix}: {hops:?}, not {want:?}\n{}", fleet.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A persistent TUN with causewayd's interface name, up.
fn stand_in_tun(gw: &FleetGateway) {
    gw.ns.ip(&["tuntap", "add", "mode", "tun", "name", &gw.ifname]).unwrap();
    gw.ns.ip(&["link", "set", &gw.ifname, "up"]).unwrap();
}

#[test]
fn kernel_routes_reach_the_router_over_bgp() {
    let Some(_lab) = fleet_lab("kernel_routes_reach_the_router_over_bgp", FleetNeeds { etcd: false, bird: true })
    else {
        return;
    };
    let fleet = Fleet::build(FleetSpec { hosts: 1, routing: SiteRouting::Bgp, ..FleetSpec::default() }).unwrap();
    let site = fleet.site(1).unwrap();
    let router = site.router_bird.as_ref().unwrap();
    router.wait_established(2, Duration::from_secs(15)).unwrap();
    for g in &site.gateways {
        g.bird.as_ref().unwrap().wait_established(1, Duration::from_secs(5)).unwrap();
    }
    let (gw1, gw2) = (site.gateway(1), site.gateway(2));
    assert!(site.router_nexthops("10.2.0.0/16").unwrap().is_empty(), "nothing before causewayd's routes");

    stand_in_tun(gw1);
    let added = Instant::now();
    gw1.ns.ip(&["route", "add", "10.2.0.0/16", "dev", &gw1.ifname, "proto", "static", "scope", "link"]).unwrap();
    wait_nexthops(&fleet, "10.2.0.0/16", &["10.1.0.11"]);
    eprintln!("route at the router {:.0} ms after it was added", added.elapsed().as_secs_f64() * 1e3);
    let shown = router.show_route().unwrap();
    assert!(shown.contains("10.2.0.0/16") && shown.contains("via 10.1.0.11"), "{shown}");

    stand_in_tun(gw2);
    gw2.ns.ip(&["route", "add", "10.2.0.0/16", "dev", &gw2.ifname, "proto", "static", "scope", "link"]).unwrap();
    wait_nexthops(&fleet, "10.2.0.0/16", &["10.1.0.11", "10.1.0.12"]);
    let route = site.router.ip(&["route", "show", "10.2.0.0/16"]).unwrap();
    assert!(route.contains("proto bird") && route.matches("nexthop via").count() == 2, "one multipath route: {route}");

    // Routes that are not causewayd's stay home: another protocol on its
    // interface, or protocol static through another interface.
    gw1.ns.ip(&["route", "add", "10.3.0.0/16", "dev", &gw1.ifname]).unwrap();
    gw1.ns.ip(&["route", "add", "10.4.0.0/16", "via", "10.1.0.1", "proto", "static"]).unwrap();
    gw1.ns.ip(&["route", "add", "10.5.0.0/16", "dev", &gw1.ifname, "proto", "static", "scope", "link"]).unwrap();
    wait_nexthops(&fleet, "10.5.0.0/16", &["10.1.0.11"]);
    for prefix in ["10.3.0.0/16", "10.4.0.0/16", "10.1.0.0/16"] {
        assert!(site.router_nexthops(prefix).unwrap().is_empty(), "{prefix} was exported");
    }

    // Withdrawn: a deleted route, then the TUN going away with its routes.
    let deleted = Instant::now();
    gw1.ns.ip(&["route", "del", "10.2.0.0/16", "dev", &gw1.ifname]).unwrap();
    wait_nexthops(&fleet, "10.2.0.0/16", &["10.1.0.12"]);
    eprintln!("next hop gone {:.0} ms after the route was deleted", deleted.elapsed().as_secs_f64() * 1e3);
    gw2.ns.ip(&["link", "del", &gw2.ifname]).unwrap();
    wait_nexthops(&fleet, "10.2.0.0/16", &[]);
    assert!(!router.show_route().unwrap().contains("10.2.0.0/16"), "BIRD forgot it too");
    assert_eq!(site.router_nexthops("10.5.0.0/16").unwrap(), ["10.1.0.11"], "the other route stays");
}
