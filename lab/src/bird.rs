//! BIRD 2 inside a lab namespace: the routing daemon that carries the
//! routes causewayd installs from a gateway to its site router over BGP
//! (`Bird`, around a typed bird.conf in bird/config.rs), and reading what
//! the router ended up with.
//!
//! What was found on this machine (bird2 2.0.12 from Debian bookworm):
//!
//! - `bird -f -c CONF -s SOCK -P PIDFILE` keeps everything in our own
//!   directory: nothing under /etc/bird or /run/bird is read or written,
//!   so any number of birds run side by side, one per namespace. The
//!   control socket is a path, so `birdc -s SOCK` reaches it from any
//!   namespace.
//! - A gateway's bird with `learn` takes causewayd's `proto static` routes
//!   from the kernel within milliseconds of their installation (it listens
//!   to route notifications), and a deleted route, or the TUN going away
//!   with its routes when causewayd is killed, is withdrawn as fast; the
//!   router's multipath route then loses that next hop (or goes, with the
//!   last one).
//! - A BGP session comes up about a second after both sides run (with the
//!   timers of bird/config.rs).
//!
//! Invariants: a `Bird`'s process is a `Process` (SIGTERM on drop) inside a
//! registered namespace, so it ends with the test, a panic or the next run;
//! every birdc call runs under timeout(1).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{unique, Netns, Process};

mod config;
pub use config::{gateways_as, router_as, GatewaySpeaker, RouterSpeaker};

/// Longest any birdc call may take before timeout(1) ends it.
const BIRDC_LIMIT: Duration = Duration::from_secs(10);

/// Fails with the Debian package to install when BIRD is missing
/// (scripts/test.sh installs it, starting no system bird).
pub fn require_bird() -> anyhow::Result<()> {
    crate::require("bird", "bird2")?;
    crate::require("birdc", "bird2")
}

/// One bird in a namespace, with its own directory: `bird.conf`,
/// `bird.ctl` (control socket), `bird.pid` and `bird.log` (every run
/// appended). Stopped with SIGTERM on drop.
pub struct Bird {
    process: Option<Process>,
    netns: String,
    dir: PathBuf,
}

impl Bird {
    /// Writes `config` into a new directory under `parent`, starts bird in
    /// `ns` and waits until its control socket answers.
    pub fn start(ns: &Netns, parent: &Path, config: &str) -> anyhow::Result<Bird> {
        let dir = parent.join(unique("bird"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("bird.conf"), config)?;
        let mut bird = Bird { process: None, netns: ns.name.clone(), dir };
        bird.launch()?;
        Ok(bird)
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        // Left by a killed bird; a fresh start creates them again.
        for f in ["bird.ctl", "bird.pid"] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("bird.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "bird", "-f"])
            .args(["-c", &self.path("bird.conf"), "-s", &self.path("bird.ctl"), "-P", &self.path("bird.pid")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start bird")?;
        let mut process = Process::new(child, "bird");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.birdc(&["show", "status"]).is_err() {
            if !process.running() || Instant::now() > deadline {
                process.kill();
                bail!("bird did not open its control socket; its log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.process = Some(process);
        Ok(())
    }

    /// Runs `birdc -s <this bird's socket> ARGS`; its output, or an error
    /// with it when birdc fails.
    pub fn birdc(&self, args: &[&str]) -> anyhow::Result<String> {
        let limit = BIRDC_LIMIT.as_secs().to_string();
        let out = Command::new("timeout")
            .args(["-k", "2", &limit, "birdc", "-s", &self.path("bird.ctl")])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run birdc")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // birdc exits 0 even when it cannot connect; it says so on stdout.
        if !out.status.success() || text.contains("Unable to connect") {
            bail!(
                "birdc {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }

    /// `birdc show route` (BIRD's own tables: every path it knows).
    pub fn show_route(&self) -> anyhow::Result<String> {
        self.birdc(&["show", "route"])
    }

    /// The BGP sessions in state Established (`show protocols`).
    pub fn established(&self) -> anyhow::Result<usize> {
        let text = self.birdc(&["show", "protocols"])?;
        Ok(text.lines().filter(|l| l.contains(" BGP ") && l.contains("Established")).count())
    }

    /// Waits until at least `n` BGP sessions are established.
    pub fn wait_established(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.established()? >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                let protocols = self.birdc(&["show", "protocols", "all"]).unwrap_or_default();
                bail!("fewer than {n} BGP sessions after {timeout:?}:\n{protocols}\nlog:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes a new configuration and has bird apply it (`configure`).
    pub fn reconfigure(&self, config: &str) -> anyhow::Result<()> {
        std::fs::write(self.dir.join("bird.conf"), config)?;
        let out = self.birdc(&["configure"])?;
        if !out.contains("Reconfigured") && !out.contains("Reconfiguration in progress") {
            bail!("bird did not take the new configuration: {out}");
        }
        Ok(())
    }

    pub fn running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Process::running)
    }

    /// SIGTERM (bird withdraws what it announced and removes its kernel
    /// routes).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    /// SIGKILL: its BGP neighbours notice after the hold time (3 s).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts it again on the same configuration.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch()
    }

    /// The log, every run.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("bird.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The next hops of the kernel route for exactly `prefix` in `ns`'s main
/// table (`ip -j route show PREFIX`): one address for a plain route, one
/// per path for a multipath route, none when there is no route (a route
/// without a gateway, such as `dev IF`, gives the device name instead).
pub fn route_nexthops(ns: &Netns, prefix: &str) -> anyhow::Result<Vec<String>> {
    let out = ns.ip(&["-j", "route", "show", "exact", prefix])?;
    parse_nexthops(&out)
}

fn parse_nexthops(json: &str) -> anyhow::Result<Vec<String>> {
    if json.trim().is_empty() {
        return Ok(vec![]);
    }
    let v: serde_json::Value = serde_json::from_str(json).context("ip -j route printed no JSON")?;
    let hop = |h: &serde_json::Value| h["gateway"].as_str().or_else(|| h["dev"].as_str()).map(String::from);
    let mut hops = vec![];
    for route in v.as_array().into_iter().flatten() {
        match route["nexthops"].as_array() {
            Some(nexthops) => hops.extend(nexthops.iter().filter_map(hop)),
            None => hops.extend(hop(route)),
        }
    }
    hops.sort();
    Ok(hops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nexthops_of_plain_and_multipath_routes() {
        // `ip -j route show exact 10.2.0.0/16` (iproute2 6.1) at a router.
        let multi = r#"[{"dst":"10.2.0.0/16","protocol":"bird","metric":32,"flags":[],"nexthops":[{"gateway":"10.1.0.12","dev":"br0","weight":1,"flags":[]},{"gateway":"10.1.0.11","dev":"br0","weight":1,"flags":[]}]}]"#;
        assert_eq!(parse_nexthops(multi).unwrap(), ["10.1.0.11", "10.1.0.12"]);
        let one =
            r#"[{"dst":"10.2.0.0/16","gateway":"10.1.0.12","dev":"br0","protocol":"bird","metric":32,"flags":[]}]"#;
        assert_eq!(parse_nexthops(one).unwrap(), ["10.1.0.12"]);
        let dev = r#"[{"dst":"10.2.0.0/16","dev":"cw1","protocol":"static","scope":"link","flags":[]}]"#;
        assert_eq!(parse_nexthops(dev).unwrap(), ["cw1"]);
        assert!(parse_nexthops("").unwrap().is_empty());
        assert!(parse_nexthops("[]").unwrap().is_empty());
        assert!(parse_nexthops("{oops").is_err());
    }
}
