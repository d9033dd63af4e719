//! The etcd registry end to end, without root: each test starts its own
//! etcd (Debian's etcd-server, /usr/bin/etcd) on loopback with free ports
//! and a temporary data directory, and runs gateways in one process whose
//! data planes use in-memory TUN queues and an in-memory UDP network
//! (198.18.0.0/24). Each gateway runs the real registry client; the tests
//! write to the store as another client would, and check what each
//! gateway's data plane ends up with and that traffic crosses.
//!
//! Without /usr/bin/etcd the tests fail saying so, unless
//! CAUSEWAY_TESTS_QUICK=1 asks for a quick run, where they skip.
//! Deadlines bound liveness; nothing is timed for speed.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use causeway_config::{Config, Endpoint, Interface, Registry as RegistryConfig};
use causeway_dataplane::interface::{Interface as DataPlane, Options};
use causeway_dataplane::memory::{self, MemNet, MemTunHost};
use causeway_dataplane::peer::PeerState;
use causeway_gateway::api::types::{Reply, Request};
use causeway_gateway::gateway::Gateway;
use causeway_gateway::registry::Registry;
use causeway_wireguard::StaticSecret;

const PATIENCE: Duration = Duration::from_secs(30);
const ETCD: &str = "/usr/bin/etcd";

/// A private etcd, killed when dropped (a panicking test included).
struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client: u16,
    peer: u16,
    /// Server TLS flags, when it serves https.
    tls: Vec<String>,
    /// The member's name and the cluster it starts in (`name=peer URL`, …),
    /// and whether that cluster exists already (a member added to it).
    name: &'static str,
    cluster: String,
    existing: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Etcd {
    /// `None` when the test is to skip (no etcd, CAUSEWAY_TESTS_QUICK=1).
    fn start() -> Option<Etcd> {
        Etcd::start_with(|_| Vec::new())
    }

    /// With server TLS flags made from its directory (certificates go there).
    fn start_with(tls: impl FnOnce(&Path) -> Vec<String>) -> Option<Etcd> {
        if !Path::new(ETCD).exists() {
            if std::env::var("CAUSEWAY_TESTS_QUICK").is_ok_and(|v| v == "1") {
                eprintln!("skipped: {ETCD} is missing (CAUSEWAY_TESTS_QUICK=1)");
                return None;
            }
            panic!(
                "{ETCD} is missing: install it (apt-get install etcd-server), or set CAUSEWAY_TESTS_QUICK=1 \
                 (scripts/test.sh --quick) to skip these tests on purpose"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let tls = tls(dir.path());
        let peer = free_port();
        let cluster = format!("t=http://127.0.0.1:{peer}");
        let mut e = Etcd { child: None, dir, client: free_port(), peer, tls, name: "t", cluster, existing: false };
        e.run();
        Some(e)
    }

    /// A second member of this one's cluster, added as a learner: it
    /// answers a status call, and refuses leases and linearizable reads.
    fn add_learner(&self) -> Etcd {
        let peer = free_port();
        let peer_url = format!("http://127.0.0.1:{peer}");
        let store = Store::new(&self.url());
        let mut c = store.client().unwrap();
        let options = etcd_client::MemberAddOptions::new().with_is_learner();
        store.rt.block_on(c.member_add([peer_url.as_str()], Some(options))).expect("the learner is added");
        let cluster = format!("{},l={peer_url}", self.cluster);
        let dir = tempfile::tempdir().unwrap();
        let mut e =
            Etcd { child: None, dir, client: free_port(), peer, tls: Vec::new(), name: "l", cluster, existing: true };
        e.run();
        e
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_empty() { "http" } else { "https" };
        format!("{scheme}://127.0.0.1:{}", self.client)
    }

    /// Starts (or restarts, on the same ports and data) and waits until it
    /// answers.
    fn run(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("etcd.log")).unwrap();
        let peer = format!("http://127.0.0.1:{}", self.peer);
        // Short raft timings: a quick start, and leases as short as 1 s.
        let state = if self.existing { "existing" } else { "new" };
        let child = Command::new(ETCD)
            .args(["--name", self.name, "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.url(), "--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.cluster, "--initial-cluster-state", state])
            .args(["--heartbeat-interval", "50", "--election-timeout", "300"])
            .args(&self.tls)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        let up = || {
            if self.tls.is_empty() {
                // A status call, which a learner answers too.
                Store::new(&self.url()).try_status().is_ok()
            } else {
                std::net::TcpStream::connect(("127.0.0.1", self.client)).is_ok()
            }
        };
        while !up() {
            assert!(
                Instant::now() < deadline,
                "etcd did not answer; see {}",
                self.dir.path().join("etcd.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Another client of the store, as an operator's etcdctl would be.
struct Store {
    rt: tokio::runtime::Runtime,
    url: String,
}

impl Store {
    fn new(url: &str) -> Store {
        Store { rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(), url: url.into() }
    }

    fn client(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), etcd_client::Client::connect([&self.url], Some(options)))
                .await
                .map_err(|_| etcd_client::Error::InvalidArgs("connect timed out".into()))?
        })
    }

    fn try_get(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, etcd_client::Error> {
        let mut c = self.client()?;
        self.rt.block_on(async {
            let r = tokio::time::timeout(Duration::from_secs(2), c.get(key, None))
                .await
                .map_err(|_| etcd_client::Error::InvalidArgs("get timed out".into()))??;
            Ok(r.kvs().first().map(|kv| (kv.value().to_vec(), kv.lease())))
        })
    }

    fn try_status(&self) -> Result<(), etcd_client::Error> {
        let mut c = self.client()?;
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), c.status())
                .await
                .map_err(|_| etcd_client::Error::InvalidArgs("status timed out".into()))??;
            Ok(())
        })
    }

    fn get(&self, key: &str) -> Option<(Vec<u8>, i64)> {
        self.try_get(key).unwrap()
    }

    fn put(&self, key: &str, value: &[u8], lease_ttl: Option<i64>) {
        let mut c = self.client().unwrap();
        self.rt.block_on(async {
            let options = match lease_ttl {
                Some(ttl) => {
                    Some(etcd_client::PutOptions::new().with_lease(c.lease_grant(ttl, None).await.unwrap().id()))
                }
                None => None,
            };
            c.put(key, value, options).await.unwrap();
        });
    }

    fn delete(&self, key: &str) {
        let mut c = self.client().unwrap();
        self.rt.block_on(c.delete(key, None)).unwrap();
    }

    fn lease_ttl(&self, lease: i64) -> i64 {
        let mut c = self.client().unwrap();
        self.rt.block_on(c.lease_time_to_live(lease, None)).unwrap().ttl()
    }

    fn revoke(&self, lease: i64) {
        let mut c = self.client().unwrap();
        self.rt.block_on(c.lease_revoke(lease)).unwrap();
    }
}

/// One gateway: a data plane over the in-memory network, and its
/// registry client.
struct Gw {
    gw: Arc<Gateway>,
    host: MemTunHost,
    n: u8,
    secret: StaticSecret,
    cfg: Config,
    registry: Arc<Registry>,
    workers: Vec<JoinHandle<()>>,
}

impl Gw {
    fn start(net: &Arc<MemNet>, etcd: &Etcd, n: u8, site: &str, name: &str, lease_ttl: u64) -> Gw {
        Gw::start_with(net, etcd, n, site, name, lease_ttl, |_| {})
    }

    fn start_with(
        net: &Arc<MemNet>,
        etcd: &Etcd,
        n: u8,
        site: &str,
        name: &str,
        lease_ttl: u64,
        edit: impl FnOnce(&mut RegistryConfig),
    ) -> Gw {
        let ip: IpAddr = format!("198.18.0.{n}").parse().unwrap();
        let secret = StaticSecret::random(&mut rand_core::OsRng);
        let options = Options { mtu: 1420, workers: 1, port: 51820, binder: net.host(ip, 64), batches_per_worker: 8 };
        let iface = Arc::new(DataPlane::with_options(format!("reg{n}"), Some(secret.clone()), options).unwrap());
        let (host, tuns) = memory::tun(1);
        let mut workers = causeway_dataplane::worker::spawn(&iface, tuns).unwrap();
        let gw = Arc::new(Gateway::new(iface));
        // The daemon's protocol timers: keepalives, retries, and the first
        // initiation to a peer as soon as it is configured.
        let timers = gw.clone();
        workers.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(causeway_gateway::control::run_timers(timers));
        }));
        let mut cfg = Config {
            interface: Interface {
                addresses: vec![format!("10.255.0.{n}/32").parse().unwrap()],
                dns_refresh: None,
                ..Interface::with_defaults(secret.clone())
            },
            peers: Vec::new(),
            ipsec_peers: Vec::new(),
            sites: Vec::new(),
            registry: Some(RegistryConfig {
                endpoints: vec![etcd.url()],
                prefix: "/causeway".into(),
                site: site.into(),
                name: name.into(),
                advertise: vec![Endpoint::Addr(SocketAddr::new(ip, 51820))],
                lease_ttl: Duration::from_secs(lease_ttl),
                tls: None,
                user: None,
                persistent_keepalive: 1,
                failover_after: Duration::from_secs(3),
            }),
        };
        edit(cfg.registry.as_mut().unwrap());
        causeway_gateway::reload::reconcile(&gw, &cfg);
        let registry = Registry::start(&gw, cfg.clone()).unwrap();
        Gw { gw, host, n, secret, cfg, registry, workers }
    }

    fn peer(&self, name: &str) -> Option<Arc<PeerState>> {
        self.gw.peers().into_iter().find(|p| p.name() == name)
    }

    fn peer_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.gw.peers().iter().map(|p| p.name()).collect();
        v.sort();
        v
    }

    fn status(&self) -> causeway_gateway::api::types::RegistryStatus {
        self.gw.registry_status().expect("a registry status")
    }

    fn ask(&self, req: Request) -> Result<String, String> {
        let reply = causeway_gateway::api::handle(&self.gw, &serde_json::to_string(&req).unwrap());
        match serde_json::from_value::<Reply<String>>(serde_json::to_value(reply).unwrap()).unwrap() {
            Reply::Ok(s) => Ok(s),
            Reply::Error(e) => Err(e),
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.registry.stop();
        self.gw.set_registry(None);
        self.gw.shutdown();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An IPv4 UDP packet between two gateways' tunnel addresses.
fn packet(from: u8, to: u8, seq: u32) -> Vec<u8> {
    let len = 100usize;
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 255, 0, from]);
    p[16..20].copy_from_slice(&[10, 255, 0, to]);
    p[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    p[28..32].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Sends from `a` to `b` until a packet arrives.
fn crosses(a: &Gw, b: &Gw) {
    let deadline = Instant::now() + PATIENCE;
    let mut seq = 0;
    loop {
        a.host.send(0, [packet(a.n, b.n, seq)]);
        seq += 1;
        std::thread::sleep(Duration::from_millis(50));
        if let Some(p) = b.host.recv() {
            assert_eq!(&p[12..16], &[10, 255, 0, a.n]);
            while b.host.recv().is_some() {}
            return;
        }
        assert!(Instant::now() < deadline, "no packet crossed from gateway {} to {}", a.n, b.n);
    }
}

/// A record for a gateway that is not running, as another writer puts it.
fn record(site: &str, name: &str, n: u8) -> (String, Vec<u8>, StaticSecret) {
    let secret = StaticSecret::random(&mut rand_core::OsRng);
    let json = serde_json::json!({"site": site, "name": name, "public_key": secret.public_key().to_base64(),
        "endpoints": [format!("198.18.0.{n}:51820")], "tunnel_address": format!("10.255.0.{n}/32"), "version": "0.1.0"});
    (format!("/causeway/gateways/{site}/{name}"), json.to_string().into_bytes(), secret)
}

#[test]
fn gateways_publish_their_records_and_learn_the_other_sites_as_peers() {
    let Some(etcd) = Etcd::start() else { return };
    let net = MemNet::new();
    let a = Gw::start(&net, &etcd, 1, "east", "gw1", 10);
    let b = Gw::start(&net, &etcd, 2, "west", "gw1", 10);
    let c = Gw::start(&net, &etcd, 3, "west", "gw2", 10);
    wait_until("a learns west's two gateways", || a.peer_names() == ["west.gw1", "west.gw2"]);
    wait_until("b and c learn east's gateway only", || {
        b.peer_names() == ["east.gw1"] && c.peer_names() == ["east.gw1"]
    });
    // What a holds for b: b's key, advertised endpoint, tunnel address, site.
    let p = a.peer("west.gw1").unwrap();
    assert_eq!(*p.public_key(), b.secret.public_key());
    assert_eq!(*p.configured_endpoints.lock().unwrap(), [Endpoint::Addr("198.18.0.2:51820".parse().unwrap())]);
    assert_eq!(p.endpoint().map(|e| e.addr), Some("198.18.0.2:51820".parse().unwrap()));
    assert_eq!(a.gw.allowed_ips_of(&p), ["10.255.0.2/32".parse::<ipnet::IpNet>().unwrap()]);
    assert_eq!(p.crypto().timers.persistent_keepalive(), 1);
    assert_eq!(p.failover_after(), Duration::from_secs(3));
    let merged = a.registry.merged().unwrap();
    let learnt = merged.peers.iter().find(|p| p.name == "west.gw1").unwrap();
    assert_eq!(learnt.site.as_deref(), Some("west"));
    // Each record as the contract writes it, under a lease, with no secret.
    let store = Store::new(&etcd.url());
    for g in [&a, &b, &c] {
        let r = g.cfg.registry.as_ref().unwrap();
        let (value, lease) = store.get(&format!("/causeway/gateways/{}/{}", r.site, r.name)).expect("published");
        let v: serde_json::Value = serde_json::from_slice(&value).unwrap();
        assert_eq!(v["public_key"], g.secret.public_key().to_base64());
        assert_eq!(v["endpoints"], serde_json::json!([format!("198.18.0.{}:51820", g.n)]));
        assert_eq!(v["tunnel_address"], format!("10.255.0.{}/32", g.n));
        assert_eq!((v["site"].as_str(), v["name"].as_str()), (Some(r.site.as_str()), Some(r.name.as_str())));
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        let secret = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, g.secret.as_bytes());
        assert!(!String::from_utf8_lossy(&value).contains(&secret), "no private key in the record");
        assert!(lease != 0 && (1..=10).contains(&store.lease_ttl(lease)), "under a lease of lease_ttl");
    }
    let s = a.status();
    assert_eq!((s.state.as_str(), s.site.as_str(), s.name.as_str(), s.gateways), ("synced", "east", "gw1", 3));
    assert_eq!((s.endpoints, s.last_error), (vec![etcd.url()], None));
    assert!(s.revision > 0);
    // The learnt peers carry traffic, both ways.
    crosses(&a, &b);
    crosses(&b, &a);
    crosses(&c, &a);
}

#[test]
fn records_added_and_removed_in_the_store_change_only_their_peers() {
    let Some(etcd) = Etcd::start() else { return };
    let net = MemNet::new();
    let a = Gw::start(&net, &etcd, 1, "east", "gw1", 10);
    let b = Gw::start(&net, &etcd, 2, "west", "gw1", 10);
    wait_until("a learns b", || a.peer("west.gw1").is_some());
    wait_until("b learns a", || b.peer("east.gw1").is_some());
    crosses(&a, &b);
    crosses(&b, &a);
    let before = a.peer("west.gw1").unwrap();
    let session = before.crypto().current_keypair().expect("a session");
    let handshakes = before.crypto().stats().handshakes;
    let untouched = || {
        let now = a.peer("west.gw1").unwrap();
        assert!(Arc::ptr_eq(&now, &before), "the same peer");
        assert!(Arc::ptr_eq(&now.crypto().current_keypair().unwrap(), &session), "the same session");
        assert_eq!(now.crypto().stats().handshakes, handshakes, "no new handshake");
    };
    let store = Store::new(&etcd.url());
    let (key, value, north) = record("north", "gw1", 9);
    store.put(&key, &value, None);
    wait_until("a learns north.gw1", || a.peer("north.gw1").is_some());
    assert_eq!(*a.peer("north.gw1").unwrap().public_key(), north.public_key());
    untouched();
    // A site's prefixes arrive as a site of the merged configuration.
    store.put("/causeway/sites/north", br#"{"prefixes":["10.4.0.0/16"]}"#, None);
    wait_until("a learns site north", || {
        a.registry.merged().is_some_and(|c| c.sites.iter().any(|s| s.name == "north" && s.prefixes.len() == 1))
    });
    // An invalid record is left out whole, and the rest stays.
    store.put("/causeway/gateways/north/gw2", b"{\"site\":\"north\"}", None);
    store.delete(&key);
    wait_until("north.gw1 is gone", || a.peer("north.gw1").is_none());
    assert_eq!(a.peer_names(), ["west.gw1"]);
    untouched();
    crosses(&a, &b);
}

// An overlap between two sites of the store goes to the one written first,
// through the watch and through a full read alike: the site added later
// loses the overlapping prefix although its name sorts first.
#[test]
fn the_site_written_first_keeps_an_overlapping_prefix() {
    let Some(etcd) = Etcd::start() else { return };
    let net = MemNet::new();
    let a = Gw::start(&net, &etcd, 1, "east", "gw1", 10);
    wait_until("a synced", || a.registry.merged().is_some());
    let store = Store::new(&etcd.url());
    store.put("/causeway/sites/zulu", br#"{"prefixes":["10.5.0.0/16"]}"#, None);
    store.put("/causeway/sites/alpha", br#"{"prefixes":["10.5.1.0/24","10.6.0.0/16"]}"#, None);
    let sites = |gw: &Gw| {
        let mut v: Vec<(String, Vec<String>)> = gw.registry.merged().map_or(Vec::new(), |c| {
            c.sites.iter().map(|s| (s.name.clone(), s.prefixes.iter().map(|p| p.to_string()).collect())).collect()
        });
        v.sort();
        v
    };
    let expected = vec![
        ("alpha".to_string(), vec!["10.6.0.0/16".to_string()]),
        ("zulu".to_string(), vec!["10.5.0.0/16".to_string()]),
    ];
    wait_until("a learns both sites from the watch", || sites(&a).len() == 2);
    assert_eq!(sites(&a), expected);
    let c = Gw::start(&net, &etcd, 3, "north", "gw1", 10);
    wait_until("c learns both sites from its first read", || sites(&c).len() == 2);
    assert_eq!(sites(&c), expected);
}

#[test]
fn a_dead_gateway_drops_out_when_its_lease_expires() {
    let Some(etcd) = Etcd::start() else { return };
    let net = MemNet::new();
    let a = Gw::start(&net, &etcd, 1, "east", "gw1", 10);
    let b = Gw::start(&net, &etcd, 2, "west", "gw1", 2);
    wait_until("a learns b", || a.peer("west.gw1").is_some());
    // Its lease is kept alive well past its TTL while it runs.
    std::thread::sleep(Duration::from_secs(4));
    assert!(a.peer("west.gw1").is_some(), "a live gateway stays");
    // A gateway that dies without withdrawing (its record under a 2 s lease
    // nobody refreshes) drops out once the lease expires.
    let store = Store::new(&etcd.url());
    let (key, value, _) = record("north", "gw1", 9);
    store.put(&key, &value, Some(2));
    wait_until("a learns north.gw1", || a.peer("north.gw1").is_some());
    let t = Instant::now();
    wait_until("north.gw1 drops out", || a.peer("north.gw1").is_none());
    assert!(t.elapsed() < Duration::from_secs(6), "within about the lease's TTL: {:?}", t.elapsed());
    assert!(store.get(&key).is_none());
    // A clean stop withdraws the record at once.
    b.registry.stop();
    wait_until("b's record is withdrawn", || a.peer("west.gw1").is_none());
    assert!(store.get("/causeway/gateways/west/gw1").is_none());
}

#[test]
fn with_etcd_down_the_last_state_stays_and_changes_apply_once_it_is_back() {
    let Some(mut etcd) = Etcd::start() else { return };
    let net = MemNet::new();
    let a = Gw::start(&net, &etcd, 1, "east", "gw1", 10);
    let b = Gw::start(&net, &etcd, 2, "west", "gw1", 10);
    wait_until("a learns b", || a.peer("west.gw1").is_some());
    wait_until("b learns a", || b.peer("east.gw1").is_some());
    crosses(&a, &b);
    etcd.kill();
    wait_until("a's status is stale", || a.status().state == "stale");
    let s = a.status();
    assert!(s.last_error.as_deref().is_some_and(|e| !e.is_empty()), "{s:?}");
    assert_eq!(s.gateways, 2, "the last known state");
    // Peers stay and traffic flows.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.peer_names(), ["west.gw1"]);
    crosses(&a, &b);
    crosses(&b, &a);
    // Back: another client changes the registry before or while the
    // gateways reconnect, and deletes a's record.
    etcd.run();
    let store = Store::new(&etcd.url());
    let (key, value, _) = record("north", "gw1", 9);
    store.put(&key, &value, None);
    store.delete("/causeway/gateways/east/gw1");
    wait_until("a is synced again and has north.gw1", || a.status().state == "synced" && a.peer("north.gw1").is_some());
    assert_eq!(a.status().last_error, None);
    wait_until("b learns north.gw1", || b.peer("north.gw1").is_some());
    // a published again, and b has it again (it dropped it while the
    // record was deleted).
    wait_until("a's record is back", || store.get("/causeway/gateways/east/gw1").is_some());
    wait_until("b has a again", || b.peer("east.gw1").is_some());
    // If b removed and added a again, its new peer reaches out at once.
    crosses(&b, &a);
    crosses(&a, &b);
    // Its lease revoked by someone: a takes a new one and publishes again.
    let (_, lease) = store.get("/causeway/gateways/east/gw1").unwrap();
    store.revoke(lease);
    wait_until("a's record is back under a new lease", || {
        store.get("/causeway/gateways/east/gw1").is_some_and(|(_, l)| l != 0 && l != lease)
    });
    wait_until("b has a again", || b.peer("east.gw1").is_some());
}

/// An operator's request made while a synced gateway reconnects (etcd
/// restarted) is carried out by the next session, not refused because it
/// came between two.
#[test]
fn a_site_request_made_while_reconnecting_is_carried_out_after() {
    let Some(mut etcd) = Etcd::start() else { return };
    let net = MemNet::new();
    let a = Gw::start(&net, &etcd, 1, "east", "gw1", 10);
    wait_until("a is synced", || a.status().state == "synced");
    etcd.kill();
    // The killed store resets the connection: the session ends at once,
    // and the client retries every 250 ms against a closed port. The
    // request is held only while those retries are quiet (3 s from the
    // failure), so etcd comes back soon after it.
    std::thread::sleep(Duration::from_millis(100));
    let gw = a.gw.clone();
    let asked = std::thread::spawn(move || {
        let req = Request::SiteSet { site: "west".into(), prefixes: vec!["10.2.0.0/16".into()] };
        let reply = causeway_gateway::api::handle(&gw, &serde_json::to_string(&req).unwrap());
        serde_json::from_value::<Reply<String>>(serde_json::to_value(reply).unwrap()).unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    etcd.run();
    match asked.join().unwrap() {
        Reply::Ok(done) => assert_eq!(done, "site west: prefixes 10.2.0.0/16"),
        Reply::Error(e) => panic!("refused: {e}"),
    }
    assert_eq!(Store::new(&etcd.url()).get("/causeway/sites/west").unwrap().0, br#"{"prefixes":["10.2.0.0/16"]}"#);
}

#[test]
fn operators_join_leave_and_set_sites_through_the_api() {
    let Some(etcd) = Etcd::start() else { return };
    let net = MemNet::new();
    let a = Gw::start(&net, &etcd, 1, "east", "gw1", 10);
    let b = Gw::start(&net, &etcd, 2, "west", "gw1", 10);
    let c = Gw::start(&net, &etcd, 3, "west", "gw2", 10);
    wait_until("a learns west", || a.peer_names() == ["west.gw1", "west.gw2"]);
    let store = Store::new(&etcd.url());

    let done = a.ask(Request::SiteSet { site: "west".into(), prefixes: vec!["10.2.0.0/16".into()] }).unwrap();
    assert_eq!(done, "site west: prefixes 10.2.0.0/16");
    assert_eq!(store.get("/causeway/sites/west").unwrap().0, br#"{"prefixes":["10.2.0.0/16"]}"#);
    wait_until("a routes site west", || a.registry.merged().is_some_and(|c| c.sites.iter().any(|s| s.name == "west")));
    assert!(b.registry.merged().unwrap().sites.is_empty(), "a gateway's own site is not a remote site");
    let e = a.ask(Request::SiteSet { site: "north".into(), prefixes: vec!["10.2.1.0/24".into()] }).unwrap_err();
    assert!(e.contains("10.2.1.0/24 overlaps 10.2.0.0/16 of site west"), "{e}");
    let e = a.ask(Request::SiteSet { site: "north".into(), prefixes: vec!["10.2.1.1/24".into()] }).unwrap_err();
    assert!(e.starts_with("prefixes: "), "{e}");
    // From a gateway of west itself, whose merged view has no site west.
    wait_until("b knows its own site's prefixes", || b.registry.view().sites.contains_key("west"));
    let e = b.ask(Request::SiteSet { site: "north".into(), prefixes: vec!["10.2.1.0/24".into()] }).unwrap_err();
    assert!(e.contains("10.2.1.0/24 overlaps 10.2.0.0/16 of site west"), "{e}");

    // c moves to site south: a and b see it there.
    assert_eq!(
        c.ask(Request::SiteJoin { site: "south".into() }).unwrap(),
        "left site west; registered in site south as gw2"
    );
    wait_until("a sees c in south", || a.peer_names() == ["south.gw2", "west.gw1"]);
    wait_until("b sees c as a peer now", || b.peer_names() == ["east.gw1", "south.gw2"]);
    wait_until("c sees west.gw1 as a peer now", || c.peer_names() == ["east.gw1", "west.gw1"]);
    assert!(store.get("/causeway/gateways/west/gw2").is_none());
    assert_eq!(c.status().site, "south");
    assert!(c.ask(Request::SiteJoin { site: "south".into() }).unwrap().starts_with("already registered"));

    // c leaves: it drops out of the others, and keeps its own view.
    assert!(c.ask(Request::SiteLeave).unwrap().starts_with("withdrew south/gw2"));
    wait_until("c is gone from a and b", || a.peer_names() == ["west.gw1"] && b.peer_names() == ["east.gw1"]);
    assert_eq!(c.status().site, "", "not registered");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.peer_names(), ["east.gw1", "west.gw1"], "still following the registry");
    assert!(c.ask(Request::SiteLeave).unwrap_err().contains("not registered"));
    c.ask(Request::SiteJoin { site: "west".into() }).unwrap();
    wait_until("c is back in west", || a.peer_names() == ["west.gw1", "west.gw2"]);

    assert!(a.ask(Request::SiteRemove { site: "west".into() }).unwrap().starts_with("removed site west"));
    wait_until("site west is gone", || a.registry.merged().is_some_and(|c| c.sites.is_empty()));
    assert_eq!(
        a.ask(Request::SiteRemove { site: "west".into() }).unwrap_err(),
        "registry: no site west in the registry"
    );

    // A file reload merges the registry's view too.
    let mut file = a.cfg.clone();
    let extra = StaticSecret::random(&mut rand_core::OsRng).public_key();
    file.peers.push(causeway_config::Peer {
        name: "static".into(),
        public_key: extra,
        preshared_key: None,
        endpoints: Vec::new(),
        allowed_ips: vec!["10.8.0.0/16".parse().unwrap()],
        persistent_keepalive: 0,
        failover_after: Duration::from_secs(10),
        site: None,
    });
    let report = causeway_gateway::reload::apply_file(&a.gw, file.clone());
    assert_eq!((report.added.clone(), report.removed.clone()), (vec!["static".to_string()], vec![]), "{report}");
    assert_eq!(a.peer_names(), ["static", "west.gw1", "west.gw2"]);
    assert!(report.needs_restart.is_empty(), "{report}");
    // A site the file defines is still written for the fleet, and the
    // reply says this gateway keeps the file's.
    file.sites.push(causeway_config::Site { name: "depot".into(), prefixes: vec!["10.9.0.0/16".parse().unwrap()] });
    causeway_gateway::reload::apply_file(&a.gw, file.clone());
    let done = a.ask(Request::SiteSet { site: "depot".into(), prefixes: vec!["10.99.0.0/16".into()] }).unwrap();
    assert_eq!(
        done,
        "site depot: prefixes 10.99.0.0/16 (this gateway's configuration file defines site depot, so it keeps the file's prefixes)"
    );
    assert!(store.get("/causeway/sites/depot").is_some());
    file.sites.clear();
    causeway_gateway::reload::apply_file(&a.gw, file.clone());
    file.registry.as_mut().unwrap().lease_ttl = Duration::from_secs(20);
    let report = causeway_gateway::reload::apply_file(&a.gw, file);
    assert_eq!(report.needs_restart, ["registry"], "{report}");
}

#[test]
fn a_name_held_by_another_key_is_not_taken_and_a_new_key_is_published() {
    let Some(etcd) = Etcd::start() else { return };
    let net = MemNet::new();
    let store = Store::new(&etcd.url());
    let (key, value, other) = record("west", "gw1", 9);
    store.put(&key, &value, None);
    let a = Gw::start(&net, &etcd, 1, "east", "gw1", 10);
    let b = Gw::start(&net, &etcd, 2, "west", "gw1", 10);
    wait_until("b says its name is taken", || {
        b.status().last_error.is_some_and(|e| e.contains("registered by another gateway"))
    });
    wait_until("b is synced, the problem still shown", || {
        let s = b.status();
        s.state == "synced" && s.last_error.is_some_and(|e| e.contains("registered by another gateway"))
    });
    assert_eq!(store.get(&key).unwrap().0, value, "not overwritten");
    // Joining the site where the name is taken is refused up front: a
    // stays where it was, its record with it.
    let e = a.ask(Request::SiteJoin { site: "west".into() }).unwrap_err();
    assert!(e.contains("west/gw1 is registered by another gateway") && e.contains("nothing was changed"), "{e}");
    assert_eq!(a.status().site, "east");
    assert!(store.get("/causeway/gateways/east/gw1").is_some(), "a's record stays");
    wait_until("a has the other holder as west.gw1", || {
        a.peer("west.gw1").is_some_and(|p| *p.public_key() == other.public_key())
    });
    // The holder goes: b publishes.
    store.delete(&key);
    let holds = |pk: causeway_wireguard::PublicKey| {
        store.get(&key).is_some_and(|(v, _)| String::from_utf8_lossy(&v).contains(&pk.to_base64()))
    };
    wait_until("b's record is published", || holds(b.secret.public_key()));
    wait_until("b's status is clear", || b.status().last_error.is_none());
    wait_until("a has b as west.gw1", || a.peer("west.gw1").is_some_and(|p| *p.public_key() == b.secret.public_key()));
    // A reload with a new private key publishes the new public key.
    let mut file = b.cfg.clone();
    let new_secret = StaticSecret::random(&mut rand_core::OsRng);
    file.interface.private_key = new_secret.clone();
    causeway_gateway::reload::apply_file(&b.gw, file.clone());
    wait_until("the record has b's new key", || holds(new_secret.public_key()));
    wait_until("a has b's new key", || a.peer("west.gw1").is_some_and(|p| *p.public_key() == new_secret.public_key()));
    // A new address is not applied until a restart, so it is not
    // published either: the record keeps the one the interface has.
    let record = || store.get(&key).map(|(v, _)| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
    let before = record();
    let old = file.interface.addresses[0].addr().to_string();
    assert!(before.contains(&old), "{before}");
    file.interface.addresses = vec!["10.255.99.9/32".parse().unwrap()];
    let report = causeway_gateway::reload::apply_file(&b.gw, file);
    assert!(report.needs_restart.contains(&"addresses".to_string()), "{report}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(record(), before, "the record was not republished");
}

/// A member that answers the status check but cannot serve a session (a
/// learner refuses leases and linearizable reads) is passed over for the
/// next one, not chosen again for every session.
#[test]
fn a_member_that_answers_but_cannot_serve_is_passed_over() {
    let Some(etcd) = Etcd::start() else { return };
    let learner = etcd.add_learner();
    let net = MemNet::new();
    let a = Gw::start_with(&net, &etcd, 1, "east", "gw1", 10, |r| r.endpoints = vec![learner.url(), etcd.url()]);
    wait_until("a is synced through the voting member", || a.status().state == "synced");
    let store = Store::new(&etcd.url());
    wait_until("a's record is published", || store.get("/causeway/gateways/east/gw1").is_some());
}

/// Runs openssl in `dir`, failing the test with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, etcd's server certificate for 127.0.0.1, and a client
/// certificate, in `dir`.
fn certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca = ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=causeway test CA"];
    openssl(dir, &[&["req", "-x509"][..], &ec, &ca].concat());
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, pem, ext, subj) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
            format!("/CN={name}"),
        );
        openssl(dir, &[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &subj]].concat());
        openssl(
            dir,
            &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &pem]
                .into_iter()
                .chain(["-days", "2", "-extfile", &ext])
                .collect::<Vec<_>>(),
        );
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("client.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// etcd over TLS, requiring client certificates signed by the CA that
/// `certificates` makes in its directory.
fn tls_etcd() -> Option<Etcd> {
    Etcd::start_with(|dir| {
        certificates(dir);
        let f = |n: &str| dir.join(n).display().to_string();
        vec![
            "--cert-file".into(),
            f("server.pem"),
            "--key-file".into(),
            f("server.key"),
            "--client-cert-auth".into(),
            "--trusted-ca-file".into(),
            f("ca.pem"),
        ]
    })
}

#[test]
fn tls_with_a_client_certificate() {
    let Some(etcd) = tls_etcd() else { return };
    assert!(etcd.url().starts_with("https://"));
    let net = MemNet::new();
    let dir = etcd.dir.path().to_path_buf();
    let tls = |r: &mut RegistryConfig| {
        r.tls = Some(causeway_config::RegistryTls {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("client.pem"),
            key_file: dir.join("client.key"),
            key_owners: Default::default(),
        })
    };
    let a = Gw::start_with(&net, &etcd, 1, "east", "gw1", 10, tls);
    let b = Gw::start_with(&net, &etcd, 2, "west", "gw1", 10, tls);
    wait_until("a and b learn each other over TLS", || a.peer("west.gw1").is_some() && b.peer("east.gw1").is_some());
    // The peers are applied a moment before the status says synced.
    wait_until("a to say synced", || a.status().state == "synced");
    // A certificate etcd's CA did not sign for clients is refused.
    let c = Gw::start_with(&net, &etcd, 3, "west", "gw2", 10, |r| {
        tls(r);
        let t = r.tls.as_mut().unwrap();
        t.cert_file = dir.join("server.pem");
        t.key_file = dir.join("server.key");
    });
    wait_until("c reports the failure", || c.status().last_error.is_some());
    assert_eq!(c.status().state, "connecting");
    std::thread::sleep(Duration::from_millis(500));
    assert!(a.peer("west.gw2").is_none());
}

/// Certificates rotated at the paths the configuration names are read
/// again by a reload, and serve the next connection, without a restart.
#[test]
fn a_reload_reads_rotated_tls_files_again() {
    let Some(etcd) = tls_etcd() else { return };
    let net = MemNet::new();
    let dir = etcd.dir.path().to_path_buf();
    use std::os::unix::fs::PermissionsExt;
    let install = |pem: &str, key: &str| {
        std::fs::copy(dir.join(pem), dir.join("gw.pem")).unwrap();
        std::fs::copy(dir.join(key), dir.join("gw.key")).unwrap();
        std::fs::set_permissions(dir.join("gw.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    // A certificate etcd refuses for a client (it is for servers) first.
    install("server.pem", "server.key");
    let a = Gw::start_with(&net, &etcd, 1, "east", "gw1", 10, |r| {
        r.tls = Some(causeway_config::RegistryTls {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("gw.pem"),
            key_file: dir.join("gw.key"),
            key_owners: Default::default(),
        })
    });
    wait_until("a reports the refusal", || a.status().last_error.is_some());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.status().state, "connecting");
    install("client.pem", "client.key");
    let report = causeway_gateway::reload::apply_file(&a.gw, a.cfg.clone());
    assert!(report.refused.is_none() && report.needs_restart.is_empty(), "{report}");
    wait_until("a is synced with the new certificate", || a.status().state == "synced");
    let b = Gw::start_with(&net, &etcd, 2, "west", "gw1", 10, |r| r.tls = a.cfg.registry.as_ref().unwrap().tls.clone());
    wait_until("a and b learn each other", || a.peer("west.gw1").is_some() && b.peer("east.gw1").is_some());
}

#[test]
fn password_authentication() {
    let Some(etcd) = Etcd::start() else { return };
    let store = Store::new(&etcd.url());
    let mut admin = store.client().unwrap();
    store.rt.block_on(async {
        admin.user_add("root", "root-password", None).await.unwrap();
        admin.user_grant_role("root", "root").await.unwrap();
        admin.user_add("causeway", "gateway-password", None).await.unwrap();
        admin.role_add("gateways").await.unwrap();
        let rw = etcd_client::Permission::read_write("/causeway/").with_prefix();
        admin.role_grant_permission("gateways", rw).await.unwrap();
        admin.user_grant_role("causeway", "gateways").await.unwrap();
        admin.auth_enable().await.unwrap();
    });
    let net = MemNet::new();
    let user = |pw: &str| {
        let pw = causeway_config::Psk(zeroize::Zeroizing::new(pw.as_bytes().to_vec()));
        move |r: &mut RegistryConfig| r.user = Some(("causeway".into(), pw))
    };
    let a = Gw::start_with(&net, &etcd, 1, "east", "gw1", 10, user("gateway-password"));
    let b = Gw::start_with(&net, &etcd, 2, "west", "gw1", 10, user("gateway-password"));
    wait_until("a and b learn each other as user causeway", || {
        a.peer("west.gw1").is_some() && b.peer("east.gw1").is_some()
    });
    let c = Gw::start_with(&net, &etcd, 3, "west", "gw2", 10, user("not-the-password"));
    wait_until("c reports the refusal", || c.status().last_error.is_some());
    let e = c.status().last_error.unwrap();
    assert!(e.contains("authentication failed"), "{e}");
    assert!(!e.contains("not-the-password"), "the password is not in the error: {e}");
    // The right password, given by a reload, serves the next connection:
    // no restart.
    let mut file = c.cfg.clone();
    user("gateway-password")(file.registry.as_mut().unwrap());
    let report = causeway_gateway::reload::apply_file(&c.gw, file);
    assert!(report.refused.is_none() && report.needs_restart.is_empty(), "{report}");
    wait_until("c is synced with the new password", || c.status().state == "synced");
    wait_until("a learns c", || a.peer("west.gw2").is_some());
    // Unauthenticated clients are refused: the records are protected.
    assert!(store.try_get("/causeway/gateways/east/gw1").is_err());
}

/// Another gateway given our name writes its record over ours: the watch
/// shows it, and we report the clash instead of writing ours back (which
/// the other would answer in kind). A leave then leaves the other's record
/// alone: we delete a record only under our own lease.
#[test]
fn a_record_written_over_ours_is_reported_and_a_leave_does_not_delete_it() {
    let Some(etcd) = Etcd::start() else { return };
    let net = MemNet::new();
    let store = Store::new(&etcd.url());
    let b = Gw::start(&net, &etcd, 2, "west", "gw1", 10);
    let (key, value, _other) = record("west", "gw1", 9);
    let ours = b.secret.public_key().to_base64();
    wait_until("b published", || store.get(&key).is_some_and(|(v, _)| String::from_utf8_lossy(&v).contains(&ours)));
    store.put(&key, &value, None);
    wait_until("b reports the clash", || {
        b.status().last_error.is_some_and(|e| e.contains("registered by another gateway"))
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(store.get(&key).unwrap().0, value, "not written back");
    let reply = b.ask(Request::SiteLeave).unwrap();
    assert!(reply.starts_with("no longer publishing (another gateway's record stays)"), "{reply}");
    assert_eq!(store.get(&key).unwrap().0, value, "the other's record is not ours to delete");
}

/// More records than one page of the full read: every one is learnt, and
/// read at one revision.
#[test]
fn a_registry_larger_than_one_page_is_read_whole() {
    let Some(etcd) = Etcd::start() else { return };
    let net = MemNet::new();
    let store = Store::new(&etcd.url());
    let mut expected = Vec::new();
    for n in 10..90u8 {
        let (key, value, _) = record("north", &format!("gw{n}"), n);
        store.put(&key, &value, None);
        expected.push(format!("north.gw{n}"));
    }
    expected.sort();
    let a = Gw::start(&net, &etcd, 1, "east", "gw1", 10);
    wait_until("a learns all 80", || a.peer_names() == expected);
}
