//! An endpoint given as a DNS name is resolved again while handshakes fail:
//! the remote gateway moves to a new address, its name is updated, and
//! traffic resumes without an operator. Name resolution in the hub's
//! namespace comes from /etc/netns/<namespace>/hosts, which `ip netns exec`
//! mounts over /etc/hosts for the processes it starts.

use std::time::Duration;

use causeway_netns_tests::*;

/// The hub's /etc/hosts: 127.0.0.1 localhost and `entry`.
fn set_hosts(etc: &NetnsEtc, entry: &str) {
    etc.write("hosts", &format!("127.0.0.1 localhost\n{entry}\n"));
}

/// A hub whose peer "dc" is named dc.causeway.test, first 198.18.1.2 (in
/// namespace `old`), and a second place for the DC's gateway (`new`,
/// 198.18.2.2). The DC's gateways share one key and one tunnel address.
/// Fields drop in order: gateways before their namespaces.
struct MovingDc {
    gh: Gateway,
    hosts: NetnsEtc,
    kdc: causeway_wireguard::StaticSecret,
    ph: causeway_wireguard::PublicKey,
    dir: tempfile::TempDir,
    hub: Netns,
    old: Netns,
    new: Netns,
}

impl MovingDc {
    /// `dc` describes the hub's peer; `hub_extra` adds interface lines.
    fn new(dc: impl FnOnce(causeway_wireguard::PublicKey) -> PeerSpec, hub_extra: &str) -> MovingDc {
        let dir = tempfile::tempdir().unwrap();
        let hub = Netns::new("hub").unwrap();
        let old = Netns::new("old").unwrap();
        let new = Netns::new("new").unwrap();
        lab::veth(&hub, "wan1", &["198.18.1.1/24"], &old, "wan0", &["198.18.1.2/24"]).unwrap();
        lab::veth(&hub, "wan2", &["198.18.2.1/24"], &new, "wan0", &["198.18.2.2/24"]).unwrap();
        let hosts = NetnsEtc::new(&hub);
        set_hosts(&hosts, "198.18.1.2 dc.causeway.test");
        let (kh, ph) = keypair();
        let (kdc, pdc) = keypair();
        let gh =
            Gateway::start_with(&hub, dir.path(), &kh, &["10.78.0.1/24"], 51820, 1420, &[dc(pdc)], hub_extra).unwrap();
        MovingDc { gh, hosts, kdc, ph, dir, hub, old, new }
    }

    fn dc_gateway(&self, ns: &Netns) -> Gateway {
        let hub = PeerSpec::new("hub", self.ph, None, &["10.78.0.1/32"]);
        Gateway::start(ns, self.dir.path(), &self.kdc, &["10.78.0.2/24"], 51820, 1420, &[hub]).unwrap()
    }

    fn endpoint(&self) -> String {
        wg_dump(&self.hub, &self.gh.ifname).unwrap()[0].endpoint.clone()
    }
}

#[test]
fn dns_endpoint_follows_a_moved_gateway() {
    let Some(_lab) = lab_or_skip("dns_endpoint_follows_a_moved_gateway") else { return };
    let m = MovingDc::new(
        |pdc| PeerSpec::new("dc", pdc, None, &["10.78.0.2/32"]).failover(&["dc.causeway.test:51820"], 3),
        "",
    );
    let mut g_old = m.dc_gateway(&m.old);
    assert!(m.hub.wait_for_ping("10.78.0.2", Duration::from_secs(10)), "{}", m.gh.log_text());
    assert_eq!(m.endpoint(), "198.18.1.2:51820");

    // The DC's gateway moves: the old one stops, a new one with the same key
    // comes up elsewhere, and the name now points there.
    assert_eq!(g_old.process.stop(), Some(0));
    let _g_new = m.dc_gateway(&m.new);
    set_hosts(&m.hosts, "198.18.2.2 dc.causeway.test");
    assert!(
        m.hub.wait_for_ping("10.78.0.2", Duration::from_secs(45)),
        "traffic did not follow the name: {}",
        m.gh.log_text()
    );
    assert_eq!(m.endpoint(), "198.18.2.2:51820");
}

/// While the session is healthy, the name is resolved again every
/// `dns_refresh` seconds: a name moved to the standby gateway brings the
/// endpoint there before the old gateway fails.
#[test]
fn dns_endpoint_is_refreshed_while_healthy() {
    let Some(_lab) = lab_or_skip("dns_endpoint_is_refreshed_while_healthy") else { return };
    let m = MovingDc::new(
        |pdc| PeerSpec::new("dc", pdc, Some("dc.causeway.test:51820"), &["10.78.0.2/32"]),
        "dns_refresh = 1\n",
    );
    let mut g_old = m.dc_gateway(&m.old);
    let _g_new = m.dc_gateway(&m.new);
    assert!(m.hub.wait_for_ping("10.78.0.2", Duration::from_secs(10)), "{}", m.gh.log_text());
    assert_eq!(m.endpoint(), "198.18.1.2:51820");

    set_hosts(&m.hosts, "198.18.2.2 dc.causeway.test");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while m.endpoint() != "198.18.2.2:51820" {
        assert!(std::time::Instant::now() < deadline, "endpoint did not follow the name: {}", m.gh.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(m.gh.log_text().contains("endpoint name resolves elsewhere now"), "{}", m.gh.log_text());
    // The old gateway goes; traffic continues through the new one.
    assert_eq!(g_old.process.stop(), Some(0));
    assert!(m.hub.wait_for_ping("10.78.0.2", Duration::from_secs(40)), "{}", m.gh.log_text());
}

/// A reload looks its endpoint names up before it takes the change lock,
/// several at once: six names (four WireGuard peers', two IPsec peers') on
/// a name server that never answers cost about one lookup's timeout, not
/// six one after another, and a peer change made meanwhile does not wait
/// for them.
#[test]
fn a_reload_looks_up_its_names_side_by_side() {
    let Some(_lab) = lab_or_skip("a_reload_looks_up_its_names_side_by_side") else { return };
    let (hub, spoke) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let _resolver = silent_name_server(&hub, &spoke, "198.18.0.2", 3);
    let dir = tempfile::tempdir().unwrap();
    let (kh, _) = keypair();
    let peers: Vec<PeerSpec> = (0..4)
        .map(|i| {
            let endpoint = format!("198.18.0.2:{}", 51821 + i);
            PeerSpec::new(&format!("p{i}"), keypair().1, Some(&endpoint), &[&format!("10.18{i}.0.0/24")])
        })
        .collect();
    let gh = Gateway::start(&hub, dir.path(), &kh, &["10.79.0.1/24"], 51820, 1420, &peers).unwrap();
    let mut text = std::fs::read_to_string(&gh.config).unwrap();
    for i in 0..4 {
        text = text.replace(&format!("\"198.18.0.2:{}\"", 51821 + i), &format!("\"gw-{i}.causeway.test:51820\""));
    }
    let psk = dir.path().join("ipsec.psk");
    lab::write_private(&psk, "this pre-shared key is only for this test\n").unwrap();
    for i in 0..2 {
        text += &format!(
            "\n[[peer]]\nname = \"i{i}\"\nprotocol = \"ipsec\"\nendpoints = [\"ike-{i}.causeway.test\"]\nallowed_ips = [\"10.19{i}.0.0/24\"]\nlocal_id = \"hub.causeway.test\"\nremote_id = \"i{i}.causeway.test\"\npsk_file = \"{}\"\ninitiate = false\n",
            psk.display()
        );
    }
    lab::write_private(&gh.config, &text).unwrap();
    let start = std::time::Instant::now();
    let mut reload_cmd = tunctl_command(&hub, &["reload", &gh.ifname]);
    let reload = std::thread::spawn(move || lab::bounded::output_within(&mut reload_cmd, Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(500));
    let set_at = std::time::Instant::now();
    tunctl_ok(&hub, &["peer", "set", &gh.ifname, "p0", "--keepalive", "25"]);
    let set_took = set_at.elapsed();
    let out = reload.join().unwrap().unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // At least one timeout: the names did go to the silent server.
    assert!(took >= Duration::from_secs(3), "the lookups did not wait: {took:?}");
    // One after another they take 18 s; at once about 3.
    assert!(took < Duration::from_secs(7), "the lookups ran one after another: {took:?}");
    assert!(set_took < Duration::from_secs(2), "the peer change waited for the reload's lookups: {set_took:?}");
    // The names do not resolve: the report says traffic stays where it was.
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("p3 (endpoints, none resolving now: traffic stays on the address in use until one does)")
            && report.contains("added: i0, i1"),
        "{report}"
    );
}

/// A name server that does not answer holds one refresh lookup per peer at
/// a time, not a new one every `dns_refresh`, and a stop does not wait for it:
/// SIGTERM during a lookup that would take 30 s ends the daemon within
/// seconds. (Before, a lookup started every second, and the stop waited
/// for the one running.)
#[test]
fn a_hung_name_lookup_neither_piles_up_nor_holds_the_stop() {
    let Some(_lab) = lab_or_skip("a_hung_name_lookup_neither_piles_up_nor_holds_the_stop") else { return };
    let (hub, spoke) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let etc = silent_name_server(&hub, &spoke, "198.18.0.2", 30);
    // The name resolves from the hosts file at start…
    set_hosts(&etc, "198.18.0.2 dc.causeway.test");
    let dir = tempfile::tempdir().unwrap();
    let (kh, _) = keypair();
    let dc = PeerSpec::new("dc", keypair().1, Some("dc.causeway.test:51820"), &["10.78.0.2/32"]);
    let mut gh =
        Gateway::start_with(&hub, dir.path(), &kh, &["10.78.0.1/24"], 51820, 1420, &[dc], "dns_refresh = 1\n").unwrap();
    // …and from then on only from the silent server.
    set_hosts(&etc, "");
    // The queries the silent server's namespace dropped: one lookup sends
    // two (A and AAAA), and with attempts:1 sends no more.
    let dropped = || -> u64 {
        let rules = spoke.exec("iptables", &["-L", "INPUT", "-v", "-n", "-x"]).unwrap();
        let line = rules.lines().find(|l| l.contains("DROP") && l.contains("dpt:53")).expect("the DROP rule");
        line.split_whitespace().next().unwrap().parse().unwrap()
    };
    std::thread::sleep(Duration::from_secs(6));
    let queries = dropped();
    assert!(queries >= 1, "no lookup reached the name server: {}", gh.log_text());
    assert!(queries <= 3, "lookups piled up: {queries} queries in 6 s");

    // 0 would mean reaped already, and kill(0) signals the whole group.
    let pid = gh.process.pid() as i32;
    assert!(pid > 0, "the daemon exited early: {}", gh.log_text());
    let stop_at = std::time::Instant::now();
    // SAFETY: kill takes no pointers; `pid` is the daemon's, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let code = gh.process.wait_exit(Duration::from_secs(60));
    let took = stop_at.elapsed();
    assert_eq!(code, Some(0), "{}", gh.log_text());
    assert!(took < Duration::from_secs(10), "the stop waited {took:?} for the lookup");
}
