//! Private and pre-shared keys never show: a run with trace logging,
//! traffic, every tunctl view, the control API, metrics, `wg show`, live
//! changes, rejected reloads and a refused start is collected, and no form
//! of any secret (base64, hex, or a 16-character piece of either) appears.
//! The control sockets are root-only.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use causeway_netns_tests::*;
use causeway_wireguard::{PresharedKey, StaticSecret};

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every way a 32-byte secret could be printed, whole or in part.
fn forms(bytes: &[u8; 32]) -> Vec<String> {
    let (b, h) = (b64(bytes), hex(bytes));
    let mut v = vec![b.clone(), h.clone()];
    for i in (0..b.len() - 16).step_by(8) {
        v.push(b[i..i + 16].to_string());
    }
    for i in (0..h.len() - 16).step_by(8) {
        v.push(h[i..i + 16].to_string());
    }
    v
}

fn output(out: std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn secrets_never_appear_in_logs_output_or_metrics() {
    let Some(lab) = lab_or_skip("secrets_never_appear_in_logs_output_or_metrics") else { return };
    // Log everything there is: the daemons and tunctl runs get it (not this
    // process, whose other tests start programs meanwhile).
    lab.child_env("RUST_LOG", "trace");
    let (a, b) = two_sites(&["198.18.0.1/24"], &["198.18.0.2/24"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let psk = PresharedKey::random(&mut rand_core::OsRng);
    let new_psk = PresharedKey::random(&mut rand_core::OsRng);
    let spare = StaticSecret::random(&mut rand_core::OsRng);
    let secrets: Vec<[u8; 32]> =
        vec![*ka.as_bytes(), *kb.as_bytes(), *psk.as_bytes(), *new_psk.as_bytes(), *spare.as_bytes()];

    // a reads its keys from files, b has them inline.
    let key_file = dir.path().join("a.key");
    let psk_file = dir.path().join("ab.psk");
    let new_psk_file = dir.path().join("new.psk");
    lab::write_private(&key_file, &format!("{}\n", b64(ka.as_bytes()))).unwrap();
    lab::write_private(&psk_file, &format!("{}\n", b64(psk.as_bytes()))).unwrap();
    lab::write_private(&new_psk_file, &format!("{}\n", b64(new_psk.as_bytes()))).unwrap();
    let (if_a, if_b) = (lab::unique("cws"), lab::unique("cws"));
    let cfg_a = format!(
        "[interface]\nname = \"{if_a}\"\nprivate_key_file = \"{}\"\naddresses = [\"10.89.0.1/24\"]\n\
         metrics_listen = \"127.0.0.1:9586\"\n\n[[peer]]\nname = \"b\"\npublic_key = \"{}\"\n\
         preshared_key_file = \"{}\"\nendpoints = [\"198.18.0.2:51820\"]\nallowed_ips = [\"10.89.0.2/32\"]\n",
        key_file.display(),
        b64(pb.as_bytes()),
        psk_file.display()
    );
    let cfg_b = format!(
        "[interface]\nname = \"{if_b}\"\nprivate_key = \"{}\"\naddresses = [\"10.89.0.2/24\"]\n\n[[peer]]\n\
         name = \"a\"\npublic_key = \"{}\"\npreshared_key = \"{}\"\nendpoints = [\"198.18.0.1:51820\"]\n\
         allowed_ips = [\"10.89.0.1/32\"]\n",
        b64(kb.as_bytes()),
        b64(pa.as_bytes()),
        b64(psk.as_bytes())
    );
    let (path_a, path_b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
    lab::write_private(&path_a, &cfg_a).unwrap();
    lab::write_private(&path_b, &cfg_b).unwrap();
    let mut ga = Gateway::launch(&a, if_a.clone(), &path_a, pa).unwrap();
    let mut gb = Gateway::launch(&b, if_b.clone(), &path_b, pb).unwrap();
    assert!(a.wait_for_ping("10.89.0.2", Duration::from_secs(10)), "{}", ga.log_text());
    lab::iperf3(&b, &a, "10.89.0.2", 1, false, &[]).unwrap();

    let mut seen = String::new();
    for (ns, ifname) in [(&a, &if_a), (&b, &if_b)] {
        for args in [vec!["show", ifname], vec!["show", ifname, "--json"], vec!["peers", ifname, "--json"]] {
            seen += &tunctl_ok(ns, &args);
        }
        seen += &tunctl_ok(ns, &["peers", ifname]);
        seen += &lab::api_status(ifname).unwrap().to_string();
        seen += &ns.exec("wg", &["show", ifname]).unwrap();
    }
    seen += &scrape_metrics(&a, "/metrics");

    // Live changes carrying secrets, and refusals that must not echo them.
    let spare_pub = b64(spare.public_key().as_bytes());
    let psk_arg = new_psk_file.to_str().unwrap();
    let add = ["peer", "add", &if_a, "--name", "c", "--public-key", &spare_pub, "--preshared-key-file", psk_arg];
    seen += &tunctl_ok(&a, &add);
    seen += &output(tunctl(&a, &["peer", "set", &if_a, "c", "--preshared-key-file", psk_file.to_str().unwrap()]));
    let mut pubkey = Command::new(lab::causewayd_path().unwrap().with_file_name("tunctl"));
    let child = pubkey
        .env("RUST_LOG", "trace")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = child.stderr(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(format!("{}x\n", b64(spare.as_bytes())).as_bytes()).unwrap();
    seen += &output(child.wait_with_output().unwrap());

    // A reload of a broken file: a bad value next to the keys, a key file
    // gone public, and a key with one character changed.
    std::fs::write(&path_a, cfg_a.replace("\"10.89.0.1/24\"", "\"10.89.0.1/99\"")).unwrap();
    seen += &output(tunctl(&a, &["reload", &if_a]));
    std::fs::set_permissions(&psk_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&path_a, &cfg_a).unwrap();
    seen += &output(tunctl(&a, &["reload", &if_a]));
    let mut mangled = b64(kb.as_bytes());
    mangled.replace_range(0..1, if mangled.starts_with('A') { "B" } else { "A" });
    mangled.replace_range(42..43, "!");
    std::fs::write(&path_b, cfg_b.replace(&b64(kb.as_bytes()), &mangled)).unwrap();
    seen += &output(tunctl(&b, &["reload", &if_b]));
    // SAFETY: kill takes a pid and a signal number.
    assert_eq!(unsafe { libc::kill(gb.process.pid() as i32, libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    // A start refused for the same file.
    seen += &output(
        lab::bounded::output_within(
            b.command(lab::causewayd_path().unwrap()).env("RUST_LOG", "trace").args([
                "up",
                "--config",
                path_b.to_str().unwrap(),
            ]),
            Duration::from_secs(60),
        )
        .unwrap(),
    );

    for dir in ["/var/run/wireguard", "/var/run/causeway"] {
        let socket = std::path::Path::new(dir).join(format!("{if_a}.sock"));
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is root-only", socket.display());
    }
    assert_eq!(ga.process.stop(), Some(0));
    assert_eq!(gb.process.stop(), Some(0));
    seen += &ga.log_text();
    seen += &gb.log_text();
    assert!(seen.contains("configuration rejected"), "the refusals were collected: {seen}");
    assert!(seen.len() > 10_000, "trace logs were collected ({} bytes)", seen.len());
    for (i, s) in secrets.iter().enumerate() {
        for form in forms(s) {
            assert!(!seen.contains(&form), "secret #{i} appears as {form:?}");
        }
    }
    // The mangled key is not a key, but it is close enough to leak one.
    assert!(!seen.contains(&mangled[1..20]), "the rejected key text was echoed");
}
