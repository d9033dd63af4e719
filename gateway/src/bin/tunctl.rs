//! tunctl: the operator's command for Causeway gateways.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use anyhow::{bail, Context};
use base64::Engine;
use causeway_crypto::{PresharedKey, StaticSecret};
use clap::{Parser, Subcommand};
use serde_json::Value;

/// Inspect and manage Causeway gateways.
///
/// Exit codes: 0 success, 1 the request failed (gateway not running,
/// refused), 2 bad command line.
#[derive(Parser)]
#[command(
    version,
    after_help = "Examples:\n  tunctl show cw0\n  tunctl show cw0 --json | jq .drops\n  tunctl genkey | tee gw.key | tunctl pubkey"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show an interface: keys, port, peers with their state and traffic,
    /// and packets dropped by reason.
    ///
    /// Example: tunctl show cw0
    Show {
        /// Interface served by a running causewayd.
        interface: String,
        /// Print the full state as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the gateway's configuration file and apply only what changed:
    /// unchanged peers keep their sessions and traffic keeps flowing. An
    /// invalid file is rejected with its errors and the running
    /// configuration stays. Same as sending SIGHUP to causewayd.
    ///
    /// Example: tunctl reload cw0
    Reload {
        /// Interface served by a causewayd started with `up --config`.
        interface: String,
    },
    /// Print a new private key in base64, as `wg genkey` does.
    ///
    /// Example: (umask 077; tunctl genkey > /etc/causeway/gw.key)
    Genkey,
    /// Read a private key on stdin and print its public key, as `wg pubkey` does.
    ///
    /// Example: tunctl pubkey < /etc/causeway/gw.key
    Pubkey,
    /// Print a new pre-shared key, as `wg genpsk` does.
    ///
    /// Example: tunctl genpsk > /etc/causeway/dc-east.psk
    Genpsk,
}

fn request(interface: &str, op: &str) -> anyhow::Result<Value> {
    let path = causeway_gateway::api::socket_path(interface);
    let mut s = UnixStream::connect(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            anyhow::anyhow!("no causewayd is running for {interface} (nothing listens on {})", path.display())
        }
        std::io::ErrorKind::PermissionDenied => {
            anyhow::anyhow!("permission denied on {}: run tunctl as root", path.display())
        }
        _ => anyhow::anyhow!("cannot reach causewayd for {interface}: {e}"),
    })?;
    writeln!(s, "{}", serde_json::json!({ "op": op }))?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let v: Value = serde_json::from_str(&line).context("causewayd sent a response that is not JSON")?;
    if let Some(e) = v.get("error") {
        bail!("causewayd refused: {}", e.as_str().unwrap_or("unknown error"));
    }
    Ok(v["ok"].clone())
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn age(secs: Option<u64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) if s < 120 => format!("{s}s ago"),
        Some(s) if s < 7200 => format!("{}m ago", s / 60),
        Some(s) => format!("{}h ago", s / 3600),
    }
}

fn show(status: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    println!(
        "interface {}: public key {}, listening on {}, mtu {}, {} workers",
        s(&status["interface"]),
        s(&status["public_key"]),
        status["listen_port"],
        status["mtu"],
        status["workers"]
    );
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    let rows: Vec<[String; 7]> = peers
        .iter()
        .map(|p| {
            let key = s(&p["public_key"]);
            [
                if s(&p["name"]).is_empty() { "-".into() } else { s(&p["name"]) },
                key.chars().take(10).collect::<String>() + "…",
                s(&p["endpoint"]),
                p["allowed_ips"].as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                age(p["latest_handshake_age_secs"].as_u64()),
                format!(
                    "{} / {}",
                    bytes(p["rx_bytes"].as_u64().unwrap_or(0)),
                    bytes(p["tx_bytes"].as_u64().unwrap_or(0))
                ),
                s(&p["state"]),
            ]
        })
        .collect();
    let header = ["NAME", "KEY", "ENDPOINT", "ALLOWED IPS", "HANDSHAKE", "RX / TX", "STATE"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    println!("{}", line(&header.map(String::from)));
    for r in &rows {
        println!("{}", line(r));
    }
    let drops: Vec<String> = status["drops"]
        .as_object()
        .map(|m| m.iter().filter(|(_, v)| v.as_u64() != Some(0)).map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    println!("dropped: {}", if drops.is_empty() { "none".into() } else { drops.join(" ") });
    let total = |k: &str| -> f64 {
        status["worker_stats"].as_array().map_or(0.0, |w| w.iter().filter_map(|x| x[k].as_u64()).sum::<u64>() as f64)
    };
    let avg = |n: &str, d: &str| if total(d) > 0.0 { format!("{:.1}", total(n) / total(d)) } else { "-".into() };
    println!(
        "batches (average packets per syscall): tun read {}, udp send {}, udp receive {}, tun write {}",
        avg("tun_packets", "tun_reads"),
        avg("udp_datagrams_sent", "udp_sends"),
        avg("udp_datagrams_received", "udp_receives"),
        avg("tun_packets_written", "tun_writes")
    );
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match cli.command {
        Command::Show { interface, json } => {
            let status = request(&interface, "status")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                show(&status);
            }
        }
        Command::Reload { interface } => {
            let report = request(&interface, "reload")?;
            println!("{interface}: {}", report.as_str().unwrap_or_default());
        }
        Command::Genkey => println!("{}", b64.encode(StaticSecret::random(&mut rand_core::OsRng).as_bytes())),
        Command::Genpsk => println!("{}", b64.encode(PresharedKey::random(&mut rand_core::OsRng).as_bytes())),
        Command::Pubkey => {
            let mut text = zeroize::Zeroizing::new(String::new());
            std::io::stdin().read_to_string(&mut text)?;
            let key = causeway_config::parse_key(&text).context("stdin is not a private key")?;
            println!("{}", StaticSecret::from_bytes(*key).public_key());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunctl: {e:#}");
            ExitCode::from(1)
        }
    }
}
