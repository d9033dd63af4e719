//! The network-namespace comparison: the same two-host topology (a veth
//! WAN, an MTU 1420 tunnel) with Causeway, Debian's wireguard-go and
//! boringtun-cli in turn, interleaved A B C A B C over several rounds so
//! that the machine's noise falls on all of them alike. Prints a markdown
//! table of medians and ratios, and writes JSON and an SVG bar chart.
//!
//! Run as root: `scripts/bench.sh` (or this binary with --help).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use causeway_lab::{self as lab, b64, keypair, Netns, Process};
use clap::Parser;
use serde_json::{json, Value};

/// Compare Causeway with wireguard-go and boringtun in network namespaces.
#[derive(Parser)]
struct Args {
    /// Rounds; each runs every implementation once, in turn.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per throughput test.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Implementations to compare, in the order each round runs them.
    #[arg(long, value_delimiter = ',', default_value = "causeway,wireguard-go,boringtun")]
    impls: Vec<String>,
    /// Where to write the JSON, markdown and SVG results.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// Another causewayd binary (an earlier build, say) measured as the
    /// implementation `causeway-baseline`: add that name to --impls to
    /// compare a change before and after in one interleaved run.
    #[arg(long, value_name = "CAUSEWAYD")]
    baseline: Option<PathBuf>,
    /// Instead of measuring, rebuild the table and chart of a saved run.
    #[arg(long, value_name = "RUN.json")]
    replot: Option<PathBuf>,
}

const METRICS: [(&str, &str, bool); 5] = [
    ("tcp_1_stream_gbps", "TCP, 1 stream (Gbit/s)", true),
    ("tcp_4_streams_gbps", "TCP, 4 streams (Gbit/s)", true),
    ("udp_64b_kpps", "UDP 64-byte packets (kpps received)", true),
    ("ping_rtt_ms", "Ping RTT (ms)", false),
    ("cpu_s_per_gb", "Gateway CPU seconds per GB (TCP 1 stream)", false),
];

struct Pair {
    // Processes first: they stop before their namespaces are deleted.
    daemons: Vec<Process>,
    a: Netns,
    b: Netns,
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU seconds a process (all its threads) has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

fn boringtun_path() -> anyhow::Result<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let candidates =
        [PathBuf::from(home).join(".cargo/bin/boringtun-cli"), PathBuf::from("/usr/local/bin/boringtun-cli")];
    candidates.into_iter().find(|p| p.is_file()).context("boringtun-cli not found: cargo install boringtun-cli")
}

/// One end of the tunnel: its key, the other end's key and the addresses.
#[derive(Clone, Copy)]
struct Side<'a> {
    me: &'a causeway_wireguard::StaticSecret,
    peer: &'a causeway_wireguard::PublicKey,
    tunnel: &'a str,
    peer_tunnel: &'a str,
    peer_wan: &'a str,
}

/// Starts a userspace WireGuard (wireguard-go or boringtun-cli) in `ns`
/// and configures it with `wg`.
fn start_uapi_daemon(kind: &str, ns: &Netns, dir: &Path, side: &Side<'_>) -> anyhow::Result<Process> {
    let Side { me, peer, tunnel, peer_tunnel, peer_wan } = *side;
    let ifname = lab::unique("bx");
    let log = dir.join(format!("{ifname}.log"));
    let p = match kind {
        "wireguard-go" => ns.spawn("wireguard-go", "wireguard-go", &["-f", &ifname], Some(&log))?,
        "boringtun" => {
            let exe = boringtun_path()?;
            let mut p =
                ns.spawn("boringtun", &exe, &["-f", "--disable-drop-privileges", "-t", "2", &ifname], Some(&log))?;
            p.what = "boringtun".into();
            p
        }
        other => bail!("unknown implementation {other}"),
    };
    if !lab::wait_for_socket(&ifname, Duration::from_secs(10)) {
        bail!("{kind} did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    let key = dir.join(format!("{ifname}.key"));
    lab::write_private(&key, &b64(me.as_bytes()))?;
    let peer_key = b64(peer.as_bytes());
    let allowed = format!("{peer_tunnel}/32");
    let endpoint = format!("{peer_wan}:51820");
    ns.exec(
        "wg",
        &[
            "set",
            &ifname,
            "private-key",
            key.to_str().unwrap(),
            "listen-port",
            "51820",
            "peer",
            &peer_key,
            "endpoint",
            &endpoint,
            "allowed-ips",
            &allowed,
        ],
    )?;
    ns.ip(&["addr", "add", &format!("{tunnel}/24"), "dev", &ifname])?;
    ns.ip(&["link", "set", &ifname, "mtu", "1420", "up"])?;
    Ok(p)
}

fn start_causeway(ns: &Netns, dir: &Path, side: &Side<'_>, bin: &Path) -> anyhow::Result<Process> {
    let Side { me, peer, tunnel, peer_tunnel, peer_wan } = *side;
    let ifname = lab::unique("cb");
    let cfg = format!(
        "[interface]\nname = \"{ifname}\"\nprivate_key = \"{}\"\nlisten_port = 51820\nmtu = 1420\naddresses = [\"{tunnel}/24\"]\n\n[[peer]]\nname = \"other\"\npublic_key = \"{}\"\nendpoints = [\"{peer_wan}:51820\"]\nallowed_ips = [\"{peer_tunnel}/32\"]\n",
        b64(me.as_bytes()),
        b64(peer.as_bytes())
    );
    let path = dir.join(format!("{ifname}.toml"));
    lab::write_private(&path, &cfg)?;
    let log = dir.join(format!("{ifname}.log"));
    let p = ns.spawn("causewayd", bin, &["up", "--config", path.to_str().unwrap()], Some(&log))?;
    if !lab::wait_for_socket(&ifname, Duration::from_secs(10)) {
        bail!("causewayd did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    Ok(p)
}

fn setup(kind: &str, dir: &Path, baseline: Option<&Path>) -> anyhow::Result<Pair> {
    let a = Netns::new("bench-a")?;
    let b = Netns::new("bench-b")?;
    lab::veth(&a, "wan0", &["198.18.0.1/24"], &b, "wan0", &["198.18.0.2/24"])?;
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let side_a = Side { me: &ka, peer: &pb, tunnel: "10.90.0.1", peer_tunnel: "10.90.0.2", peer_wan: "198.18.0.2" };
    let side_b = Side { me: &kb, peer: &pa, tunnel: "10.90.0.2", peer_tunnel: "10.90.0.1", peer_wan: "198.18.0.1" };
    let daemons = match kind {
        "causeway" | "causeway-baseline" => {
            let bin = match kind {
                "causeway" => lab::causewayd_path()?,
                _ => baseline.context("causeway-baseline needs --baseline PATH")?.to_path_buf(),
            };
            vec![start_causeway(&a, dir, &side_a, &bin)?, start_causeway(&b, dir, &side_b, &bin)?]
        }
        other => vec![start_uapi_daemon(other, &a, dir, &side_a)?, start_uapi_daemon(other, &b, dir, &side_b)?],
    };
    if !a.wait_for_ping("10.90.0.2", Duration::from_secs(15)) {
        bail!("{kind}: no ping through the tunnel");
    }
    Ok(Pair { daemons, a, b })
}

fn measure(kind: &str, secs: u32, dir: &Path, baseline: Option<&Path>) -> anyhow::Result<BTreeMap<&'static str, f64>> {
    let mut pair = setup(kind, dir, baseline)?;
    let pids: Vec<u32> = pair.daemons.iter().map(|d| d.pid()).collect();
    let cpu = || pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
    let mut m = BTreeMap::new();

    let before = cpu();
    let one = lab::iperf3(&pair.b, &pair.a, "10.90.0.2", secs, false, &[])?;
    let used = cpu() - before;
    m.insert("tcp_1_stream_gbps", one.bits_per_second / 1e9);
    m.insert("cpu_s_per_gb", used / (one.bytes as f64 / 1e9));

    let four = lab::iperf3(&pair.b, &pair.a, "10.90.0.2", secs, false, &["-P", "4"])?;
    m.insert("tcp_4_streams_gbps", four.bits_per_second / 1e9);

    let udp = lab::iperf3_json(&pair.b, &pair.a, "10.90.0.2", secs, false, &["-u", "-l", "64", "-b", "0"])?;
    let sum = &udp["end"]["sum"];
    let packets = sum["packets"].as_f64().unwrap_or(0.0);
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    let seconds = sum["seconds"].as_f64().filter(|s| *s > 0.0).unwrap_or(secs as f64);
    m.insert("udp_64b_kpps", (packets - lost) / seconds / 1e3);

    let rtt = pair.a.ping("10.90.0.2", 50).context("ping failed")?;
    m.insert("ping_rtt_ms", rtt.as_secs_f64() * 1e3);

    for d in &mut pair.daemons {
        d.stop();
    }
    Ok(m)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()));
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default().lines().next().unwrap_or("").to_string();
    let version = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
            .unwrap_or_default()
    };
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model,
        "kernel": kernel,
        "memory": mem,
        "wireguard_go": version("wireguard-go", "--version"),
        "boringtun": boringtun_path().ok().map(|p| version(p.to_str().unwrap(), "--version")),
        "iperf3": version("iperf3", "--version"),
    })
}

fn svg(path: &Path, impls: &[String], medians: &BTreeMap<String, BTreeMap<String, f64>>) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let base = impls.iter().find(|i| *i == "wireguard-go").unwrap_or(&impls[0]).clone();
    let root = SVGBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = METRICS
        .iter()
        .flat_map(|(k, _, _)| impls.iter().map(move |i| (k, i)))
        .filter_map(|(k, i)| Some(medians.get(i)?.get(*k)? / medians.get(&base)?.get(*k)?))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Causeway vs userspace WireGuard, medians relative to {base} (= 1.0); ↑ higher is better, ↓ lower"),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(10)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..METRICS.len() as f64, 0f64..max * 1.15)?;
    chart.configure_mesh().disable_x_mesh().x_labels(0).y_desc("ratio to baseline").draw()?;
    // Group labels inside the plot, above the bars: axis labels would be
    // placed by plotters' tick picker rather than under each group.
    let short = ["TCP 1 stream ↑", "TCP 4 streams ↑", "UDP 64 B pps ↑", "ping RTT ↓", "CPU s per GB ↓"];
    chart.draw_series(
        short
            .iter()
            .enumerate()
            .map(|(i, t)| Text::new(t.to_string(), (i as f64 + 0.12, max * 1.12), ("sans-serif", 15))),
    )?;
    let colors = [RGBColor(0x1f, 0x77, 0xb4), RGBColor(0xff, 0x7f, 0x0e), RGBColor(0x2c, 0xa0, 0x2c)];
    let width = 0.8 / impls.len() as f64;
    for (n, imp) in impls.iter().enumerate() {
        let color = colors[n % colors.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = METRICS
            .iter()
            .enumerate()
            .filter_map(|(i, (k, _, _))| {
                let v = medians.get(imp)?.get(*k)? / medians.get(&base)?.get(*k)?;
                let x0 = i as f64 + 0.1 + n as f64 * width;
                Some(Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], color.filled()))
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(imp.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).draw()?;
    root.present()?;
    Ok(())
}

/// The markdown table of medians and ratios.
fn table(
    machine: &Value,
    rounds: usize,
    seconds: u64,
    impls: &[String],
    medians: &BTreeMap<String, BTreeMap<String, f64>>,
) -> String {
    let others: Vec<&String> = impls.iter().filter(|i| *i != "causeway").collect();
    let mut t = format!(
        "Machine: {} cores, {}, kernel {}; {rounds} rounds of {seconds} s per test, medians.\n\n| metric |",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
    );
    for i in impls {
        t += &format!(" {i} |");
    }
    for o in &others {
        t += &format!(" causeway ÷ {o} |");
    }
    t += &format!("\n|---|{}\n", "---|".repeat(impls.len() + others.len()));
    for (key, label, _) in METRICS {
        t += &format!("| {label} |");
        for i in impls {
            t += &format!(" {:.3} |", medians[i][key]);
        }
        for o in &others {
            t += &format!(" {:.2} |", medians["causeway"][key] / medians[*o][key]);
        }
        t.push('\n');
    }
    t
}

fn replot(path: &Path) -> anyhow::Result<()> {
    let run: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let medians: BTreeMap<String, BTreeMap<String, f64>> = serde_json::from_value(run["medians"].clone())?;
    let impls: Vec<String> = run["impls"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_else(|| ["causeway", "wireguard-go", "boringtun"].iter().map(|s| s.to_string()).collect());
    let t = table(
        &run["machine"],
        run["rounds"].as_u64().unwrap_or(0) as usize,
        run["seconds"].as_u64().unwrap_or(0),
        &impls,
        &medians,
    );
    println!("{t}");
    std::fs::write(path.with_extension("md"), &t)?;
    svg(&path.with_extension("svg"), &impls, &medians)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.replot {
        return replot(path);
    }
    if !lab::is_root() {
        bail!("the comparison builds network namespaces: run it as root");
    }
    lab::reap_stale();
    let dir = tempfile::tempdir()?;
    let mut samples: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for round in 1..=args.rounds {
        for imp in &args.impls {
            eprint!("round {round}/{}: {imp} … ", args.rounds);
            let m = measure(imp, args.seconds, dir.path(), args.baseline.as_deref())
                .with_context(|| format!("{imp}, round {round}"))?;
            eprintln!("{}", m.iter().map(|(k, v)| format!("{k}={v:.3}")).collect::<Vec<_>>().join(" "));
            for (k, v) in m {
                samples.entry(imp.clone()).or_default().entry(k.to_string()).or_default().push(v);
            }
        }
    }
    let medians: BTreeMap<String, BTreeMap<String, f64>> =
        samples.iter().map(|(i, m)| (i.clone(), m.iter().map(|(k, v)| (k.clone(), median(v))).collect())).collect();
    let machine = machine();
    let table = table(&machine, args.rounds, args.seconds as u64, &args.impls, &medians);
    println!("{table}");
    std::fs::create_dir_all(&args.out)?;
    let stamp = Command::new("date")
        .args(["-u", "+%Y%m%dT%H%M%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
    let base = args.out.join(format!("compare-{stamp}"));
    std::fs::write(base.with_extension("md"), &table)?;
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(
            &json!({"machine": machine, "rounds": args.rounds, "seconds": args.seconds, "samples": samples, "medians": medians}),
        )?,
    )?;
    svg(&base.with_extension("svg"), &args.impls, &medians)?;
    eprintln!("wrote {}.{{md,json,svg}}", base.display());
    Ok(())
}
