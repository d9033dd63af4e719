//! strongSwan's charon as an IKEv2 + ESP peer inside a lab namespace: a typed
//! swanctl.conf builder (`Connection`) and the daemon around it (`Charon`),
//! for the tests and benchmarks that put Causeway next to strongSwan.
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

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use zeroize::Zeroizing;

use crate::{unique, write_private, Netns, Process};

/// Where Debian installs the daemon (not on PATH).
pub const CHARON: &str = "/usr/lib/ipsec/charon";
const PLUGINS: &str = "/usr/lib/ipsec/plugins";

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

/// The child's `start_action`. `trap` is left out: kernel-libipsec never
/// negotiates from a trap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAction {
    /// Initiate as soon as the connection is loaded.
    Start,
    /// Wait for the peer (or `Charon::initiate`).
    None,
}

/// One IKE connection with one child, rendered as swanctl.conf. PSK
/// authentication with FQDN identities; explicit traffic selectors (the
/// route-based `if_id` style needs XFRM interfaces, which libipsec lacks).
#[derive(Clone)]
pub struct Connection {
    /// The connection's name in swanctl.conf.
    pub name: String,
    /// The child's name (what `Charon::initiate` takes).
    pub child: String,
    pub local_addr: String,
    pub remote_addr: String,
    /// FQDN identities (IKEv2 ID_FQDN).
    pub local_id: String,
    pub remote_id: String,
    /// IKE proposal, swanctl syntax (`aes256gcm16-prfsha256-x25519`).
    pub ike_proposal: String,
    /// ESP proposal, swanctl syntax (`aes256gcm16`).
    pub esp_proposal: String,
    /// Subnets (`10.1.0.0/24`) or addresses.
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    /// IKE SA (rekey, hard lifetime); None: strongSwan's defaults.
    pub ike_lifetime: Option<(Duration, Duration)>,
    /// CHILD_SA (rekey, hard lifetime); None: strongSwan's defaults.
    pub child_lifetime: Option<(Duration, Duration)>,
    pub dpd_delay: Option<Duration>,
    /// UDP encapsulation of ESP forced on (port 4500 from IKE_AUTH on).
    pub encap: bool,
    pub start_action: StartAction,
    psk: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("child", &self.child)
            .field("local_addr", &self.local_addr)
            .field("remote_addr", &self.remote_addr)
            .field("local_id", &self.local_id)
            .field("remote_id", &self.remote_id)
            .field("ike_proposal", &self.ike_proposal)
            .field("esp_proposal", &self.esp_proposal)
            .field("local_ts", &self.local_ts)
            .field("remote_ts", &self.remote_ts)
            .field("ike_lifetime", &self.ike_lifetime)
            .field("child_lifetime", &self.child_lifetime)
            .field("dpd_delay", &self.dpd_delay)
            .field("encap", &self.encap)
            .field("start_action", &self.start_action)
            .field("psk", &"<redacted>")
            .finish()
    }
}

impl Connection {
    /// A connection between two WAN addresses with the defaults the note
    /// found working: IKE `aes256gcm16-prfsha256-x25519`, ESP `aes256gcm16`,
    /// `encap = yes`, identities `left.causeway.test` (here) and
    /// `right.causeway.test`, a random 32-byte PSK, start_action none.
    /// Traffic selectors must still be set (`traffic`).
    pub fn new(local_addr: &str, remote_addr: &str) -> Connection {
        use rand_core::RngCore;
        let mut psk = Zeroizing::new(vec![0u8; 32]);
        rand_core::OsRng.fill_bytes(&mut psk);
        Connection {
            name: "cw".into(),
            child: "net".into(),
            local_addr: local_addr.into(),
            remote_addr: remote_addr.into(),
            local_id: "left.causeway.test".into(),
            remote_id: "right.causeway.test".into(),
            ike_proposal: "aes256gcm16-prfsha256-x25519".into(),
            esp_proposal: "aes256gcm16".into(),
            local_ts: vec![],
            remote_ts: vec![],
            ike_lifetime: None,
            child_lifetime: None,
            dpd_delay: None,
            encap: true,
            start_action: StartAction::None,
            psk,
        }
    }

    /// The other end of the same connection: addresses, identities and
    /// traffic selectors swapped, the same PSK, proposals and timers, and
    /// start_action none (it answers).
    pub fn mirror(&self) -> Connection {
        let mut m = self.clone();
        std::mem::swap(&mut m.local_addr, &mut m.remote_addr);
        std::mem::swap(&mut m.local_id, &mut m.remote_id);
        std::mem::swap(&mut m.local_ts, &mut m.remote_ts);
        m.start_action = StartAction::None;
        m
    }

    pub fn ids(mut self, local: &str, remote: &str) -> Connection {
        self.local_id = local.into();
        self.remote_id = remote.into();
        self
    }

    pub fn traffic(mut self, local_ts: &[&str], remote_ts: &[&str]) -> Connection {
        self.local_ts = local_ts.iter().map(|s| s.to_string()).collect();
        self.remote_ts = remote_ts.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn proposals(mut self, ike: &str, esp: &str) -> Connection {
        self.ike_proposal = ike.into();
        self.esp_proposal = esp.into();
        self
    }

    /// The pre-shared key (any bytes; written in hex).
    pub fn with_psk(mut self, psk: &[u8]) -> Connection {
        self.psk = Zeroizing::new(psk.to_vec());
        self
    }

    /// The PSK, for the other implementation's configuration.
    pub fn psk(&self) -> &[u8] {
        &self.psk
    }

    /// IKE SA: rekey after `rekey`, give up at `life` (swanctl's
    /// `rekey_time` and `over_time = life - rekey`), with no random jitter
    /// (`rand_time = 0s`) so a test knows when it happens. Whole seconds.
    pub fn ike_lifetime(mut self, rekey: Duration, life: Duration) -> Connection {
        self.ike_lifetime = Some((rekey, life));
        self
    }

    /// CHILD_SA: `rekey_time`, `life_time`, and `rand_time = 0s`.
    pub fn child_lifetime(mut self, rekey: Duration, life: Duration) -> Connection {
        self.child_lifetime = Some((rekey, life));
        self
    }

    pub fn dpd_delay(mut self, delay: Duration) -> Connection {
        self.dpd_delay = Some(delay);
        self
    }

    pub fn encap(mut self, on: bool) -> Connection {
        self.encap = on;
        self
    }

    pub fn start_action(mut self, action: StartAction) -> Connection {
        self.start_action = action;
        self
    }

    /// The swanctl.conf text, after checking every value (so that nothing
    /// given here can add lines or sections of its own).
    pub fn to_swanctl_conf(&self) -> anyhow::Result<String> {
        self.check()?;
        let secs = |d: Duration| format!("{}s", d.as_secs());
        let mut ike_timers = String::new();
        if let Some((rekey, life)) = self.ike_lifetime {
            ike_timers += &format!(
                "        rekey_time = {}\n        over_time = {}\n        rand_time = 0s\n",
                secs(rekey),
                secs(life - rekey)
            );
        }
        if let Some(d) = self.dpd_delay {
            ike_timers += &format!("        dpd_delay = {}\n", secs(d));
        }
        let mut child_timers = String::new();
        if let Some((rekey, life)) = self.child_lifetime {
            child_timers += &format!(
                "                rekey_time = {}\n                life_time = {}\n                rand_time = 0s\n",
                secs(rekey),
                secs(life)
            );
        }
        let start = match self.start_action {
            StartAction::Start => "start",
            StartAction::None => "none",
        };
        let hex: String = self.psk.iter().map(|b| format!("{b:02x}")).collect();
        let hex = Zeroizing::new(hex);
        Ok(format!(
            "# Written by causeway-lab (lab/src/strongswan.rs).\n\
             connections {{\n    {name} {{\n        version = 2\n        local_addrs = {la}\n        remote_addrs = {ra}\n\
             \x20       proposals = {ike}\n        encap = {encap}\n{ike_timers}\
             \x20       local {{\n            auth = psk\n            id = {lid}\n        }}\n\
             \x20       remote {{\n            auth = psk\n            id = {rid}\n        }}\n\
             \x20       children {{\n            {child} {{\n                local_ts = {lts}\n                remote_ts = {rts}\n\
             \x20               esp_proposals = {esp}\n{child_timers}                start_action = {start}\n\
             \x20           }}\n        }}\n    }}\n}}\n\
             secrets {{\n    ike-{name} {{\n        id-local = {lid}\n        id-remote = {rid}\n        secret = 0x{psk}\n    }}\n}}\n",
            name = self.name,
            la = self.local_addr,
            ra = self.remote_addr,
            ike = self.ike_proposal,
            encap = if self.encap { "yes" } else { "no" },
            lid = self.local_id,
            rid = self.remote_id,
            child = self.child,
            lts = self.local_ts.join(","),
            rts = self.remote_ts.join(","),
            esp = self.esp_proposal,
            psk = hex.as_str(),
        ))
    }

    fn check(&self) -> anyhow::Result<()> {
        let word = |what: &str, v: &str, extra: &str| {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c)) {
                bail!("{what} {v:?}: only letters, digits and {extra:?}");
            }
            Ok(())
        };
        word("connection name", &self.name, "_-")?;
        word("child name", &self.child, "_-")?;
        word("local id", &self.local_id, ".-")?;
        word("remote id", &self.remote_id, ".-")?;
        word("IKE proposal", &self.ike_proposal, "-,")?;
        word("ESP proposal", &self.esp_proposal, "-,")?;
        for a in [&self.local_addr, &self.remote_addr] {
            a.parse::<IpAddr>().with_context(|| format!("{a:?} is not an IP address"))?;
        }
        for (what, ts) in [("local_ts", &self.local_ts), ("remote_ts", &self.remote_ts)] {
            if ts.is_empty() {
                bail!("{what} is empty: kernel-libipsec needs explicit traffic selectors");
            }
            for t in ts {
                check_subnet(t).with_context(|| format!("{what} {t:?}"))?;
            }
        }
        if self.psk.is_empty() {
            bail!("the PSK is empty");
        }
        let whole = |d: Duration| d.as_secs() > 0 && d.subsec_nanos() == 0;
        for (what, l) in [("IKE", self.ike_lifetime), ("CHILD_SA", self.child_lifetime)] {
            if let Some((rekey, life)) = l {
                if !whole(rekey) || !whole(life) || life <= rekey {
                    bail!("{what} lifetime: whole seconds, rekey before the end ({rekey:?}, {life:?})");
                }
            }
        }
        if self.dpd_delay.is_some_and(|d| !whole(d)) {
            bail!("dpd_delay: whole seconds");
        }
        Ok(())
    }
}

/// `addr` or `addr/prefix`.
fn check_subnet(t: &str) -> anyhow::Result<()> {
    let (addr, prefix) = match t.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (t, None),
    };
    let ip: IpAddr = addr.parse().context("not an address")?;
    if let Some(p) = prefix {
        let p: u8 = p.parse().context("bad prefix length")?;
        if p > if ip.is_ipv4() { 32 } else { 128 } {
            bail!("prefix length {p} too long");
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

    fn conn() -> Connection {
        Connection::new("198.18.0.1", "198.18.0.2")
            .ids("a.causeway.test", "b.causeway.test")
            .traffic(&["10.93.1.0/24"], &["10.93.2.0/24", "10.93.3.1"])
            .with_psk(&[0xab, 0x01])
            .start_action(StartAction::Start)
    }

    #[test]
    fn renders_connection_and_secret() {
        let c = conn()
            .ike_lifetime(Duration::from_secs(60), Duration::from_secs(90))
            .child_lifetime(Duration::from_secs(30), Duration::from_secs(40))
            .dpd_delay(Duration::from_secs(5));
        let text = c.to_swanctl_conf().unwrap();
        for line in [
            "local_addrs = 198.18.0.1",
            "remote_addrs = 198.18.0.2",
            "proposals = aes256gcm16-prfsha256-x25519",
            "encap = yes",
            "rekey_time = 60s",
            "over_time = 30s",
            "dpd_delay = 5s",
            "id = a.causeway.test",
            "local_ts = 10.93.1.0/24",
            "remote_ts = 10.93.2.0/24,10.93.3.1",
            "esp_proposals = aes256gcm16",
            "rekey_time = 30s",
            "life_time = 40s",
            "start_action = start",
            "id-local = a.causeway.test",
            "id-remote = b.causeway.test",
            "secret = 0xab01",
        ] {
            assert!(text.lines().any(|l| l.trim() == line), "{line:?} missing from\n{text}");
        }
        // Every section that opens closes.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn mirror_swaps_the_ends_and_answers() {
        let m = conn().mirror();
        assert_eq!((m.local_addr.as_str(), m.remote_addr.as_str()), ("198.18.0.2", "198.18.0.1"));
        assert_eq!((m.local_id.as_str(), m.remote_id.as_str()), ("b.causeway.test", "a.causeway.test"));
        assert_eq!(m.local_ts, ["10.93.2.0/24", "10.93.3.1"]);
        assert_eq!(m.remote_ts, ["10.93.1.0/24"]);
        assert_eq!(m.start_action, StartAction::None);
        assert_eq!(m.psk(), conn().psk());
    }

    #[test]
    fn refuses_what_would_change_the_file_structure() {
        let bad = [
            conn().ids("a.test\n}", "b.test"),
            conn().proposals("aes256gcm16 }", "aes256gcm16"),
            conn().traffic(&["10.93.1.0/33"], &["10.93.2.0/24"]),
            conn().traffic(&[], &["10.93.2.0/24"]),
            Connection { name: "a b".into(), ..conn() },
            Connection { local_addr: "198.18.0.1\nx".into(), ..conn() },
            conn().ike_lifetime(Duration::from_secs(60), Duration::from_secs(60)),
            conn().child_lifetime(Duration::from_millis(1500), Duration::from_secs(60)),
            conn().with_psk(&[]),
        ];
        for c in bad {
            assert!(c.to_swanctl_conf().is_err(), "accepted {c:?}");
        }
    }

    #[test]
    fn debug_hides_the_psk() {
        let text = format!("{:?}", conn().with_psk(b"very secret"));
        assert!(text.contains("<redacted>") && !text.contains("very") && !text.contains("118"), "{text}");
    }

    #[test]
    fn log_patterns_match_parts_in_order() {
        let line = "06:27:01.123 15[IKE] <cw|1> CHILD_SA net{1} established with SPIs c2e8c952_i 2e26af25_o";
        assert!(matches(line, "CHILD_SA * established with SPIs"));
        assert!(matches(line, "established"));
        assert!(!matches(line, "established * CHILD_SA"));
        assert!(!matches(line, "IKE_SA * established"));
    }
}
