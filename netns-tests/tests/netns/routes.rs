//! `install_routes`: the peers' allowed IPs are routed through the interface
//! by causewayd itself, follow live peer changes, honour `route_table`, and
//! never include a default route (it would swallow the tunnel's own UDP).

use std::time::{Duration, Instant};

use causeway_netns_tests::*;

/// The destinations of `ip route show` for the arguments given.
fn routes(ns: &Netns, args: &[&str]) -> Vec<String> {
    routes_in(ns, &[], args)
}

/// As `routes`, with options before `route` (`-6`).
fn routes_in(ns: &Netns, options: &[&str], args: &[&str]) -> Vec<String> {
    let full: Vec<&str> = options.iter().chain(&["route", "show"]).chain(args).copied().collect();
    ns.ip(&full).unwrap().lines().filter_map(|l| l.split_whitespace().next().map(str::to_string)).collect()
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    wait_up_to(Duration::from_secs(5), what, cond)
}

fn wait_up_to(patience: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The hub's gateway (10.79.0.1/24) installing routes, with one peer
/// "spoke" at 198.18.0.2 routed `allowed`.
fn hub_gateway(
    hub: &Netns,
    dir: &std::path::Path,
    key: &causeway_wireguard::StaticSecret,
    spoke: causeway_wireguard::PublicKey,
    allowed: &[&str],
) -> Gateway {
    let peer = PeerSpec::new("spoke", spoke, Some("198.18.0.2:51820"), allowed);
    Gateway::start_with(hub, dir, key, &["10.79.0.1/24"], 51820, 1420, &[peer], "install_routes = true\n").unwrap()
}

#[test]
fn allowed_ips_become_routes() {
    let Some(_lab) = lab_or_skip("allowed_ips_become_routes") else { return };
    let (hub, spoke) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (kh, ph) = keypair();
    let (ks, ps) = keypair();
    // The spoke's LAN, 10.179.0.0/24, is reachable from the hub only through
    // a route to the tunnel; nobody writes one by hand.
    let gh = hub_gateway(&hub, dir.path(), &kh, ps, &["10.79.0.2/32", "10.179.0.0/24"]);
    let gs = Gateway::start_with(
        &spoke,
        dir.path(),
        &ks,
        &["10.79.0.2/24", "10.179.0.1/24"],
        51820,
        1420,
        &[PeerSpec::new("hub", ph, Some("198.18.0.1:51820"), &["0.0.0.0/0", "10.79.0.1/32", "10.80.0.0/16"])],
        "install_routes = true\nroute_table = 100\n",
    )
    .unwrap();

    let on_hub = routes(&hub, &["dev", &gh.ifname]);
    assert!(on_hub.contains(&"10.179.0.0/24".to_string()), "{on_hub:?}");
    assert!(on_hub.contains(&"10.79.0.2".to_string()), "{on_hub:?}");
    assert!(hub.wait_for_ping("10.179.0.1", Duration::from_secs(10)), "{}", gh.log_text());

    let table100 = routes(&spoke, &["table", "100"]);
    assert_eq!(table100, ["10.79.0.1", "10.80.0.0/16"], "no default route, and only in table 100");
    assert!(!routes(&spoke, &["dev", &gs.ifname]).contains(&"10.80.0.0/16".to_string()), "main table untouched");
    assert!(gs.log_text().contains("not installing a default route"), "{}", gs.log_text());

    let show = tunctl_ok(&hub, &["show", &gh.ifname]);
    assert!(show.contains("kernel routes: 2 prefixes in table main"), "{show}");

    // Live changes: a new prefix appears, a removed peer takes its routes.
    let if_h = gh.ifname.clone();
    tunctl_ok(&hub, &["peer", "set", &if_h, "spoke", "--allowed-ip", "10.79.0.2/32", "--allowed-ip", "10.181.0.0/24"]);
    wait_for("the changed prefixes", || {
        let r = routes(&hub, &["dev", &if_h]);
        r.contains(&"10.181.0.0/24".to_string()) && !r.contains(&"10.179.0.0/24".to_string())
    });
    tunctl_ok(&hub, &["peer", "remove", &if_h, "spoke"]);
    wait_for("the removed peer's routes to go", || routes(&hub, &["dev", &if_h]).iter().all(|r| r == "10.79.0.0/24"));
    let status = lab::api_status(&if_h).unwrap();
    assert_eq!(status["kernel_routes"]["installed"].as_array().map(Vec::len), Some(0), "{status}");
}

#[test]
fn an_existing_route_is_left_alone() {
    let Some(_lab) = lab_or_skip("an_existing_route_is_left_alone") else { return };
    let (hub, _spoke) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (kh, _) = keypair();
    let (_, ps) = keypair();
    // The operator already routes this prefix elsewhere.
    hub.ip(&["route", "add", "10.182.0.0/24", "via", "198.18.0.2"]).unwrap();
    let gh = hub_gateway(&hub, dir.path(), &kh, ps, &["10.182.0.0/24", "10.183.0.0/24"]);
    assert_eq!(routes(&hub, &["dev", &gh.ifname]), ["10.79.0.0/24", "10.183.0.0/24"]);
    assert!(hub.ip(&["route", "show", "10.182.0.0/24"]).unwrap().contains("via 198.18.0.2"), "untouched");
    assert!(gh.log_text().contains("a route for this prefix exists already"), "{}", gh.log_text());
    // The operator removes theirs (a cut-over from the old box): ours
    // follows within the few seconds between looks at the table.
    hub.ip(&["route", "del", "10.182.0.0/24", "via", "198.18.0.2"]).unwrap();
    wait_up_to(Duration::from_secs(8), "the prefix installed once free", || {
        routes(&hub, &["dev", &gh.ifname]).contains(&"10.182.0.0/24".to_string())
    });
    assert_eq!(gh.log_text().matches("a route for this prefix exists already").count(), 1, "logged once");
}

/// Routes of ours removed behind the daemon's back (by hand, or by the
/// kernel when the link goes down) are put back.
#[test]
fn routes_removed_behind_our_back_come_back() {
    let Some(_lab) = lab_or_skip("routes_removed_behind_our_back_come_back") else { return };
    let (hub, _spoke) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (kh, _) = keypair();
    let (_, ps) = keypair();
    let gh = hub_gateway(&hub, dir.path(), &kh, ps, &["10.184.0.0/24", "fd00:184::/64"]);
    let if_h = gh.ifname.clone();
    let all = |want: &[&str]| {
        let v4 = routes(&hub, &["dev", &if_h]);
        let v6 = routes_in(&hub, &["-6"], &["dev", &if_h]);
        want.iter().all(|w| v4.contains(&w.to_string()) || v6.contains(&w.to_string()))
    };
    wait_for("the routes", || all(&["10.184.0.0/24", "fd00:184::/64"]));
    hub.ip(&["route", "del", "10.184.0.0/24", "dev", &if_h]).unwrap();
    hub.ip(&["-6", "route", "del", "fd00:184::/64", "dev", &if_h]).unwrap();
    // No look at the table between the deletes and the wait: the daemon's
    // audit (every 5 s) may put the routes back at any moment, and the
    // deletes' success shows the routes were there.
    wait_up_to(Duration::from_secs(8), "the deleted routes back", || all(&["10.184.0.0/24", "fd00:184::/64"]));
    // Down and up: the kernel drops every route through the link.
    hub.ip(&["link", "set", &if_h, "down"]).unwrap();
    hub.ip(&["link", "set", &if_h, "up"]).unwrap();
    wait_up_to(Duration::from_secs(8), "the routes back after a link flap", || {
        all(&["10.184.0.0/24", "fd00:184::/64"])
    });
    assert!(gh.log_text().contains("routes of ours were removed from the kernel"), "{}", gh.log_text());
}

/// A reload applies its peers one by one, and a name to resolve can hold
/// it up for seconds; meanwhile a re-keyed peer's prefix is gone from the
/// gateway's table. Its kernel route must stay through that, or the
/// prefix's traffic would leave unencrypted by the host's default route.
#[test]
fn a_reload_keeps_the_kernel_routes_of_a_peer_it_rekeys() {
    let Some(_lab) = lab_or_skip("a_reload_keeps_the_kernel_routes_of_a_peer_it_rekeys") else { return };
    let (hub, spoke) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let _resolver = silent_name_server(&hub, &spoke, "198.18.0.2", 3);
    let dir = tempfile::tempdir().unwrap();
    let (kh, _) = keypair();
    let (_, pb) = keypair();
    let (_, old_key) = keypair();
    let (_, new_key) = keypair();
    let peers = [
        PeerSpec::new("b", pb, Some("198.18.0.2:51820"), &["10.180.0.0/24"]),
        PeerSpec::new("a", old_key, None, &["10.179.0.0/24"]),
    ];
    let gh =
        Gateway::start_with(&hub, dir.path(), &kh, &["10.79.0.1/24"], 51820, 1420, &peers, "install_routes = true\n")
            .unwrap();
    let if_h = gh.ifname.clone();
    wait_for("the routes", || routes(&hub, &["dev", &if_h]).contains(&"10.179.0.0/24".to_string()));
    // b, applied before a, now needs the silent name server; a is re-keyed.
    let text = std::fs::read_to_string(&gh.config).unwrap();
    let text = text
        .replace("\"198.18.0.2:51820\"", "\"gw-b.causeway.test:51820\"")
        .replace(&lab::b64(old_key.as_bytes()), &lab::b64(new_key.as_bytes()));
    lab::write_private(&gh.config, &text).unwrap();
    let mut reload = tunctl_command(&hub, &["reload", &if_h])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut looked = 0;
    while reload.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = reload.kill();
            panic!("the reload had not ended after 60 s");
        }
        let r = routes(&hub, &["dev", &if_h]);
        if !r.contains(&"10.179.0.0/24".to_string()) {
            let _ = reload.kill();
            panic!("withdrawn during the reload, after {:?}: {r:?}", start.elapsed());
        }
        looked += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = reload.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        start.elapsed() > Duration::from_secs(1) && looked > 20,
        "the name held the reload up: {:?}",
        start.elapsed()
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("added: a") && report.contains("removed: a"), "{report}");
    wait_for("the routes after it", || {
        let r = routes(&hub, &["dev", &if_h]);
        r.contains(&"10.179.0.0/24".to_string()) && r.contains(&"10.180.0.0/24".to_string())
    });
}
