//! Two Causeway gateways over IPsec: raw ESP (IP protocol 50) when no NAT
//! lies between them, as an SRX sends it, and ESP in UDP (port 4500) with
//! `encap = "always"`, over an IPv4 and over an IPv6 WAN. The packets on the WAN are captured and decrypted
//! by an independent implementation (scapy's ESP, given the keys from
//! causewayd's key log), so the wire format is checked by someone else's
//! code, not only by our own other end. tunctl and the metrics show the
//! peer; a WireGuard peer on the same interface keeps working.

use std::path::Path;
use std::time::{Duration, Instant};

use causeway_netns_tests::*;

/// Decrypts every ESP packet of a capture with scapy and prints, per
/// packet, "SPI inner-src inner-dst inner-protocol", or "FAIL ..." when a
/// packet does not decrypt. Debian's python3 (where python3-scapy is).
const DECODER: &str = r#"
import csv, sys
from scapy.all import rdpcap, IP, IPv6, UDP, ESP
from scapy.layers.ipsec import SecurityAssociation
sas = {}
for row in csv.reader(open(sys.argv[1])):
    family, src, dst, spi, encr, key, integ, ikey = row
    key = bytes.fromhex(key[2:])
    if encr.startswith("AES-GCM"):
        sa = SecurityAssociation(ESP, spi=int(spi, 16), crypt_algo="AES-GCM", crypt_key=key, auth_algo="NULL")
    else:
        sa = SecurityAssociation(ESP, spi=int(spi, 16), crypt_algo="AES-CBC", crypt_key=key,
                                 auth_algo="SHA2-256-128", auth_key=bytes.fromhex(ikey[2:]))
    sas[int(spi, 16)] = sa
for p in rdpcap(sys.argv[2]):
    if IP in p:
        ip, outer_layer, proto = p[IP], IP, p[IP].proto
    elif IPv6 in p:
        ip, outer_layer, proto = p[IPv6], IPv6, p[IPv6].nh
    else:
        continue
    if proto == 50:
        esp = outer_layer(bytes(ip))
        encap = "esp"
    elif UDP in p and p[UDP].dport == 4500 and bytes(p[UDP].payload)[:4] != b"\0\0\0\0":
        if outer_layer is IP:
            esp = IP(src=ip.src, dst=ip.dst, proto=50) / ESP(bytes(p[UDP].payload))
        else:
            esp = IPv6(src=ip.src, dst=ip.dst, nh=50) / ESP(bytes(p[UDP].payload))
        encap = "udp"
    else:
        continue
    spi = esp[ESP].spi
    if spi not in sas:
        print("FAIL unknown-spi %08x" % spi)
        continue
    try:
        # Tunnel mode: what decrypts is the outer header (next header 4)
        # followed by the inner packet.
        outer = sas[spi].decrypt(esp)
        inner = IP(bytes(outer[outer_layer].payload))
        wan = "ipv6" if outer_layer is IPv6 else "ipv4"
        print("%08x %s %s %s %s %s %d" % (spi, ip.src, wan, encap, inner.src, inner.dst, inner.proto))
    except Exception as e:
        print("FAIL %08x %s" % (spi, e))
"#;

struct Pair {
    ga: Gateway,
    gb: Gateway,
    dir: tempfile::TempDir,
    a: Netns,
    b: Netns,
}

/// Gateways a (198.18.0.1, or fd00:18::1 on an IPv6 WAN; tunnel
/// 10.96.0.1) and b (.2 or ::2, 10.96.0.2); a initiates. Both log their
/// ESP keys.
fn pair(wan: Wan, encap: &str, ike: &str, esp: &str) -> Pair {
    let ((a, b), addrs) = match wan {
        Wan::V4 => (two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap(), ["198.18.0.2", "198.18.0.1"]),
        Wan::V6 => (two_sites(&["fd00:18::1/64"], &["fd00:18::2/64"]).unwrap(), ["fd00:18::2", "fd00:18::1"]),
    };
    start_pair(a, b, addrs, encap, ike, esp, "")
}

#[derive(Clone, Copy, PartialEq)]
enum Wan {
    V4,
    V6,
}

/// Starts b, then a, in the namespaces given: `addrs` are the addresses
/// each sees the other at (a's view first).
fn start_pair(a: Netns, b: Netns, addrs: [&str; 2], encap: &str, ike: &str, esp: &str, extra: &str) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let psk = dir.path().join("shared.psk");
    lab::write_private(&psk, "this pre-shared key is only for this test\n").unwrap();
    let start = |ns: &Netns, me: u8, peer: u8, peer_addr: &str| {
        let ifname = lab::unique("cw");
        let (key, public) = lab::keypair();
        let cfg = format!(
            r#"[interface]
name = "{ifname}"
private_key = "{}"
addresses = ["10.96.0.{me}/24"]

[[peer]]
name = "site{peer}"
protocol = "ipsec"
endpoints = ["{peer_addr}"]
allowed_ips = ["10.96.0.{peer}/32"]
local_id = "site{me}.causeway.test"
remote_id = "site{peer}.causeway.test"
psk_file = "{}"
ike_proposals = ["{ike}"]
esp_proposals = ["{esp}"]
encap = "{encap}"
initiate = {}
{extra}
"#,
            lab::b64(key.as_bytes()),
            psk.display(),
            me == 1
        );
        let path = dir.path().join(format!("{ifname}.toml"));
        lab::write_private(&path, &cfg).unwrap();
        Gateway::launch(ns, ifname, &path, public).unwrap()
    };
    let gb = start(&b, 2, 1, addrs[1]);
    let ga = start(&a, 1, 2, addrs[0]);
    Pair { ga, gb, dir, a, b }
}

/// Captures the WAN of `ns` while `during` runs; the pcap's path.
fn capture(ns: &Netns, dir: &Path, during: impl FnOnce()) -> std::path::PathBuf {
    let pcap = dir.join("wan.pcap");
    let _ = std::fs::remove_file(&pcap);
    let mut dumpcap = ns
        .spawn(
            "dumpcap",
            "dumpcap",
            &["-q", "-i", "wan0", "-f", "esp or udp port 4500", "-w", pcap.to_str().unwrap()],
            None,
        )
        .unwrap();
    // dumpcap writes the file's header once it captures.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pcap.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    during();
    // dumpcap writes what it reads in blocks, up to a buffer timeout late,
    // and drops what it has not read when stopped: the capture holds
    // everything once the file has stopped growing for a while.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut len, mut since) = (0, Instant::now());
    while Instant::now() < deadline {
        let now_len = std::fs::metadata(&pcap).map_or(0, |m| m.len());
        if now_len != len {
            (len, since) = (now_len, Instant::now());
        } else if since.elapsed() >= Duration::from_millis(1500) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    dumpcap.stop();
    pcap
}

/// Decrypts the ESP packets of a capture with scapy; its lines, "SPI
/// outer-source WAN-family encapsulation inner-source inner-destination
/// inner-protocol" per packet, after checking none failed.
fn decode(keylog: &Path, pcap: &Path) -> String {
    let decoded = std::process::Command::new("/usr/bin/python3")
        .args(["-c", DECODER, keylog.to_str().unwrap(), pcap.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&decoded.stdout).into_owned();
    assert!(decoded.status.success(), "scapy failed: {}", String::from_utf8_lossy(&decoded.stderr));
    assert!(!text.contains("FAIL"), "packets scapy could not decrypt:\n{text}");
    text
}

fn exercise(wan: Wan, encap: &str, ike: &str, esp: &str) {
    let Some(lab) = lab_or_skip(&format!("ipsec_pair {encap} {esp}")) else {
        return;
    };
    lab::require("dumpcap", "tshark").unwrap();
    // In a folder removed on drop, so a failed test leaves no keys behind.
    let keydir = tempfile::tempdir().unwrap();
    let keylog = keydir.path().join("esp-keys");
    lab.child_env("CAUSEWAY_ESP_KEYLOG", keylog.to_str().unwrap());
    let mut p = pair(wan, encap, ike, esp);
    assert!(p.a.wait_for_ping("10.96.0.2", Duration::from_secs(15)), "no ping through IPsec\n{}", logs(&p));

    let pcap = capture(&p.b, p.dir.path(), || {
        assert!(p.a.exec("ping", &["-q", "-i", "0.01", "-c", "50", "10.96.0.2"]).unwrap().contains(" 0% packet loss"));
    });
    let text = decode(&keylog, &pcap);
    let want_encap = if encap == "always" { "udp" } else { "esp" };
    let outer = if wan == Wan::V6 { "ipv6" } else { "ipv4" };
    let seen = |src: &str, dst: &str| {
        let line = format!("{outer} {want_encap} {src} {dst} 1");
        text.lines().filter(|l| l.ends_with(&line)).count()
    };
    let (requests, replies) = (seen("10.96.0.1", "10.96.0.2"), seen("10.96.0.2", "10.96.0.1"));
    assert!(requests >= 50 && replies >= 50, "scapy decrypted {requests} requests, {replies} replies:\n{text}");
    eprintln!("{outer} {encap}/{esp}: scapy decrypted {requests} echo requests and {replies} replies from the capture");

    // tunctl shows the peer with its child SA and encapsulation.
    let peers = tunctl_ok(&p.a, &["peers", &p.ga.ifname]);
    assert!(peers.contains("site2") && peers.contains(want_encap) && peers.contains(esp), "{peers}");
    eprintln!("tunctl peers:\n{peers}");
    let json: serde_json::Value = serde_json::from_str(&tunctl_ok(&p.a, &["peers", &p.ga.ifname, "--json"])).unwrap();
    let peer = &json[0];
    assert_eq!((peer["protocol"].as_str(), peer["up"].as_bool()), (Some("ipsec"), Some(true)), "{json}");
    assert_eq!(peer["child_sas"][0]["encapsulation"], want_encap, "{json}");

    // Throughput both ways, for the record.
    let up = lab::iperf3(&p.b, &p.a, "10.96.0.2", 3, false, &[]).unwrap();
    eprintln!("Causeway to Causeway over {want_encap} {esp}: {:.2} Gbit/s", up.bits_per_second / 1e9);
    assert!(up.bytes > 1_000_000, "iperf3 moved {} bytes", up.bytes);
    // The key log is the operator's to read only.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&keylog).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(p.ga.process.stop(), Some(0), "clean exit");
    assert_eq!(p.gb.process.stop(), Some(0), "clean exit");
}

#[test]
fn raw_esp_aes_gcm_decrypted_by_scapy() {
    exercise(Wan::V4, "auto", "aes256gcm16-prfsha256-x25519", "aes256gcm16");
}

#[test]
fn esp_in_udp_aes_cbc_decrypted_by_scapy() {
    exercise(Wan::V4, "always", "aes256-sha256-modp2048", "aes256-sha256");
}

/// IKE and raw ESP over an IPv6 WAN: an IPv6 raw socket hands over no IP
/// header, so this is a receive path of its own (`raw_esp.rs`).
#[test]
fn raw_esp_over_ipv6_decrypted_by_scapy() {
    exercise(Wan::V6, "auto", "aes256gcm16-prfsha384-ecp384", "aes256gcm16");
}

#[test]
fn esp_in_udp_over_ipv6_decrypted_by_scapy() {
    exercise(Wan::V6, "always", "aes256gcm16-prfsha256-x25519", "aes256gcm16");
}

/// A responder with two IPv6 addresses on its WAN, asked for IKE on the
/// one the kernel would not pick itself (deprecated, so source address
/// selection avoids it): its raw ESP leaves from the address IKE used, as
/// the peer expects, not from the kernel's choice.
#[test]
fn raw_esp_leaves_from_the_address_ike_used() {
    let Some(lab) = lab_or_skip("ipsec_pair raw_esp_leaves_from_the_address_ike_used") else {
        return;
    };
    // In a folder removed on drop, so a failed test leaves no keys behind.
    let keydir = tempfile::tempdir().unwrap();
    let keylog = keydir.path().join("esp-keys");
    lab.child_env("CAUSEWAY_ESP_KEYLOG", keylog.to_str().unwrap());
    let (initiator, responder) = two_sites(&["fd00:18::2/64"], &["fd00:18::1/64"]).unwrap();
    responder.ip(&["addr", "add", "fd00:18::3/64", "dev", "wan0", "nodad", "preferred_lft", "0"]).unwrap();
    let p = start_pair(
        initiator,
        responder,
        ["fd00:18::3", "fd00:18::2"],
        "auto",
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16",
        "",
    );
    let logs = || format!("initiator:\n{}\nresponder:\n{}", p.ga.log_text(), p.gb.log_text());
    assert!(p.a.wait_for_ping("10.96.0.2", Duration::from_secs(15)), "no ping through IPsec\n{}", logs());
    let pcap = capture(&p.a, p.dir.path(), || {
        assert!(p.a.exec("ping", &["-q", "-i", "0.01", "-c", "20", "10.96.0.2"]).unwrap().contains(" 0% packet loss"));
    });
    let text = decode(&keylog, &pcap);
    let replies: Vec<&str> = text.lines().filter(|l| l.ends_with(" esp 10.96.0.2 10.96.0.1 1")).collect();
    assert!(replies.len() >= 20, "scapy decrypted {} replies:\n{text}", replies.len());
    assert!(
        replies.iter().all(|l| l.split(' ').nth(1) == Some("fd00:18::3")),
        "ESP from the responder left from another address than IKE's:\n{text}"
    );
    eprintln!("{} ESP replies, all from fd00:18::3", replies.len());
}

fn logs(p: &Pair) -> String {
    format!("a:\n{}\nb:\n{}", p.ga.log_text(), p.gb.log_text())
}

/// A pair with site a behind a masquerading router whose UDP mappings
/// last 3 s (b knows a by the router's outside address), its peers
/// configured with `extra`, once a ping has crossed; and the router.
fn pair_behind_a_nat(extra: &str) -> (Pair, Netns) {
    let b = Netns::new("b").unwrap();
    let a = Netns::new("a").unwrap();
    let router = masquerading_router(&b, "198.18.0.1", "198.18.0.2", &a, Some(3));
    let (ike, esp) = ("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    let p = start_pair(a, b, ["198.18.0.1", "198.18.0.2"], "auto", ike, esp, extra);
    assert!(p.a.wait_for_ping("10.96.0.2", Duration::from_secs(15)), "no ping through the NAT\n{}", logs(&p));
    (p, router)
}

/// Site a behind a masquerading router whose UDP mappings last 3 s: IKE
/// detects the NAT and moves to port 4500, ESP goes inside UDP though
/// `encap = "auto"`, and a's NAT keepalives (every second here) keep the
/// mapping, so b still reaches a after 7 quiet seconds.
#[test]
fn through_a_nat_esp_moves_into_udp_and_keepalives_hold_the_mapping() {
    let Some(_lab) = lab_or_skip("through_a_nat_esp_moves_into_udp_and_keepalives_hold_the_mapping") else {
        return;
    };
    let (p, router) = pair_behind_a_nat("nat_keepalive = 1");
    for (ns, gw) in [(&p.a, &p.ga), (&p.b, &p.gb)] {
        let st = lab::api_status(&gw.ifname).unwrap();
        let peer = &st["ipsec_peers"][0];
        assert_eq!(peer["nat"], true, "the NAT was detected: {peer}");
        assert_eq!(peer["child_sas"][0]["encapsulation"], "udp", "ESP inside UDP: {peer}");
        assert!(peer["remote"].as_str().unwrap().ends_with(":4500"), "IKE moved to 4500: {peer}");
        let _ = ns;
    }
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        p.b.ping("10.96.0.1", 3).is_some(),
        "after 7 quiet seconds b still reaches a through the NAT\n{}",
        logs(&p)
    );
    drop(router);
}

/// Site a behind a masquerading router whose UDP mapping changes: after
/// 4 quiet seconds (no keepalives here) the 3 s mapping is gone, and the
/// router now maps a's traffic to ports 40000-40100. a's next ESP moves b's
/// child SA to the new mapping (b is not behind a NAT, a is), and b's IKE
/// SA follows it too, so b's own IKE requests (liveness checks, rekeys)
/// would not go to the mapping a left. Pings cross both ways after.
#[test]
fn a_nat_remapping_the_initiator_moves_the_responders_esp_and_ike() {
    let Some(_lab) = lab_or_skip("a_nat_remapping_the_initiator_moves_the_responders_esp_and_ike") else {
        return;
    };
    // No liveness check either: one from a's new mapping would move b's
    // IKE SA before a's ESP does.
    let (p, router) = pair_behind_a_nat("nat_keepalive = 0\ndpd_interval = 60");
    let ike_remote = |p: &Pair| {
        let st = lab::api_status(&p.gb.ifname).unwrap();
        st["ipsec_peers"][0]["remote"].as_str().unwrap().parse::<std::net::SocketAddr>().unwrap()
    };
    let before = ike_remote(&p);
    assert_eq!(before.ip().to_string(), "198.18.0.2", "b sees a as the router");
    router
        .exec(
            "iptables",
            &[
                "-t",
                "nat",
                "-I",
                "POSTROUTING",
                "1",
                "-o",
                "up0",
                "-p",
                "udp",
                "-j",
                "MASQUERADE",
                "--to-ports",
                "40000-40100",
            ],
        )
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert!(p.a.ping("10.96.0.2", 3).is_some(), "a reaches b from its new mapping\n{}", logs(&p));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut now = ike_remote(&p);
    while !(40000..=40100).contains(&now.port()) {
        assert!(Instant::now() < deadline, "b's IKE SA stayed at {now} (was {before})\n{}", logs(&p));
        std::thread::sleep(Duration::from_millis(100));
        now = ike_remote(&p);
    }
    eprintln!("b's IKE SA moved from {before} to {now}");
    assert!(p.gb.log_text().contains("IKE follows the peer"), "{}", logs(&p));
    assert!(p.b.ping("10.96.0.1", 3).is_some(), "b reaches a at its new mapping\n{}", logs(&p));
}

/// Live changes: `tunctl peer remove` deletes the IPsec peer's SAs and
/// tells the other end at once (no waiting for its liveness check);
/// `tunctl peer add-file` brings it back from a file of its own, and
/// `tunctl reload` from the configuration file; traffic flows each time.
#[test]
fn removing_and_reloading_an_ipsec_peer() {
    let Some(_lab) = lab_or_skip("removing_and_reloading_an_ipsec_peer") else {
        return;
    };
    let p = pair(Wan::V4, "auto", "aes256gcm16-prfsha256-x25519", "aes256gcm16");
    assert!(p.a.wait_for_ping("10.96.0.2", Duration::from_secs(15)), "no ping\n{}", logs(&p));
    let up = |gw: &Gateway| lab::api_status(&gw.ifname).unwrap()["ipsec_peers"][0]["up"] == true;
    tunctl_ok(&p.a, &["peer", "remove", &p.ga.ifname, "site2"]);
    assert!(lab::api_status(&p.ga.ifname).unwrap()["ipsec_peers"].as_array().unwrap().is_empty());
    let deadline = Instant::now() + Duration::from_secs(3);
    while up(&p.gb) {
        assert!(Instant::now() < deadline, "b still has SAs 3 s after a deleted them\n{}", logs(&p));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(p.gb.log_text().contains("child SA removed"), "{}", logs(&p));
    // The peer's table from a's configuration, as a file of its own.
    let config = std::fs::read_to_string(p.dir.path().join(format!("{}.toml", p.ga.ifname))).unwrap();
    let table = &config[config.find("[[peer]]").expect("a's configuration has its peer")..];
    let peer_file = p.dir.path().join("site2.toml");
    lab::write_private(&peer_file, table).unwrap();
    let file_arg = peer_file.to_str().unwrap();
    let added = tunctl_ok(&p.a, &["peer", "add-file", &p.ga.ifname, file_arg]);
    assert!(added.contains("added site2"), "{added}");
    assert!(p.a.wait_for_ping("10.96.0.2", Duration::from_secs(15)), "no ping after add-file\n{}", logs(&p));
    let again = tunctl(&p.a, &["peer", "add-file", &p.ga.ifname, file_arg]);
    let refusal = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && refusal.contains("name site2 is used by another peer"),
        "a second add of the same peer is refused: {refusal}"
    );
    tunctl_ok(&p.a, &["peer", "remove", &p.ga.ifname, "site2"]);
    let report = tunctl_ok(&p.a, &["reload", &p.ga.ifname]);
    assert!(report.contains("added: site2"), "{report}");
    assert!(p.a.wait_for_ping("10.96.0.2", Duration::from_secs(15)), "no ping after the reload\n{}", logs(&p));
    assert!(up(&p.ga) && up(&p.gb));
}

/// Failover among an IPsec peer's addresses: the first does not answer,
/// so after `failover_after` (2 s) IKE moves to the second and the SA comes
/// up there, without waiting for the first attempt's retransmissions.
#[test]
fn ipsec_fails_over_to_the_next_endpoint() {
    let Some(_lab) = lab_or_skip("ipsec_fails_over_to_the_next_endpoint") else {
        return;
    };
    let (a, b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    // 198.18.0.9 is on a's WAN but nobody has it: IKE_SA_INIT goes unanswered.
    let started = Instant::now();
    let p = start_pair(
        a,
        b,
        ["198.18.0.9\", \"198.18.0.2", "198.18.0.1"],
        "auto",
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16",
        "failover_after = 2",
    );
    assert!(p.a.wait_for_ping("10.96.0.2", Duration::from_secs(15)), "no ping after failover\n{}", logs(&p));
    let took = started.elapsed();
    eprintln!("IPsec up through the second endpoint after {took:?}");
    assert!(took < Duration::from_secs(8), "failover took {took:?}\n{}", logs(&p));
    assert!(p.ga.log_text().contains("trying the next endpoint"), "{}", logs(&p));
    let st = lab::api_status(&p.ga.ifname).unwrap();
    assert_eq!(st["ipsec_peers"][0]["remote"], "198.18.0.2:500", "{st}");
}
