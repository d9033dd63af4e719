//! Large configurations through the UAPI, set and listed back with `wg`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use causeway_netns_tests::*;

fn start_userspace(ns: &Netns, dir: &std::path::Path) -> (String, Process) {
    let ifname = lab::unique("cwu");
    let exe = lab::causewayd_path().unwrap();
    let p = ns.spawn("causewayd", &exe, &[&ifname, "--foreground"], Some(&dir.join("daemon.log"))).unwrap();
    assert!(lab::wait_for_socket(&ifname, Duration::from_secs(10)));
    (ifname, p)
}

fn allowed_ips(ns: &Netns, ifname: &str) -> Vec<(String, usize)> {
    ns.exec("wg", &["show", ifname, "allowed-ips"])
        .unwrap()
        .lines()
        .map(|l| {
            let (key, ips) = l.split_once('\t').unwrap();
            (key.to_string(), ips.split_whitespace().filter(|s| *s != "(none)").count())
        })
        .collect()
}

#[test]
fn hundred_thirty_thousand_prefixes_on_one_peer() {
    let Some(_lab) = lab_or_skip("hundred_thirty_thousand_prefixes_on_one_peer") else {
        return;
    };
    let ns = Netns::new("uapi").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ifname, _daemon) = start_userspace(&ns, dir.path());
    let (k, _) = keypair();
    let (_, peer) = keypair();
    let mut conf = format!(
        "[Interface]\nPrivateKey = {}\n\n[Peer]\nPublicKey = {}\nAllowedIPs = ",
        b64(k.as_bytes()),
        b64(peer.as_bytes())
    );
    for i in 0..130_000u32 {
        let _ = write!(conf, "{}10.{}.{}.{}/32", if i > 0 { ", " } else { "" }, i >> 16, (i >> 8) & 255, i & 255);
    }
    conf.push('\n');
    let path = dir.path().join("big.conf");
    lab::write_private(&path, &conf).unwrap();
    let t = Instant::now();
    ns.exec("wg", &["setconf", &ifname, path.to_str().unwrap()]).unwrap();
    eprintln!("wg setconf with 130,000 allowed IPs: {:?}", t.elapsed());
    let listed = allowed_ips(&ns, &ifname);
    assert_eq!(listed, vec![(b64(peer.as_bytes()), 130_000)]);
}

#[test]
fn forty_peers_with_fifty_two_prefixes_each() {
    let Some(_lab) = lab_or_skip("forty_peers_with_fifty_two_prefixes_each") else {
        return;
    };
    let ns = Netns::new("uapi").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ifname, _daemon) = start_userspace(&ns, dir.path());
    let (k, _) = keypair();
    let mut conf = format!("[Interface]\nPrivateKey = {}\nListenPort = 51820\n", b64(k.as_bytes()));
    let mut keys = Vec::new();
    for p in 0..40u32 {
        let (_, public) = keypair();
        keys.push(b64(public.as_bytes()));
        let ips: Vec<String> = (0..52u32).map(|i| format!("10.{}.{}.0/24", 100 + p, i)).collect();
        let _ = write!(
            conf,
            "\n[Peer]\nPublicKey = {}\nEndpoint = 198.18.{}.1:51820\nAllowedIPs = {}\n",
            keys[p as usize],
            p,
            ips.join(", ")
        );
    }
    let path = dir.path().join("forty.conf");
    lab::write_private(&path, &conf).unwrap();
    ns.exec("wg", &["setconf", &ifname, path.to_str().unwrap()]).unwrap();
    let mut listed = allowed_ips(&ns, &ifname);
    listed.sort();
    let mut expected: Vec<(String, usize)> = keys.into_iter().map(|k| (k, 52)).collect();
    expected.sort();
    assert_eq!(listed, expected);
    // showconf round-trips what was set.
    let shown = ns.exec("wg", &["showconf", &ifname]).unwrap();
    assert_eq!(shown.matches("[Peer]").count(), 40);
    assert!(shown.contains("ListenPort = 51820"));
    // And removing a peer removes exactly its prefixes.
    let victim = &listed[0].0;
    ns.exec("wg", &["set", &ifname, "peer", victim, "remove"]).unwrap();
    let after = allowed_ips(&ns, &ifname);
    assert_eq!(after.len(), 39);
    assert!(after.iter().all(|(k, n)| k != victim && *n == 52));
}
