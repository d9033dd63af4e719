//! Shared pieces of the namespace tests: a lock so topologies do not run
//! at once (they share two cores and would distort each other), a check
//! that the lab can run at all, and gateways started from generated
//! configurations.
//!
//! Every namespace and process is owned by a value whose drop removes it,
//! so a failing assertion (a panic) still cleans up.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub use causeway_lab::{self as lab, b64, keypair, Netns, Process};
use causeway_wireguard::{PublicKey, StaticSecret};

/// Set to 1 (`scripts/test.sh --quick`) to skip, rather than fail, the
/// tests that need the lab when it cannot run (not root, a tool missing).
pub const QUICK_ENV: &str = "CAUSEWAY_TESTS_QUICK";

/// Whether this is an explicitly requested quick, unprivileged run.
pub fn quick() -> bool {
    std::env::var(QUICK_ENV).is_ok_and(|v| v == "1")
}

/// The commands the namespace tests run, with their Debian packages (the
/// list scripts/test.sh installs).
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("iperf3", "iperf3"),
    ("wg", "wireguard-tools"),
    ("wireguard-go", "wireguard-go"),
    ("ncat", "ncat"),
    ("iptables", "iptables"),
];

/// Why the lab cannot run here, if it cannot.
fn lab_unavailable() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        if !lab::is_root() {
            return Some("network namespaces need root".into());
        }
        let missing: Vec<String> =
            TOOLS.iter().filter_map(|(c, p)| lab::require(c, p).err()).map(|e| e.to_string()).collect();
        (!missing.is_empty()).then(|| missing.join("; "))
    })
    .as_deref()
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Environment variables for the processes the current test starts through
/// this crate (gateways, tunctl); emptied when its `Lab` drops.
static CHILD_ENV: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn child_env() -> Vec<(String, String)> {
    CHILD_ENV.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The lab, held by one test at a time.
pub struct Lab {
    _serial: MutexGuard<'static, ()>,
}

impl Lab {
    /// Sets `key` for the gateways (`Gateway::start`, `launch`,
    /// `peered_sites`) and tunctl runs (`tunctl`, `tunctl_ok`) this test
    /// starts from now on, and not for the test process: every namespace
    /// test shares one binary, and the tests that need no lab run in other
    /// threads meanwhile, spawning programs that would inherit it.
    pub fn child_env(&self, key: &str, value: &str) {
        CHILD_ENV.lock().unwrap_or_else(|e| e.into_inner()).push((key.into(), value.into()));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        CHILD_ENV.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // After the test's daemons stopped (the guard is its first local).
        lab::remove_stale_locks();
    }
}

/// Takes the lab for one test. When the lab cannot run here (not root, a
/// tool missing) the test fails, saying why, unless CAUSEWAY_TESTS_QUICK=1
/// asked for a quick unprivileged run: then this returns None and the test
/// skips, with a line saying so.
pub fn lab_or_skip(test: &str) -> Option<Lab> {
    if let Some(why) = lab_unavailable() {
        if quick() {
            eprintln!("skipped {test}: {why} ({QUICK_ENV}=1)");
            return None;
        }
        panic!(
            "{test} cannot run: {why}. Run scripts/test.sh as root (it installs the tools), \
             or set {QUICK_ENV}=1 (scripts/test.sh --quick) to skip the namespace tests on purpose"
        );
    }
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    CHILD_ENV.lock().unwrap_or_else(|e| e.into_inner()).clear();
    lab::reap_stale();
    // A test binary stopped by a signal (scripts/test.sh's time limit,
    // Ctrl-C) runs no `Drop`: the namespaces, and the charons, etcds and
    // birds in them, are removed on the way out instead of by the next
    // run's `reap_stale`. The tests' temporary folders stay: they hold
    // keys made for one test and used nowhere else.
    static WATCHING: std::sync::Once = std::sync::Once::new();
    WATCHING.call_once(|| lab::clean_up_on_interrupt(None));
    Some(Lab { _serial: serial })
}

/// A peer entry for a generated configuration.
pub struct PeerSpec {
    pub name: String,
    pub public: PublicKey,
    /// Endpoints in order of preference; empty when the peer calls us.
    pub endpoints: Vec<String>,
    pub allowed: Vec<String>,
    pub keepalive: u16,
    pub failover_after: Option<u32>,
}

impl PeerSpec {
    pub fn new(name: &str, public: PublicKey, endpoint: Option<&str>, allowed: &[&str]) -> PeerSpec {
        PeerSpec {
            name: name.into(),
            public,
            endpoints: endpoint.map(String::from).into_iter().collect(),
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            keepalive: 0,
            failover_after: None,
        }
    }

    /// Several endpoints (active first), failing over after `after` seconds.
    pub fn failover(mut self, endpoints: &[&str], after: u32) -> PeerSpec {
        self.endpoints = endpoints.iter().map(|s| s.to_string()).collect();
        self.failover_after = Some(after);
        self
    }

    pub fn keepalive(mut self, secs: u16) -> PeerSpec {
        self.keepalive = secs;
        self
    }
}

fn quoted(items: &[String]) -> String {
    items.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
}

/// A causewayd started with `up --config` in a namespace.
pub struct Gateway {
    pub ifname: String,
    pub public: PublicKey,
    pub process: Process,
    pub log: std::path::PathBuf,
    pub config: std::path::PathBuf,
}

impl Gateway {
    /// Writes a configuration and starts causewayd; waits for its socket.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        secret: &StaticSecret,
        addresses: &[&str],
        port: u16,
        mtu: u32,
        peers: &[PeerSpec],
    ) -> anyhow::Result<Gateway> {
        Gateway::start_with(ns, dir, secret, addresses, port, mtu, peers, "")
    }

    /// As `start`, with more lines for the `[interface]` table.
    #[allow(clippy::too_many_arguments)]
    pub fn start_with(
        ns: &Netns,
        dir: &Path,
        secret: &StaticSecret,
        addresses: &[&str],
        port: u16,
        mtu: u32,
        peers: &[PeerSpec],
        interface_extra: &str,
    ) -> anyhow::Result<Gateway> {
        let ifname = lab::unique("cw");
        let mut cfg = format!(
            "[interface]\nname = \"{ifname}\"\nprivate_key = \"{}\"\nlisten_port = {port}\nmtu = {mtu}\naddresses = [{}]\n{interface_extra}",
            b64(secret.as_bytes()),
            quoted(&addresses.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        );
        for p in peers {
            cfg += &format!(
                "\n[[peer]]\nname = \"{}\"\npublic_key = \"{}\"\nallowed_ips = [{}]\npersistent_keepalive = {}\n",
                p.name,
                b64(p.public.as_bytes()),
                quoted(&p.allowed),
                p.keepalive
            );
            if !p.endpoints.is_empty() {
                cfg += &format!("endpoints = [{}]\n", quoted(&p.endpoints));
            }
            if let Some(f) = p.failover_after {
                cfg += &format!("failover_after = {f}\n");
            }
        }
        let path = dir.join(format!("{ifname}.toml"));
        lab::write_private(&path, &cfg)?;
        Gateway::launch(ns, ifname, &path, secret.public_key())
    }

    /// Starts causewayd on an existing configuration file.
    pub fn launch(ns: &Netns, ifname: String, path: &Path, public: PublicKey) -> anyhow::Result<Gateway> {
        let log = path.with_extension("log");
        let exe = lab::causewayd_path()?;
        let up = ["up", "--config", path.to_str().unwrap()];
        let env: Vec<String> = child_env().into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut process = if env.is_empty() {
            ns.spawn("causewayd", &exe, &up, Some(&log))?
        } else {
            // env(1) sets them and execs causewayd, which keeps the pid.
            let exe = exe.to_str().unwrap();
            let args: Vec<&str> = env.iter().map(String::as_str).chain([exe]).chain(up).collect();
            ns.spawn("causewayd", "env", &args, Some(&log))?
        };
        // Poll in short steps so a daemon that refused to start is seen at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut up = false;
        while !up && process.running() && std::time::Instant::now() < deadline {
            up = lab::wait_for_socket(&ifname, Duration::from_millis(100));
        }
        if !up {
            anyhow::bail!("causewayd did not come up: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        Ok(Gateway { ifname, public, process, log, config: path.to_path_buf() })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An HTTP GET of `path` from causewayd's metrics listener on
/// 127.0.0.1:9586 inside `ns`; the whole response, headers included.
pub fn scrape_metrics(ns: &Netns, path: &str) -> String {
    use std::io::{Read, Write};
    let path = path.to_string();
    lab::in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9586").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Read to the end, so ask for the end: HTTP/1.1 keeps connections open.
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .unwrap()
}

/// tunctl with `args`, to run in a namespace.
pub fn tunctl_command(ns: &Netns, args: &[&str]) -> std::process::Command {
    let mut c = ns.command(lab::causewayd_path().unwrap().with_file_name("tunctl"));
    c.envs(child_env()).args(args);
    c
}

/// Runs tunctl in a namespace; a tunctl that has not ended within a
/// minute (a daemon that never answers) fails the test.
pub fn tunctl(ns: &Netns, args: &[&str]) -> std::process::Output {
    lab::bounded::output_within(&mut tunctl_command(ns, args), Duration::from_secs(60)).unwrap()
}

/// The stdout of a tunctl run that must succeed.
pub fn tunctl_ok(ns: &Netns, args: &[&str]) -> String {
    let out = tunctl(ns, args);
    assert!(out.status.success(), "tunctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a WAN veth; addresses given per side.
pub fn two_sites(a_wan: &[&str], b_wan: &[&str]) -> anyhow::Result<(Netns, Netns)> {
    let a = Netns::new("a")?;
    let b = Netns::new("b")?;
    lab::veth(&a, "wan0", a_wan, &b, "wan0", b_wan)?;
    Ok((a, b))
}

/// One peer line of `wg show IF dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeer {
    pub public_key: String,
    pub endpoint: String,
    /// Unix seconds of the latest handshake; 0 when none.
    pub latest_handshake: u64,
    pub rx: u64,
    pub tx: u64,
}

/// Parses the peer lines of `wg show IF dump`.
pub fn wg_dump(ns: &Netns, ifname: &str) -> anyhow::Result<Vec<WgPeer>> {
    let out = ns.exec("wg", &["show", ifname, "dump"])?;
    Ok(out
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() >= 7).then(|| WgPeer {
                public_key: f[0].to_string(),
                endpoint: f[2].to_string(),
                latest_handshake: f[4].parse().unwrap_or(0),
                rx: f[5].parse().unwrap_or(0),
                tx: f[6].parse().unwrap_or(0),
            })
        })
        .collect())
}

/// Two sites joined by a WAN veth, each with a causewayd whose one peer is
/// the other: tunnel 10.NET.0.1 and .2 (and fd00:NET::1 and ::2), WAN
/// 198.18.0.1 and .2 (or fd00:18::1 and ::2).
/// Fields drop in order: the gateways stop before their namespaces go.
pub struct PeeredSites {
    pub ga: Gateway,
    pub gb: Gateway,
    pub dir: tempfile::TempDir,
    pub a: Netns,
    pub b: Netns,
}

/// Builds `PeeredSites`; each side's peer entry also routes the extra
/// prefixes given (networks behind the other gateway).
pub fn peered_sites(
    net: u8,
    v6_wan: bool,
    a_routes_to_b: &[&str],
    b_routes_to_a: &[&str],
) -> anyhow::Result<PeeredSites> {
    let (a_wan, b_wan, a_ep, b_ep) = if v6_wan {
        ("fd00:18::1/64", "fd00:18::2/64", "[fd00:18::1]:51820", "[fd00:18::2]:51820")
    } else {
        ("198.18.0.1/24", "198.18.0.2/24", "198.18.0.1:51820", "198.18.0.2:51820")
    };
    let (a, b) = two_sites(&[a_wan], &[b_wan])?;
    let dir = tempfile::tempdir()?;
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let side = |n: u8| (format!("10.{net}.0.{n}"), format!("fd00:{net}::{n}"));
    let ((a4, a6), (b4, b6)) = (side(1), side(2));
    let allow = |v4: &str, v6: &str, extra: &[&str]| {
        let mut v = vec![format!("{v4}/32"), format!("{v6}/128")];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let (to_b, to_a) = (allow(&b4, &b6, a_routes_to_b), allow(&a4, &a6, b_routes_to_a));
    let spec = |name: &str, key, ep, allowed: &[String]| {
        PeerSpec::new(name, key, Some(ep), &allowed.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let side = |ns: &Netns, key: &StaticSecret, v4: &str, v6: &str, peer: PeerSpec| {
        Gateway::start(ns, dir.path(), key, &[&format!("{v4}/24"), &format!("{v6}/64")], 51820, 1420, &[peer])
    };
    let ga = side(&a, &ka, &a4, &a6, spec("b", pb, b_ep, &to_b))?;
    let gb = side(&b, &kb, &b4, &b6, spec("a", pa, a_ep, &to_a))?;
    Ok(PeeredSites { ga, gb, dir, a, b })
}

/// A third site behind a second WAN link of site a (198.18.1.0/24), whose
/// gateway (tunnel address 10.NET.0.3) knows a; a does not know it yet.
/// Fields drop in order: the gateway stops before its namespace goes.
pub struct ThirdSite {
    pub gc: Gateway,
    pub c: Netns,
    pub public: PublicKey,
    /// The gateway's tunnel address, 10.NET.0.3.
    pub address: String,
}

pub fn third_site(s: &PeeredSites, net: u8) -> anyhow::Result<ThirdSite> {
    let c = Netns::new("c")?;
    lab::veth(&s.a, "wan1", &["198.18.1.1/24"], &c, "wan0", &["198.18.1.2/24"])?;
    let (kc, pc) = keypair();
    let address = format!("10.{net}.0.3");
    let a = PeerSpec::new("a", s.ga.public, Some("198.18.1.1:51820"), &[&format!("10.{net}.0.1/32")]);
    let gc = Gateway::start(&c, s.dir.path(), &kc, &[&format!("{address}/24")], 51820, 1420, &[a])?;
    Ok(ThirdSite { gc, c, public: pc, address })
}

impl ThirdSite {
    /// `tunctl` arguments that add this site as peer "c" of interface `if_a`.
    pub fn add_args(&self, if_a: &str) -> Vec<String> {
        let key = b64(self.public.as_bytes());
        let allowed = format!("{}/32", self.address);
        ["peer", "add", if_a, "--name", "c", "--public-key", &key, "--endpoint", "198.18.1.2:51820"]
            .into_iter()
            .chain(["--allowed-ip", &allowed])
            .map(String::from)
            .collect()
    }
}

/// Takes the lab and checks that strongSwan is installed, skipping (quick
/// runs) or failing as `lab_or_skip` does.
pub fn strongswan_lab(test: &str) -> Option<Lab> {
    let lab = lab_or_skip(test)?;
    if let Err(e) = lab::strongswan::require_strongswan() {
        if quick() {
            eprintln!("skipped {test}: {e} ({QUICK_ENV}=1)");
            return None;
        }
        panic!("{test} cannot run: {e}. Run scripts/test.sh as root (it installs strongSwan)");
    }
    Some(lab)
}

/// /etc/netns/<namespace>: `ip netns exec` mounts its files (hosts,
/// resolv.conf) over /etc's for the processes it starts. Removed on drop.
pub struct NetnsEtc(std::path::PathBuf);

impl NetnsEtc {
    pub fn new(ns: &Netns) -> NetnsEtc {
        let dir = std::path::PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).unwrap();
        NetnsEtc(dir)
    }

    /// Writes `file` in place: a bind mount already made follows the inode.
    pub fn write(&self, file: &str, text: &str) {
        std::fs::write(self.0.join(file), text).unwrap();
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A name server that never answers, for the processes `ns` starts later:
/// `silent` drops DNS queries to its address `server`, and each lookup
/// gives up after `timeout` seconds.
pub fn silent_name_server(ns: &Netns, silent: &Netns, server: &str, timeout: u32) -> NetnsEtc {
    silent.exec("iptables", &["-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP"]).unwrap();
    let etc = NetnsEtc::new(ns);
    etc.write("resolv.conf", &format!("nameserver {server}\noptions timeout:{timeout} attempts:1\n"));
    etc
}

/// A host on a LAN behind `gw` (gateway .1, host .2 of `net`.0/24), with
/// forwarding on at the gateway.
pub fn lan(gw: &Netns, tag: &str, net: &str) -> Netns {
    let host = Netns::new(tag).unwrap();
    lab::veth(gw, "lan0", &[&format!("{net}.1/24")], &host, "lan0", &[&format!("{net}.2/24")]).unwrap();
    host.ip(&["route", "add", "default", "via", &format!("{net}.1")]).unwrap();
    gw.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]).unwrap();
    host
}

/// A masquerading router between `inside` and the WAN of `outside`:
/// `outside`'s wan0 has `outside_ip`, the router's up0 `router_ip` (both
/// /24); `inside`'s wan0 is 198.19.0.2/24 behind the router's 198.19.0.1,
/// its default route. With `udp_timeout`, the router forgets an idle UDP
/// mapping after that many seconds, so only keepalives hold one.
pub fn masquerading_router(
    outside: &Netns,
    outside_ip: &str,
    router_ip: &str,
    inside: &Netns,
    udp_timeout: Option<u32>,
) -> Netns {
    let router = Netns::new("nat").unwrap();
    lab::veth(outside, "wan0", &[&format!("{outside_ip}/24")], &router, "up0", &[&format!("{router_ip}/24")]).unwrap();
    lab::veth(&router, "in0", &["198.19.0.1/24"], inside, "wan0", &["198.19.0.2/24"]).unwrap();
    inside.ip(&["route", "add", "default", "via", "198.19.0.1"]).unwrap();
    router.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]).unwrap();
    router.exec("iptables", &["-t", "nat", "-A", "POSTROUTING", "-o", "up0", "-j", "MASQUERADE"]).unwrap();
    if let Some(secs) = udp_timeout {
        for key in ["net.netfilter.nf_conntrack_udp_timeout", "net.netfilter.nf_conntrack_udp_timeout_stream"] {
            router.exec("sysctl", &["-qw", &format!("{key}={secs}")]).unwrap();
        }
    }
    router
}

/// What a fleet test needs besides the lab's usual tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetNeeds {
    pub etcd: bool,
    pub bird: bool,
}

/// Takes the lab and checks that etcd and BIRD are installed as `needs`
/// says, skipping (quick runs) or failing as `lab_or_skip` does.
pub fn fleet_lab(test: &str, needs: FleetNeeds) -> Option<Lab> {
    let lab = lab_or_skip(test)?;
    let missing =
        [(needs.etcd, lab::etcd::require_etcd as fn() -> anyhow::Result<()>), (needs.bird, lab::bird::require_bird)]
            .into_iter()
            .filter(|(needed, _)| *needed)
            .find_map(|(_, check)| check().err());
    if let Some(e) = missing {
        if quick() {
            eprintln!("skipped {test}: {e} ({QUICK_ENV}=1)");
            return None;
        }
        panic!("{test} cannot run: {e}. Run scripts/test.sh as root (it installs etcd and BIRD)");
    }
    Some(lab)
}

/// Reads with `read` every 100 ms until `done` holds of the reading or
/// `patience` has passed, and returns the last reading for the caller's
/// own, exact assertion: a state that moves towards what a test expects
/// (counters, a reload in progress, connections coming up) is polled
/// rather than read once after a fixed pause a loaded machine may miss.
pub fn poll_until<T>(patience: Duration, mut read: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + patience;
    let mut last = read();
    while !done(&last) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        last = read();
    }
    last
}
