//! One implementation's round: the throughput tests, the CPU the gateways
//! used for the single stream (from /proc), and the ping.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use causeway_lab as lab;
use causeway_lab::strongswan::{self, Charon};

use crate::topology::Topology;
use crate::{setup, Args, Pair, TUNNEL_MTU};

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
/// The ping and the gateways held on one CPU (`--ping-cpu`): every
/// thread of the daemons, and this program's main thread so that the ping
/// it starts inherits the CPU. Dropping it gives this program its CPUs
/// back; the daemons stop after the ping anyway.
struct OneCpu {
    before: String,
}

impl OneCpu {
    fn pin(cpu: usize, daemons: &[u32]) -> anyhow::Result<OneCpu> {
        let me = std::process::id().to_string();
        // "pid 42's current affinity list: 0,1"
        let now = taskset(&["-c", "-p", &me])?;
        let before = now.rsplit_once(": ").map(|(_, l)| l.trim().to_string()).context("taskset's answer")?;
        let cpu = cpu.to_string();
        for pid in daemons {
            taskset(&["-a", "-c", "-p", &cpu, &pid.to_string()])?;
        }
        taskset(&["-c", "-p", &cpu, &me])?;
        Ok(OneCpu { before })
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        let _ = taskset(&["-c", "-p", &self.before, &std::process::id().to_string()]);
    }
}

/// Runs taskset (util-linux); its standard output.
fn taskset(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("taskset").args(args).output().context("running taskset (util-linux)")?;
    if !out.status.success() {
        bail!("taskset {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One implementation's measurements in one round, and for a Causeway
/// ESP pair what its daemons reported about the SA (`EspPair::verify`).
pub fn measure(
    kind: &str,
    topology: Topology,
    dir: &Path,
    args: &Args,
) -> anyhow::Result<(BTreeMap<&'static str, f64>, Option<String>)> {
    let secs = args.seconds;
    let mut pair = setup(kind, topology, dir, args)?;
    let pids: Vec<u32> = pair.daemons.iter().map(|d| d.pid()).chain(pair.charons.iter().map(Charon::pid)).collect();
    let cpu = || pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>();
    let mut m = BTreeMap::new();
    let (_, client, target) = pair.ends();

    if !args.ping_only {
        throughput(&pair, kind, topology, secs, &cpu, &mut m)?;
    }
    let pinned = args.ping_cpu.map(|cpu| OneCpu::pin(cpu, &pids)).transpose()?;
    let ping = client.ping_summary(target, args.pings, args.interval()).context("ping failed")?;
    drop(pinned);
    // The average is of the replies only: the pings lost are kept beside
    // it, so a lower RTT bought by losing the slow ones shows.
    m.insert("ping_rtt_ms", ping.average.as_secs_f64() * 1e3);
    m.insert("ping_lost", f64::from(ping.sent - ping.received));

    for d in &mut pair.daemons {
        d.stop();
    }
    for c in &mut pair.charons {
        c.stop();
    }
    Ok((m, pair.esp.map(|(_, seen)| seen)))
}

/// The TCP (one and four streams) and 64-byte UDP tests, with the CPU the
/// gateways used for the single stream.
fn throughput(
    pair: &Pair,
    kind: &str,
    topology: Topology,
    secs: u32,
    cpu: &dyn Fn() -> f64,
    m: &mut BTreeMap<&'static str, f64>,
) -> anyhow::Result<()> {
    let (server, client, target) = pair.ends();
    let esp_before = pair.esp.as_ref().map(|(e, _)| e.bytes()).transpose()?;
    let before = cpu();
    let one = lab::iperf3_json(server, client, target, secs, false, &[])?;
    let used = cpu() - before;
    let received = &one["end"]["sum_received"];
    let bits_per_second = received["bits_per_second"].as_f64().context("iperf3 reported no throughput")?;
    let bytes = received["bytes"].as_f64().unwrap_or(0.0);
    if let (Some((esp, _)), Some(b)) = (&pair.esp, esp_before) {
        esp.carried(b, bytes).with_context(|| format!("{kind}: the TCP test did not cross the ESP SA"))?;
    }
    m.insert("tcp_1_stream_gbps", bits_per_second / 1e9);
    m.insert("cpu_s_per_gb", used / (bytes / 1e9));
    // The client's MSS on its control connection (which crosses the tunnel
    // like the data): the SYN-ACK's MSS, lowered by the clamp, less TCP
    // options. Kept with the samples; a LAN-sized MSS in the routed
    // topology means the clamp is missing and the run would be unfair.
    if let Some(mss) = one["start"]["tcp_mss_default"].as_f64() {
        m.insert("tcp_mss", mss);
        // The clamp gives the tunnel's MTU less 40 (IPv4 and TCP headers);
        // the client's MSS is that less its options.
        let mtu = if kind == "strongswan" { strongswan::TUN_MTU } else { TUNNEL_MTU };
        if topology == Topology::Routed && mss > f64::from(mtu - 40) {
            bail!("{kind}: TCP MSS {mss} between the hosts: the gateways do not clamp it to the tunnel's MTU {mtu}");
        }
    }

    let four = lab::iperf3(server, client, target, secs, false, &["-P", "4"])?;
    m.insert("tcp_4_streams_gbps", four.bits_per_second / 1e9);

    let udp = lab::iperf3_json(server, client, target, secs, false, &["-u", "-l", "64", "-b", "0"])?;
    // Datagrams the receiver got (its byte count over 64: `packets` is the
    // sender's count, and "lost" misses the tail still queued at the end)
    // over the sender's time (the receiver's ends at the test's end
    // message, which may wait behind the flood it crosses).
    let field = |sum: &str, key: &str| {
        udp["end"][sum][key].as_f64().with_context(|| format!("{kind}: iperf3's UDP report has no end.{sum}.{key}"))
    };
    let received = field("sum_received", "bytes")? / 64.0;
    let seconds = field("sum_sent", "seconds")?;
    if seconds <= 0.0 {
        bail!("{kind}: iperf3's UDP test sent for {seconds} s");
    }
    m.insert("udp_64b_kpps", received / seconds / 1e3);
    Ok(())
}
