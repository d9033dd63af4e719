//! strongSwan to strongSwan through the lab's `Charon` harness, proving the
//! harness before one side becomes Causeway: two gateways on a veth WAN
//! (198.18.0.1 and .2), a host behind each (10.93.1.2 behind gw-a,
//! 10.93.2.2 behind gw-b), one charon per gateway with kernel-libipsec and
//! ESP in UDP, traffic selectors 10.93.1.0/24 === 10.93.2.0/24. Each case
//! checks the SAs (log lines and `swanctl --list-sas`, with the negotiated
//! algorithms), the routes charon installs, ping and iperf3 between the
//! hosts and between the gateways' LAN addresses, the ESP counters, and
//! that nothing is left after the teardown.

use std::path::Path;
use std::time::Duration;

use causeway_netns_tests::*;
use lab::strongswan::{Charon, Connection, StartAction};

/// Fields drop in order: the charons stop (SIGTERM) before their
/// namespaces are deleted.
struct Pair {
    initiator: Charon,
    responder: Charon,
    _dir: tempfile::TempDir,
    gw_a: Netns,
    gw_b: Netns,
    host_a: Netns,
    host_b: Netns,
}

impl Pair {
    /// Both charons' logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "initiator ({}):\n{}\nresponder ({}):\n{}",
            self.initiator.log_path().display(),
            self.initiator.log_text(),
            self.responder.log_path().display(),
            self.responder.log_text()
        )
    }
}

/// Builds the topology and starts the responder (gw-b), then the
/// initiator (gw-a, with `start`), with the given proposals.
fn pair(ike: &str, esp: &str, start: StartAction) -> Pair {
    let gw_a = Netns::new("gw-a").unwrap();
    let gw_b = Netns::new("gw-b").unwrap();
    lab::veth(&gw_a, "wan0", &["198.18.0.1/24"], &gw_b, "wan0", &["198.18.0.2/24"]).unwrap();
    let host_a = lan(&gw_a, "host-a", "10.93.1");
    let host_b = lan(&gw_b, "host-b", "10.93.2");
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::new("198.18.0.1", "198.18.0.2")
        .ids("gw-a.causeway.test", "gw-b.causeway.test")
        .proposals(ike, esp)
        .traffic(&["10.93.1.0/24"], &["10.93.2.0/24"])
        .encap(true)
        .start_action(start);
    let responder = Charon::start(&gw_b, dir.path(), &conn.mirror()).unwrap();
    let initiator = Charon::start(&gw_a, dir.path(), &conn).unwrap();
    Pair { initiator, responder, _dir: dir, gw_a, gw_b, host_a, host_b }
}

/// The bytes a CHILD_SA line of `swanctl --list-sas` counts, such as
/// `in  c2e8c952 (-|0x00000000),  12345 bytes,   100 packets,     0s ago`.
fn sa_bytes(list: &str, direction: &str) -> u64 {
    list.lines()
        .map(str::trim)
        .filter(|l| l.starts_with(direction))
        .filter_map(|l| l.split(',').find(|f| f.trim_end().ends_with(" bytes")))
        .filter_map(|f| f.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

/// `ike_names` and `esp_names`: how `swanctl --list-sas` spells the
/// negotiated algorithms (`AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519`).
fn exercise(ike: &str, esp: &str, ike_names: &str, esp_names: &str) {
    let mut p = pair(ike, esp, StartAction::Start);
    let timeout = Duration::from_secs(20);
    for (side, charon) in [("initiator", &p.initiator), ("responder", &p.responder)] {
        let ike_sa = charon.wait_for_log("IKE_SA * established between", timeout);
        let child_sa = charon.wait_for_log("CHILD_SA * established with SPIs", timeout);
        assert!(ike_sa.is_ok() && child_sa.is_ok(), "{side}: no IKE_SA or CHILD_SA established\n{}", p.logs());
        let list = charon.list_sas().unwrap();
        let esp_names = format!("ESP:{esp_names}");
        let wants = ["ESTABLISHED", "INSTALLED", "TUNNEL-in-UDP", "[4500]", ike_names, &esp_names, "10.93.1.0/24"];
        for want in wants {
            assert!(list.contains(want), "{side}: {want:?} missing from swanctl --list-sas:\n{list}");
        }
    }

    // The routes charon installs itself (see lab/src/strongswan.rs): the
    // rule for table 220 and the remote TS through the TUN, from the
    // gateway's LAN address.
    for (gw, charon, remote, src) in
        [(&p.gw_a, &p.initiator, "10.93.2.0/24", "10.93.1.1"), (&p.gw_b, &p.responder, "10.93.1.0/24", "10.93.2.1")]
    {
        let tun = charon.tun_name().unwrap();
        assert!(gw.ip(&["rule"]).unwrap().contains("lookup 220"), "no rule for table 220");
        let routes = gw.ip(&["route", "show", "table", "220"]).unwrap();
        assert!(
            routes.contains(&format!("{remote} dev {tun}")) && routes.contains(&format!("src {src}")),
            "table 220 lacks {remote} through {tun} from {src}:\n{routes}"
        );
        let link = gw.ip(&["link", "show", &tun]).unwrap();
        assert!(link.contains("mtu 1400"), "libipsec's TUN has MTU 1400: {link}");
    }

    assert!(p.host_a.wait_for_ping("10.93.2.2", Duration::from_secs(10)), "no ping host to host\n{}", p.logs());
    assert!(p.host_b.ping("10.93.1.2", 3).is_some(), "no ping back from host-b");
    assert!(p.gw_a.ping("10.93.2.1", 3).is_some(), "no ping between the gateways' LAN addresses");
    let run = lab::iperf3(&p.host_b, &p.host_a, "10.93.2.2", 3, false, &[]).unwrap();
    eprintln!("strongSwan to strongSwan, host to host: {:.3} Gbit/s ({ike} / {esp})", run.bits_per_second / 1e9);
    assert!(run.bytes > 0, "iperf3 moved nothing");

    // The traffic went through the SAs: each end counts it both ways.
    for (side, charon) in [("initiator", &p.initiator), ("responder", &p.responder)] {
        let list = charon.list_sas().unwrap();
        eprintln!("{side}'s swanctl --list-sas after the traffic:\n{list}");
        let (bytes_in, bytes_out) = (sa_bytes(&list, "in "), sa_bytes(&list, "out "));
        assert!(bytes_in > run.bytes / 2 || bytes_out > run.bytes / 2, "{side}: ESP counters too low:\n{list}");
        assert!(bytes_in > 0 && bytes_out > 0, "{side}: ESP counters:\n{list}");
    }

    let pids = [p.initiator.pid(), p.responder.pid()];
    let names: Vec<String> = [&p.gw_a, &p.gw_b, &p.host_a, &p.host_b].iter().map(|n| n.name.clone()).collect();
    assert_eq!(p.initiator.stop(), Some(0), "initiator's exit\n{}", p.logs());
    assert_eq!(p.responder.stop(), Some(0), "responder's exit\n{}", p.logs());
    assert!(p.gw_a.ip(&["link", "show", "ipsec0"]).is_err(), "charon's TUN outlived it");
    drop(p);
    let left = std::process::Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    for n in &names {
        assert!(!left.lines().any(|l| l.split_whitespace().next() == Some(n)), "namespace {n} left behind");
    }
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "charon {pid} left running");
    }
}

#[test]
fn aes_gcm_x25519() {
    let Some(_lab) = strongswan_lab("aes_gcm_x25519") else {
        return;
    };
    exercise(
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16",
        "AES_GCM_16-256/PRF_HMAC_SHA2_256/CURVE_25519",
        "AES_GCM_16-256",
    );
}

#[test]
fn aes_cbc_sha256_modp2048() {
    let Some(_lab) = strongswan_lab("aes_cbc_sha256_modp2048") else {
        return;
    };
    exercise(
        "aes256-sha256-modp2048",
        "aes256-sha256",
        "AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048",
        "AES_CBC-256/HMAC_SHA2_256_128",
    );
}

/// The harness's own controls: both sides wait (start_action none) until
/// `initiate`; the initiator is killed (SIGKILL: its TUN goes with it) and
/// restarted, and initiates again; the responder replaces the old IKE_SA
/// (INITIAL_CONTACT) and traffic flows again.
#[test]
fn initiate_by_hand_and_restart_after_kill() {
    let Some(_lab) = strongswan_lab("initiate_by_hand_and_restart_after_kill") else {
        return;
    };
    let mut p = pair("aes256gcm16-prfsha256-x25519", "aes256gcm16", StartAction::None);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(p.responder.count_log("IKE_SA * established"), 0, "nothing starts by itself\n{}", p.logs());
    let out = p.initiator.initiate("net").unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert!(out.contains("initiate completed successfully"), "swanctl --initiate said:\n{out}");
    assert!(p.host_a.wait_for_ping("10.93.2.2", Duration::from_secs(10)), "no ping\n{}", p.logs());

    let first_pid = p.initiator.pid();
    p.initiator.kill();
    assert!(!Path::new(&format!("/proc/{first_pid}")).exists(), "the killed charon is gone");
    assert!(p.gw_a.ip(&["link", "show", "ipsec0"]).is_err(), "the TUN went with the killed charon");
    assert!(p.host_a.ping("10.93.2.2", 1).is_none(), "no tunnel, no ping");

    let mark = p.responder.log_mark();
    p.initiator.restart().unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert_ne!(p.initiator.pid(), first_pid);
    assert_eq!(p.initiator.count_log("IKE_SA * established"), 0, "the new run's log starts empty");
    p.initiator.initiate("net").unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    p.responder
        .wait_for_log_after(mark, "CHILD_SA * established with SPIs", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert_eq!(p.responder.count_log("IKE_SA * established"), 2, "the responder saw both IKE_SAs");
    assert!(p.host_a.wait_for_ping("10.93.2.2", Duration::from_secs(10)), "no ping after the restart\n{}", p.logs());
    let list = p.responder.list_sas().unwrap();
    assert_eq!(list.matches("ESTABLISHED").count(), 1, "the old IKE_SA was replaced:\n{list}");
}
