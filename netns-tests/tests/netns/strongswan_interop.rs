//! Causeway against strongSwan 5.9 (charon with kernel-libipsec, ESP in
//! UDP): gw-a runs causewayd, gw-b a charon, on a veth WAN (198.18.0.1 and
//! .2; fd00:18::1 and ::2 in the IPv6 case), with a host behind each (10.94.1.2 behind Causeway, 10.94.2.2
//! behind strongSwan) and traffic selectors 10.94.1.0/24 === 10.94.2.0/24.
//! Each case checks both ends' view of the SAs and moves traffic between
//! the hosts: Causeway initiating and responding, each IKE and ESP
//! proposal set, rekeys under traffic, strongSwan killed and restarted,
//! and the failures an operator must be able to read in one log line.

use std::time::{Duration, Instant};

use causeway_netns_tests::*;
use lab::strongswan::{Charon, Connection, StartAction};

/// Fields drop in order: the daemons stop before their namespaces go.
struct Interop {
    charon: Charon,
    gw: Option<Gateway>,
    dir: tempfile::TempDir,
    gw_a: Netns,
    _gw_b: Netns,
    host_a: Netns,
    host_b: Netns,
    /// The masquerading router in front of gw-a, when there is one.
    _nat: Option<Netns>,
}

impl Interop {
    fn logs(&self) -> String {
        format!(
            "causewayd:\n{}\ncharon ({}):\n{}",
            self.gw.as_ref().map(|g| g.log_text()).unwrap_or_default(),
            self.charon.log_path().display(),
            self.charon.log_text()
        )
    }

    fn causeway(&self) -> &Gateway {
        self.gw.as_ref().expect("causewayd runs")
    }

    /// causewayd's status of its one IPsec peer.
    fn ipsec_status(&self) -> serde_json::Value {
        let status = lab::api_status(&self.causeway().ifname).unwrap();
        status["ipsec_peers"][0].clone()
    }

    /// Waits until causewayd has a child SA with strongSwan.
    fn wait_up(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.ipsec_status()["up"] == true {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

/// What Causeway's side of a case looks like.
struct Causeway<'a> {
    ike: &'a str,
    esp: &'a str,
    initiate: bool,
    psk_hex: Option<String>,
    /// Causeway's selectors, as its configuration writes them.
    local_ts: &'a str,
    remote_ts: &'a str,
    extra: &'a str,
    /// causewayd's WireGuard key (made up when absent).
    key: Option<causeway_wireguard::StaticSecret>,
    /// The WAN is IPv6 (fd00:18::1 and ::2) instead of 198.18.0.1 and .2.
    wan6: bool,
}

impl Causeway<'_> {
    /// (gw-a's WAN address, gw-b's).
    fn wan(&self) -> (&'static str, &'static str) {
        if self.wan6 {
            ("fd00:18::1", "fd00:18::2")
        } else {
            ("198.18.0.1", "198.18.0.2")
        }
    }
}

impl Default for Causeway<'_> {
    fn default() -> Self {
        Causeway {
            ike: "aes256gcm16-prfsha256-x25519",
            esp: "aes256gcm16",
            initiate: true,
            psk_hex: None,
            local_ts: "10.94.1.0/24",
            remote_ts: "10.94.2.0/24",
            extra: "",
            key: None,
            wan6: false,
        }
    }
}

/// causewayd's configuration for gw-a: one IPsec peer, gw-b.
fn causeway_config(dir: &std::path::Path, ifname: &str, c: &Causeway<'_>, psk: &[u8]) -> std::path::PathBuf {
    let psk_path = dir.join(format!("{ifname}.psk"));
    let hex: String = psk.iter().map(|b| format!("{b:02x}")).collect();
    lab::write_private(&psk_path, &format!("0x{}\n", c.psk_hex.clone().unwrap_or(hex))).unwrap();
    let key = c.key.clone().unwrap_or_else(|| lab::keypair().0);
    let cfg = format!(
        r#"[interface]
name = "{ifname}"
private_key = "{}"
listen_port = 51820
mtu = 1400
install_routes = true

[[peer]]
name = "gw-b"
protocol = "ipsec"
endpoints = ["{}"]
allowed_ips = ["10.94.2.0/24"]
local_id = "gw-a.causeway.test"
remote_id = "gw-b.causeway.test"
psk_file = "{}"
ike_proposals = ["{}"]
esp_proposals = ["{}"]
local_ts = ["{}"]
remote_ts = ["{}"]
encap = "always"
initiate = {}
{}
"#,
        lab::b64(key.as_bytes()),
        c.wan().1,
        psk_path.display(),
        c.ike,
        c.esp,
        c.local_ts,
        c.remote_ts,
        c.initiate,
        c.extra
    );
    let path = dir.join(format!("{ifname}.toml"));
    lab::write_private(&path, &cfg).unwrap();
    path
}

/// Builds the topology; starts the responder first, then the initiator.
fn interop(c: Causeway<'_>, swan: impl FnOnce(Connection) -> Connection) -> Interop {
    interop_on(c, swan, false)
}

/// As `interop`; with `behind_nat`, gw-a (198.19.0.2) reaches the WAN
/// through a masquerading router whose outside address is 198.18.0.1, the
/// address strongSwan expects gw-a at.
fn interop_on(c: Causeway<'_>, swan: impl FnOnce(Connection) -> Connection, behind_nat: bool) -> Interop {
    let gw_a = Netns::new("gw-a").unwrap();
    let gw_b = Netns::new("gw-b").unwrap();
    let nat = if behind_nat {
        Some(masquerading_router(&gw_b, "198.18.0.2", "198.18.0.1", &gw_a, None))
    } else {
        let prefix = if c.wan6 { 64 } else { 24 };
        let (a, b) = c.wan();
        lab::veth(&gw_a, "wan0", &[&format!("{a}/{prefix}")], &gw_b, "wan0", &[&format!("{b}/{prefix}")]).unwrap();
        None
    };
    let host_a = lan(&gw_a, "host-a", "10.94.1");
    let host_b = lan(&gw_b, "host-b", "10.94.2");
    let dir = tempfile::tempdir().unwrap();
    let start = if c.initiate { StartAction::None } else { StartAction::Start };
    let conn = swan(
        Connection::new(c.wan().1, c.wan().0)
            .ids("gw-b.causeway.test", "gw-a.causeway.test")
            .proposals(c.ike, c.esp)
            .traffic(&["10.94.2.0/24"], &["10.94.1.0/24"])
            .encap(true)
            .start_action(start),
    );
    let ifname = lab::unique("cw");
    let path = causeway_config(dir.path(), &ifname, &c, conn.psk());
    let (_, public) = lab::keypair();
    let (gw, charon) = if c.initiate {
        let charon = Charon::start(&gw_b, dir.path(), &conn).unwrap();
        (Gateway::launch(&gw_a, ifname, &path, public).unwrap(), charon)
    } else {
        let gw = Gateway::launch(&gw_a, ifname, &path, public).unwrap();
        (gw, Charon::start(&gw_b, dir.path(), &conn).unwrap())
    };
    Interop { charon, gw: Some(gw), dir, gw_a, _gw_b: gw_b, host_a, host_b, _nat: nat }
}

/// Both ends agree on the SAs, and the hosts reach each other.
fn carries_traffic(p: &Interop, ike_names: &str, esp_names: &str) {
    let timeout = Duration::from_secs(20);
    assert!(p.charon.wait_for_log("CHILD_SA * established with SPIs", timeout).is_ok(), "no CHILD_SA\n{}", p.logs());
    assert!(p.wait_up(timeout), "causewayd has no child SA\n{}", p.logs());
    let list = p.charon.list_sas().unwrap();
    for want in ["ESTABLISHED", "INSTALLED", "TUNNEL-in-UDP", ike_names, &format!("ESP:{esp_names}")] {
        assert!(list.contains(want), "{want:?} missing from swanctl --list-sas:\n{list}");
    }
    let st = p.ipsec_status();
    assert_eq!(st["ike_state"], "established", "{st}");
    // The SPIs strongSwan shows are the ones Causeway installed.
    let child = &st["child_sas"][0];
    for spi in [child["spi_in"].as_str().unwrap(), child["spi_out"].as_str().unwrap()] {
        assert!(list.contains(spi), "SPI {spi} not in swanctl --list-sas:\n{list}\n{st}");
    }
    assert!(p.host_a.wait_for_ping("10.94.2.2", Duration::from_secs(10)), "no ping host to host\n{}", p.logs());
    assert!(p.host_b.ping("10.94.1.2", 3).is_some(), "no ping back\n{}", p.logs());
    let run = lab::iperf3(&p.host_b, &p.host_a, "10.94.2.2", 3, false, &[]).unwrap();
    eprintln!("Causeway to strongSwan, {ike_names} / {esp_names}: {:.3} Gbit/s", run.bits_per_second / 1e9);
    assert!(run.bytes > 1_000_000, "iperf3 moved {} bytes\n{}", run.bytes, p.logs());
    let st = p.ipsec_status();
    assert!(st["rx_bytes"].as_u64().unwrap() > 0 && st["tx_bytes"].as_u64().unwrap() > run.bytes / 2, "{st}");
}

/// Causeway's IKE and ESP proposals, and how `swanctl --list-sas` names
/// them once negotiated.
const PROPOSAL_SETS: [(&str, &str, &str, &str); 4] = [
    ("aes256gcm16-prfsha256-x25519", "aes256gcm16", "AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519", "AES_GCM_16-256"),
    (
        "aes256-sha256-modp2048",
        "aes256-sha256",
        "AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
        "AES_CBC-256/HMAC_SHA2_256_128",
    ),
    ("aes256gcm16-prfsha384-ecp384", "aes256gcm16", "AES_GCM_16-256/PRF_HMAC_SHA2_384/ECP_384", "AES_GCM_16-256"),
    ("aes128gcm16-prfsha256-ecp256", "aes128gcm16", "AES_GCM_16-128/PRF_HMAC_SHA2_256/ECP_256", "AES_GCM_16-128"),
];

/// Causeway behind a NAT, strongSwan outside it: IKE moves to port 4500,
/// ESP travels in UDP through the router's mappings, and the hosts behind
/// both ends reach each other. (kernel-libipsec's `encap = yes` makes
/// strongSwan claim a NAT even without one; here the NAT is real, and
/// strongSwan only ever sees the router's outside address.)
#[test]
fn causeway_behind_a_nat_with_strongswan() {
    let Some(_lab) = lab_or_skip("causeway_behind_a_nat_with_strongswan") else {
        return;
    };
    let p = interop_on(Causeway::default(), |c| c, true);
    carries_traffic(&p, PROPOSAL_SETS[0].2, PROPOSAL_SETS[0].3);
    let st = p.ipsec_status();
    assert_eq!(st["nat"], true, "causewayd saw the NAT: {st}");
    assert!(st["remote"].as_str().unwrap().ends_with(":4500"), "IKE moved to 4500: {st}");
    // strongSwan knows gw-a by the router's outside address only.
    let list = p.charon.list_sas().unwrap();
    assert!(list.contains("198.18.0.1[") && !list.contains("198.19.0.2["), "{list}");
}

/// IKE and ESP in UDP over an IPv6 WAN, Causeway initiating and then
/// responding.
#[test]
fn over_an_ipv6_wan() {
    let Some(_lab) = strongswan_lab("strongswan over_an_ipv6_wan") else {
        return;
    };
    for initiate in [true, false] {
        let p = interop(Causeway { wan6: true, initiate, ..Causeway::default() }, |c| c);
        carries_traffic(&p, PROPOSAL_SETS[0].2, PROPOSAL_SETS[0].3);
        let st = p.ipsec_status();
        assert!(st["remote"].as_str().unwrap().starts_with("[fd00:18::2]:"), "{st}");
        assert_eq!(st["initiator"], initiate, "{st}");
        let list = p.charon.list_sas().unwrap();
        assert!(list.contains("fd00:18::1[") && list.contains("fd00:18::2["), "{list}");
    }
}

/// Each IKE and ESP proposal set, with Causeway initiating.
#[test]
fn causeway_initiates_with_each_proposal_set() {
    let Some(_lab) = strongswan_lab("causeway_initiates_with_each_proposal_set") else {
        return;
    };
    for (ike, esp, ike_names, esp_names) in PROPOSAL_SETS {
        let p = interop(Causeway { ike, esp, ..Causeway::default() }, |c| c);
        carries_traffic(&p, ike_names, esp_names);
    }
}

/// strongSwan initiates; Causeway answers (it does not initiate itself).
#[test]
fn strongswan_initiates_and_causeway_responds() {
    let Some(_lab) = strongswan_lab("strongswan_initiates_and_causeway_responds") else {
        return;
    };
    for &(ike, esp, ike_names, esp_names) in &PROPOSAL_SETS[..2] {
        let p = interop(Causeway { ike, esp, initiate: false, ..Causeway::default() }, |c| c);
        carries_traffic(&p, ike_names, esp_names);
        assert_eq!(p.ipsec_status()["initiator"], false);
    }
}

/// strongSwan rekeys the child SA every 4 s and the IKE SA every 9 s
/// while iperf3 sends UDP at 20 Mbit/s, then pings cross every 10 ms: not
/// one datagram or ping is lost, and both ends see the rekeys.
#[test]
fn rekeys_under_traffic_lose_nothing() {
    let Some(_lab) = strongswan_lab("rekeys_under_traffic_lose_nothing") else {
        return;
    };
    let p = interop(Causeway::default(), |c| {
        c.child_lifetime(Duration::from_secs(4), Duration::from_secs(60))
            .ike_lifetime(Duration::from_secs(9), Duration::from_secs(120))
    });
    assert!(p.wait_up(Duration::from_secs(20)), "no child SA\n{}", p.logs());
    assert!(p.host_a.wait_for_ping("10.94.2.2", Duration::from_secs(10)), "no ping\n{}", p.logs());
    // iperf3 UDP at 20 Mbit/s (well below what the link carries, so a loss
    // would be the rekey's) through at least two child SA rekeys.
    let udp = lab::iperf3_json(&p.host_b, &p.host_a, "10.94.2.2", 10, false, &["-u", "-b", "20M"]).unwrap();
    let sum = &udp["end"]["sum"];
    let (lost, sent) = (sum["lost_packets"].as_u64().unwrap_or(u64::MAX), sum["packets"].as_u64().unwrap_or(0));
    eprintln!("iperf3 UDP across rekeys: {lost} of {sent} lost");
    assert!(sent > 10_000 && lost == 0, "iperf3 UDP lost {lost} of {sent} across rekeys\n{}", p.logs());
    let out = p.host_a.exec("ping", &["-q", "-i", "0.01", "-c", "1500", "-W", "1", "10.94.2.2"]).unwrap_or_default();
    let st = p.ipsec_status();
    eprintln!("ping across rekeys: {}", out.lines().rev().take(2).collect::<Vec<_>>().join(" | "));
    assert!(out.contains(" 0% packet loss"), "packets lost across rekeys:\n{out}\n{st}\n{}", p.logs());
    assert!(st["child_rekeys"].as_u64().unwrap() >= 2, "child SA rekeys: {st}\n{}", p.logs());
    assert!(st["ike_rekeys"].as_u64().unwrap() >= 1, "IKE SA rekeys: {st}\n{}", p.logs());
    assert!(p.charon.count_log("CHILD_SA * rekeyed") >= 1 || p.charon.count_log("rekeyed") >= 2, "{}", p.logs());
}

/// strongSwan killed: Causeway's liveness check (2 s) declares it dead
/// within two intervals of its last packet and shows the peer down; strongSwan restarted: Causeway, the initiator,
/// connects again and traffic flows (INITIAL_CONTACT clears strongSwan's
/// memory of the old SA).
#[test]
fn a_killed_strongswan_is_detected_and_traffic_resumes_after_its_restart() {
    let Some(_lab) = strongswan_lab("a_killed_strongswan_is_detected_and_traffic_resumes_after_its_restart") else {
        return;
    };
    let mut p = interop(Causeway { extra: "dpd_interval = 2", ..Causeway::default() }, |c| c);
    assert!(p.wait_up(Duration::from_secs(20)), "no child SA\n{}", p.logs());
    assert!(p.host_a.wait_for_ping("10.94.2.2", Duration::from_secs(10)), "no ping\n{}", p.logs());
    p.charon.kill();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    while p.ipsec_status()["up"] == true {
        assert!(Instant::now() < deadline, "still up 30 s after strongSwan died\n{}", p.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let detected = killed.elapsed();
    eprintln!("strongSwan's death detected after {detected:?}");
    // Quiet for one interval, then a liveness check that gets one more.
    assert!(detected < Duration::from_secs(2 * 2 + 3), "detected after {detected:?} with dpd_interval = 2");
    assert!(p.causeway().log_text().contains("IKE SA down"), "{}", p.logs());
    p.charon.restart().unwrap();
    let restarted = Instant::now();
    assert!(p.wait_up(Duration::from_secs(30)), "no child SA after strongSwan's restart\n{}", p.logs());
    assert!(p.host_a.wait_for_ping("10.94.2.2", Duration::from_secs(10)), "no ping after restart\n{}", p.logs());
    eprintln!("traffic again {:?} after strongSwan's restart", restarted.elapsed());
}

/// strongSwan deletes its child SA (`swanctl --terminate --child`) and
/// keeps the IKE SA: Causeway asks for a new child SA on that IKE SA
/// (CREATE_CHILD_SA without REKEY_SA) and traffic flows again, where the
/// IKE SA would otherwise have carried nothing until it went away.
#[test]
fn a_child_sa_strongswan_deletes_is_created_anew() {
    let Some(_lab) = strongswan_lab("a_child_sa_strongswan_deletes_is_created_anew") else {
        return;
    };
    let p = interop(Causeway::default(), |c| c);
    assert!(
        p.wait_up(Duration::from_secs(20)),
        "no child SA
{}",
        p.logs()
    );
    assert!(
        p.host_a.wait_for_ping("10.94.2.2", Duration::from_secs(10)),
        "no ping
{}",
        p.logs()
    );
    let first = p.ipsec_status()["child_sas"][0]["spi_in"].clone();
    let ike_spis = p.ipsec_status()["ike_spis"].clone();
    p.charon.swanctl(&["--terminate", "--child", "net"]).unwrap();
    let deleted = Instant::now();
    let deadline = deleted + Duration::from_secs(15);
    let again = loop {
        let st = p.ipsec_status();
        let spi = st["child_sas"][0]["spi_in"].clone();
        if st["up"] == true && !spi.is_null() && spi != first {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "no new child SA 15 s after strongSwan deleted its own
{st}
{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("a new child SA {:?} after strongSwan deleted the old one", deleted.elapsed());
    assert_eq!(again["ike_spis"], ike_spis, "on the same IKE SA: {again}");
    assert!(p.causeway().log_text().contains("IKE SA up without a child SA"), "{}", p.logs());
    assert!(
        p.host_a.wait_for_ping("10.94.2.2", Duration::from_secs(10)),
        "no ping on the new SA
{}",
        p.logs()
    );
    assert!(
        p.host_b.ping("10.94.1.2", 3).is_some(),
        "no ping back
{}",
        p.logs()
    );
    let list = p.charon.list_sas().unwrap();
    let spi = again["child_sas"][0]["spi_in"].as_str().unwrap().to_string();
    assert!(list.contains("INSTALLED") && list.contains(&spi), "strongSwan's view:\n{list}");
}

/// How a case changes strongSwan's side of the connection.
type SwanSide = fn(Connection) -> Connection;

/// One failure each: no SA, one log line that names the cause, and the
/// gateway keeps running.
#[test]
fn failures_are_named_in_one_log_line() {
    let Some(_lab) = strongswan_lab("failures_are_named_in_one_log_line") else {
        return;
    };
    let wrong_psk = Causeway { psk_hex: Some("11".repeat(32)), ..Causeway::default() };
    let cases: [(&str, Causeway<'_>, SwanSide, &str); 3] = [
        ("wrong PSK", wrong_psk, |c| c, "authentication failed"),
        (
            "mismatched proposals",
            Causeway { ike: "aes256-sha256-modp2048", ..Causeway::default() },
            |c| c.proposals("aes256gcm16-prfsha256-x25519", "aes256gcm16"),
            "no proposal chosen",
        ),
        (
            "mismatched traffic selectors",
            Causeway::default(),
            |c| c.traffic(&["10.94.2.0/24"], &["10.77.0.0/16"]),
            "traffic selectors unacceptable",
        ),
    ];
    for (what, causeway, swan, line) in cases {
        let mut p = interop(causeway, swan);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !p.causeway().log_text().contains(line) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = p.causeway().log_text();
        assert!(log.contains(line), "{what}: no \"{line}\" line\n{}", p.logs());
        let st = p.ipsec_status();
        assert_eq!(st["up"], false, "{what}: an SA came up anyway: {st}");
        assert!(st["child_sas"].as_array().unwrap().is_empty(), "{what}: {st}");
        assert!(p.causeway().process.pid() > 0 && p.gw.as_mut().unwrap().process.running(), "{what}: causewayd died");
        eprintln!("{what}: {}", log.lines().find(|l| l.contains(line)).unwrap_or_default());
    }
}

/// Selectors narrowed to TCP, and on the remote side to iperf3's ports,
/// configured on Causeway, which initiates: strongSwan, whose own
/// selectors take every protocol, narrows to them. TCP to those ports
/// crosses; a ping does not, and Causeway counts the echo requests its
/// SA's selectors do not cover instead of sending them.
#[test]
fn selectors_narrowed_to_tcp_ports_carry_that_only() {
    let Some(_lab) = strongswan_lab("selectors_narrowed_to_tcp_ports_carry_that_only") else {
        return;
    };
    let p = interop(
        Causeway { local_ts: "10.94.1.0/24[tcp]", remote_ts: "10.94.2.0/24[tcp/5201-6200]", ..Causeway::default() },
        |c| c,
    );
    let timeout = Duration::from_secs(20);
    assert!(p.charon.wait_for_log("CHILD_SA * established with SPIs", timeout).is_ok(), "no CHILD_SA\n{}", p.logs());
    assert!(p.wait_up(timeout), "causewayd has no child SA\n{}", p.logs());
    let list = p.charon.list_sas().unwrap();
    assert!(
        list.contains("10.94.1.0/24[tcp]") && list.contains("10.94.2.0/24[tcp/5201-6200]"),
        "narrowed in strongSwan too:\n{list}"
    );
    let child = &p.ipsec_status()["child_sas"][0];
    assert_eq!(
        (child["local_ts"].clone(), child["remote_ts"].clone()),
        (serde_json::json!(["10.94.1.0/24[tcp]"]), serde_json::json!(["10.94.2.0/24[tcp/5201-6200]"])),
        "Causeway's status shows the negotiated selectors in the configuration's notation"
    );
    let run = lab::iperf3(&p.host_b, &p.host_a, "10.94.2.2", 2, false, &[]).unwrap();
    assert!(run.bytes > 1_000_000, "TCP to an iperf3 port crossed: {} bytes\n{}", run.bytes, p.logs());
    let outside = || {
        lab::api_status(&p.causeway().ifname).unwrap()["drops"]["outbound_outside_traffic_selectors"].as_u64().unwrap()
    };
    let before = outside();
    assert!(p.host_a.ping("10.94.2.2", 3).is_none(), "a ping crossed an SA narrowed to TCP\n{}", p.logs());
    assert!(outside() >= before + 3, "the echo requests were counted: {} then {}", before, outside());
    // TCP, but to a port outside the range: the SYN is not sent either.
    let before = outside();
    let connect = p.host_a.exec("timeout", &["2", "bash", "-c", "echo > /dev/tcp/10.94.2.2/7000"]);
    assert!(connect.is_err(), "a connection to port 7000 was made\n{}", p.logs());
    assert!(outside() > before, "the SYN to port 7000 was counted: {} then {}", before, outside());
}

/// One causewayd, two kinds of peer at once: strongSwan over IPsec (gw-b)
/// and another Causeway over WireGuard (gw-c, on a second WAN link), each
/// carrying traffic from the host behind gw-a, one after the other and
/// then both at once.
#[test]
fn a_wireguard_peer_and_an_ipsec_peer_on_one_gateway() {
    let Some(_lab) = strongswan_lab("a_wireguard_peer_and_an_ipsec_peer_on_one_gateway") else {
        return;
    };
    let (ka, pa) = lab::keypair();
    let (kc, pc) = lab::keypair();
    let wg_peer = format!(
        "\n[[peer]]\nname = \"gw-c\"\npublic_key = \"{}\"\nendpoints = [\"198.18.1.2:51820\"]\nallowed_ips = [\"10.94.3.0/24\"]\n",
        lab::b64(pc.as_bytes())
    );
    let p = interop(Causeway { key: Some(ka), extra: &wg_peer, ..Causeway::default() }, |c| c);
    let gw_c = Netns::new("gw-c").unwrap();
    lab::veth(&p.gw_a, "wan1", &["198.18.1.1/24"], &gw_c, "wan0", &["198.18.1.2/24"]).unwrap();
    let to_a = PeerSpec::new("gw-a", pa, Some("198.18.1.1:51820"), &["10.94.1.0/24"]);
    let gc = Gateway::start(&gw_c, p.dir.path(), &kc, &["10.94.3.1/24"], 51820, 1400, &[to_a]).unwrap();
    gw_c.ip(&["route", "add", "10.94.1.0/24", "dev", &gc.ifname]).unwrap();
    assert!(p.wait_up(Duration::from_secs(20)), "no child SA\n{}", p.logs());
    assert!(p.host_a.wait_for_ping("10.94.2.2", Duration::from_secs(10)), "no ping over IPsec\n{}", p.logs());
    assert!(p.host_a.wait_for_ping("10.94.3.1", Duration::from_secs(10)), "no ping over WireGuard\n{}", p.logs());
    let ipsec = lab::iperf3(&p.host_b, &p.host_a, "10.94.2.2", 2, false, &[]).unwrap();
    let wg = lab::iperf3(&gw_c, &p.host_a, "10.94.3.1", 2, false, &[]).unwrap();
    eprintln!(
        "one gateway: {:.2} Gbit/s to strongSwan over IPsec, {:.2} Gbit/s to Causeway over WireGuard",
        ipsec.bits_per_second / 1e9,
        wg.bits_per_second / 1e9
    );
    assert!(ipsec.bytes > 1_000_000 && wg.bytes > 1_000_000);
    // Both at once: pings over each while the other moves bulk traffic.
    let (a, b) = (p.host_a.name.clone(), p.host_a.name.clone());
    let ping_ipsec = std::thread::spawn(move || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &a, "ping", "-q", "-i", "0.02", "-c", "100", "10.94.2.2"])
            .output()
    });
    let ping_wg = std::thread::spawn(move || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &b, "ping", "-q", "-i", "0.02", "-c", "100", "10.94.3.1"])
            .output()
    });
    for (what, t) in [("IPsec", ping_ipsec), ("WireGuard", ping_wg)] {
        let out = String::from_utf8_lossy(&t.join().unwrap().unwrap().stdout).to_string();
        assert!(out.contains(" 0% packet loss"), "{what} pings at the same time lost some:\n{out}");
    }
    let st = lab::api_status(&p.causeway().ifname).unwrap();
    // iperf3 sent from host-a: gw-a's transmit counters carry it.
    assert!(st["peers"][0]["tx_bytes"].as_u64().unwrap() > wg.bytes / 2, "WireGuard peer's counters: {st}");
    assert!(st["ipsec_peers"][0]["tx_bytes"].as_u64().unwrap() > ipsec.bytes / 2, "IPsec peer's counters: {st}");
    drop(gc);
}

/// Causeway rekeys, strongSwan answers: child SA lifetime 30 s and IKE SA
/// lifetime 60 s on Causeway's side (its minimums; rekeys start 10–20%
/// before), strongSwan's own far later, while 50 pings a second cross for
/// 58 s: both rekeys happen, initiated by Causeway, and not one ping is lost.
#[test]
fn causeway_initiated_rekeys_with_strongswan_lose_nothing() {
    let Some(_lab) = strongswan_lab("causeway_initiated_rekeys_with_strongswan_lose_nothing") else {
        return;
    };
    let p = interop(Causeway { extra: "child_lifetime = 30\nike_lifetime = 60", ..Causeway::default() }, |c| {
        c.child_lifetime(Duration::from_secs(3000), Duration::from_secs(3600))
            .ike_lifetime(Duration::from_secs(3000), Duration::from_secs(3600))
    });
    assert!(p.wait_up(Duration::from_secs(20)), "no child SA\n{}", p.logs());
    assert!(p.host_a.wait_for_ping("10.94.2.2", Duration::from_secs(10)), "no ping\n{}", p.logs());
    let out = p.host_a.exec("ping", &["-q", "-i", "0.02", "-c", "2900", "-W", "1", "10.94.2.2"]).unwrap_or_default();
    let st = p.ipsec_status();
    eprintln!("ping across Causeway's rekeys: {}", out.lines().rev().take(2).collect::<Vec<_>>().join(" | "));
    assert!(out.contains(" 0% packet loss"), "packets lost across rekeys:\n{out}\n{st}\n{}", p.logs());
    assert!(st["child_rekeys"].as_u64().unwrap() >= 1, "child SA rekeys: {st}\n{}", p.logs());
    assert!(st["ike_rekeys"].as_u64().unwrap() >= 1, "IKE SA rekeys: {st}\n{}", p.logs());
    assert_eq!(st["initiator"], true);
    // strongSwan's lifetimes are far off: these rekeys were Causeway's.
    assert!(p.charon.count_log("rekeyed") + p.charon.count_log("rekeying") >= 1, "{}", p.logs());
}

/// `tunctl peer rekey --ike` and `tunctl peer reset` against strongSwan:
/// the rekey gives the child SA and the IKE SA new SPIs while pings every
/// 20 ms lose nothing; the reset deletes the SAs at both ends (charon
/// hears the Delete) and Causeway, the initiator, sets up new ones at
/// once, which carry pings.
#[test]
fn tunctl_rekey_and_reset_with_strongswan() {
    let Some(_lab) = strongswan_lab("tunctl_rekey_and_reset_with_strongswan") else {
        return;
    };
    let p = interop(Causeway::default(), |c| c);
    assert!(p.wait_up(Duration::from_secs(20)), "no child SA\n{}", p.logs());
    assert!(p.host_a.wait_for_ping("10.94.2.2", Duration::from_secs(10)), "no ping\n{}", p.logs());
    let ifname = p.causeway().ifname.clone();
    let before = p.ipsec_status();
    let host = &p.host_a;
    let out = std::thread::scope(|s| {
        let ping = s.spawn(|| host.exec("ping", &["-q", "-i", "0.02", "-c", "200", "-W", "1", "10.94.2.2"]));
        std::thread::sleep(Duration::from_secs(1));
        let said = tunctl_ok(&p.gw_a, &["peer", "rekey", &ifname, "gw-b", "--ike"]);
        assert!(said.contains("gw-b: rekeying 1 child SA and the IKE SA"), "{said}");
        ping.join().unwrap().unwrap_or_default()
    });
    let after = p.ipsec_status();
    eprintln!("ping across the requested rekeys: {}", out.lines().rev().take(2).collect::<Vec<_>>().join(" | "));
    assert!(out.contains(" 0% packet loss"), "packets lost across the rekeys:\n{out}\n{after}\n{}", p.logs());
    assert_ne!(after["ike_spis"], before["ike_spis"], "a new IKE SA\n{after}");
    assert_ne!(after["child_sas"][0]["spi_in"], before["child_sas"][0]["spi_in"], "a new child SA\n{after}");
    assert!(p.charon.count_log("rekeyed") >= 1, "{}", p.logs());

    let said = tunctl_ok(&p.gw_a, &["peer", "reset", &ifname, "gw-b"]);
    assert!(said.contains("gw-b: IKE SA and its child SAs deleted, the peer told; setting up a new one now"), "{said}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(p.ipsec_status()["up"] == true && p.ipsec_status()["ike_spis"] != after["ike_spis"]) {
        assert!(Instant::now() < deadline, "no new SA after the reset\n{}", p.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(p.host_a.wait_for_ping("10.94.2.2", Duration::from_secs(10)), "no ping after the reset\n{}", p.logs());
    assert!(p.charon.count_log("received DELETE for IKE_SA") >= 1, "charon heard the Delete\n{}", p.logs());
    assert!(p.charon.count_log("IKE_SA * established") >= 2, "charon set up a second IKE SA\n{}", p.logs());
}

/// Both ends initiate, as an SRX set to establish its tunnels immediately
/// and a Causeway gateway (which initiates when it has the peer's address)
/// do after a shared power event. Staged so that both initiations are
/// real: after a `tunctl peer reset`, Causeway's IKE_SA_INIT requests are
/// held back (dropped on the way out, its answers pass) while charon
/// initiates and sets up its IKE SA with Causeway as the responder; then
/// Causeway's retransmitted request is let through, so Causeway sets up a
/// second IKE SA as the initiator. (Launching both at once never crossed
/// them here: Causeway's SA was always up before charon began, and charon
/// then declined its duplicate child.) However the two ends resolve the
/// pair (strongSwan's uniqueness check, Causeway's INITIAL_CONTACT rule),
/// they must settle on SAs both hold: every child SA Causeway shows is one
/// charon has installed, and pings both ways lose nothing.
#[test]
fn both_ends_initiating_settle_on_shared_sas() {
    let Some(_lab) = strongswan_lab("both_ends_initiating_settle_on_shared_sas") else {
        return;
    };
    let p = interop(Causeway::default(), |c| c);
    assert!(p.wait_up(Duration::from_secs(20)), "no child SA\n{}", p.logs());
    let ifname = p.causeway().ifname.clone();
    // IKE_SA_INIT (exchange 34) requests (response flag 0x20 clear): the
    // UDP payload's bytes 18 and 19 (the IKE header's exchange and flags).
    let hold =
        ["OUTPUT", "-p", "udp", "--dport", "500", "-m", "u32", "--u32", "0>>22&0x3C@24&0xFF20=0x2200", "-j", "DROP"];
    p.gw_a.exec("iptables", &[&["-A"], &hold[..]].concat()).unwrap();
    let said = tunctl_ok(&p.gw_a, &["peer", "reset", &ifname, "gw-b"]);
    assert!(said.contains("setting up a new one now"), "{said}");
    std::thread::sleep(Duration::from_millis(300));
    let initiated = p.charon.initiate("net");
    let counters = p.gw_a.exec("iptables", &["-L", "OUTPUT", "-v", "-x", "-n"]).unwrap_or_default();
    p.gw_a.exec("iptables", &[&["-D"], &hold[..]].concat()).unwrap();
    let held: u64 = counters
        .lines()
        .find(|l| l.contains("u32"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(held > 0, "Causeway's own IKE_SA_INIT was held back:\n{counters}");
    assert!(initiated.is_ok(), "charon's initiation: {initiated:?}\n{}", p.logs());
    // Causeway's next retransmission, then what either end makes of the
    // pair (a uniqueness delete, a Delete answered).
    std::thread::sleep(Duration::from_secs(8));
    let st = p.ipsec_status();
    let list = p.charon.list_sas().unwrap();
    eprintln!(
        "{held} IKE_SA_INIT held back; then Causeway's IKE SA {} ({}), charon lists {} IKE SA(s) and {} child SA(s), \
         logged {} uniqueness delete(s) and {} DELETE(s) received",
        st["ike_spis"],
        if st["initiator"] == true { "its own" } else { "charon's" },
        list.lines().filter(|l| l.contains("ESTABLISHED")).count(),
        list.lines().filter(|l| l.contains("INSTALLED")).count(),
        p.charon.count_log("deleting duplicate IKE_SA"),
        p.charon.count_log("received DELETE for IKE_SA"),
    );
    assert_eq!(st["up"], true, "not up after settling\n{st}\n{list}\n{}", p.logs());
    let children = st["child_sas"].as_array().unwrap();
    assert!(!children.is_empty(), "no child SA\n{st}");
    for child in children {
        for spi in [child["spi_in"].as_str().unwrap(), child["spi_out"].as_str().unwrap()] {
            assert!(list.contains(spi), "SPI {spi} not installed at charon:\n{list}\n{st}\n{}", p.logs());
        }
    }
    let (host_a, host_b) = (&p.host_a, &p.host_b);
    let (there, back) = std::thread::scope(|s| {
        let there = s.spawn(|| host_a.exec("ping", &["-q", "-i", "0.02", "-c", "100", "-W", "1", "10.94.2.2"]));
        let back = s.spawn(|| host_b.exec("ping", &["-q", "-i", "0.02", "-c", "100", "-W", "1", "10.94.1.2"]));
        (there.join().unwrap().unwrap_or_default(), back.join().unwrap().unwrap_or_default())
    });
    for (way, out) in [("there", &there), ("back", &back)] {
        assert!(
            out.contains(" 0% packet loss"),
            "pings {way} lost:\n{out}\n{}\n{list}\n{}",
            p.ipsec_status(),
            p.logs()
        );
    }
}
