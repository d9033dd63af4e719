//! Site health with the control plane running, in one process without
//! root: three gateways over in-memory TUNs and UDP, each applying a
//! configuration through `reload::reconcile` and running its timers
//! (`control::run_timers`, which ticks the sites' health) on its own
//! runtime. Gateway `a` (site east) sends to site west, served by `w1`
//! and `w2`, each with persistent_keepalive 1 and failover_after 3 on
//! both sides, as the contract's fleet runs them.
//!
//! Checked in real time, since health is about time: a reload that
//! changes the site keeps the sessions; one-way traffic to
//! a gateway does not make it look dead; a gateway that stops (as after
//! SIGKILL) is marked down after about three seconds of silence while
//! the other stays up and takes every flow; when it returns with the same
//! key and address it is up again within about a second. Bounds are loose
//! enough for a loaded two-core machine and tight enough to fail if the
//! mechanism is missing (the protocol alone would take 15 s or more).

use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use causeway_config::Config;
use causeway_dataplane::flow_hash::flow_hash;
use causeway_dataplane::interface::{Interface, Options};
use causeway_dataplane::memory::{self, MemNet, MemTunHost};
use causeway_gateway::gateway::Gateway;
use causeway_wireguard::StaticSecret;

struct Node {
    gw: Arc<Gateway>,
    host: MemTunHost,
    workers: Vec<JoinHandle<()>>,
    timers: Option<JoinHandle<()>>,
}

impl Node {
    fn start(net: &Arc<MemNet>, n: u8, secret: &StaticSecret, cfg: &Config) -> Node {
        let ip: IpAddr = format!("198.18.0.{n}").parse().unwrap();
        let options = Options { mtu: 1420, workers: 2, port: 51820, binder: net.host(ip, 64), batches_per_worker: 8 };
        let iface = Arc::new(Interface::with_options(format!("mem{n}"), Some(secret.clone()), options).unwrap());
        let (host, tuns) = memory::tun(2);
        let workers = causeway_dataplane::worker::spawn(&iface, tuns).unwrap();
        let gw = Arc::new(Gateway::new(iface));
        causeway_gateway::reload::reconcile(&gw, cfg);
        let g = gw.clone();
        let timers = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(causeway_gateway::control::run_timers(g));
        });
        Node { gw, host, workers, timers: Some(timers) }
    }

    /// Stops everything at once, as SIGKILL would: nothing more is sent.
    fn kill(&mut self) {
        self.gw.shutdown();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(t) = self.timers.take() {
            let _ = t.join();
        }
    }

    /// Whether gateway `peer` of site `site` is up, as this node sees it.
    fn up(&self, site: &str, peer: &str) -> bool {
        let site = self.gw.site(site).unwrap();
        site.status().iter().any(|m| m.peer.name() == peer && m.health.is_up())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(secret: &StaticSecret, other_site: (&str, &str), peers: &[(&str, &StaticSecret, u8)]) -> Config {
    let b64 = |k: &StaticSecret| k.public_key().to_base64();
    let mut text = format!(
        "[interface]\nprivate_key = \"{}\"\n\n[[site]]\nname = \"{}\"\nprefixes = [\"{}\"]\n",
        base64_secret(secret),
        other_site.0,
        other_site.1
    );
    for (name, key, n) in peers {
        text += &format!(
            "[[peer]]\nname = \"{name}\"\nsite = \"{}\"\npublic_key = \"{}\"\nendpoints = [\"198.18.0.{n}:51820\"]\n\
             persistent_keepalive = 1\nfailover_after = 3\n",
            other_site.0,
            b64(key)
        );
    }
    causeway_config::parse(&text, std::path::Path::new("/test.toml")).unwrap()
}

fn base64_secret(s: &StaticSecret) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// A UDP packet from site east to site west, in flow `flow`.
fn packet(flow: u16, seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; 100];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&100u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 1, 0, 1]);
    p[16..20].copy_from_slice(&[10, 2, 0, 1]);
    p[20..22].copy_from_slice(&(20_000 + flow).to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[30..34].copy_from_slice(&seq.to_be_bytes());
    p
}

fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn drain(host: &MemTunHost) -> usize {
    std::iter::from_fn(|| host.recv()).count()
}

#[test]
fn a_stopped_gateway_is_down_in_seconds_and_up_about_a_second_after_it_returns() {
    let net = MemNet::new();
    let keys: Vec<StaticSecret> = (0..3).map(|_| StaticSecret::random(&mut rand_core::OsRng)).collect();
    let (ka, k1, k2) = (&keys[0], &keys[1], &keys[2]);
    let cfg_a = config(ka, ("west", "10.2.0.0/16"), &[("west.gw1", k1, 3), ("west.gw2", k2, 4)]);
    let cfg_w = |k| config(k, ("east", "10.1.0.0/16"), &[("east.gw1", ka, 1)]);
    let a = Node::start(&net, 1, ka, &cfg_a);
    let mut w1 = Node::start(&net, 3, k1, &cfg_w(k1));
    let w2 = Node::start(&net, 4, k2, &cfg_w(k2));
    let site = a.gw.site("west").unwrap();
    let member = |name: &str| site.members().into_iter().find(|p| p.name() == name).unwrap();
    let sessions = || {
        site.members().iter().all(|p| p.crypto().current_keypair().is_some())
            && [&w1, &w2].iter().all(|w| w.gw.peers()[0].crypto().current_keypair().is_some())
    };
    wait_for("sessions with both gateways", Duration::from_secs(10), sessions);

    // A reload that changes the site's prefixes keeps the sessions (the
    // very same keypairs) and the gateways' health.
    let keypairs = || site.members().iter().map(|p| p.crypto().current_keypair().unwrap()).collect::<Vec<_>>();
    let before = keypairs();
    let wider = config(ka, ("west", "10.2.0.0/15"), &[("west.gw1", k1, 3), ("west.gw2", k2, 4)]);
    let report = causeway_gateway::reload::reconcile(&a.gw, &wider);
    assert_eq!((report.changed, report.unchanged), (vec!["site west (prefixes)".to_string()], 2));
    assert!(before.iter().zip(keypairs()).all(|(b, a)| Arc::ptr_eq(b, &a)), "a session restarted");
    assert!(Arc::ptr_eq(&a.gw.site("west").unwrap(), &site));
    causeway_gateway::reload::reconcile(&a.gw, &cfg_a);

    // Five seconds of one-way traffic to w1, which sends nothing back but
    // its keepalives: it must stay up all along.
    let to_w1: Vec<u16> = (0..64)
        .filter(|&f| Arc::ptr_eq(site.table().pick(flow_hash(&packet(f, 0))).unwrap(), &member("west.gw1")))
        .collect();
    assert!(!to_w1.is_empty());
    let start = Instant::now();
    let mut seq = 0;
    while start.elapsed() < Duration::from_secs(5) {
        a.host.send(0, to_w1.iter().map(|&f| packet(f, seq)));
        seq += 1;
        std::thread::sleep(Duration::from_millis(10));
        drain(&w1.host);
        assert!(a.up("west", "west.gw1"), "one-way traffic made a live gateway look dead");
    }
    assert!(site.status().iter().all(|m| m.health.is_up()));
    let w2_up_since = site.status()[1].health.since();

    w1.kill();
    let down = wait_for("w1 marked down", Duration::from_secs(6), || !a.up("west", "west.gw1"));
    assert!(down >= Duration::from_millis(1500), "down after {down:?}: sooner than the silence limit allows");
    assert!(a.up("west", "west.gw2"));
    // Its flows now reach w2.
    drain(&w2.host);
    a.host.send(0, to_w1.iter().map(|&f| packet(f, 1_000_000)));
    wait_for("w1's flows at w2", Duration::from_secs(5), {
        let mut got = 0;
        move || {
            got += drain(&w2.host);
            got >= to_w1.len()
        }
    });

    // Back with the same key and address: it reaches out, and is up as
    // soon as that handshake completes.
    let w1 = Node::start(&net, 3, k1, &cfg_w(k1));
    let up = wait_for("w1 up again", Duration::from_secs(4), || a.up("west", "west.gw1"));
    assert!(up <= Duration::from_millis(2500), "up {up:?} after its return");
    assert_eq!(site.status()[1].health.since(), w2_up_since, "w2 never went down");
    eprintln!("w1 down {down:?} after it stopped, up {up:?} after it returned");
    drop(w1);
}
