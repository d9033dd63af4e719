//! etcd, the fleet's registry, inside lab namespaces: one member or a
//! cluster, each member in its own namespace plugged into a bridge (the
//! WAN), its data directory in the cluster's temporary directory (on
//! /dev/shm: `data_parent`); members killed, restarted, or all stopped and
//! started again (the store cut for a while); and `etcdctl` for the tests'
//! own reads and writes.
//!
//! What was found on this machine (etcd-server and etcd-client 3.4.23 from
//! Debian bookworm; `etcd --version` says 3.4.23, API 3.4):
//!
//! - The 3.4 flags: `--name`, `--data-dir`, `--listen-client-urls`,
//!   `--advertise-client-urls`, `--listen-peer-urls`,
//!   `--initial-advertise-peer-urls`, `--initial-cluster`,
//!   `--initial-cluster-state`, `--initial-cluster-token`, and
//!   `--logger zap --log-outputs stderr` (the default capnslog logger is
//!   deprecated in 3.4 and says so at every start). 3.5's
//!   `--unsafe-no-fsync` does not exist here.
//! - A member restarted on its data directory ignores the `--initial-*`
//!   flags and rejoins with its old identity, so a restart passes the same
//!   command line.
//! - etcdctl 3.4 speaks v3 by default (`ETCDCTL_API=3` is not needed);
//!   `get --prefix -w json` gives keys and values in base64.
//! - One member answers in about a second; a three-member cluster elects a
//!   leader within a few seconds of the last member's start (default
//!   heartbeat 100 ms, election timeout 1 s). With one of three killed,
//!   the other two keep a quorum and serve reads and writes.
//!
//! Invariants: every member's process is a `Process` (SIGTERM on drop)
//! inside a registered namespace (deleted with its processes on drop,
//! panic, Ctrl-C or the next run), fields drop members before the
//! temporary directory, and every etcdctl call runs under timeout(1).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;

use crate::bridge::Bridge;
use crate::{Netns, Process};

/// etcd's client port, on every member's address.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer (raft) port.
pub const PEER_PORT: u16 = 2380;

/// Longest any etcdctl call may take before timeout(1) ends it.
const ETCDCTL_LIMIT: Duration = Duration::from_secs(20);

/// Fails with the Debian package to install when etcd or etcdctl is
/// missing (scripts/test.sh installs both, starting no system etcd).
pub fn require_etcd() -> anyhow::Result<()> {
    crate::require("etcd", "etcd-server")?;
    crate::require("etcdctl", "etcd-client")
}

/// The version `etcd --version` reports ("3.4.23").
pub fn etcd_version() -> anyhow::Result<String> {
    let out = std::process::Command::new("etcd").arg("--version").output().context("cannot run etcd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_string())
        .context("etcd --version printed no version")
}

/// One member: its namespace (plugged into the WAN), address and process.
/// Fields drop in order: the process stops before its namespace goes.
pub struct EtcdMember {
    process: Option<Process>,
    pub name: String,
    /// Its WAN address (no prefix length).
    pub address: String,
    pub ns: Netns,
    data_dir: PathBuf,
    log: PathBuf,
}

impl EtcdMember {
    /// `http://ADDRESS:2379`
    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.address)
    }

    fn peer_url(&self) -> String {
        format!("http://{}:{PEER_PORT}", self.address)
    }

    /// Whether its process still runs.
    pub fn running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Process::running)
    }

    /// Its log, every run appended (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// An etcd cluster of one or more members, each in its own namespace on
/// the bridge given at start. Fields drop in order: members (processes,
/// then namespaces) before the directory holding their data.
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    initial_cluster: String,
    token: String,
    dir: tempfile::TempDir,
}

/// The cluster's temporary directory, on /dev/shm where it has room for
/// `members`. etcd fsyncs its log on every write; on a disk shared with a
/// build, one slow fsync can outlast the election timeout (1 s), and a
/// member then calls an election in the middle of a test. The tests need
/// no durability beyond a member's restart, which a tmpfs keeps.
fn data_parent(members: usize) -> std::io::Result<tempfile::TempDir> {
    // etcd 3.4 preallocates its 64 MiB WAL segment and the next one: a
    // small /dev/shm (a container's 64 MiB) would fail its first write.
    const PER_MEMBER: u64 = 256 << 20;
    let mut builder = tempfile::Builder::new();
    builder.prefix("cw-etcd-");
    let shm = Path::new("/dev/shm");
    if free_bytes(shm).is_some_and(|free| free >= PER_MEMBER.saturating_mul(members as u64)) {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return Ok(dir);
        }
    }
    builder.tempdir()
}

/// Bytes free to an unprivileged writer on the file system of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` has room for the
    // struct statvfs fills in; it is read only when the call succeeded.
    let st = unsafe {
        if libc::statvfs(c.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

impl EtcdCluster {
    /// Starts one member per address (plain IPv4 addresses on `wan`'s
    /// subnet, `/24` assumed), named m0, m1, …, each in a new namespace
    /// plugged into `wan`, and waits until every member is healthy.
    pub fn start(wan: &Bridge, addresses: &[&str]) -> anyhow::Result<EtcdCluster> {
        if addresses.is_empty() {
            bail!("an etcd cluster needs at least one member");
        }
        let dir = data_parent(addresses.len())?;
        let mut members = Vec::new();
        for (i, addr) in addresses.iter().enumerate() {
            let name = format!("m{i}");
            let ns = Netns::new(&format!("etcd{i}"))?;
            wan.attach(&ns, "wan0", &[&format!("{addr}/24")])?;
            let data_dir = dir.path().join(&name);
            let log = dir.path().join(format!("{name}.log"));
            members.push(EtcdMember { process: None, name, address: addr.to_string(), ns, data_dir, log });
        }
        let initial_cluster =
            members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect::<Vec<_>>().join(",");
        // A token of this cluster alone: members of another run's cluster
        // (which cannot be reached anyway) would be refused.
        let token = crate::unique("cw-etcd-");
        let mut cluster = EtcdCluster { members, initial_cluster, token, dir };
        for i in 0..cluster.members.len() {
            cluster.launch(i)?;
        }
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// Starts member `i`'s etcd (the log is appended to).
    fn launch(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &self.members[i];
        let data_dir = m.data_dir.to_str().context("the data directory is not UTF-8")?;
        let (client, peer) = (m.client_url(), m.peer_url());
        let args = [
            "--name",
            &m.name,
            "--data-dir",
            data_dir,
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &self.initial_cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            &self.token,
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ];
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&m.log)?;
        let child =
            m.ns.command("etcd")
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file)
                .spawn()
                .context("cannot start etcd")?;
        let what = format!("etcd {}", m.name);
        self.members[i].process = Some(Process::new(child, &what));
        Ok(())
    }

    /// The client URLs of every member, running or not (what a gateway's
    /// `[registry] endpoints` lists).
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(EtcdMember::client_url).collect()
    }

    /// The client URLs of the members whose process runs.
    pub fn live_client_urls(&mut self) -> Vec<String> {
        self.members.iter_mut().filter_map(|m| m.running().then(|| m.client_url())).collect()
    }

    /// Waits until every running member answers `endpoint health` as
    /// healthy (which needs a leader); fails with the logs after `timeout`.
    pub fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let urls = self.live_client_urls();
            if urls.is_empty() {
                bail!("no etcd member is running");
            }
            let last = match self.etcdctl_at(&urls, &["endpoint", "health", "-w", "json"]) {
                Ok(out) => {
                    let healthy = serde_json::from_str::<serde_json::Value>(&out)
                        .ok()
                        .and_then(|v| {
                            v.as_array().map(|a| a.iter().all(|e| e["health"] == true) && a.len() == urls.len())
                        })
                        .unwrap_or(false);
                    if healthy {
                        return Ok(());
                    }
                    out
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("etcd is not healthy after {timeout:?}: {last}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL to member `i` (a crash); its namespace and data stay.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].process.take() {
            p.kill();
        }
    }

    /// SIGTERM to member `i` (an orderly stop).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].process.take() {
            p.stop();
        }
    }

    /// Starts member `i` again on its data directory (stopping it first if
    /// it still runs); does not wait (`wait_healthy` does).
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop(i);
        self.launch(i)
    }

    /// Stops every member (SIGTERM): the store is gone for its clients
    /// until `start_all`.
    pub fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }

    /// Starts every member that is not running and waits until the cluster
    /// is healthy again.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            if !self.members[i].running() {
                self.launch(i)?;
            }
        }
        self.wait_healthy(Duration::from_secs(30))
    }

    /// Runs `etcdctl ARGS` against the running members, from the first
    /// member's namespace (which stays on the WAN when its process is
    /// killed); its stdout, or an error with both outputs.
    pub fn etcdctl(&mut self, args: &[&str]) -> anyhow::Result<String> {
        let urls = self.live_client_urls();
        if urls.is_empty() {
            bail!("no etcd member is running");
        }
        self.etcdctl_at(&urls, args)
    }

    /// Runs `etcdctl ARGS` against member `i` alone (running or not).
    pub fn etcdctl_on(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        self.etcdctl_at(&[self.members[i].client_url()], args)
    }

    fn etcdctl_at(&self, urls: &[String], args: &[&str]) -> anyhow::Result<String> {
        let endpoints = format!("--endpoints={}", urls.join(","));
        let limit = ETCDCTL_LIMIT.as_secs().to_string();
        let out = self.members[0]
            .ns
            .command("timeout")
            .args(["-k", "2", &limit, "etcdctl", &endpoints, "--dial-timeout=2s", "--command-timeout=5s"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .context("cannot run etcdctl")?;
        if !out.status.success() {
            bail!(
                "etcdctl {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `etcdctl put KEY VALUE`
    pub fn put(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        // `--` so that a value starting with '-' is not read as a flag.
        self.etcdctl(&["put", "--", key, value]).map(drop)
    }

    /// `etcdctl del KEY`; returns how many keys were deleted.
    pub fn del(&mut self, key: &str) -> anyhow::Result<u64> {
        let out = self.etcdctl(&["del", "--", key])?;
        out.trim().parse().with_context(|| format!("etcdctl del printed {out:?}"))
    }

    /// The value of `key`, if it exists.
    pub fn get(&mut self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self.get_range(key, false)?.into_iter().next().map(|(_, v)| v))
    }

    /// Every key under `prefix`, with its value, in key order.
    pub fn get_prefix(&mut self, prefix: &str) -> anyhow::Result<Vec<(String, String)>> {
        self.get_range(prefix, true)
    }

    fn get_range(&mut self, key: &str, prefix: bool) -> anyhow::Result<Vec<(String, String)>> {
        let mut args = vec!["get", "-w", "json"];
        if prefix {
            args.push("--prefix");
        }
        args.extend(["--", key]);
        let out = self.etcdctl(&args)?;
        parse_get_json(&out)
    }

    /// The index of the member that leads now, if one does.
    pub fn leader(&mut self) -> anyhow::Result<Option<usize>> {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("endpoint status is not JSON")?;
        let leader = v.as_array().and_then(|a| a.iter().find_map(|e| e["Status"]["leader"].as_u64()));
        let Some(leader) = leader else { return Ok(None) };
        // Find whose member_id it is.
        let me = v.as_array().and_then(|a| {
            a.iter().find(|e| e["Status"]["header"]["member_id"].as_u64() == Some(leader)).and_then(|e| {
                let ep = e["Endpoint"].as_str()?;
                self.members.iter().position(|m| m.client_url() == ep)
            })
        });
        Ok(me)
    }

    /// Every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.members.iter().map(|m| format!("--- etcd {} log:\n{}", m.name, tail(&m.log_text(), 30))).collect()
    }

    /// The directory holding the members' data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Keys and values of `etcdctl get -w json` (both base64 there).
fn parse_get_json(out: &str) -> anyhow::Result<Vec<(String, String)>> {
    let v: serde_json::Value = serde_json::from_str(out).context("etcdctl get -w json printed no JSON")?;
    let b64 = |s: &serde_json::Value| -> anyhow::Result<String> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(s.as_str().unwrap_or_default())?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let Some(kvs) = v["kvs"].as_array() else { return Ok(vec![]) };
    kvs.iter().map(|kv| Ok((b64(&kv["key"])?, b64(&kv["value"])?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_json_is_decoded() {
        // What etcdctl 3.4.23 printed for `get --prefix /causeway -w json`.
        let out = r#"{"header":{"cluster_id":1,"member_id":2,"revision":2,"raft_term":2},"kvs":[{"key":"L2NhdXNld2F5L3NpdGVzL3dlc3Q=","create_revision":2,"mod_revision":2,"version":1,"value":"eyJwcmVmaXhlcyI6WyIxMC4yLjAuMC8xNiJdfQ=="}],"count":1}"#;
        let kvs = parse_get_json(out).unwrap();
        assert_eq!(kvs, [("/causeway/sites/west".to_string(), r#"{"prefixes":["10.2.0.0/16"]}"#.to_string())]);
        let none = r#"{"header":{"cluster_id":1,"member_id":2,"revision":2,"raft_term":2}}"#;
        assert!(parse_get_json(none).unwrap().is_empty());
        assert!(parse_get_json("not json").is_err());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn free_space_is_read_or_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some_and(|b| b > 0));
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
        // No file system has room for this many members: the default
        // temporary directory, not /dev/shm.
        let d = data_parent(usize::MAX >> 30).unwrap();
        assert!(!d.path().starts_with("/dev/shm"), "{}", d.path().display());
    }
}
