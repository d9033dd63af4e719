//! Network-namespace labs: what the demo (`causeway-demo`) and the netns integration
//! tests build. Every namespace and process made here is registered, so it
//! is removed when its owner is dropped (also while a test panics), on
//! Ctrl-C, and — should a run be killed outright — by the next run, which
//! deletes namespaces whose creating process no longer exists.
//!
//! Errors are `anyhow` on purpose, though this is a library: its callers
//! are tests, benchmarks and the demo, where a failed step ends the run
//! with its message and the command that failed; nothing matches on them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use causeway_wireguard::{PublicKey, StaticSecret};

/// Prefix of every namespace this module creates: `cw-<tag>-<pid>-<n>`.
const PREFIX: &str = "cw-";

static REGISTRY: Mutex<Vec<String>> = Mutex::new(Vec::new());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short token unique to this process and call, for interface names
/// (at most 15 characters) and namespace names.
pub fn unique(tag: &str) -> String {
    let name = format!("{tag}{}{}", std::process::id() % 100_000, COUNTER.fetch_add(1, Ordering::Relaxed));
    ISSUED.lock().unwrap_or_else(|e| e.into_inner()).push(name.clone());
    name
}

/// Every name `unique` gave out whose daemon's name lock may still be on
/// disk (see `remove_stale_locks`).
static ISSUED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Removes the name locks that daemons of this run's names, killed
/// outright, left in /var/run/causeway (a daemon that stops removes its
/// own); a lock still held stays, and its name is kept for a later call.
pub fn remove_stale_locks() {
    use causeway_gateway::sockets::lock_path;
    ISSUED.lock().unwrap_or_else(|e| e.into_inner()).retain(|name| {
        let path = lock_path(name);
        causeway_gateway::name_lock::remove_if_unheld(&path);
        path.exists()
    });
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = bounded::output_within(cmd, bounded::COMMAND_LIMIT).with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// Deletes namespaces left by runs whose process is gone.
pub fn reap_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !alive(pid) {
                delete_netns(name);
            }
        }
    }
}

/// Whether `pid` still runs. A zombie does not: a run killed outright
/// stays one until its parent reaps it, which a test wrapper may do only
/// after the next run has started.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// Sends `signal` to process `pid`, if it still exists. A system call
/// rather than kill(1), so that clean-up does not depend on procps.
fn send_signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    if pid > 0 {
        // SAFETY: kill takes no pointers; a process gone meanwhile is ESRCH.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Stops what still runs in a namespace (SIGTERM, so daemons remove their
/// sockets; SIGKILL after 2 s) and deletes it.
fn delete_netns(name: &str) {
    let pids = || -> Vec<String> {
        Command::new("ip")
            .args(["netns", "pids", name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    };
    let mut left = pids();
    for (signal, wait_ms) in [(libc::SIGTERM, 2000u64), (libc::SIGKILL, 0)] {
        if left.is_empty() {
            break;
        }
        for pid in left.iter().filter_map(|p| p.parse::<u32>().ok()) {
            send_signal(pid, signal);
        }
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        while Instant::now() < deadline && !pids().is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        left = pids();
    }
    let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
}

/// Removes everything registered (namespaces and the processes in them).
pub fn cleanup_all() {
    let names: Vec<String> = std::mem::take(&mut *REGISTRY.lock().unwrap_or_else(|e| e.into_inner()));
    for n in names {
        delete_netns(&n);
    }
}

/// A network namespace, deleted (with every process in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> anyhow::Result<Netns> {
        let name = format!("{PREFIX}{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        run(Command::new("ip").args(["netns", "add", &name]))?;
        // The flag is read under the registry's lock, which the clean-up
        // takes after setting it: either it removes this namespace, or
        // this sees the flag.
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        if interrupt::INTERRUPTED.load(Ordering::SeqCst) {
            drop(registry);
            delete_netns(&name);
            bail!("interrupted");
        }
        registry.push(name.clone());
        drop(registry);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME args…`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = run(Command::new("ip").arg("-n").arg(&self.name).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command to run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs a program in the namespace; fails with its stderr if it fails.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = run(self.command(program).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a long-running program in the namespace, stopped on drop.
    pub fn spawn(
        &self,
        what: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        log: Option<&Path>,
    ) -> anyhow::Result<Process> {
        let mut c = self.command(program);
        c.args(args).stdin(Stdio::null());
        match log {
            Some(p) => {
                let f = std::fs::File::create(p)?;
                c.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                c.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = c.spawn().with_context(|| format!("cannot start {what}"))?;
        Ok(Process { child: Some(child), what: what.to_string() })
    }

    /// Pings `addr` `count` times; returns the average RTT of the replies
    /// if any came back.
    pub fn ping(&self, addr: &str, count: u32) -> Option<Duration> {
        self.ping_every(addr, count, Duration::from_millis(200))
    }

    /// `ping` with `interval` between the pings (below 0.2 s needs root,
    /// which the namespaces need anyway).
    pub fn ping_every(&self, addr: &str, count: u32, interval: Duration) -> Option<Duration> {
        self.ping_summary(addr, count, interval).map(|s| s.average)
    }

    /// Pings as `ping_every` does; how many went out and came back, and
    /// the average RTT of those that did (None if none did).
    pub fn ping_summary(&self, addr: &str, count: u32, interval: Duration) -> Option<PingSummary> {
        let count_s = count.to_string();
        let every = format!("{:.3}", interval.as_secs_f64());
        let out = self.command("ping").args(["-c", &count_s, "-i", &every, "-W", "2", "-q", addr]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // "5 packets transmitted, 5 received, 0% packet loss, time 802ms"
        let counts = text.lines().find(|l| l.contains("packets transmitted"))?;
        let field = |n: usize| counts.split(',').nth(n)?.split_whitespace().next()?.parse::<u32>().ok();
        let (sent, received) = (field(0)?, field(1)?);
        // "rtt min/avg/max/mdev = 0.309/1.227/2.951/1.219 ms"
        let avg = text
            .lines()
            .find(|l| l.contains("min/avg/max"))?
            .split('=')
            .nth(1)?
            .trim()
            .split('/')
            .nth(1)?
            .parse::<f64>()
            .ok()?;
        Some(PingSummary { sent, received, average: Duration::from_secs_f64(avg / 1000.0) })
    }

    /// Waits until a TCP socket in the namespace listens on `port` (any
    /// address), so that a client started next does not race the server's
    /// start-up: iperf3 and ncat clients try to connect once. Fails after
    /// `timeout`, or when `server` exits before it listens.
    pub fn wait_listening(&self, server: &mut Process, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let filter = format!("sport = :{port}");
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.exec("ss", &["-H", "-l", "-t", "-n", &filter])?;
            if !out.trim().is_empty() {
                return Ok(());
            }
            if !server.running() {
                bail!("{} exited before it listened on TCP port {port}", server.what);
            }
            if Instant::now() >= deadline {
                bail!("{} did not listen on TCP port {port} within {timeout:?}", server.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Retries a ping until it answers or `timeout` passes.
    pub fn wait_for_ping(&self, addr: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.ping(addr, 1).is_some() {
                return true;
            }
        }
        false
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).retain(|n| n != &self.name);
        delete_netns(&self.name);
    }
}

/// Runs `f` on a thread that has joined `ns`'s network namespace, so the
/// sockets it opens live there; returns what `f` returns.
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/var/run/netns/{}", ns.name)).context("cannot open the namespace")?;
    let handle = std::thread::spawn(move || {
        // SAFETY: `file` is an open namespace file descriptor for the whole
        // call; setns affects only this thread.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(anyhow::anyhow!("setns failed: {}", std::io::Error::last_os_error()));
        }
        Ok(f())
    });
    handle.join().map_err(|_| anyhow::anyhow!("the thread in the namespace panicked"))?
}

/// Asks a running causewayd for its status over the control API.
pub fn api_status(ifname: &str) -> anyhow::Result<serde_json::Value> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(causeway_gateway::sockets::api_socket_path(ifname))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(s, "{{\"op\":\"status\"}}")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    Ok(v["ok"].clone())
}

/// An ICMP echo request (or reply) in IPv4 with valid checksums.
pub fn icmp_echo(src: [u8; 4], dst: [u8; 4], seq: u16, reply: bool) -> Vec<u8> {
    let checksum = |b: &[u8]| causeway_dataplane::checksum::checksum(b, 0);
    let mut p = vec![0u8; 20 + 8 + 32];
    let total = p.len() as u16;
    p[0] = 0x45;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = 1;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20] = if reply { 0 } else { 8 };
    p[24..26].copy_from_slice(&0x4357u16.to_be_bytes());
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    let c = checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

/// Connects two namespaces with a veth pair and addresses each end.
pub fn veth(a: &Netns, a_if: &str, a_addrs: &[&str], b: &Netns, b_if: &str, b_addrs: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip")
        .args(["link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns", &b.name]))?;
    for (ns, dev, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        for addr in addrs {
            // nodad: IPv6 addresses are usable at once instead of after DAD.
            if addr.contains(':') {
                ns.ip(&["addr", "add", addr, "dev", dev, "nodad"])?;
            } else {
                ns.ip(&["addr", "add", addr, "dev", dev])?;
            }
        }
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok(())
}

/// A child process stopped with SIGTERM on drop (SIGKILL after 5 s).
pub struct Process {
    child: Option<Child>,
    pub what: String,
}

impl Process {
    /// Takes ownership of a started child (for programs started with more
    /// setup than `Netns::spawn` does, such as an appended log).
    pub fn new(child: Child, what: &str) -> Process {
        Process { child: Some(child), what: what.to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Sends SIGTERM and waits; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        // It may still exit before the signal lands: nothing to report then.
        send_signal(child.id(), libc::SIGTERM);
        // A stop that deletes routes and a TUN device waits for the
        // kernel's network lock, which the teardown of the namespaces of
        // the test before may hold for seconds on a loaded machine; tests
        // assert the exit code, so the grace is generous.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok().and_then(|s| s.code())
    }

    /// Sends SIGKILL (a crash, as far as the program can tell) and waits;
    /// returns the exit code (None: killed by the signal, or not running).
    pub fn kill(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        let _ = child.kill();
        child.wait().ok().and_then(|s| s.code())
    }

    /// Waits up to `timeout` for the process to exit by itself; returns its
    /// exit code, or None if it is still running (it is then left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn keypair() -> (StaticSecret, PublicKey) {
    let s = StaticSecret::random(&mut rand_core::OsRng);
    let p = s.public_key();
    (s, p)
}

pub fn b64(bytes: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Writes a private file (mode 0600): configurations hold keys.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Waits until the UAPI socket of `ifname` exists.
pub fn wait_for_socket(ifname: &str, timeout: Duration) -> bool {
    let path = causeway_gateway::sockets::uapi_socket_path(ifname);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Sends one UAPI request (`get=1\n\n` or `set=1\n…\n\n`) and returns the reply.
pub fn uapi(ifname: &str, request: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(causeway_gateway::sockets::uapi_socket_path(ifname))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request.as_bytes())?;
    let mut reply = String::new();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        if line == "\n" {
            break;
        }
        reply.push_str(&line);
    }
    Ok(reply)
}

/// What a run of ping reported.
#[derive(Debug, Clone, Copy)]
pub struct PingSummary {
    pub sent: u32,
    pub received: u32,
    /// Of the replies that came back.
    pub average: Duration,
}

/// Result of an iperf3 run.
#[derive(Debug, Clone, Copy)]
pub struct Iperf {
    pub bits_per_second: f64,
    pub retransmits: u64,
    /// Payload bytes the receiver got.
    pub bytes: u64,
}

/// Runs an iperf3 client in `client` against a server started in `server`
/// on `addr` and returns iperf3's JSON report. `secs` 0 lets `extra` set
/// the end (such as `-n 200M`); `reverse` makes the server send.
pub fn iperf3_json(
    server: &Netns,
    client: &Netns,
    addr: &str,
    secs: u32,
    reverse: bool,
    extra: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let port_n = 5201 + (COUNTER.fetch_add(1, Ordering::Relaxed) % 1000) as u16;
    let port = port_n.to_string();
    let mut srv = server.spawn("iperf3 server", "iperf3", &["-s", "-1", "-B", addr, "-p", &port], None)?;
    server.wait_listening(&mut srv, port_n, Duration::from_secs(30))?;
    let secs_s = secs.to_string();
    let limit = (secs.max(40) + 20).to_string();
    let mut args = vec![limit.as_str(), "iperf3", "-c", addr, "-p", &port, "-J"];
    if secs > 0 {
        args.extend_from_slice(&["-t", &secs_s]);
    }
    if reverse {
        args.push("-R");
    }
    args.extend_from_slice(extra);
    let out = client.command("timeout").args(&args).output()?;
    srv.stop();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 output is not JSON: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(e) = json.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    Ok(json)
}

/// A TCP iperf3 run (see `iperf3_json`), summarised.
pub fn iperf3(
    server: &Netns,
    client: &Netns,
    addr: &str,
    secs: u32,
    reverse: bool,
    extra: &[&str],
) -> anyhow::Result<Iperf> {
    let json = iperf3_json(server, client, addr, secs, reverse, extra)?;
    let end = &json["end"];
    let received = &end["sum_received"];
    Ok(Iperf {
        bits_per_second: received["bits_per_second"].as_f64().context("iperf3 reported no throughput")?,
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        bytes: received["bytes"].as_u64().unwrap_or(0),
    })
}

/// The causewayd binary next to the running executable (or its parent
/// directory, for test executables under `deps/`).
pub fn causewayd_path() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let mut candidates = vec![];
    if let Some(dir) = me.parent() {
        candidates.push(dir.join("causewayd"));
        if let Some(up) = dir.parent() {
            candidates.push(up.join("causewayd"));
        }
    }
    candidates.into_iter().find(|p| p.is_file()).context(
        "causewayd binary not found next to this program; build it with `cargo build --release -p causeway-gateway`",
    )
}

/// Fails with a clear message when a command the lab needs is missing.
/// The lab installs nothing itself: scripts/demo.sh and scripts/test.sh
/// do, so a test never changes the machine behind the operator's back.
pub fn require(command: &str, package: &str) -> anyhow::Result<()> {
    let present = Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        bail!("{command} is missing: install the Debian package {package} (scripts/demo.sh and scripts/test.sh do)");
    }
    Ok(())
}
pub mod bird;
pub mod bounded;
pub mod bridge;
pub mod demo;
pub mod etcd;
pub mod fleet;
mod interrupt;
pub mod strongswan;

pub use interrupt::clean_up_on_interrupt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_is_not_alive() {
        assert!(alive(std::process::id()));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not waited for: once it exits it is a zombie until `wait`.
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(pid), "exited child {pid} still counts as alive");
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "the zombie is still in /proc");
        child.wait().unwrap();
        assert!(!alive(pid));
    }
}
