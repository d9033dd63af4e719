//! The network-namespace comparison: the same topology (two gateways on a
//! veth WAN with an MTU 1420 tunnel between them, and in the routed
//! topology a host behind each) with Causeway (WireGuard, or IPsec: ESP in
//! UDP or raw, see causeway.rs), the modern wireguard-go (0.0.20231211,
//! with offloads), Debian's wireguard-go, boringtun-cli and strongSwan
//! (IKEv2 + ESP in UDP through kernel-libipsec, see lab/src/strongswan.rs;
//! its TUN's MTU is fixed at 1400) in turn, interleaved over several rounds
//! so that the machine's noise falls on all of them alike. The order
//! rotates from round to round (A B C, B C A, C A B, …), so that no
//! implementation always runs first, after the build and set-up, or right
//! after the same neighbour.
//! Prints a markdown table of medians and ratios (the reference, Causeway
//! by default, divided by each other), and writes JSON and an SVG bar
//! chart.
//!
//! Run as root: `scripts/bench.sh` (or this binary with --help).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use causeway_lab::strongswan::{self, Charon};
use causeway_lab::{self as lab, b64, keypair, Netns, Process};
use clap::Parser;
use serde_json::{json, Value};

mod causeway;
mod measure;
mod report;
mod strongswan_pair;
mod topology;
use causeway::{esp_note, start_causeway, start_causeway_esp, write_psk, Encap, EspPair};
use measure::measure;
use report::{median, replot, svg, table};
use strongswan_pair::{start_strongswan, STRONGSWAN_NOTE};
use topology::{lan_host, route_through_tunnel, Topology, HOST_B, LAN_A, LAN_B};

/// Where scripts/fetch-wireguard-go-modern.sh unpacks wireguard-go
/// 0.0.20231211 from bookworm-backports.
const MODERN_WIREGUARD_GO: &str = "/var/cache/causeway-bench/wireguard-go-0.0.20231211/usr/bin/wireguard-go";

/// Every implementation this harness can run.
const KNOWN: [&str; 10] = [
    "causeway",
    "causeway-baseline",
    "causeway-esp",
    "causeway-esp-baseline",
    "causeway-esp-raw",
    "causeway-esp-raw-baseline",
    "wireguard-go-modern",
    "wireguard-go",
    "boringtun",
    "strongswan",
];

/// The ratio columns' numerator unless --reference names another.
const DEFAULT_REFERENCE: &str = "causeway";

/// Every tunnel's MTU but strongSwan's (`strongswan::TUN_MTU`).
const TUNNEL_MTU: u32 = 1420;

/// Compare Causeway with wireguard-go and boringtun in network namespaces.
#[derive(Parser)]
#[command(args_override_self = true)]
struct Args {
    /// Rounds; each runs every implementation once, in turn.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per throughput test.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Implementations to compare, in the order each round runs them.
    /// Known: causeway, wireguard-go-modern, wireguard-go (Debian's),
    /// boringtun, strongswan, causeway-baseline (with --baseline),
    /// causeway-esp (IPsec, ESP in UDP), causeway-esp-baseline (the same
    /// with --baseline), causeway-esp-raw (raw ESP), causeway-esp-raw-baseline
    /// (the same with --baseline).
    #[arg(long, value_delimiter = ',', default_value = "causeway,wireguard-go-modern,wireguard-go,boringtun")]
    impls: Vec<String>,
    /// The implementation the ratio columns divide by each other one
    /// (reference ÷ other); it must be in --impls. Default: causeway.
    #[arg(long, value_name = "NAME")]
    reference: Option<String>,
    /// Topologies; each is a complete run with its own result files.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "direct")]
    topology: Vec<Topology>,
    /// Where to write the JSON, markdown and SVG results.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// Another causewayd binary (an earlier build, say) measured as the
    /// implementations `causeway-baseline` (WireGuard),
    /// `causeway-esp-baseline` (ESP in UDP) and `causeway-esp-raw-baseline`
    /// (raw ESP): add those names to --impls to compare a change before and
    /// after in one interleaved run.
    #[arg(long, value_name = "CAUSEWAYD")]
    baseline: Option<PathBuf>,
    /// The wireguard-go binary measured as `wireguard-go-modern`
    /// (scripts/fetch-wireguard-go-modern.sh puts it at the default path).
    #[arg(long, value_name = "WIREGUARD-GO", default_value = MODERN_WIREGUARD_GO)]
    wireguard_go_modern: PathBuf,
    /// Instead of measuring, rebuild the table and chart of a saved run.
    #[arg(long, value_name = "RUN.json")]
    replot: Option<PathBuf>,
    /// Pings per round (the RTT is their average).
    #[arg(long, default_value_t = 50)]
    pings: u32,
    /// Seconds between pings. A longer idle time between two packets
    /// leaves colder caches and sleepier cores on both gateways.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.2)]
    ping_interval: f64,
    /// Measure the ping RTT only, on gateways that carried no traffic
    /// before: a latency comparison needs more rounds than the throughput
    /// tests allow, and no flood just ended.
    #[arg(long)]
    ping_only: bool,
    /// Run the ping and every thread of both gateways on this one CPU (by
    /// taskset), for the ping only: the RTT then shows the work each
    /// packet costs without the cost of waking threads on the other core.
    #[arg(long, value_name = "CPU")]
    ping_cpu: Option<usize>,
}

impl Args {
    fn reference(&self) -> &str {
        self.reference.as_deref().unwrap_or(DEFAULT_REFERENCE)
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.ping_interval)
    }
}

struct Pair {
    // Processes first: they stop before their namespaces are deleted.
    daemons: Vec<Process>,
    charons: Vec<Charon>,
    /// A Causeway ESP pair's interfaces, and what `EspPair::verify` saw.
    esp: Option<(EspPair, String)>,
    a: Netns,
    b: Netns,
    /// The hosts behind a and b, in the routed topology.
    hosts: Option<(Netns, Netns)>,
}

impl Pair {
    /// The iperf3 server's namespace, the client's and the address the
    /// client sends to (also the ping target).
    fn ends(&self) -> (&Netns, &Netns, &'static str) {
        match &self.hosts {
            Some((host_a, host_b)) => (host_b, host_a, HOST_B),
            None => (&self.b, &self.a, "10.90.0.2"),
        }
    }
}

fn boringtun_path() -> anyhow::Result<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let candidates =
        [PathBuf::from(home).join(".cargo/bin/boringtun-cli"), PathBuf::from("/usr/local/bin/boringtun-cli")];
    candidates.into_iter().find(|p| p.is_file()).context("boringtun-cli not found: cargo install boringtun-cli")
}

/// One end of the tunnel: its key, the other end's key and the addresses.
#[derive(Clone, Copy)]
pub(crate) struct Side<'a> {
    me: &'a causeway_wireguard::StaticSecret,
    peer: &'a causeway_wireguard::PublicKey,
    tunnel: &'a str,
    peer_tunnel: &'a str,
    peer_wan: &'a str,
    /// The LAN behind the peer (routed topology), also allowed from it.
    peer_lan: Option<&'a str>,
}

impl Side<'_> {
    pub(crate) fn allowed_ips(&self) -> Vec<String> {
        std::iter::once(format!("{}/32", self.peer_tunnel)).chain(self.peer_lan.map(String::from)).collect()
    }
}

/// Starts a userspace WireGuard (wireguard-go or boringtun-cli) in `ns`
/// and configures it with `wg`. Returns it and its interface's name.
fn start_uapi_daemon(
    kind: &str,
    ns: &Netns,
    dir: &Path,
    side: &Side<'_>,
    args: &Args,
) -> anyhow::Result<(Process, String)> {
    let Side { me, peer, tunnel, peer_wan, .. } = *side;
    let ifname = lab::unique("bx");
    let log = dir.join(format!("{ifname}.log"));
    let p = match kind {
        "wireguard-go" => ns.spawn("wireguard-go", "wireguard-go", &["-f", &ifname], Some(&log))?,
        "wireguard-go-modern" => {
            ns.spawn("wireguard-go-modern", &args.wireguard_go_modern, &["-f", &ifname], Some(&log))?
        }
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
    let allowed = side.allowed_ips().join(",");
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
    ns.ip(&["link", "set", &ifname, "mtu", &TUNNEL_MTU.to_string(), "up"])?;
    Ok((p, ifname))
}

fn setup(kind: &str, topology: Topology, dir: &Path, args: &Args) -> anyhow::Result<Pair> {
    let a = Netns::new("bench-a")?;
    let b = Netns::new("bench-b")?;
    lab::veth(&a, "wan0", &["198.18.0.1/24"], &b, "wan0", &["198.18.0.2/24"])?;
    let routed = topology == Topology::Routed;
    let hosts = if routed {
        Some((lan_host(&a, "bench-ha", "10.91.1.1", "10.91.1.2")?, lan_host(&b, "bench-hb", "10.91.2.1", HOST_B)?))
    } else {
        None
    };
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let side_a = Side {
        me: &ka,
        peer: &pb,
        tunnel: "10.90.0.1",
        peer_tunnel: "10.90.0.2",
        peer_wan: "198.18.0.2",
        peer_lan: routed.then_some(LAN_B),
    };
    let side_b = Side {
        me: &kb,
        peer: &pa,
        tunnel: "10.90.0.2",
        peer_tunnel: "10.90.0.1",
        peer_wan: "198.18.0.1",
        peer_lan: routed.then_some(LAN_A),
    };
    if kind == "strongswan" {
        let charons = start_strongswan(&a, &b, dir, routed)?;
        return ready(Pair { daemons: vec![], charons, a, b, hosts, esp: None }, kind, topology);
    }
    if let Some(encap) = Encap::of(kind) {
        // The responder first, so that the initiator's first IKE_SA_INIT
        // finds it listening.
        let psk = write_psk(dir)?;
        let bin = causewayd_for(kind, args)?;
        let db = start_causeway_esp(&b, dir, &side_b, encap, false, &psk, &bin)?;
        let da = start_causeway_esp(&a, dir, &side_a, encap, true, &psk, &bin)?;
        if routed {
            route_through_tunnel(&a, &da.1, LAN_B, false)?;
            route_through_tunnel(&b, &db.1, LAN_A, false)?;
        }
        let esp = EspPair { encap, initiator: da.1, responder: db.1, dir: dir.to_path_buf() };
        let seen = esp.verify(Duration::from_secs(20)).with_context(|| format!("{kind}: not the ESP asked for"))?;
        let pair = Pair { daemons: vec![da.0, db.0], charons: vec![], a, b, hosts, esp: None };
        let (_, client, target) = pair.ends();
        if !client.wait_for_ping(target, Duration::from_secs(15)) {
            bail!("{kind}: an SA but no ping through the tunnel ({} topology)\n{}", topology.name(), esp.logs());
        }
        return Ok(Pair { esp: Some((esp, seen)), ..pair });
    }
    let is_causeway = matches!(kind, "causeway" | "causeway-baseline");
    let (da, db) = if is_causeway {
        let bin = causewayd_for(kind, args)?;
        (start_causeway(&a, dir, &side_a, &bin)?, start_causeway(&b, dir, &side_b, &bin)?)
    } else {
        (start_uapi_daemon(kind, &a, dir, &side_a, args)?, start_uapi_daemon(kind, &b, dir, &side_b, args)?)
    };
    if routed {
        route_through_tunnel(&a, &da.1, LAN_B, !is_causeway)?;
        route_through_tunnel(&b, &db.1, LAN_A, !is_causeway)?;
    }
    ready(Pair { daemons: vec![da.0, db.0], charons: vec![], a, b, hosts, esp: None }, kind, topology)
}

/// The causewayd binary a Causeway implementation runs: the `--baseline`
/// one for the `*-baseline` kinds, else the one built beside this program.
fn causewayd_for(kind: &str, args: &Args) -> anyhow::Result<PathBuf> {
    if kind.ends_with("-baseline") {
        args.baseline.clone().with_context(|| format!("{kind} needs --baseline PATH"))
    } else {
        lab::causewayd_path()
    }
}

/// Returns the pair once a ping crosses the tunnel.
fn ready(pair: Pair, kind: &str, topology: Topology) -> anyhow::Result<Pair> {
    let (_, client, target) = pair.ends();
    if !client.wait_for_ping(target, Duration::from_secs(15)) {
        bail!("{kind}: no ping through the tunnel ({} topology)", topology.name());
    }
    Ok(pair)
}

fn machine(args: &Args) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()));
    // The same "AMD EPYC" name has come with and without AVX-512 and VAES
    // on this kind of machine, which changes the ciphers' speed (AES-GCM
    // above all): the CPU's family, model and those flags say which.
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let flags = field("flags").unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let features: Vec<&str> = ["aes", "pclmulqdq", "avx2", "avx512f", "vaes", "vpclmulqdq", "sha_ni"]
        .into_iter()
        .filter(|f| has(f))
        .collect();
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default().lines().next().unwrap_or("").to_string();
    let version = |cmd: &Path, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
            .unwrap_or_default()
    };
    let uses = |name: &str| args.impls.iter().any(|i| i == name);
    // The backports build calls itself v0.0.20230223 (upstream did not bump
    // version.go for 0.0.20231211): record the Debian package version that
    // scripts/fetch-wireguard-go-modern.sh wrote next to it as well.
    let modern = uses("wireguard-go-modern").then(|| {
        let bin = &args.wireguard_go_modern;
        let package = bin
            .ancestors()
            .nth(3)
            .and_then(|d| std::fs::read_to_string(d.join("DEBIAN-VERSION")).ok())
            .map(|v| v.trim().to_string());
        json!({"path": bin, "debian_package": package, "reports": version(bin, "--version")})
    });
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model,
        "cpu_family": field("cpu family"),
        "cpu_model": field("model"),
        "cpu_features": features,
        "kernel": kernel,
        "memory": mem,
        "wireguard_go": version(Path::new("wireguard-go"), "--version"),
        "wireguard_go_modern": modern,
        "boringtun": boringtun_path().ok().map(|p| version(&p, "--version")),
        "causeway_baseline": args.baseline.as_ref().filter(|_| args.impls.iter().any(|i| i.ends_with("-baseline"))),
        "iperf3": version(Path::new("iperf3"), "--version"),
        "strongswan": uses("strongswan").then(|| version(Path::new("swanctl"), "--version")),
    })
}

/// Fails early, before any measuring, on what a run would trip over later.
fn check(args: &Args) -> anyhow::Result<()> {
    if args.impls.is_empty() {
        bail!("--impls is empty");
    }
    for (n, i) in args.impls.iter().enumerate() {
        if !KNOWN.contains(&i.as_str()) {
            bail!("unknown implementation {i}; known: {}", KNOWN.join(", "));
        }
        if args.impls[..n].contains(i) {
            bail!("{i} is named twice in --impls");
        }
    }
    for (n, t) in args.topology.iter().enumerate() {
        if args.topology[..n].contains(t) {
            bail!("{} is named twice in --topology", t.name());
        }
    }
    let reference = args.reference();
    if !KNOWN.contains(&reference) {
        bail!("unknown --reference {reference}; known: {}", KNOWN.join(", "));
    }
    let uses = |name: &str| args.impls.iter().any(|i| i == name);
    if !(0.002..=60.0).contains(&args.ping_interval) {
        bail!("--ping-interval {} is outside 0.002 to 60 seconds", args.ping_interval);
    }
    // Without --reference and without Causeway the table has no ratios, as
    // before the option; a reference asked for must be measured.
    if args.reference.is_some() && !uses(reference) {
        bail!("--reference {reference} is not in --impls");
    }
    lab::require("iperf3", "iperf3")?;
    lab::require("ping", "iputils-ping")?;
    if uses("causeway") || uses("causeway-esp") || uses("causeway-esp-raw") {
        lab::causewayd_path()?;
    }
    for name in ["causeway-baseline", "causeway-esp-baseline", "causeway-esp-raw-baseline"] {
        if uses(name) && !args.baseline.as_ref().is_some_and(|b| b.is_file()) {
            bail!("{name} needs --baseline PATH to a causewayd binary");
        }
    }
    if uses("wireguard-go") {
        lab::require("wireguard-go", "wireguard-go")?;
    }
    if uses("wireguard-go-modern") && !args.wireguard_go_modern.is_file() {
        bail!(
            "{} is missing: run scripts/fetch-wireguard-go-modern.sh (scripts/bench.sh does) or pass \
             --wireguard-go-modern PATH",
            args.wireguard_go_modern.display()
        );
    }
    if uses("boringtun") {
        boringtun_path()?;
    }
    if uses("strongswan") {
        strongswan::require_strongswan()?;
    }
    if uses("wireguard-go") || uses("wireguard-go-modern") || uses("boringtun") {
        lab::require("wg", "wireguard-tools")?;
    }
    // All but Causeway clamp the MSS with iptables in the routed topology.
    let clamped = args.impls.iter().any(|i| !i.starts_with("causeway"));
    if clamped && args.topology.contains(&Topology::Routed) {
        lab::require("iptables", "iptables")?;
    }
    Ok(())
}

/// The order of round `round` (from 1): `impls` rotated left by
/// `round - 1`, so that each takes each place in turn.
fn in_turn(impls: &[String], round: usize) -> impl Iterator<Item = &String> {
    let turn = (round - 1) % impls.len().max(1);
    impls[turn..].iter().chain(&impls[..turn])
}

/// One complete comparison in one topology; writes its result files.
fn run(args: &Args, topology: Topology, dir: &Path) -> anyhow::Result<()> {
    let name = topology.name();
    let mut samples: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    // Per Causeway ESP implementation, what its daemons reported about
    // the SA, each distinct report once.
    let mut esp_seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for round in 1..=args.rounds {
        for imp in in_turn(&args.impls, round) {
            eprint!("{name}, round {round}/{}: {imp} … ", args.rounds);
            let (m, seen) =
                measure(imp, topology, dir, args).with_context(|| format!("{imp}, {name}, round {round}"))?;
            if let Some(seen) = seen {
                let all = esp_seen.entry(imp.clone()).or_default();
                if !all.contains(&seen) {
                    all.push(seen);
                }
            }
            eprintln!("{}", m.iter().map(|(k, v)| format!("{k}={v:.3}")).collect::<Vec<_>>().join(" "));
            for (k, v) in m {
                samples.entry(imp.clone()).or_default().entry(k.to_string()).or_default().push(v);
            }
        }
    }
    let medians: BTreeMap<String, BTreeMap<String, f64>> =
        samples.iter().map(|(i, m)| (i.clone(), m.iter().map(|(k, v)| (k.clone(), median(v))).collect())).collect();
    let machine = machine(args);
    let mut notes: Vec<String> = args
        .impls
        .iter()
        .filter_map(|i| match i.as_str() {
            "strongswan" => Some(STRONGSWAN_NOTE.to_string()),
            _ => esp_note(i, esp_seen.get(i).map_or(&[], Vec::as_slice)),
        })
        .collect();
    if args.ping_only {
        notes.push(format!(
            "Ping only (--ping-only): {} pings {} s apart per round, each implementation freshly started, \
             no throughput test before them",
            args.pings, args.ping_interval
        ));
    } else if args.pings != 50 || args.ping_interval != 0.2 {
        notes.push(format!("{} pings {} s apart per round", args.pings, args.ping_interval));
    }
    if args.impls.len() > 1 {
        notes.push(format!(
            "The implementations took turns, the order rotating from round to round (round 1: {}; round 2 starts \
             with the second)",
            args.impls.join(", ")
        ));
    }
    if let Some(cpu) = args.ping_cpu {
        notes.push(format!("Ping with the ping and every thread of both gateways on CPU {cpu} (--ping-cpu)"));
    }
    let reference = args.reference();
    let table = table(&machine, name, args.rounds, args.seconds as u64, &args.impls, reference, &medians, &notes);
    println!("{table}");
    std::fs::create_dir_all(&args.out)?;
    let base = loop {
        let stamp = Command::new("date")
            .args(["-u", "+%Y%m%dT%H%M%SZ"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
        let base = args.out.join(format!("compare-{stamp}"));
        if !base.with_extension("json").exists() {
            break base;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let routed = topology == Topology::Routed;
    let run = json!({
        "machine": machine,
        "topology": name,
        "topology_description": Topology::describe(name),
        "tunnel_mtu": TUNNEL_MTU,
        "tunnel_mtu_strongswan": args.impls.iter().any(|i| i == "strongswan").then_some(strongswan::TUN_MTU),
        "lan_mtu": routed.then_some(1500),
        "mss_clamp": routed.then_some(
            "causeway: its own clamp (mss_clamp, on by default); the others: iptables -t mangle FORWARD -o <tunnel> \
             TCPMSS --clamp-mss-to-pmtu on both gateways"
        ),
        "impls": args.impls,
        // Round r ran impls rotated left by r - 1 (runs before 2026-12-04
        // ran them in the listed order every round, and have no "order").
        "order": "rotating",
        "reference": reference,
        "notes": notes,
        "causeway_esp_sas": esp_seen,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "pings": args.pings,
        "ping_only": args.ping_only,
        "ping_cpu": args.ping_cpu,
        "ping_interval_s": args.ping_interval,
        "samples": samples,
        "medians": medians,
    });
    report::write_whole(&base.with_extension("md"), &table)?;
    report::write_whole(&base.with_extension("json"), serde_json::to_string_pretty(&run)?)?;
    svg(&base.with_extension("svg"), name, &args.impls, reference, &medians)?;
    eprintln!("wrote {}.{{md,json,svg}}", base.display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.replot {
        return replot(path);
    }
    if !lab::is_root() {
        bail!("the comparison builds network namespaces: run it as root");
    }
    check(&args)?;
    lab::reap_stale();
    let dir = tempfile::tempdir()?;
    // Keys and configurations are written there: removed on Ctrl-C too.
    lab::clean_up_on_interrupt(Some(dir.path().to_path_buf()));
    for &topology in &args.topology {
        run(&args, topology, dir.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::in_turn;

    #[test]
    fn every_implementation_of_a_run_has_its_own_colour() {
        assert!(super::report::COLORS.len() >= super::KNOWN.len());
        let mut c = super::report::COLORS.to_vec();
        c.sort();
        c.dedup();
        assert_eq!(c.len(), super::report::COLORS.len(), "no colour twice");
    }

    #[test]
    fn results_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compare-x.md");
        std::fs::write(&path, "the run before").unwrap();
        super::report::write_whole(&path, "this run").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "this run");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }

    #[test]
    fn each_implementation_takes_each_place_in_turn() {
        let impls: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let order = |round| in_turn(&impls, round).map(String::as_str).collect::<Vec<_>>().join(" ");
        assert_eq!(order(1), "a b c");
        assert_eq!(order(2), "b c a");
        assert_eq!(order(3), "c a b");
        assert_eq!(order(4), "a b c");
        assert_eq!(in_turn(&[], 3).count(), 0);
    }
}
