//! What systemd sees: readiness once the interface is up (sd_notify),
//! RELOADING/READY around a SIGHUP reload, STOPPING on SIGTERM, and plain
//! log lines (no terminal colour codes) for the journal.

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;

use causeway_netns_tests::*;

fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notifies_systemd_and_logs_plainly() {
    let Some(_lab) = lab_or_skip("notifies_systemd_and_logs_plainly") else { return };
    let ns = Netns::new("sd").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (k, _) = keypair();
    let ifname = lab::unique("cwsd");
    let cfg = dir.path().join("gw.toml");
    lab::write_private(&cfg, &format!("[interface]\nname = \"{ifname}\"\nprivate_key = \"{}\"\n", b64(k.as_bytes())))
        .unwrap();
    let log = dir.path().join("gw.log");
    let mut child = ns
        .command(lab::causewayd_path().unwrap())
        .args(["up", "--config", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(next(&sock).contains("READY=1"));
    assert!(lab::wait_for_socket(&ifname, Duration::from_secs(1)), "ready means the UAPI socket is up");
    ns.exec("kill", &["-HUP", &child.id().to_string()]).unwrap();
    assert!(next(&sock).contains("RELOADING=1"));
    assert!(next(&sock).contains("READY=1"));
    ns.exec("kill", &["-TERM", &child.id().to_string()]).unwrap();
    assert!(next(&sock).contains("STOPPING=1"));
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("interface up") && text.contains("configuration reloaded"), "{text}");
    assert!(!text.contains('\u{1b}'), "no terminal escape codes in a log file");
}
