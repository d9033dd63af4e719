//! strongSwan's charon as an IKEv2 + ESP peer inside a lab namespace: the
//! daemon (`Charon`) around a typed swanctl.conf (`Connection`, in
//! strongswan/connection.rs), for the tests and benchmarks that put
//! Causeway next to strongSwan.
//!
//! What was found on this machine (strongSwan 5.9.8 from Debian bookworm, a
//! kernel without XFRM ESP, so ESP runs in userspace through kernel-libipsec):
//!
//! - One charon per namespace, each in its own mount namespace:
//!   `ip netns exec NS unshare -m sh -c '…; exec charon'`. unshare(1) makes
//!   the new mounts private, so nothing shows outside. Three binds: a
//!   private directory over /run (charon's pid file and vici socket; a
//!   directory of ours rather than a tmpfs, so the test process reaches
//!   the vici socket by its path and runs swanctl from outside with `--uri`
//!   and `SWANCTL_DIR`), a private strongswan.conf over /etc/strongswan.conf
//!   and a private directory over /etc/swanctl (so `swanctl` entered into
//!   that mount namespace by hand sees the same files). The spawned process
//!   becomes charon itself (ip, unshare and sh all exec), so its pid is
//!   charon's: what the benchmark reads CPU time from.
//! - kernel-libipsec creates the TUN `ipsec0` when charon starts, before any
//!   SA: point-to-point, no address, MTU 1400. ESP is sealed and opened in
//!   charon's own threads.
//! - That MTU is fixed: libipsec reads the TUN into a buffer of the MTU it
//!   set at creation, so raising the link's MTU breaks every larger packet
//!   (with ipsec0 at 1420, a 1420-byte ping with DF set got no answer; 1400
//!   does). MSS clamping for routed traffic belongs on ipsec0 (iptables
//!   TCPMSS --clamp-mss-to-pmtu, which gives 1360).
//! - Routes: the lab adds none. At start charon adds the rule
//!   `220: from all lookup 220`; when a CHILD_SA is installed it adds
//!   `<remote_ts> dev ipsec0 table 220 proto static src <an address of
//!   this namespace inside local_ts>`. Both the gateway's own packets and
//!   those it forwards from hosts behind it (ip_forward=1) then take the
//!   tunnel. The gateway must own an address inside local_ts (its LAN
//!   address, or a /32 on lo) to have a source for its own packets.
//! - SIGTERM: charon deletes its SAs (telling the peer), ipsec0, the routes
//!   and the rule. SIGKILL: ipsec0 and its routes vanish with the process
//!   (the TUN is not persistent); the rule 220 stays, and so do the pid
//!   file and socket file in our run directory (`restart` removes those).
//! - kernel-libipsec in 5.9.8 sends and receives ESP only inside UDP (port
//!   4500): `encap = yes` is needed where no NAT is between the peers, and
//!   raw ESP (IP protocol 50) cannot be tested against it.
//! - `start_action = trap` never triggers a negotiation with kernel-libipsec
//!   ("could not find an outbound IPsec SA"), hence only start or none.
//! - The responder must have loaded its connection before the initiator's
//!   IKE_SA_INIT arrives, or it answers NO_PROPOSAL_CHOSEN ("no IKE config
//!   found"): start the responder first (`Charon::start` returns after
//!   loading).
//!
//! Invariants: everything a `Charon` starts is its `Process` (SIGTERM on
//! drop) inside a registered namespace (deleted with its processes on drop,
//! panic, Ctrl-C or the next run), and every swanctl call runs under
//! timeout(1), so a test that goes wrong still ends and leaves nothing. The
//! PSK is written only to the 0600 swanctl.conf, never logged or printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{unique, write_private, Netns, Process};

mod connection;
pub use connection::{Connection, StartAction};

/// Where Debian installs the daemon (not on PATH).
pub const CHARON: &str = "/usr/lib/ipsec/charon";
const PLUGINS: &str = "/usr/lib/ipsec/plugins";

/// The MTU kernel-libipsec gives its TUN (`ipsec0`), which cannot be
/// changed (see above).
pub const TUN_MTU: u32 = 1400;

/// Plugins charon loads (non-modular loading, so the machine's
/// /etc/strongswan.d does not matter): the note's working list plus gmp,
/// an implementation of the MODP groups besides openssl's.
const LOAD: &str = "random nonce openssl pem pkcs1 x509 pubkey curve25519 kdf aes gcm sha1 sha2 hmac gmp \
                    kernel-libipsec kernel-netlink socket-default updown vici";

/// Longest any swanctl call may take before timeout(1) ends it.
const SWANCTL_LIMIT: Duration = Duration::from_secs(30);

/// Fails with the Debian package to install when a part of strongSwan the
/// lab needs is missing (scripts/test.sh and scripts/bench.sh install them).
pub fn require_strongswan() -> anyhow::Result<()> {
    crate::require(CHARON, "strongswan-charon")?;
    crate::require("swanctl", "strongswan-swanctl")?;
    for (plugin, package) in [
        ("kernel-libipsec", "libcharon-extra-plugins"),
        ("openssl", "libstrongswan-standard-plugins"),
        ("gcm", "libstrongswan-standard-plugins"),
        ("curve25519", "libstrongswan-extra-plugins"),
    ] {
        if !Path::new(&format!("{PLUGINS}/libstrongswan-{plugin}.so")).exists() {
            bail!("strongSwan's {plugin} plugin is missing: install the Debian package {package}");
        }
    }
    Ok(())
}

/// A position in a charon's log (`Charon::log_mark`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogMark(u64);

/// Whether `line` holds the parts of `pattern` split at `*`, in order
/// (`CHILD_SA * established with SPIs`).
fn matches(line: &str, pattern: &str) -> bool {
    let mut rest = line;
    for part in pattern.split('*') {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// One charon in a namespace, with its own configuration directory:
/// `strongswan.conf`, `swanctl/swanctl.conf`, `run/` (pid file and vici
/// socket) and `charon.log` (every run appended). Stopped with SIGTERM on
/// drop; its namespace's deletion ends it in any case.
pub struct Charon {
    process: Option<Process>,
    netns: String,
    dir: PathBuf,
    log: PathBuf,
    /// Where the current run's lines start in the log.
    run_start: LogMark,
    conn: Connection,
}

impl Charon {
    /// Writes the configuration into a new directory under `parent`,
    /// starts charon in `ns`, waits for its vici socket and loads the
    /// connection (`swanctl --load-all`). With `StartAction::Start` it then
    /// initiates by itself; the responder should be started first.
    pub fn start(ns: &Netns, parent: &Path, conn: &Connection) -> anyhow::Result<Charon> {
        let swanctl_conf = conn.to_swanctl_conf()?;
        let dir = parent.join(unique("swan"));
        let quotable = dir.to_str().is_some_and(|d| !d.contains(['\'', '\\']));
        if !quotable {
            bail!("{} cannot be quoted for sh", dir.display());
        }
        // swanctl --load-all reads these folders and complains when absent.
        for sub in ["x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey", "private", "rsa", "ecdsa"]
            .into_iter()
            .chain(["bliss", "pkcs8", "pkcs12"])
        {
            std::fs::create_dir_all(dir.join("swanctl").join(sub))?;
        }
        std::fs::create_dir_all(dir.join("run"))?;
        std::fs::write(dir.join("strongswan.conf"), strongswan_conf())?;
        write_private(&dir.join("swanctl/swanctl.conf"), &swanctl_conf)?;
        let log = dir.join("charon.log");
        let mut charon =
            Charon { process: None, netns: ns.name.clone(), dir, log, run_start: LogMark(0), conn: conn.clone() };
        charon.launch()?;
        Ok(charon)
    }

    /// Starts charon and loads the configuration; the log is appended to.
    fn launch(&mut self) -> anyhow::Result<()> {
        let run = self.dir.join("run");
        // Left by a killed charon: it would refuse a live-looking pid file.
        for f in ["charon.pid", "charon.vici"] {
            let _ = std::fs::remove_file(run.join(f));
        }
        let d = self.dir.display();
        let script = format!(
            "set -e; mount --bind '{d}/run' /run; mount --bind '{d}/strongswan.conf' /etc/strongswan.conf; \
             mount --bind '{d}/swanctl' /etc/swanctl; exec {CHARON}"
        );
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        self.run_start = LogMark(file.metadata()?.len());
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "unshare", "-m", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("cannot start charon")?;
        let mut process = Process::new(child, "charon");
        let socket = run.join("charon.vici");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            if !process.running() || Instant::now() > deadline {
                process.kill();
                bail!("charon did not open its vici socket; its log:\n{}", self.run_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.process = Some(process);
        self.load_all().with_context(|| format!("charon's log:\n{}", self.run_text()))?;
        Ok(())
    }

    /// Runs `swanctl ARGS --uri <this charon>` (ARGS starting with the
    /// command, such as `--list-sas`); its stdout, or an error with both
    /// outputs when it fails or outlives its time limit.
    pub fn swanctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let uri = format!("unix://{}", self.dir.join("run/charon.vici").display());
        let limit = SWANCTL_LIMIT.as_secs().to_string();
        let out = Command::new("timeout")
            .args(["-k", "5", &limit, "swanctl"])
            .args(args)
            .args(["--uri", &uri])
            .env("SWANCTL_DIR", self.dir.join("swanctl"))
            .stdin(Stdio::null())
            .output()
            .context("cannot run swanctl")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "swanctl {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(stdout)
    }

    /// `swanctl --load-all`: credentials and connections from swanctl.conf.
    pub fn load_all(&self) -> anyhow::Result<String> {
        self.swanctl(&["--load-all", "--noprompt"])
    }

    /// `swanctl --initiate --child CHILD`: returns once the CHILD_SA is up
    /// (or fails, with swanctl's account of why).
    pub fn initiate(&self, child: &str) -> anyhow::Result<String> {
        let limit = (SWANCTL_LIMIT.as_secs() - 5).to_string();
        self.swanctl(&["--initiate", "--child", child, "--timeout", &limit])
    }

    /// `swanctl --list-sas`: the IKE and CHILD SAs with their algorithms,
    /// SPIs, states and counters.
    pub fn list_sas(&self) -> anyhow::Result<String> {
        self.swanctl(&["--list-sas", "--noblock"])
    }

    /// Waits until a line of the current run's log matches `pattern`
    /// (literal parts split at `*`, in order); returns that line.
    pub fn wait_for_log(&self, pattern: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_for_log_after(self.run_start, pattern, timeout)
    }

    /// As `wait_for_log`, for lines written after `mark` (the second
    /// rekey, say, with a mark taken after the first).
    pub fn wait_for_log_after(&self, mark: LogMark, pattern: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text_after(mark);
            if let Some(line) = text.lines().find(|l| matches(l, pattern)) {
                return Ok(line.to_string());
            }
            if Instant::now() > deadline {
                bail!(
                    "charon logged no line like {pattern:?} in {timeout:?}; its log ({}):\n{text}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many lines of the current run's log match `pattern`.
    pub fn count_log(&self, pattern: &str) -> usize {
        self.run_text().lines().filter(|l| matches(l, pattern)).count()
    }

    /// The end of the log now, for `wait_for_log_after`.
    pub fn log_mark(&self) -> LogMark {
        LogMark(std::fs::metadata(&self.log).map_or(0, |m| m.len()))
    }

    fn text_after(&self, mark: LogMark) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let start = (mark.0 as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// The current run's log.
    pub fn run_text(&self) -> String {
        self.text_after(self.run_start)
    }

    /// The whole log, every run (for failure messages).
    pub fn log_text(&self) -> String {
        self.text_after(LogMark(0))
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The configuration directory (strongswan.conf, swanctl/, run/).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The TUN kernel-libipsec created in this run (`ipsec0`, or another
    /// name should one be left over).
    pub fn tun_name(&self) -> anyhow::Result<String> {
        let line = self.wait_for_log("created TUN device: ", Duration::from_secs(5))?;
        line.rsplit(": ").next().map(|n| n.trim().to_string()).context("no TUN name in the log")
    }

    /// charon's pid (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, Process::pid)
    }

    pub fn running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Process::running)
    }

    /// SIGTERM, as an operator stops it: charon deletes its SAs (telling
    /// the peer), the TUN and its routes. Returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.process.take().and_then(|mut p| p.stop())
    }

    /// SIGKILL, a crash: the peer is not told; the TUN goes with the
    /// process.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Stops charon if it still runs (SIGTERM; call `kill` first for a
    /// crash), starts it again on the same configuration and loads it.
    /// Log lines of earlier runs are kept, but `wait_for_log` and
    /// `count_log` look at the new run only.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch()
    }
}

/// charon's settings: the plugins it needs, loaded explicitly, and its log
/// on stderr (which `Charon` sends to charon.log) with millisecond times.
fn strongswan_conf() -> String {
    format!(
        "# Written by causeway-lab (lab/src/strongswan.rs) for one charon in a private mount namespace.\n\
         charon {{\n    load_modular = no\n    load = {LOAD}\n    filelog {{\n        stderr {{\n\
         \x20           default = 1\n            ike_name = yes\n            time_format = %H:%M:%S\n\
         \x20           time_add_ms = yes\n        }}\n    }}\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_patterns_match_parts_in_order() {
        let line = "06:27:01.123 15[IKE] <cw|1> CHILD_SA net{1} established with SPIs c2e8c952_i 2e26af25_o";
        assert!(matches(line, "CHILD_SA * established with SPIs"));
        assert!(matches(line, "established"));
        assert!(!matches(line, "established * CHILD_SA"));
        assert!(!matches(line, "IKE_SA * established"));
    }
}
