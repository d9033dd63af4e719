//! The registry at scale: a view of 1,000 gateway records across 50 sites
//! (20 gateways and one site record each), and what it costs one gateway
//! of the first site to take it: decoding the records, merging them with
//! its file, and reconciling its data plane from empty (980 peers, 49
//! sites); then to apply one change (a record added, one gateway's
//! endpoint moved, a record removed). Time is wall clock; memory is what
//! the allocator hands out (live bytes after, peak during, and bytes
//! allocated), counted by a wrapper around the system allocator, and the
//! process's resident set (VmRSS) before and after.
//!
//! Everything runs in process: the data plane is a real `Interface` over
//! the in-memory network (no workers: only its tables change). With
//! `--etcd`, it also starts a private etcd (/usr/bin/etcd), writes the
//! 1,000 records, and times a real registry client from start until all
//! 980 peers are applied, and one put until it is applied.
//!
//! Usage: cargo run --release -p causeway-benches --bin registry-scale [-- --etcd] [--json]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_config::{Config, Endpoint, Interface, Registry as RegistryConfig};
use causeway_dataplane::interface::{Interface as DataPlane, Options};
use causeway_dataplane::memory::MemNet;
use causeway_gateway::gateway::Gateway;
use causeway_gateway::registry::{merge, Layout as KeyLayout, Member, View};
use causeway_wireguard::StaticSecret;

/// Counts what passes through the system allocator.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    TOTAL.fetch_add(n, Ordering::Relaxed);
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY (for each method): every call is passed to `System` unchanged,
// with the layout the caller gave; the counters are plain atomics and
// never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        grew(new_size);
        // SAFETY: `ptr` came from `System` with `layout`; the caller
        // guarantees `new_size` is valid for it.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SITES: usize = 50;
const PER_SITE: usize = 20;

/// Memory and time of one step.
#[derive(serde::Serialize)]
struct Step {
    name: String,
    millis: f64,
    /// Live heap after the step minus before it.
    live_delta_bytes: i64,
    /// Highest live heap during the step, above where it started.
    peak_above_start_bytes: usize,
    allocated_bytes: usize,
    rss_after_kib: u64,
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn measure<T>(steps: &mut Vec<Step>, name: &str, f: impl FnOnce() -> T) -> T {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    let total = TOTAL.load(Ordering::Relaxed);
    let t = Instant::now();
    let out = f();
    let millis = t.elapsed().as_secs_f64() * 1000.0;
    steps.push(Step {
        name: name.into(),
        millis,
        live_delta_bytes: LIVE.load(Ordering::Relaxed) as i64 - live as i64,
        peak_above_start_bytes: PEAK.load(Ordering::Relaxed) - live,
        allocated_bytes: TOTAL.load(Ordering::Relaxed) - total,
        rss_after_kib: rss_kib(),
    });
    out
}

/// Gateway `g` of site `s`: its WAN address and tunnel address.
fn addresses(s: usize, g: usize) -> (IpAddr, IpAddr) {
    let i = s * PER_SITE + g + 1;
    (
        IpAddr::from([198, 18, (i >> 8) as u8, (i & 0xff) as u8]),
        IpAddr::from([10, 255, (i >> 8) as u8, (i & 0xff) as u8]),
    )
}

fn record(s: usize, g: usize) -> (String, Vec<u8>) {
    let (wan, tunnel) = addresses(s, g);
    let m = Member {
        site: format!("site{s:02}"),
        name: format!("gw{g:02}"),
        public_key: StaticSecret::random(&mut rand_core::OsRng).public_key(),
        endpoints: vec![Endpoint::Addr(SocketAddr::new(wan, 51820))],
        tunnel_address: Some(ipnet::IpNet::new(tunnel, 32).expect("a host prefix")),
        version: "0.1.0".into(),
    };
    (KeyLayout::new("/causeway").gateway(&m.site, &m.name), m.encode())
}

fn site_record(s: usize) -> (String, Vec<u8>) {
    let prefixes = [format!("10.{}.0.0/16", s + 1), format!("fd00:{:x}::/48", s + 1)];
    (format!("/causeway/sites/site{s:02}"), serde_json::json!({ "prefixes": prefixes }).to_string().into_bytes())
}

fn file_config(secret: &StaticSecret, endpoints: Vec<String>) -> Config {
    Config {
        interface: Interface {
            addresses: vec!["10.255.0.1/32".parse().expect("valid")],
            dns_refresh: None,
            ..Interface::with_defaults(secret.clone())
        },
        peers: Vec::new(),
        ipsec_peers: Vec::new(),
        sites: Vec::new(),
        registry: Some(RegistryConfig {
            endpoints,
            prefix: "/causeway".into(),
            site: "site00".into(),
            name: "gw00".into(),
            advertise: vec![Endpoint::Addr("198.18.0.1:51820".parse().expect("valid"))],
            lease_ttl: Duration::from_secs(10),
            tls: None,
            user: None,
            persistent_keepalive: 1,
            failover_after: Duration::from_secs(3),
        }),
    }
}

fn gateway(net: &Arc<MemNet>, secret: &StaticSecret) -> Arc<Gateway> {
    let options = Options {
        mtu: 1420,
        workers: 1,
        port: 51820,
        binder: net.host("198.18.0.1".parse().expect("valid"), 1),
        batches_per_worker: 1,
    };
    Arc::new(Gateway::new(Arc::new(
        DataPlane::with_options("scale0".into(), Some(secret.clone()), options).expect("an interface"),
    )))
}

fn in_process(steps: &mut Vec<Step>) {
    let layout = KeyLayout::new("/causeway");
    let records: Vec<(String, Vec<u8>)> = (0..SITES)
        .flat_map(|s| (0..PER_SITE).map(move |g| (s, g)))
        .map(|(s, g)| record(s, g))
        .chain((0..SITES).map(site_record))
        .collect();
    let bytes: usize = records.iter().map(|(k, v)| k.len() + v.len()).sum();
    println!(
        "registry: {} gateway records and {SITES} site records, {bytes} bytes of keys and values",
        SITES * PER_SITE
    );
    let secret = StaticSecret::random(&mut rand_core::OsRng);
    let file = file_config(&secret, vec!["http://127.0.0.1:2379".into()]);
    let net = MemNet::new();
    let gw = gateway(&net, &secret);
    causeway_gateway::reload::reconcile(&gw, &file);

    let mut view = measure(steps, "decode 1,050 records into the view", || {
        let mut v = View::default();
        // Created in the order read, as a first read of the store sees them.
        for (created, (k, val)) in (1..).zip(&records) {
            assert!(v.put(&layout, k.as_bytes(), val, created).refused.is_none());
        }
        v
    });
    let merged = measure(steps, "merge file + view (980 peers, 49 sites)", || merge(&file, &view, "site00"));
    assert!(merged.left_out.is_empty(), "{:?}", merged.left_out);
    assert_eq!((merged.config.peers.len(), merged.config.sites.len()), (980, 49));
    let report = measure(steps, "reconcile from empty", || causeway_gateway::reload::reconcile(&gw, &merged.config));
    // The report names each site added beside each peer ("site NAME").
    let sites_added = report.added.iter().filter(|a| a.starts_with("site ")).count();
    assert_eq!((report.added.len() - sites_added, sites_added), (980, 49));
    assert_eq!(gw.peers().len(), 980);

    let change = |steps: &mut Vec<Step>, name: &str, view: &mut View, edit: &dyn Fn(&mut View)| {
        measure(steps, name, || {
            edit(view);
            let merged = merge(&file, view, "site00");
            causeway_gateway::reload::reconcile(&gw, &merged.config)
        })
    };
    let (k, v) = record(SITES - 1, PER_SITE);
    let report = change(steps, "one change: a gateway added (put, merge, reconcile)", &mut view, &|view| {
        view.put(&layout, k.as_bytes(), &v, 1_000_000);
    });
    assert_eq!((report.added.len(), report.unchanged), (1, 980));
    let moved = {
        let mut m = view.members.values().find(|m| m.site == "site07").cloned().expect("a member");
        m.endpoints = vec![Endpoint::Addr("198.18.255.254:51820".parse().expect("valid"))];
        (layout.gateway(&m.site, &m.name), m.encode())
    };
    let report = change(steps, "one change: a gateway's endpoint moved", &mut view, &|view| {
        // Written over: the key keeps the revision that created it.
        let created = (1..).zip(&records).find(|(_, (k, _))| *k == moved.0).map_or(0, |(c, _)| c);
        view.put(&layout, moved.0.as_bytes(), &moved.1, created);
    });
    assert_eq!((report.changed.len(), report.unchanged), (1, 980));
    let report = change(steps, "one change: a gateway removed", &mut view, &|view| {
        view.delete(&layout, k.as_bytes());
    });
    assert_eq!((report.removed.len(), report.unchanged), (1, 980));
    let report = change(steps, "no change: merge and reconcile again", &mut view, &|_| {});
    assert_eq!(report.unchanged, 980);
    gw.shutdown();
}

/// The real client against a private etcd: from start to 980 peers, and
/// from one put to its peer.
fn with_etcd(timings: &mut Vec<(String, f64)>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = |_| std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("bound").port();
    let (client, peer) = (port(0), port(1));
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut etcd = std::process::Command::new("/usr/bin/etcd")
        .args(["--name", "s", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url, "--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url, "--initial-cluster", &format!("s={peer_url}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("/usr/bin/etcd starts (apt-get install etcd-server)");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let mut c = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = etcd_client::Client::connect([&url], None).await {
                if c.get("/", None).await.is_ok() {
                    break c;
                }
            }
            assert!(Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    rt.block_on(async {
        for (k, v) in
            (0..SITES).flat_map(|s| (0..PER_SITE).map(move |g| record(s, g))).chain((0..SITES).map(site_record))
        {
            c.put(k, v, None).await.expect("put");
        }
    });
    let secret = StaticSecret::random(&mut rand_core::OsRng);
    let net = MemNet::new();
    let gw = gateway(&net, &secret);
    let file = file_config(&secret, vec![url.clone()]);
    causeway_gateway::reload::reconcile(&gw, &file);
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let t = Instant::now();
    let registry = causeway_gateway::registry::Registry::start(&gw, file).expect("the registry starts");
    wait("980 peers", &|| gw.peers().len() == 980);
    timings.push((
        "etcd: registry start to 980 peers applied (connect, lease, publish, read, reconcile)".into(),
        t.elapsed().as_secs_f64() * 1000.0,
    ));
    let (k, v) = record(SITES - 1, PER_SITE);
    let t = Instant::now();
    rt.block_on(c.put(k, v, None)).expect("put");
    wait("981 peers", &|| gw.peers().len() == 981);
    timings.push((
        "etcd: one put to its peer applied (watch, merge, reconcile)".into(),
        t.elapsed().as_secs_f64() * 1000.0,
    ));
    registry.stop();
    gw.shutdown();
    let _ = etcd.kill();
    let _ = etcd.wait();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut steps = Vec::new();
    let rss_start = rss_kib();
    in_process(&mut steps);
    let mut etcd = Vec::new();
    if args.iter().any(|a| a == "--etcd") {
        with_etcd(&mut etcd);
    }
    if args.iter().any(|a| a == "--json") {
        let out = serde_json::json!({ "rss_start_kib": rss_start, "steps": steps, "etcd": etcd });
        println!("{}", serde_json::to_string_pretty(&out).expect("serializable"));
        return;
    }
    let kib = |b: i64| format!("{:.0} KiB", b as f64 / 1024.0);
    println!("resident set at start: {rss_start} KiB");
    println!(
        "{:<56} {:>10} {:>12} {:>12} {:>13} {:>10}",
        "step", "time", "live Δ", "peak above", "allocated", "RSS after"
    );
    for s in &steps {
        println!(
            "{:<56} {:>7.2} ms {:>12} {:>12} {:>13} {:>6} KiB",
            s.name,
            s.millis,
            kib(s.live_delta_bytes),
            kib(s.peak_above_start_bytes as i64),
            kib(s.allocated_bytes as i64),
            s.rss_after_kib
        );
    }
    for (name, ms) in &etcd {
        println!("{name:<90} {ms:>8.1} ms");
    }
}
