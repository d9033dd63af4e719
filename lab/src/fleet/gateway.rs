//! One gateway of the fleet: its namespace, keys and addresses, its
//! causewayd and (with BGP routing) its bird, and what the tests read from
//! it through tunctl and the control API.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use causeway_wireguard::{PublicKey, StaticSecret};

use crate::bird::Bird;
use crate::{Netns, Process};

use super::{site_name, LISTEN_PORT};

/// A gateway's bytes to and from its peers, summed over them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    pub rx: u64,
    pub tx: u64,
}

/// One gateway: its namespace, keys, addresses, and, once started, its
/// causewayd; its bird with `SiteRouting::Bgp`. Fields drop in order:
/// causewayd and bird stop before the namespace goes.
pub struct FleetGateway {
    pub(super) daemon: Option<Process>,
    pub bird: Option<Bird>,
    pub site: u8,
    pub index: u8,
    /// Its name in its site ("gw1").
    pub name: String,
    /// causewayd's interface ("cw…", unique to this run).
    pub ifname: String,
    pub(super) secret: StaticSecret,
    pub public: PublicKey,
    pub ns: Netns,
    /// Its configuration file (0600) and causewayd's log, once started.
    pub config: PathBuf,
    pub log: PathBuf,
}

impl FleetGateway {
    pub fn wan_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 10 * self.site + self.index)
    }

    /// Where the other gateways reach it ("198.18.0.11:51820").
    pub fn endpoint(&self) -> String {
        format!("{}:{LISTEN_PORT}", self.wan_address())
    }

    pub fn lan_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.site, 0, 10 + self.index)
    }

    /// Its tunnel address ("10.255.1.1").
    pub fn tunnel_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 255, self.site, self.index)
    }

    /// Its peer name at the other gateways: `{site}.{name}`, the name the
    /// registry gives it (the static files use the same).
    pub fn peer_name(&self) -> String {
        format!("{}.{}", site_name(self.site), self.name)
    }

    /// Writes `config` (0600) and starts causewayd on it; waits for its
    /// UAPI socket (10 s at most).
    pub fn start(&mut self, config: &str, causewayd: &Path) -> anyhow::Result<()> {
        if self.daemon.is_some() {
            bail!("{} runs already", self.peer_name());
        }
        crate::write_private(&self.config, config)?;
        self.launch(causewayd)
    }

    fn launch(&mut self, causewayd: &Path) -> anyhow::Result<()> {
        let config = self.config.to_str().context("configuration path is not UTF-8")?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = self
            .ns
            .command(causewayd)
            .args(["up", "--config", config])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start causewayd")?;
        let mut process = Process::new(child, "causewayd");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut up = false;
        while !up && process.running() && Instant::now() < deadline {
            up = crate::wait_for_socket(&self.ifname, Duration::from_millis(100));
        }
        if !up {
            process.kill();
            bail!("causewayd of {} did not come up: {}", self.peer_name(), self.log_text());
        }
        self.daemon = Some(process);
        Ok(())
    }

    /// Starts causewayd again on the configuration it had.
    pub fn restart(&mut self, causewayd: &Path) -> anyhow::Result<()> {
        self.stop();
        self.launch(causewayd)
    }

    /// SIGKILL to causewayd (a crash: its TUN and routes vanish with it).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.daemon.take() {
            p.kill();
            // A crash leaves its sockets behind, and no daemon of this
            // name starts again to replace them.
            for path in [
                causeway_gateway::sockets::uapi_socket_path(&self.ifname),
                causeway_gateway::sockets::api_socket_path(&self.ifname),
            ] {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// SIGTERM to causewayd; its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.daemon.take().and_then(|mut p| p.stop())
    }

    pub fn running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(Process::running)
    }

    /// causewayd's status over the control API.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        crate::api_status(&self.ifname)
    }

    /// Bytes to and from all its peers (the control API's counters).
    pub fn transfer(&self) -> anyhow::Result<Transfer> {
        let status = self.status()?;
        let mut t = Transfer::default();
        for p in status["peers"].as_array().into_iter().flatten() {
            t.rx += p["rx_bytes"].as_u64().unwrap_or(0);
            t.tx += p["tx_bytes"].as_u64().unwrap_or(0);
        }
        Ok(t)
    }

    /// The names of its peers, sorted.
    pub fn peer_names(&self) -> anyhow::Result<Vec<String>> {
        let status = self.status()?;
        let mut names: Vec<String> = status["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str().map(String::from))
            .collect();
        names.sort();
        Ok(names)
    }

    /// `tunctl ARGS` in its namespace (the tunctl next to `causewayd`);
    /// stdout, or an error with stderr.
    pub fn tunctl(&self, causewayd: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = self.ns.command(causewayd.with_file_name("tunctl")).args(args).output()?;
        if !out.status.success() {
            bail!("tunctl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `tunctl sites IF --json`, parsed.
    pub fn sites_json(&self, causewayd: &Path) -> anyhow::Result<serde_json::Value> {
        let out = self.tunctl(causewayd, &["sites", &self.ifname, "--json"])?;
        serde_json::from_str(&out).with_context(|| format!("tunctl sites --json printed {out}"))
    }

    /// The kernel routes through causewayd's interface (destinations).
    pub fn tunnel_routes(&self) -> anyhow::Result<Vec<String>> {
        let out = self.ns.ip(&["route", "show", "dev", &self.ifname])?;
        Ok(out.lines().filter_map(|l| l.split_whitespace().next().map(String::from)).collect())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
