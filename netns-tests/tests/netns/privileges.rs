//! `user = "nobody"`: after setup causewayd runs unprivileged with only
//! CAP_NET_ADMIN, and everything an operator does later still works: traffic,
//! live peer changes with kernel routes, reloads, and a clean exit whose
//! control sockets are removed by the root helper.

use std::time::{Duration, Instant};

use causeway_netns_tests::*;

/// A field of /proc/PID[/task/TID]/status.
fn status_field(path: &str, field: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing in {path}"))
        .trim()
        .to_string()
}

const NET_ADMIN_ONLY: &str = "0000000000001000";

#[test]
fn runs_as_nobody_with_net_admin_only() {
    let Some(_lab) = lab_or_skip("runs_as_nobody_with_net_admin_only") else { return };
    let (a, b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let ga = Gateway::start_with(
        &a,
        dir.path(),
        &ka,
        &["10.84.0.1/24"],
        51820,
        1420,
        &[PeerSpec::new("b", pb, Some("198.18.0.2:51820"), &["10.84.0.2/32"])],
        "install_routes = true\nuser = \"nobody\"\n",
    )
    .unwrap();
    let _gb = Gateway::start(
        &b,
        dir.path(),
        &kb,
        &["10.84.0.2/24", "10.184.0.1/24"],
        51820,
        1420,
        &[PeerSpec::new("a", pa, Some("198.18.0.1:51820"), &["10.84.0.1/32"])],
    )
    .unwrap();
    assert!(a.wait_for_ping("10.84.0.2", Duration::from_secs(10)), "{}", ga.log_text());

    let pid = ga.process.pid();
    let main = format!("/proc/{pid}/status");
    let uids = status_field(&main, "Uid");
    assert!(uids.split_whitespace().all(|u| u == "65534"), "every uid is nobody's: {uids}");
    assert_eq!(status_field(&main, "CapEff"), NET_ADMIN_ONLY);
    assert_eq!(status_field(&main, "CapPrm"), NET_ADMIN_ONLY);
    assert_eq!(status_field(&main, "CapBnd"), NET_ADMIN_ONLY);
    let mut workers = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.starts_with("cw-worker") {
            workers += 1;
            let st = dir.join("status");
            assert_eq!(status_field(st.to_str().unwrap(), "CapEff"), "0000000000000000", "workers hold nothing");
        }
    }
    assert!(workers > 0);

    // Live change after the drop: netlink still accepts the route.
    let if_a = ga.ifname.clone();
    tunctl_ok(&a, &["peer", "set", &if_a, "b", "--allowed-ip", "10.84.0.2/32", "--allowed-ip", "10.184.0.0/24"]);
    assert!(a.wait_for_ping("10.184.0.1", Duration::from_secs(10)), "{}", ga.log_text());

    // A reload reads the file as nobody: the operator hands it over.
    let cfg = std::fs::read_to_string(&ga.config).unwrap();
    std::fs::write(&ga.config, cfg.replace("persistent_keepalive = 0", "persistent_keepalive = 7")).unwrap();
    std::os::unix::fs::chown(&ga.config, Some(65534), Some(65534)).unwrap();
    let reloaded = tunctl_ok(&a, &["reload", &if_a]);
    assert!(reloaded.contains("changed: b (persistent_keepalive"), "{reloaded}");

    // SIGTERM: a clean exit, and the root helper removes both sockets and
    // the name's lock, none of which nobody may remove from a root folder.
    let mut ga = ga;
    let lock = causeway_gateway::sockets::lock_path(&if_a);
    assert!(lock.exists(), "the name is held");
    assert_eq!(ga.process.stop(), Some(0), "{}", ga.log_text());
    let sockets = [
        format!("/var/run/wireguard/{if_a}.sock"),
        format!("/var/run/causeway/{if_a}.sock"),
        lock.display().to_string(),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    while sockets.iter().any(|s| std::path::Path::new(s).exists()) {
        assert!(Instant::now() < deadline, "files left behind: {sockets:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!ga.log_text().contains("ERROR"), "{}", ga.log_text());
}

#[test]
fn an_unknown_user_is_refused_before_anything_is_created() {
    let Some(_lab) = lab_or_skip("an_unknown_user_is_refused_before_anything_is_created") else { return };
    let (a, _b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, _) = keypair();
    let err =
        Gateway::start_with(&a, dir.path(), &ka, &["10.84.0.1/24"], 51820, 1420, &[], "user = \"no-such-user\"\n")
            .err()
            .expect("causewayd must refuse to start");
    // Named where the file says it (`check` reports it the same way).
    assert!(err.to_string().contains("interface.user: no user \"no-such-user\" on this host"), "{err}");
    let links = a.ip(&["-o", "link", "show"]).unwrap();
    assert_eq!(links.lines().count(), 2, "only lo and the WAN veth: {links}");
}

#[test]
fn sockets_are_removed_even_after_sigkill() {
    let Some(_lab) = lab_or_skip("sockets_are_removed_even_after_sigkill") else { return };
    let (a, _b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, _) = keypair();
    let mut ga =
        Gateway::start_with(&a, dir.path(), &ka, &["10.84.0.1/24"], 51820, 1420, &[], "user = \"nobody\"\n").unwrap();
    let sockets = [
        format!("/var/run/wireguard/{}.sock", ga.ifname),
        format!("/var/run/causeway/{}.sock", ga.ifname),
        causeway_gateway::sockets::lock_path(&ga.ifname).display().to_string(),
    ];
    assert!(sockets.iter().all(|s| std::path::Path::new(s).exists()));
    // SAFETY: kill takes a pid and a signal number.
    assert_eq!(unsafe { libc::kill(ga.process.pid() as i32, libc::SIGKILL) }, 0);
    // Bounds on liveness, not speeds. The daemon's exit closes its TUN
    // queues under the kernel's rtnl lock, which namespaces being deleted
    // (by this run's other tests) can hold for seconds on a loaded machine;
    // the helper acts once the exit is complete. Waiting for the two apart
    // says which one a failure is about.
    let exit_started = Instant::now();
    let exited = ga.process.wait_exit(Duration::from_secs(60));
    assert!(!ga.process.running(), "the killed daemon had not exited after 60 s");
    eprintln!("the killed daemon exited after {:?} ({exited:?})", exit_started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(20);
    while sockets.iter().any(|s| std::path::Path::new(s).exists()) {
        let live: Vec<_> = sockets.iter().filter(|s| std::os::unix::net::UnixStream::connect(s).is_ok()).collect();
        assert!(
            Instant::now() < deadline,
            "sockets left behind 20 s after the daemon exited: {sockets:?}; still accepting connections: {live:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
