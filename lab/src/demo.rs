//! The demo (`causeway-demo`, run by scripts/demo.sh): two sites in network namespaces, linked by a WAN veth
//! on 198.18.0.0/15, each with a causewayd gateway; traffic through the
//! tunnel, measured and printed; everything removed afterwards, also on
//! Ctrl-C.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use crate::{self as lab, Netns};

fn config(name: &str, key: &str, tunnel: &str, peer_key: &str, peer_wan: &str, peer_tunnel: &str) -> String {
    format!(
        "[interface]\nname = \"{name}\"\nprivate_key = \"{key}\"\nlisten_port = 51820\naddresses = [\"{tunnel}/24\"]\n\n\
         [[peer]]\nname = \"other-site\"\npublic_key = \"{peer_key}\"\nendpoints = [\"{peer_wan}:51820\"]\nallowed_ips = [\"{peer_tunnel}/32\"]\n"
    )
}

fn field<'a>(dump: &'a str, key: &str) -> Option<&'a str> {
    dump.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{n} B"),
    }
}

pub fn run() -> anyhow::Result<()> {
    if !lab::is_root() {
        bail!("the demo builds network namespaces: run it as root");
    }
    lab::require("ip", "iproute2")?;
    lab::require("iperf3", "iperf3")?;
    lab::require("ping", "iputils-ping")?;
    lab::reap_stale();
    let exe = lab::causewayd_path()?;
    let dir = std::env::temp_dir().join(lab::unique("causeway-demo-"));
    // The folder holds both sites' private keys: removed on Ctrl-C too.
    lab::clean_up_on_interrupt(Some(dir.clone()));
    std::fs::create_dir_all(&dir)?;
    let result = demo(&exe, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn demo(exe: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<()> {
    println!("Causeway demo: two data-centre sites joined by a WireGuard tunnel");
    let a = Netns::new("demo-a")?;
    let b = Netns::new("demo-b")?;
    lab::veth(&a, "wan0", &["198.18.0.1/24"], &b, "wan0", &["198.18.0.2/24"])?;
    let (ka, pa) = lab::keypair();
    let (kb, pb) = lab::keypair();
    let (ia, ib) = (lab::unique("cwa"), lab::unique("cwb"));
    lab::write_private(
        &dir.join("a.toml"),
        &config(&ia, &lab::b64(ka.as_bytes()), "10.99.0.1", &lab::b64(pb.as_bytes()), "198.18.0.2", "10.99.0.2"),
    )?;
    lab::write_private(
        &dir.join("b.toml"),
        &config(&ib, &lab::b64(kb.as_bytes()), "10.99.0.2", &lab::b64(pa.as_bytes()), "198.18.0.1", "10.99.0.1"),
    )?;
    println!("  site A: namespace {}, WAN 198.18.0.1, tunnel 10.99.0.1 on {ia}", a.name);
    println!("  site B: namespace {}, WAN 198.18.0.2, tunnel 10.99.0.2 on {ib}", b.name);

    let cfg_a = dir.join("a.toml");
    let cfg_b = dir.join("b.toml");
    let mut gw_a =
        a.spawn("gateway A", exe, &["up", "--config", cfg_a.to_str().context("path")?], Some(&dir.join("a.log")))?;
    let mut gw_b =
        b.spawn("gateway B", exe, &["up", "--config", cfg_b.to_str().context("path")?], Some(&dir.join("b.log")))?;
    if !lab::wait_for_socket(&ia, Duration::from_secs(10)) || !lab::wait_for_socket(&ib, Duration::from_secs(10)) {
        let log = std::fs::read_to_string(dir.join("a.log")).unwrap_or_default()
            + &std::fs::read_to_string(dir.join("b.log")).unwrap_or_default();
        bail!("the gateways did not come up:\n{log}");
    }
    println!("  gateways up: causewayd in each namespace, peers configured from TOML\n");

    if !a.wait_for_ping("10.99.0.2", Duration::from_secs(10)) {
        bail!("no ping reply through the tunnel");
    }
    let rtt = a.ping("10.99.0.2", 10).context("ping through the tunnel failed")?;
    println!(
        "ping site A -> site B through the tunnel: 10/10 replies, average RTT {:.3} ms",
        rtt.as_secs_f64() * 1000.0
    );
    let up = lab::iperf3(&b, &a, "10.99.0.2", 5, false, &[])?;
    println!(
        "iperf3 TCP, 1 stream, 5 s, site A -> site B: {:.2} Gbit/s ({} retransmits)",
        up.bits_per_second / 1e9,
        up.retransmits
    );
    let down = lab::iperf3(&b, &a, "10.99.0.2", 5, true, &[])?;
    println!(
        "iperf3 TCP, 1 stream, 5 s, site B -> site A: {:.2} Gbit/s ({} retransmits)",
        down.bits_per_second / 1e9,
        down.retransmits
    );

    let dump = lab::uapi(&ia, "get=1\n\n")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let hs: u64 = field(&dump, "last_handshake_time_sec").and_then(|v| v.parse().ok()).unwrap_or(0);
    let rx: u64 = field(&dump, "rx_bytes").and_then(|v| v.parse().ok()).unwrap_or(0);
    let tx: u64 = field(&dump, "tx_bytes").and_then(|v| v.parse().ok()).unwrap_or(0);
    println!("\npeer status at site A's gateway (as `wg show` reads it over the UAPI socket):");
    println!("  peer {} (site B)", lab::b64(pb.as_bytes()));
    println!("    endpoint: {}", field(&dump, "endpoint").unwrap_or("(none)"));
    println!("    latest handshake: {} s ago", now.saturating_sub(hs));
    println!("    transfer: {} received, {} sent", human_bytes(rx), human_bytes(tx));
    println!(
        "    machine: {} cores; both gateways and both iperf3 ends share them",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let code_a = gw_a.stop();
    let code_b = gw_b.stop();
    drop((a, b));
    println!(
        "\ngateways stopped (exit codes {:?}, {:?}); namespaces removed",
        code_a.unwrap_or(-1),
        code_b.unwrap_or(-1)
    );
    Ok(())
}
