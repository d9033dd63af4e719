//! Bad input on the command line, in files and on stdin: each gets one
//! clear message on stderr and the documented exit code (0 success, 1
//! failure, 2 bad usage), and nothing is left behind.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use causeway_netns_tests::*;

fn run(program: &str, args: &[&str], stdin: &str) -> (i32, String) {
    let exe = lab::causewayd_path().unwrap().with_file_name(program);
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    // Bounded: these run in the host's namespace, where a regression that
    // starts a daemon instead of refusing must fail the test, not hang it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{program} {} still ran after 60 s", args.first().unwrap_or(&""));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code().expect("exited, not killed"), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs a command in a namespace to its end, for at most a minute.
fn bounded(cmd: &mut Command) -> std::process::Output {
    lab::bounded::output_within(cmd, Duration::from_secs(60)).unwrap()
}

/// The message names the problem once: no line repeats a clause of another.
fn says_once(stderr: &str, what: &str) {
    assert_eq!(stderr.matches(what).count(), 1, "{what:?} once in: {stderr}");
}

#[test]
fn usage_errors_exit_2() {
    for (program, args) in [
        ("causewayd", vec!["--bogus"]),
        ("causewayd", vec!["up"]),
        ("causewayd", vec![]),
        ("tunctl", vec!["--bogus"]),
        ("tunctl", vec!["peers"]),
        ("tunctl", vec!["peer", "add", "cw0"]),
    ] {
        let (code, err) = run(program, &args, "");
        assert_eq!(code, 2, "{program} {args:?}: {err}");
        assert!(err.contains("Usage:"), "{program} {args:?} shows usage: {err}");
    }
}

#[test]
fn failures_exit_1_with_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run("causewayd", &["up", "--config", "/nonexistent/gw.toml"], "");
    assert_eq!(code, 1);
    says_once(&err, "No such file or directory");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[interface]\nprivate_key = \"short\"\nmtu = 10\n").unwrap();
    let (code, err) = run("causewayd", &["up", "--config", bad.to_str().unwrap()], "");
    assert_eq!(code, 1);
    assert!(err.contains("bad.toml:2: interface.private_key:"), "{err}");
    assert!(err.contains("bad.toml:3: interface.mtu:"), "every problem at once: {err}");

    // A name given on the command line is checked as one in the file is,
    // before anything is made of it (it also names the lock file).
    let good = dir.path().join("good.toml");
    lab::write_private(&good, &format!("[interface]\nprivate_key = \"{}\"\n", b64(keypair().0.as_bytes()))).unwrap();
    for name in ["a/b", "../../tmp/x", "name-longer-than-15"] {
        let (code, err) = run("causewayd", &["up", "--config", good.to_str().unwrap(), "--interface", name], "");
        assert_eq!(code, 1, "{err}");
        says_once(&err, "is not a valid interface name");
    }
    assert!(!std::path::Path::new("/var/run/causeway/a").exists(), "nothing made of a bad name");

    let (code, err) = run("tunctl", &["show", "cwnotthere0"], "");
    assert_eq!(code, 1);
    says_once(&err, "no causewayd is running for cwnotthere0");
    // It says which interfaces have a daemon, or that none has.
    assert!(err.contains("causewayd runs for ") || err.contains("no causewayd runs here"), "{err}");
    // A name with a '/' would make the socket's path reach elsewhere.
    for name in ["../../tmp/x", "a/b"] {
        let (code, err) = run("tunctl", &["show", name], "");
        assert_eq!(code, 1, "{err}");
        says_once(&err, "is not an interface name");
    }

    let (code, err) = run("tunctl", &["pubkey"], "not a key\n");
    assert_eq!(code, 1);
    assert!(err.contains("stdin is not a private key"), "{err}");

    let (code, err) = run("tunctl", &["import-wg", "/nonexistent/wg0.conf"], "");
    assert_eq!(code, 1);
    says_once(&err, "No such file or directory");
}

#[test]
fn a_refused_start_leaves_nothing_behind() {
    let Some(_lab) = lab_or_skip("a_refused_start_leaves_nothing_behind") else { return };
    let (a, _b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, _) = keypair();
    let ifname = lab::unique("cwx");
    // Valid, except that the metrics address is not ours: the failure comes
    // after the interface exists, which must then go away again.
    let cfg = dir.path().join("x.toml");
    lab::write_private(
        &cfg,
        &format!(
            "[interface]\nname = \"{ifname}\"\nprivate_key = \"{}\"\naddresses = [\"10.91.0.1/24\"]\nmetrics_listen = \"198.18.9.9:9586\"\n",
            b64(ka.as_bytes())
        ),
    )
    .unwrap();
    let out = bounded(a.command(lab::causewayd_path().unwrap()).args(["up", "--config", cfg.to_str().unwrap()]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("9586"), "the message names what failed: {err}");
    let links = a.ip(&["-o", "link", "show"]).unwrap();
    assert!(!links.contains(&ifname), "the interface is gone: {links}");
    for dir in ["/var/run/wireguard", "/var/run/causeway"] {
        assert!(!std::path::Path::new(dir).join(format!("{ifname}.sock")).exists(), "no socket left in {dir}");
    }
}

// Typed by habit for `wg genkey`, this once created an interface named
// genkey and left a detached daemon serving it. Run in a namespace of
// the test's own, so a regression leaves nothing in the host's.
#[test]
fn a_key_command_given_to_causewayd_is_refused_not_served() {
    let Some(_lab) = lab_or_skip("a_key_command_given_to_causewayd_is_refused_not_served") else { return };
    let (a, _b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    for (command, hint) in [("genkey", "`tunctl genkey`"), ("pubkey", "`tunctl pubkey`"), ("setconf", "`wg setconf`")] {
        let out = bounded(a.command(lab::causewayd_path().unwrap()).arg(command).stdin(Stdio::null()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "causewayd {command}: {err}");
        assert!(err.contains(hint) && err.contains("Usage:"), "causewayd {command}: {err}");
        let links = a.ip(&["-o", "link", "show"]).unwrap();
        assert!(!links.contains(command), "no interface {command}: {links}");
    }
}

#[test]
fn a_second_daemon_for_a_running_interface_is_refused() {
    let Some(_lab) = lab_or_skip("a_second_daemon_for_a_running_interface_is_refused") else { return };
    let (a, _b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, _) = keypair();
    let gw = Gateway::start(&a, dir.path(), &ka, &["10.91.0.1/24"], 51820, 1420, &[]).unwrap();
    let queues = |a: &Netns| {
        let link = a.ip(&["-d", "link", "show", &gw.ifname]).unwrap();
        link.split_whitespace().skip_while(|w| *w != "numqueues").nth(1).map(str::to_string)
    };
    let before = queues(&a);
    assert!(before.is_some(), "the TUN reports its queues");

    // The same file again, on another port so only the name collides.
    let text = std::fs::read_to_string(&gw.config).unwrap().replace("listen_port = 51820", "listen_port = 51821");
    let again = dir.path().join("again.toml");
    lab::write_private(&again, &text).unwrap();
    let out = bounded(a.command(lab::causewayd_path().unwrap()).args(["up", "--config", again.to_str().unwrap()]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    says_once(&err, &format!("another causewayd serves interface {}", gw.ifname));

    // The running daemon lost nothing: its queues, its sockets, its API.
    assert_eq!(queues(&a), before, "no queue was attached or taken");
    for path in [
        causeway_gateway::sockets::uapi_socket_path(&gw.ifname),
        causeway_gateway::sockets::api_socket_path(&gw.ifname),
    ] {
        assert!(path.exists(), "{} is still there", path.display());
    }
    assert!(lab::api_status(&gw.ifname).is_ok(), "the first daemon still answers");

    // Any other device by that name is refused the same way.
    let wan = text.replace(&format!("name = \"{}\"", gw.ifname), "name = \"wan0\"");
    std::fs::write(&again, wan).unwrap();
    let out = bounded(a.command(lab::causewayd_path().unwrap()).args(["up", "--config", again.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(1));
    says_once(&String::from_utf8_lossy(&out.stderr), "interface wan0 exists already");
}

/// Two daemons started at the same moment for one name (a unit and a copy
/// started by hand, a retry racing the first try). Both used to find no
/// interface by that name and both went on: the later TUN open attached
/// to the first one's device, and the loser came up, with the same key,
/// before failing on a socket. Now one serves and the other is refused
/// before it creates anything.
#[test]
fn two_daemons_started_together_for_one_name_make_one_interface() {
    let Some(_lab) = lab_or_skip("two_daemons_started_together_for_one_name_make_one_interface") else { return };
    let (a, _b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, _) = keypair();
    for round in 0..8 {
        let ifname = lab::unique("cwt");
        // Ports apart, so that only the name collides.
        let starts: Vec<(std::path::PathBuf, std::path::PathBuf)> = [51830, 51831]
            .iter()
            .map(|port| {
                let cfg = dir.path().join(format!("{round}-{port}.toml"));
                let text = format!(
                    "[interface]\nname = \"{ifname}\"\nprivate_key = \"{}\"\nlisten_port = {port}\naddresses = [\"10.91.0.1/24\"]\n",
                    b64(ka.as_bytes())
                );
                lab::write_private(&cfg, &text).unwrap();
                (cfg, dir.path().join(format!("{round}-{port}.log")))
            })
            .collect();
        let mut daemons: Vec<lab::Process> = starts
            .iter()
            .map(|(cfg, log)| {
                let f = std::fs::File::create(log).unwrap();
                let child = a
                    .command(lab::causewayd_path().unwrap())
                    .args(["up", "--config", cfg.to_str().unwrap()])
                    .env("RUST_LOG", "info")
                    .stdin(Stdio::null())
                    .stdout(f.try_clone().unwrap())
                    .stderr(f)
                    .spawn()
                    .unwrap();
                lab::Process::new(child, "causewayd")
            })
            .collect();
        // The loser ends by itself; the winner serves until stopped.
        let deadline = Instant::now() + Duration::from_secs(30);
        let loser = loop {
            if let Some(i) = (0..2).find(|&i| !daemons[i].running()) {
                break i;
            }
            assert!(Instant::now() < deadline, "round {round}: both daemons still run after 30 s");
            std::thread::sleep(Duration::from_millis(10));
        };
        let winner = 1 - loser;
        let lost = std::fs::read_to_string(&starts[loser].1).unwrap();
        assert_eq!(daemons[loser].wait_exit(Duration::from_secs(5)), Some(1), "round {round}: {lost}");
        says_once(&lost, &format!("another causewayd serves interface {ifname}"));
        assert!(!lost.contains("interface up"), "round {round}: the loser came up first: {lost}");
        assert!(lab::wait_for_socket(&ifname, Duration::from_secs(20)), "round {round}: the winner serves");
        assert!(daemons[winner].running(), "round {round}: the winner runs");
        assert!(lab::api_status(&ifname).is_ok(), "round {round}: the winner answers");
        let link = a.ip(&["-d", "link", "show", &ifname]).unwrap();
        let queues = link.split_whitespace().skip_while(|w| *w != "numqueues").nth(1).unwrap_or("").to_string();
        let workers = causeway_gateway::daemon::default_workers().to_string();
        assert_eq!(queues, workers, "round {round}: the winner's queues only: {link}");
        assert_eq!(daemons[winner].stop(), Some(0), "round {round}");
        let lock = causeway_gateway::sockets::lock_path(&ifname);
        assert!(!lock.exists(), "round {round}: {} removed at exit", lock.display());
    }
}

/// A gateway that ends without its orderly stop (an error out of `serve`
/// before the stop, a panic unwinding through it) lets go of its name only
/// once its workers have closed the TUN's queues. Before, the name lock
/// was released at once while the workers, never told to stop, kept the
/// device: the next start of the same name found the name free and the
/// device still there.
#[test]
fn a_gateway_dropped_without_its_stop_frees_the_device_before_the_name() {
    use causeway_gateway::daemon;
    let Some(_lab) = lab_or_skip("a_gateway_dropped_without_its_stop_frees_the_device_before_the_name") else {
        return;
    };
    let ns = Netns::new("d").unwrap();
    let ifname = lab::unique("cwd");
    let name = ifname.clone();
    let settings = move || daemon::Settings {
        name: name.clone(),
        private_key: None,
        listen_port: 0,
        mtu: 1420,
        addresses: Vec::new(),
        workers: 2,
    };
    let (second, links) = lab::in_netns(&ns, move || {
        for _ in 0..3 {
            drop(daemon::start(settings()).expect("start"));
        }
        let second = daemon::start(settings()).map(|r| r.stop()).map_err(|e| e.to_string());
        let links = std::process::Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
        (second, String::from_utf8_lossy(&links.stdout).into_owned())
    })
    .unwrap();
    assert_eq!(second, Ok(()), "a start after the drops");
    assert!(!links.contains(&ifname), "the device went with the last gateway: {links}");
    let lock = causeway_gateway::sockets::lock_path(&ifname);
    assert!(!lock.exists(), "{} removed", lock.display());
}

/// A daemon that closes the connection before it has read the request
/// (stopping, or refusing one past its size cap) costs tunctl one line on
/// stderr and exit code 1, not a silent death by SIGPIPE.
#[test]
fn a_connection_closed_before_the_request_is_read_is_an_error() {
    let Some(_lab) = lab_or_skip("a_connection_closed_before_the_request_is_read_is_an_error") else { return };
    let name = lab::unique("cwgone");
    let path = causeway_gateway::sockets::api_socket_path(&name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(path);
    // Closed once tunctl has filled the socket's buffer and waits to write
    // the rest of its request.
    // Waits a bounded time: a tunctl that ends without connecting must
    // fail the test below, not leave this thread in accept().
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((conn, _)) => {
                    std::thread::sleep(Duration::from_millis(300));
                    drop(conn);
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("accept: {e}"),
            }
        }
    });
    let (_, key) = keypair();
    let mut args = vec!["peer".to_string(), "add".into(), name.clone(), "--name".into(), "p".into()];
    args.extend(["--public-key".into(), b64(key.as_bytes())]);
    for i in 0..40_000u32 {
        args.extend(["--allowed-ip".into(), format!("10.{}.{}.0/24", i / 256 % 256, i % 256)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = run("tunctl", &args, "");
    server.join().unwrap();
    assert_eq!(code, 1, "{err}");
    says_once(&err, "causewayd closed the connection before reading the request");
}
