//! An endpoint given as a DNS name is resolved again while handshakes fail:
//! the remote gateway moves to a new address, its name is updated, and
//! traffic resumes without an operator. Name resolution in the hub's
//! namespace comes from /etc/netns/<namespace>/hosts, which `ip netns exec`
//! mounts over /etc/hosts for the processes it starts.

use std::path::PathBuf;
use std::time::Duration;

use causeway_netns_tests::*;

/// /etc/netns/<name>, removed on drop.
struct HostsFile(PathBuf);

impl HostsFile {
    fn new(ns: &Netns, entry: &str) -> HostsFile {
        let dir = PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).unwrap();
        let h = HostsFile(dir);
        h.set(entry);
        h
    }

    /// Rewrites the file in place: the bind mount follows the inode.
    fn set(&self, entry: &str) {
        std::fs::write(self.0.join("hosts"), format!("127.0.0.1 localhost\n{entry}\n")).unwrap();
    }
}

impl Drop for HostsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A hub whose peer "dc" is named dc.causeway.test, first 198.18.1.2 (in
/// namespace `old`), and a second place for the DC's gateway (`new`,
/// 198.18.2.2). The DC's gateways share one key and one tunnel address.
/// Fields drop in order: gateways before their namespaces.
struct MovingDc {
    gh: Gateway,
    hosts: HostsFile,
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
        let hosts = HostsFile::new(&hub, "198.18.1.2 dc.causeway.test");
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
    m.hosts.set("198.18.2.2 dc.causeway.test");
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

    m.hosts.set("198.18.2.2 dc.causeway.test");
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
