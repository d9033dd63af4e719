//! tunctl: the operator's command for Causeway gateways.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use causeway_gateway::api::types::{
    ChildSaStatus, IpsecPeerStatus, PeerStatus, Request, SitesStatus, Status, WorkerCounters,
};
use causeway_wireguard::{PresharedKey, StaticSecret};
use clap::{Parser, Subcommand};

// A module of this binary; a file directly in src/bin/ would be taken for
// another binary.
#[path = "tunctl/client.rs"]
mod client;
#[path = "tunctl/import_swanctl.rs"]
mod import_swanctl;
#[path = "tunctl/import_wg.rs"]
mod import_wg;
#[path = "tunctl/peer.rs"]
mod peer;
#[path = "tunctl/site.rs"]
mod site;
#[path = "tunctl/sites.rs"]
mod sites;
#[path = "tunctl/swanctl.rs"]
mod swanctl;
#[path = "tunctl/swanctl_child.rs"]
mod swanctl_child;
#[path = "tunctl/swanctl_connection.rs"]
mod swanctl_connection;
#[path = "tunctl/swanctl_keys.rs"]
mod swanctl_keys;
#[path = "tunctl/swanctl_secrets.rs"]
mod swanctl_secrets;
#[path = "tunctl/swanctl_values.rs"]
mod swanctl_values;

use client::request;

/// Inspect and manage Causeway gateways.
///
/// Exit codes: 0 success; 1 the request failed (no gateway running,
/// permission denied, or the gateway refused the change); 2 bad command line.
#[derive(Parser)]
#[command(
    name = "tunctl",
    version,
    after_help = "Examples:\n  tunctl peers cw0\n  tunctl sites cw0\n  tunctl show cw0 --json | jq .drops\n  tunctl peer add cw0 --name dc-north --public-key KEY \\\n      --endpoint 198.18.4.2:51820 --allowed-ip 10.4.0.0/16\n  tunctl reload cw0\n  (umask 077; tunctl genkey > gw.key); tunctl pubkey < gw.key\n  tunctl import-swanctl /etc/swanctl/swanctl.conf --psk-dir /etc/causeway >> /etc/causeway/gw.toml"
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
    /// Sites and their gateways: for each site its prefixes, how many of
    /// its gateways are up and whether its kernel routes are installed;
    /// for each gateway its state (up, or down and why), its share of the
    /// site's flows, when it was last heard from, and its traffic; then
    /// the registry's state (synced or stale).
    ///
    /// Example: tunctl sites cw0
    Sites {
        /// Interface served by a running causewayd.
        interface: String,
        /// Print the sites as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Add, change or remove a peer on the running gateway, without a
    /// restart; other peers' sessions are untouched. The change is not
    /// written to the configuration file: a later reload returns to the
    /// file's contents. Also rekey a peer, or reset its tunnel.
    #[command(subcommand)]
    Peer(peer::PeerCommand),
    /// Change the fleet registry (etcd) through the gateway: join or leave
    /// a site, set or remove a site's prefixes. Needs [registry] in the
    /// gateway's configuration.
    #[command(subcommand)]
    Site(site::SiteCommand),
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
    /// stands above their [Peer] line or first in their section; settings
    /// Causeway does not take are listed on stderr.
    /// wg-quick's routes carry over: no Table line (or auto, main) gives
    /// install_routes = true; Table = N also route_table = N; Table = off
    /// neither.
    ///
    /// The output holds the private key and any preshared keys: write it
    /// where only root reads.
    ///
    /// Example: (umask 077; tunctl import-wg /etc/wireguard/wg0.conf > /etc/causeway/gw.toml)
    ImportWg {
        /// The wg-quick file.
        file: PathBuf,
    },
    /// Convert strongSwan swanctl.conf connections (IKEv2 with pre-shared
    /// keys) to Causeway `[[peer]]` tables with protocol = "ipsec", on
    /// stdout, to add to the gateway's configuration. Each connection's
    /// key, from the secrets section, goes to <PSK_DIR>/<connection>.psk
    /// and is never printed. Settings Causeway does not take are listed on
    /// stderr; what cannot be carried over (certificates, IKEv1, children
    /// with different selectors, algorithms Causeway lacks) is an error,
    /// as are keys swanctl does not know (a typo) and a connection no
    /// secret names (the message names the key file to create).
    ///
    /// Mapping: remote_addrs (with remote_port) → endpoints; local.id,
    /// remote.id → local_id, remote_id (unset: the one address of
    /// local_addrs/remote_addrs); proposals → ike_proposals;
    /// children.*.esp_proposals → esp_proposals; local_ts, remote_ts →
    /// local_ts, remote_ts (with [protocol/port] as written, numbers only),
    /// and remote_ts's prefixes → allowed_ips; rekey_time →
    /// ike_lifetime; children.*.rekey_time (else life_time / 1.1, as
    /// strongSwan 5.9.9 and later derive it) → child_lifetime, so Causeway,
    /// which rekeys 10 to 20% before a lifetime ends, rekeys a little
    /// earlier than strongSwan did; dpd_delay →
    /// dpd_interval; encap = yes → encap = "always"; start_action = start →
    /// initiate = true, trap or none → initiate = false (IKE then starts
    /// when traffic needs the tunnel, or the peer starts it). A setting
    /// left out, and strongSwan's `default` proposals, get Causeway's
    /// defaults (IKE SA 28800 s, child SA 3600 s, DPD 30 s). Key files are
    /// written as 0x and hex with mode 0600; an existing one is never
    /// replaced.
    ///
    /// Example: tunctl import-swanctl /etc/swanctl/swanctl.conf --psk-dir /etc/causeway >> /etc/causeway/gw.toml
    ImportSwanctl {
        /// The swanctl.conf (files it includes are read too).
        file: PathBuf,
        /// Import only this connection.
        #[arg(long, value_name = "NAME")]
        connection: Option<String>,
        /// Where the pre-shared key files go (an existing directory).
        #[arg(long, value_name = "DIR", default_value = "/etc/causeway")]
        psk_dir: PathBuf,
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
    /// Example: (umask 077; tunctl genpsk > /etc/causeway/dc-east.psk)
    Genpsk,
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

fn text(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
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

fn peer_rows(peers: &[PeerStatus], with_rate: bool) -> Vec<Vec<String>> {
    peers
        .iter()
        .map(|p| {
            let mut row = vec![
                text(Some(&p.name)),
                p.public_key.chars().take(10).collect::<String>() + "…",
                text(p.endpoint.as_deref()),
                p.allowed_ips.join(","),
                age(p.latest_handshake_age_secs),
                format!("{} / {}", bytes(p.rx_bytes), bytes(p.tx_bytes)),
            ];
            if with_rate {
                row.push(format!("{} / {}", rate(p.rx_bytes_per_sec), rate(p.tx_bytes_per_sec)));
            }
            row.push(p.state.to_string());
            row
        })
        .collect()
}

fn ipsec_rows(peers: &[IpsecPeerStatus]) -> Vec<Vec<String>> {
    peers
        .iter()
        .map(|p| {
            let children: Vec<String> = p.child_sas.iter().map(ChildSaStatus::summary).collect();
            vec![
                text(Some(&p.name)),
                text(p.remote.as_deref()),
                format!("{} {}", p.ike_state, text(p.ike_proposal.as_deref())),
                if children.is_empty() { "-".into() } else { children.join(", ") },
                p.allowed_ips.join(","),
                format!("{} / {}", bytes(p.rx_bytes), bytes(p.tx_bytes)),
                if p.up { "up".into() } else { p.last_failure.clone().unwrap_or_else(|| "down".into()) },
            ]
        })
        .collect()
}

const IPSEC_HEADER: [&str; 7] = ["NAME", "REMOTE", "IKE SA", "CHILD SAS (IN/OUT)", "ALLOWED IPS", "RX / TX", "STATE"];

/// Every peer as JSON, each marked with its protocol; WireGuard peers keep
/// the fields they always had.
fn peers_json(status: &Status) -> anyhow::Result<serde_json::Value> {
    let mut all = Vec::new();
    for p in &status.peers {
        let mut v = serde_json::to_value(p)?;
        v["protocol"] = "wireguard".into();
        all.push(v);
    }
    for p in &status.ipsec_peers {
        let mut v = serde_json::to_value(p)?;
        v["protocol"] = "ipsec".into();
        all.push(v);
    }
    Ok(serde_json::Value::Array(all))
}

/// The data plane's drops and, while IKE runs (the daemon then tells
/// every reason), IKE's: the reasons counted, or "none".
fn drop_lines(status: &Status) -> Vec<String> {
    let counted = |m: &std::collections::BTreeMap<String, u64>| {
        let v: Vec<String> = m.iter().filter(|(_, v)| **v != 0).map(|(k, v)| format!("{k}={v}")).collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(" ")
        }
    };
    let mut lines = vec![format!("dropped: {}", counted(&status.drops))];
    if !status.ike_drops.is_empty() {
        lines.push(format!("IKE messages dropped: {}", counted(&status.ike_drops)));
    }
    lines
}

fn show(status: &Status) {
    println!(
        "interface {}: public key {}, listening on {}, mtu {}, {} workers",
        text(Some(&status.interface)),
        text(status.public_key.as_deref()),
        status.listen_port,
        status.mtu,
        status.workers
    );
    table(
        &["NAME", "KEY", "ENDPOINT", "ALLOWED IPS", "HANDSHAKE", "RX / TX", "STATE"],
        &peer_rows(&status.peers, false),
    );
    if !status.ipsec_peers.is_empty() {
        println!();
        table(&IPSEC_HEADER, &ipsec_rows(&status.ipsec_peers));
    }
    match &status.kernel_routes {
        Some(r) => println!(
            "kernel routes: {} prefixes in table {}",
            r.installed.len(),
            if r.table == 254 { "main".to_string() } else { r.table.to_string() }
        ),
        None => println!("kernel routes: not installed by causewayd (install_routes = false)"),
    }
    for line in drop_lines(status) {
        println!("{line}");
    }
    println!("cookie replies sent (handshakes under load): {}", status.cookie_replies_sent);
    let total = |k: fn(&WorkerCounters) -> u64| status.worker_stats.iter().map(k).sum::<u64>() as f64;
    let avg = |n: fn(&WorkerCounters) -> u64, d: fn(&WorkerCounters) -> u64| {
        if total(d) > 0.0 {
            format!("{:.1}", total(n) / total(d))
        } else {
            "-".into()
        }
    };
    println!(
        "batches (average packets per syscall): tun read {}, udp send {}, udp receive {}, tun write {}",
        avg(|w| w.tun_packets, |w| w.tun_reads),
        avg(|w| w.udp_datagrams_sent, |w| w.udp_sends),
        avg(|w| w.udp_datagrams_received, |w| w.udp_receives),
        avg(|w| w.tun_packets_written, |w| w.tun_writes)
    );
    let batches = total(|w| w.crypto_batches);
    let helped = if batches > 0.0 {
        format!("{:.0}%", 100.0 * total(|w| w.crypto_batches_helped) / batches)
    } else {
        "-".into()
    };
    println!(
        "crypto: {batches} batches, {helped} by a worker other than the reader; {} helper wake-ups, {} pool stalls",
        total(|w| w.helper_wakeups),
        total(|w| w.pool_stalls)
    );
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    match cli.command {
        Command::Peers { interface, json } => {
            let status: Status = request(&interface, &Request::Status)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&peers_json(&status)?)?);
            } else {
                // The WireGuard table, unless only IPsec peers exist.
                if !status.peers.is_empty() || status.ipsec_peers.is_empty() {
                    table(
                        &["NAME", "KEY", "ENDPOINT", "ALLOWED IPS", "HANDSHAKE", "RX / TX", "RATE RX / TX", "STATE"],
                        &peer_rows(&status.peers, true),
                    );
                }
                if !status.ipsec_peers.is_empty() {
                    if !status.peers.is_empty() {
                        println!();
                    }
                    table(&IPSEC_HEADER, &ipsec_rows(&status.ipsec_peers));
                }
            }
        }
        Command::Show { interface, json } => {
            let status: Status = request(&interface, &Request::Status)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                show(&status);
            }
        }
        Command::Sites { interface, json } => {
            let status: SitesStatus = request(&interface, &Request::Sites)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                sites::print(&status);
            }
        }
        Command::Peer(cmd) => {
            let (interface, req) = cmd.into_request()?;
            let done: String = request(&interface, &req)?;
            println!("{interface}: {done}");
        }
        Command::Site(cmd) => {
            let (interface, req) = cmd.into_request();
            let done: String = request(&interface, &req)?;
            println!("{interface}: {done}");
        }
        Command::Reload { interface } => {
            let report: String = request(&interface, &Request::Reload)?;
            println!("{interface}: {report}");
        }
        Command::ImportWg { file } => print!("{}", import_wg::import_wg(&file)?.as_str()),
        Command::ImportSwanctl { file, connection, psk_dir } => {
            let imported = import_swanctl::import_swanctl(&file, connection.as_deref(), &psk_dir)?;
            for note in &imported.notes {
                eprintln!("tunctl: {note}");
            }
            for f in &imported.written {
                eprintln!("tunctl: wrote {}", f.display());
            }
            print!("{}", imported.toml);
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
    // `tunctl peers cw0 | head` closes the pipe early: end quietly as other
    // command-line tools do, instead of panicking on the failed print.
    // SAFETY: restores the default action of one signal before any thread
    // starts; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Reads a file another tool wrote that may hold keys (a wg-quick `.conf`,
/// a swanctl.conf and its includes) into memory wiped when dropped. It is
/// that tool's file, so one others may read is converted with a warning,
/// as wg-quick gives, rather than refused.
fn read_secrets_input(file: &std::path::Path) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let (text, exposed) =
        causeway_config::read_config_file(file).with_context(|| format!("cannot read {}", file.display()))?;
    if let Some(mode) = exposed {
        eprintln!(
            "warning: {} is {} (mode {mode:03o}) and may hold keys: run `chmod 600 {}`",
            file.display(),
            causeway_config::exposure(mode),
            file.display()
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::client::parse_reply;
    use super::*;

    fn empty_status() -> Status {
        Status {
            interface: "cw0".into(),
            public_key: None,
            listen_port: 51820,
            mtu: 1420,
            workers: 1,
            udp_gso_segments: 1,
            kernel_routes: None,
            peers: Vec::new(),
            ipsec_peers: Vec::new(),
            drops: Default::default(),
            cookie_replies_sent: 0,
            worker_stats: vec![WorkerCounters::default()],
            ike_drops: Default::default(),
        }
    }

    fn status_json() -> serde_json::Value {
        serde_json::json!({ "ok": empty_status() })
    }

    #[test]
    fn show_names_the_drop_reasons_counted() {
        let mut s = empty_status();
        assert_eq!(drop_lines(&s), ["dropped: none"], "no IKE line without IKE");
        s.drops = [("replay".to_string(), 12), ("no_route".to_string(), 0)].into();
        s.ike_drops = [("malformed", 0), ("unknown_spi", 0)].map(|(k, v)| (k.to_string(), v)).into();
        assert_eq!(drop_lines(&s), ["dropped: replay=12", "IKE messages dropped: none"]);
        s.ike_drops.insert("unknown_spi".into(), 3);
        s.ike_drops.insert("integrity_check_failed".into(), 1);
        assert_eq!(
            drop_lines(&s),
            ["dropped: replay=12", "IKE messages dropped: integrity_check_failed=1 unknown_spi=3"]
        );
    }

    #[test]
    fn reads_a_status_reply() {
        let status: Status = parse_reply(&status_json().to_string()).unwrap();
        assert_eq!((status.interface.as_str(), status.listen_port), ("cw0", 51820));
    }

    #[test]
    fn refuses_a_reply_with_a_missing_field() {
        for (path, field) in [("", "cookie_replies_sent"), ("/worker_stats/0", "tun_reads"), ("", "public_key")] {
            let mut v = status_json();
            v.pointer_mut(&format!("/ok{path}")).unwrap().as_object_mut().unwrap().remove(field);
            let e = format!("{:#}", parse_reply::<Status>(&v.to_string()).unwrap_err());
            assert!(e.contains("does not understand") && e.contains(&format!("missing field `{field}`")), "{e}");
        }
    }

    #[test]
    fn refuses_a_reply_of_the_wrong_shape() {
        let e = parse_reply::<Status>(r#"{"ok":"reloaded"}"#).unwrap_err();
        assert!(format!("{e:#}").contains("does not understand"), "{e:#}");
        let e = parse_reply::<String>(r#"{"error":"no peer named or keyed \"x\""}"#).unwrap_err();
        assert_eq!(e.to_string(), r#"causewayd refused: no peer named or keyed "x""#);
        assert_eq!(parse_reply::<String>(r#"{"ok":"added c"}"#).unwrap(), "added c");
    }
}
