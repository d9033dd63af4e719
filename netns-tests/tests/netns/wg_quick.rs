//! wg-quick bringing up causewayd as its userspace implementation, against
//! a Causeway gateway started from TOML; wg-quick down ends the daemon.

use std::time::Duration;

use causeway_netns_tests::*;

#[test]
fn wg_quick_with_causewayd() {
    let Some(_lab) = lab_or_skip("wg_quick_with_causewayd") else {
        return;
    };
    let (a, b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let _gb = Gateway::start(
        &b,
        dir.path(),
        &kb,
        &["10.67.0.2/24"],
        51820,
        1420,
        &[PeerSpec::new("a", pa, None, &["10.67.0.1/32"])],
    )
    .unwrap();
    let ifname = lab::unique("wq");
    let conf = dir.path().join(format!("{ifname}.conf"));
    lab::write_private(
        &conf,
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.67.0.1/24\nListenPort = 51820\n\n[Peer]\nPublicKey = {}\nEndpoint = 198.18.0.2:51820\nAllowedIPs = 10.67.0.2/32\n",
            b64(ka.as_bytes()),
            b64(pb.as_bytes())
        ),
    )
    .unwrap();
    let exe = lab::causewayd_path().unwrap();
    let up = a
        .command("wg-quick")
        .args(["up", conf.to_str().unwrap()])
        .env("WG_QUICK_USERSPACE_IMPLEMENTATION", &exe)
        .output()
        .unwrap();
    assert!(up.status.success(), "wg-quick up: {}", String::from_utf8_lossy(&up.stderr));
    // The one line causewayd prints when it leaves a daemon behind.
    let said = String::from_utf8_lossy(&up.stderr);
    assert!(said.contains(&format!("causewayd: interface {ifname} is up, served in the background (pid ")), "{said}");
    // wg-quick tries kernel WireGuard first: the interface must be
    // causewayd's, or a kernel with WireGuard would pass this test alone.
    let socket = causeway_gateway::sockets::uapi_socket_path(&ifname);
    assert!(socket.exists(), "causewayd serves {ifname}: no {}", socket.display());
    assert!(lab::api_status(&ifname).is_ok(), "causewayd's control API answers for {ifname}");
    assert!(a.wait_for_ping("10.67.0.2", Duration::from_secs(10)), "traffic through the wg-quick interface");
    let show = a.exec("wg", &["show", &ifname]).unwrap();
    assert!(show.contains("latest handshake") && show.contains("10.67.0.2/32"), "{show}");
    let down = a.command("wg-quick").args(["down", conf.to_str().unwrap()]).output().unwrap();
    assert!(down.status.success(), "wg-quick down: {}", String::from_utf8_lossy(&down.stderr));
    for _ in 0..100 {
        if !socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!socket.exists(), "the detached daemon exited with its interface");
}
