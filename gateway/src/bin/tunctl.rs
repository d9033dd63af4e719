//! tunctl: the operator's command for Causeway gateways.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use base64::Engine;
use causeway_wireguard::{PresharedKey, StaticSecret};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

/// Inspect and manage Causeway gateways.
///
/// Exit codes: 0 success; 1 the request failed (no gateway running,
/// permission denied, or the gateway refused the change); 2 bad command line.
#[derive(Parser)]
#[command(
    version,
    after_help = "Examples:\n  tunctl peers cw0\n  tunctl show cw0 --json | jq .drops\n  tunctl peer add cw0 --name dc-north --public-key KEY --endpoint 198.18.4.2:51820 --allowed-ip 10.4.0.0/16\n  tunctl reload cw0\n  tunctl genkey | tee gw.key | tunctl pubkey"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One row per peer: name, key, endpoint, allowed IPs, latest
    /// handshake, traffic and current rate, and state (up, handshaking,
    /// stale, configured).
    ///
    /// Example: tunctl peers cw0
    Peers {
        /// Interface served by a running causewayd.
        interface: String,
        /// Print the peers as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The interface summary: keys, port, peers, packets dropped by reason
    /// and the data plane's batch sizes.
    ///
    /// Example: tunctl show cw0
    Show {
        /// Interface served by a running causewayd.
        interface: String,
        /// Print the full state as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Add, change or remove a peer on the running gateway, without a
    /// restart; other peers' sessions are untouched. The change is not
    /// written to the configuration file: a later reload returns to the
    /// file's contents.
    #[command(subcommand)]
    Peer(PeerCommand),
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
    /// Convert a wg-quick configuration (.conf) to Causeway's TOML on stdout.
    /// Peers are named peer-1, peer-2, … unless a `# Name = x` comment
    /// precedes them; settings Causeway does not take are listed on stderr.
    ///
    /// The output holds the private key: write it where only root reads.
    ///
    /// Example: (umask 077; tunctl import-wg /etc/wireguard/wg0.conf > /etc/causeway/gw.toml)
    ImportWg {
        /// The wg-quick file.
        file: PathBuf,
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

#[derive(Subcommand)]
enum PeerCommand {
    /// Add a peer.
    ///
    /// Example: tunctl peer add cw0 --name dc-north --public-key KEY --endpoint 198.18.4.2:51820 --allowed-ip 10.4.0.0/16
    Add {
        interface: String,
        /// The operator's name for the peer (unique).
        #[arg(long)]
        name: String,
        /// The peer's public key (base64, as `wg pubkey` prints).
        #[arg(long)]
        public_key: String,
        #[command(flatten)]
        fields: PeerFields,
    },
    /// Change a peer, named by name or public key; fields not given stay.
    ///
    /// Example: tunctl peer set cw0 dc-north --endpoint 198.18.4.3:51820
    Set {
        interface: String,
        /// Name or public key of the peer.
        peer: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        fields: PeerFields,
    },
    /// Remove a peer, named by name or public key.
    ///
    /// Example: tunctl peer remove cw0 dc-north
    Remove {
        interface: String,
        /// Name or public key of the peer.
        peer: String,
    },
}

#[derive(Args)]
struct PeerFields {
    /// Endpoint (ip:port, [v6]:port or host:port); repeat for failover
    /// order. Replaces the list.
    #[arg(long = "endpoint")]
    endpoints: Vec<String>,
    /// Prefix routed to and accepted from the peer; repeat. Replaces the list.
    #[arg(long = "allowed-ip")]
    allowed_ips: Vec<String>,
    /// Seconds between keepalives (0 is off).
    #[arg(long)]
    keepalive: Option<u16>,
    /// File holding a pre-shared key (base64), as `wg genpsk` prints.
    #[arg(long)]
    preshared_key_file: Option<PathBuf>,
}

impl PeerFields {
    fn into_json(self, mut req: Value) -> anyhow::Result<Value> {
        if !self.endpoints.is_empty() {
            req["endpoints"] = json!(self.endpoints);
        }
        if !self.allowed_ips.is_empty() {
            req["allowed_ips"] = json!(self.allowed_ips);
        }
        if let Some(k) = self.keepalive {
            req["persistent_keepalive"] = json!(k);
        }
        if let Some(f) = self.preshared_key_file {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?,
            );
            req["preshared_key"] = json!(text.trim());
        }
        Ok(req)
    }
}

fn request(interface: &str, req: Value) -> anyhow::Result<Value> {
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
    writeln!(s, "{req}")?;
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

fn rate(bytes_per_sec: u64) -> String {
    let bits = bytes_per_sec as f64 * 8.0;
    match bits {
        b if b >= 1e9 => format!("{:.2} Gbit/s", b / 1e9),
        b if b >= 1e6 => format!("{:.1} Mbit/s", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kbit/s", b / 1e3),
        b => format!("{b:.0} bit/s"),
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

fn text(v: &Value) -> String {
    v.as_str().filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// Prints rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    println!("{}", line(header.iter().map(|h| h.to_string()).collect()));
    for r in rows {
        println!("{}", line(r.clone()));
    }
}

fn peer_rows(status: &Value, with_rate: bool) -> Vec<Vec<String>> {
    status["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .map(|p| {
                    let mut row = vec![
                        text(&p["name"]),
                        text(&p["public_key"]).chars().take(10).collect::<String>() + "…",
                        text(&p["endpoint"]),
                        p["allowed_ips"]
                            .as_array()
                            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(","))
                            .unwrap_or_default(),
                        age(p["latest_handshake_age_secs"].as_u64()),
                        format!(
                            "{} / {}",
                            bytes(p["rx_bytes"].as_u64().unwrap_or(0)),
                            bytes(p["tx_bytes"].as_u64().unwrap_or(0))
                        ),
                    ];
                    if with_rate {
                        row.push(format!(
                            "{} / {}",
                            rate(p["rx_bytes_per_sec"].as_u64().unwrap_or(0)),
                            rate(p["tx_bytes_per_sec"].as_u64().unwrap_or(0))
                        ));
                    }
                    row.push(text(&p["state"]));
                    row
                })
                .collect()
        })
        .unwrap_or_default()
}

fn show(status: &Value) {
    println!(
        "interface {}: public key {}, listening on {}, mtu {}, {} workers",
        text(&status["interface"]),
        text(&status["public_key"]),
        status["listen_port"],
        status["mtu"],
        status["workers"]
    );
    table(&["NAME", "KEY", "ENDPOINT", "ALLOWED IPS", "HANDSHAKE", "RX / TX", "STATE"], &peer_rows(status, false));
    match status["kernel_routes"].as_object() {
        Some(r) => println!(
            "kernel routes: {} prefixes in table {}",
            r["installed"].as_array().map_or(0, Vec::len),
            if r["table"] == 254 { "main".to_string() } else { r["table"].to_string() }
        ),
        None => println!("kernel routes: not installed by causewayd (install_routes = false)"),
    }
    let drops: Vec<String> = status["drops"]
        .as_object()
        .map(|m| m.iter().filter(|(_, v)| v.as_u64() != Some(0)).map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    println!("dropped: {}", if drops.is_empty() { "none".into() } else { drops.join(" ") });
    println!("cookie replies sent (handshakes under load): {}", status["cookie_replies_sent"]);
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
    let batches = total("crypto_batches");
    let helped =
        if batches > 0.0 { format!("{:.0}%", 100.0 * total("crypto_batches_helped") / batches) } else { "-".into() };
    println!(
        "crypto: {batches} batches, {helped} by a worker other than the reader; {} helper wake-ups, {} pool stalls",
        total("helper_wakeups"),
        total("pool_stalls")
    );
}

/// wg-quick's .conf to Causeway's TOML; the result is checked by parsing it.
fn import_wg(file: &std::path::Path) -> anyhow::Result<String> {
    let src = zeroize::Zeroizing::new(
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?,
    );
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("cw0");
    let mut out = format!("# Imported from {} by tunctl import-wg.\n[interface]\nname = \"{name}\"\n", file.display());
    let mut peers: Vec<String> = Vec::new();
    let mut section = "";
    let mut pending_name: Option<String> = None;
    let list = |v: &str| {
        v.split(',').map(|x| format!("\"{}\"", x.trim())).filter(|x| x != "\"\"").collect::<Vec<_>>().join(", ")
    };
    for (n, raw) in src.lines().enumerate() {
        let line = raw.trim();
        if let Some(c) = line.strip_prefix('#') {
            if let Some((k, v)) = c.split_once('=') {
                if k.trim().eq_ignore_ascii_case("name") {
                    pending_name = Some(v.trim().to_string());
                }
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if line.eq_ignore_ascii_case("[interface]") {
            section = "interface";
            continue;
        }
        if line.eq_ignore_ascii_case("[peer]") {
            section = "peer";
            let pname = pending_name.take().unwrap_or_else(|| format!("peer-{}", peers.len() + 1));
            peers.push(format!("\n[[peer]]\nname = \"{pname}\"\n"));
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { bail!("{}:{}: expected Key = Value", file.display(), n + 1) };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        let target =
            if section == "peer" { peers.last_mut().context("peer setting outside [Peer]")? } else { &mut out };
        match (section, k.as_str()) {
            ("interface", "privatekey") => target.push_str(&format!("private_key = \"{v}\"\n")),
            ("interface", "listenport") => target.push_str(&format!("listen_port = {v}\n")),
            ("interface", "address") => target.push_str(&format!("addresses = [{}]\n", list(v))),
            ("interface", "mtu") => target.push_str(&format!("mtu = {v}\n")),
            ("peer", "publickey") => target.push_str(&format!("public_key = \"{v}\"\n")),
            ("peer", "presharedkey") => target.push_str(&format!("preshared_key = \"{v}\"\n")),
            ("peer", "endpoint") => target.push_str(&format!("endpoints = [\"{v}\"]\n")),
            ("peer", "allowedips") => target.push_str(&format!("allowed_ips = [{}]\n", list(v))),
            ("peer", "persistentkeepalive") if v.eq_ignore_ascii_case("off") => {}
            ("peer", "persistentkeepalive") => target.push_str(&format!("persistent_keepalive = {v}\n")),
            (s, other) => eprintln!("tunctl: {}:{}: {s} setting {other} is not imported", file.display(), n + 1),
        }
    }
    out.extend(peers);
    causeway_config::parse(&out, file).map_err(|e| anyhow::anyhow!("the imported configuration is not valid:\n{e}"))?;
    Ok(out)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match cli.command {
        Command::Peers { interface, json } => {
            let status = request(&interface, json!({"op": "status"}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status["peers"])?);
            } else {
                table(
                    &["NAME", "KEY", "ENDPOINT", "ALLOWED IPS", "HANDSHAKE", "RX / TX", "RATE RX / TX", "STATE"],
                    &peer_rows(&status, true),
                );
            }
        }
        Command::Show { interface, json } => {
            let status = request(&interface, json!({"op": "status"}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                show(&status);
            }
        }
        Command::Peer(cmd) => {
            let (interface, req) = match cmd {
                PeerCommand::Add { interface, name, public_key, fields } => {
                    (interface, fields.into_json(json!({"op": "peer_add", "name": name, "public_key": public_key}))?)
                }
                PeerCommand::Set { interface, peer, name, fields } => {
                    let mut req = json!({"op": "peer_set", "peer": peer});
                    if let Some(n) = name {
                        req["name"] = json!(n);
                    }
                    (interface, fields.into_json(req)?)
                }
                PeerCommand::Remove { interface, peer } => (interface, json!({"op": "peer_remove", "peer": peer})),
            };
            println!("{interface}: {}", request(&interface, req)?.as_str().unwrap_or_default());
        }
        Command::Reload { interface } => {
            let report = request(&interface, json!({"op": "reload"}))?;
            println!("{interface}: {}", report.as_str().unwrap_or_default());
        }
        Command::ImportWg { file } => print!("{}", import_wg(&file)?),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_a_wg_quick_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wg7.conf");
        let (k, p1, p2) = (
            b64(StaticSecret::random(&mut rand_core::OsRng).as_bytes()),
            b64(StaticSecret::random(&mut rand_core::OsRng).public_key().as_bytes()),
            b64(StaticSecret::random(&mut rand_core::OsRng).public_key().as_bytes()),
        );
        std::fs::write(
            &file,
            format!(
                "[Interface]\nPrivateKey = {k}\nAddress = 10.40.0.1/24, fd00:40::1/64\nListenPort = 51000\nMTU = 1380\nDNS = 10.0.0.53\n\n# Name = dc-east\n[Peer]\nPublicKey = {p1}\nEndpoint = 198.18.0.2:51820\nAllowedIPs = 10.41.0.0/16, 10.40.0.2/32\nPersistentKeepalive = 25\n\n[Peer]\nPublicKey = {p2}\nAllowedIPs = 10.42.0.0/16\nPersistentKeepalive = off\n"
            ),
        )
        .unwrap();
        let toml = import_wg(&file).unwrap();
        let cfg = causeway_config::parse(&toml, &file).unwrap();
        assert_eq!(cfg.interface.name.as_deref(), Some("wg7"));
        assert_eq!(cfg.interface.listen_port, 51000);
        assert_eq!(cfg.interface.mtu, 1380);
        assert_eq!(cfg.interface.addresses.len(), 2);
        assert_eq!(cfg.peers.len(), 2);
        assert_eq!(cfg.peers[0].name, "dc-east");
        assert_eq!(cfg.peers[0].public_key.to_base64(), p1);
        assert_eq!(cfg.peers[0].persistent_keepalive, 25);
        assert_eq!(cfg.peers[0].allowed_ips.len(), 2);
        assert_eq!(cfg.peers[1].name, "peer-2");
        assert_eq!(cfg.peers[1].persistent_keepalive, 0);
    }

    #[test]
    fn refuses_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.conf");
        std::fs::write(&file, "[Interface]\nPrivateKey = nope\n").unwrap();
        let e = import_wg(&file).unwrap_err().to_string();
        assert!(e.contains("not valid") && e.contains("private_key"), "{e}");
    }

    fn b64(b: &[u8; 32]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }
}
