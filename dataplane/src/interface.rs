//! One tunnel interface as the data plane sees it: the protocol core, the
//! peers, the routing table, the UDP sockets and the counters, shared by
//! the workers and the control plane. What only the control plane needs
//! (the configuration file, kernel routes, name refreshes) lives in the
//! gateway crate, which wraps this.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use causeway_wireguard::{Device, PresharedKey, PublicKey, StaticSecret};
use ipnet::IpNet;

use crate::allowed_ips::AllowedIps;
use crate::clock::Clock;
use crate::counters::{Counters, WorkerStats};
use crate::doorbell::Doorbell;
use crate::esp_link::EspLink;
use crate::io::{Bind, Socket};
use crate::ipsec_table::IpsecTable;
use crate::jobs::Jobs;
use crate::peer::{Link, PeerState};
pub use crate::route::{Route, Routes};
use crate::session::Carrier;
use crate::site::Site;
use crate::udp::OsBind;

/// The UDP sockets of all workers, replaced as a whole when the listen port
/// or fwmark changes.
pub struct SocketSet {
    pub sockets: Vec<Arc<dyn Socket>>,
    pub port: u16,
}

/// How an interface is built, beyond its name and key.
pub struct Options {
    pub mtu: u32,
    /// Worker threads, and so TUN queues and UDP sockets.
    pub workers: usize,
    /// UDP port; 0 picks a free one.
    pub port: u16,
    /// Makes the workers' sockets: the host's network, or one in memory.
    pub binder: Arc<dyn Bind>,
    /// Batch buffers per worker and direction (`jobs.rs`).
    pub batches_per_worker: usize,
}

impl Options {
    /// On the host's network, with the standard pools.
    pub fn new(mtu: u32, workers: usize, port: u16) -> Options {
        Options { mtu, workers, port, binder: Arc::new(OsBind), batches_per_worker: crate::jobs::BATCHES_PER_WORKER }
    }
}

pub struct Interface {
    pub name: String,
    pub device: Device,
    /// Makes the workers' sockets: the host's network, or one in memory.
    binder: Arc<dyn Bind>,
    /// WireGuard peers only (IPsec peers are in `ipsec`): code that gets
    /// a peer from here may take its `crypto()`.
    peers: RwLock<HashMap<PublicKey, Arc<PeerState>>>,
    next_order: AtomicU64,
    /// Cryptokey routing snapshot: workers load it without a lock.
    routes: ArcSwap<Routes>,
    /// Serialises route changes so two writers never lose each other's edits.
    route_writer: Mutex<()>,
    /// Sites by name; their prefixes are in `routes`.
    sites: RwLock<BTreeMap<String, Arc<Site>>>,
    pub clock: Clock,
    mtu: AtomicU32,
    sockets: ArcSwap<SocketSet>,
    /// Sockets for ESP in UDP and IKE on port 4500, once an IPsec peer
    /// needs them (`bind_esp`).
    esp_sockets: ArcSwap<SocketSet>,
    /// The raw ESP (IP protocol 50) sockets, one reader per address
    /// family, once a child SA without UDP encapsulation needs them
    /// (`bind_raw_esp`).
    raw_esp: ArcSwap<SocketSet>,
    /// IPsec peers, their child SAs by SPI, and requests to IKE.
    pub ipsec: IpsecTable,
    fwmark: AtomicU32,
    mss_clamp: AtomicBool,
    pub counters: Counters,
    shutdown: AtomicBool,
    /// A worker panicked: the interface stopped for a fault, not on request.
    failed: AtomicBool,
    /// One doorbell per worker, in index order: a ring wakes it from poll().
    wakers: Mutex<Vec<Arc<Doorbell>>>,
    pub workers: usize,
    pub worker_stats: Vec<WorkerStats>,
    /// Crypto work and batch buffers shared by the workers.
    pub jobs: Jobs,
}

impl Interface {
    /// An interface on the host's network: `workers` SO_REUSEPORT UDP
    /// sockets on `port` (0: any free port).
    pub fn new(
        name: String,
        private_key: Option<StaticSecret>,
        mtu: u32,
        workers: usize,
        port: u16,
    ) -> std::io::Result<Interface> {
        Interface::with_options(name, private_key, Options::new(mtu, workers, port))
    }

    /// An interface built as `options` say (an in-memory network in tests).
    pub fn with_options(
        name: String,
        private_key: Option<StaticSecret>,
        options: Options,
    ) -> std::io::Result<Interface> {
        let Options { mtu, workers, port, binder, batches_per_worker } = options;
        let (sockets, port) = binder.bind(workers, port, 0)?;
        Ok(Interface {
            name,
            device: Device::new(private_key),
            binder,
            peers: RwLock::default(),
            next_order: AtomicU64::new(0),
            routes: ArcSwap::from_pointee(AllowedIps::default()),
            route_writer: Mutex::new(()),
            sites: RwLock::default(),
            clock: Clock::default(),
            mtu: AtomicU32::new(mtu),
            sockets: ArcSwap::from_pointee(SocketSet { sockets, port }),
            esp_sockets: ArcSwap::from_pointee(SocketSet { sockets: Vec::new(), port: 0 }),
            raw_esp: ArcSwap::from_pointee(SocketSet { sockets: Vec::new(), port: 0 }),
            ipsec: IpsecTable::default(),
            fwmark: AtomicU32::new(0),
            mss_clamp: AtomicBool::new(true),
            counters: Counters::default(),
            shutdown: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            wakers: Mutex::new(Vec::new()),
            workers,
            worker_stats: (0..workers).map(|_| WorkerStats::default()).collect(),
            jobs: Jobs::with_pools(workers, batches_per_worker),
        })
    }

    /// The MSS limits to clamp SYNs to, when clamping is on.
    pub fn mss_limits(&self) -> Option<(u16, u16)> {
        self.mss_clamp.load(Ordering::Relaxed).then(|| crate::mss::max_mss(self.mtu()))
    }

    pub fn set_mss_clamp(&self, on: bool) {
        self.mss_clamp.store(on, Ordering::Relaxed);
    }

    pub fn mtu(&self) -> u32 {
        self.mtu.load(Ordering::Relaxed)
    }

    pub fn set_mtu(&self, mtu: u32) {
        self.mtu.store(mtu, Ordering::Relaxed);
    }

    pub fn routes(&self) -> arc_swap::Guard<Arc<Routes>> {
        self.routes.load()
    }

    /// The routing table as an owned snapshot, for the control plane to
    /// keep and compare later.
    pub fn routes_snapshot(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Applies a change to the routing table as one atomic swap.
    pub fn update_routes(&self, change: impl FnOnce(&mut Routes)) {
        let _w = self.route_writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Routes::clone(&self.routes.load());
        change(&mut next);
        self.routes.store(Arc::new(next));
    }

    pub fn sockets(&self) -> arc_swap::Guard<Arc<SocketSet>> {
        self.sockets.load()
    }

    /// The sockets that carry a session's datagrams. Empty for ESP until
    /// `bind_esp`.
    pub fn sockets_for(&self, carrier: Carrier) -> arc_swap::Guard<Arc<SocketSet>> {
        match carrier {
            Carrier::WireGuard => self.sockets.load(),
            Carrier::EspInUdp => self.esp_sockets.load(),
            Carrier::RawEsp => self.raw_esp.load(),
        }
    }

    /// Opens the raw ESP sockets (needs CAP_NET_RAW: done at start-up,
    /// before privileges are dropped). Opening again does nothing.
    pub fn bind_raw_esp(&self) -> std::io::Result<()> {
        if !self.raw_esp.load().sockets.is_empty() {
            return Ok(());
        }
        let sockets = self.binder.bind_raw_esp(self.fwmark())?;
        self.raw_esp.store(Arc::new(SocketSet { sockets, port: 0 }));
        self.wake_all();
        Ok(())
    }

    /// Binds the workers' sockets for ESP in UDP and IKE behind the
    /// non-ESP marker (port 4500 by RFC 3948; 0 picks a free one, for
    /// tests). Returns the port; binding again while bound does nothing.
    pub fn bind_esp(&self, port: u16) -> std::io::Result<u16> {
        let current = self.esp_sockets.load();
        if !current.sockets.is_empty() {
            return Ok(current.port);
        }
        let (sockets, port) = self.binder.bind(self.workers, port, self.fwmark())?;
        self.esp_sockets.store(Arc::new(SocketSet { sockets, port }));
        self.wake_all();
        Ok(port)
    }

    pub fn listen_port(&self) -> u16 {
        self.sockets.load().port
    }

    pub fn fwmark(&self) -> u32 {
        self.fwmark.load(Ordering::Relaxed)
    }

    /// Rebinds every worker's socket to `port` (0: any free port).
    pub fn rebind(&self, port: u16) -> std::io::Result<u16> {
        let (sockets, port) = self.binder.bind(self.workers, port, self.fwmark())?;
        self.sockets.store(Arc::new(SocketSet { sockets, port }));
        self.wake_all();
        Ok(port)
    }

    pub fn set_fwmark(&self, mark: u32) -> std::io::Result<()> {
        let (wg, esp, raw) = (self.sockets.load(), self.esp_sockets.load(), self.raw_esp.load());
        for s in wg.sockets.iter().chain(&esp.sockets).chain(&raw.sockets) {
            s.set_fwmark(mark)?;
        }
        self.fwmark.store(mark, Ordering::Relaxed);
        Ok(())
    }

    pub fn peer(&self, key: &PublicKey) -> Option<Arc<PeerState>> {
        self.peers.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// Drops what `peer` has held for HELD_PATIENCE without a session,
    /// counted as `held_without_session`; returns how many went. Called by
    /// the protocols' timers (WireGuard's timer task, the IKE thread).
    pub fn expire_held(&self, peer: &PeerState) -> usize {
        let dropped = peer.expire_staged(self.clock.now(), crate::peer::HELD_PATIENCE);
        self.counters.count_many(crate::counters::Drop::StagedExpired, dropped);
        dropped
    }

    /// Peers in the order they were added.
    pub fn peers(&self) -> Vec<Arc<PeerState>> {
        let mut v: Vec<_> = self.peers.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        v.sort_by_key(|p| p.order);
        v
    }

    /// Takes every peer's byte rates (`PeerState::rates`) over the `secs`
    /// since the last call: WireGuard's and IPsec's peers alike.
    pub fn sample_rates(&self, secs: f64) {
        for peer in self.peers().iter().chain(&self.ipsec.peers()) {
            peer.sample_rate(secs);
        }
    }

    /// Adds a peer or returns the existing one.
    pub fn add_peer(&self, key: PublicKey, name: String) -> Result<Arc<PeerState>, causeway_wireguard::Error> {
        if let Some(p) = self.peer(&key) {
            return Ok(p);
        }
        let crypto = self.device.add_peer(key, None, 0)?;
        let state = Arc::new(PeerState::new(crypto, name, self.next_order.fetch_add(1, Ordering::Relaxed)));
        self.peers.write().unwrap_or_else(|e| e.into_inner()).insert(key, state.clone());
        Ok(state)
    }

    /// Adds an IPsec peer named `name` or returns the existing one. Its
    /// SAs come from the control plane's IKE (`IpsecTable::install_child`).
    pub fn add_ipsec_peer(&self, name: &str) -> Arc<PeerState> {
        if let Some(p) = self.ipsec.peer(name) {
            return p;
        }
        let link = Link::Ipsec(EspLink::default());
        let state =
            Arc::new(PeerState::with_link(link, name.to_string(), self.next_order.fetch_add(1, Ordering::Relaxed)));
        self.ipsec.insert(name.to_string(), state.clone());
        state
    }

    pub fn remove_ipsec_peer(&self, name: &str) -> Option<Arc<PeerState>> {
        let p = self.ipsec.remove(name)?;
        self.update_routes(|r| r.retain(|_, owner| !owner.is_peer(&p)));
        self.leave_sites(&p);
        p.clear_staged();
        Some(p)
    }

    /// Removes a peer: its prefixes, its place in a site, its protocol state.
    pub fn remove_peer(&self, key: &PublicKey) -> Option<Arc<PeerState>> {
        self.remove_peers(std::slice::from_ref(key)).pop()
    }

    /// Removes the peers of `keys` that exist, as `remove_peer` does, with
    /// one copy of the routing table for all of them: a copy per peer made
    /// removing n peers of n take n² steps (a reload or `wg set …
    /// replace_peers` on a large configuration).
    pub fn remove_peers(&self, keys: &[PublicKey]) -> Vec<Arc<PeerState>> {
        let gone: Vec<Arc<PeerState>> = {
            let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
            keys.iter().filter_map(|k| peers.remove(k)).collect()
        };
        if gone.is_empty() {
            return gone;
        }
        let owners: HashSet<*const PeerState> = gone.iter().map(Arc::as_ptr).collect();
        self.update_routes(|r| r.retain(|_, owner| !owner.is_peer_in(&owners)));
        for p in &gone {
            // Before the protocol state goes: workers must not pick it for
            // a site's flows once it cannot send.
            self.leave_sites(p);
            self.device.remove_peer(p.public_key());
            p.clear_staged();
        }
        gone
    }

    pub fn remove_all_peers(&self) {
        let keys: Vec<PublicKey> = self.peers().iter().map(|p| *p.public_key()).collect();
        self.remove_peers(&keys);
    }

    pub fn set_preshared_key(&self, peer: &PeerState, psk: Option<PresharedKey>) {
        peer.crypto().set_preshared_key(psk);
    }

    /// Every peer's prefixes, in one pass over the routing table (keyed by
    /// the peer's address; listing many peers this way is linear, where
    /// `allowed_ips_of` per peer would scan the table once each). A
    /// site's prefixes are the site's, not its gateways'.
    pub fn allowed_ips_by_peer(&self) -> HashMap<*const PeerState, Vec<IpNet>> {
        let mut by_peer: HashMap<*const PeerState, Vec<IpNet>> = HashMap::new();
        for (net, owner) in self.routes.load().iter() {
            if let Route::Peer(p) = owner {
                by_peer.entry(Arc::as_ptr(p)).or_default().push(net);
            }
        }
        by_peer
    }

    /// The prefixes routed to `peer` itself.
    pub fn allowed_ips_of(&self, peer: &Arc<PeerState>) -> Vec<IpNet> {
        self.routes.load().iter().filter(|(_, owner)| owner.is_peer(peer)).map(|(n, _)| n).collect()
    }

    /// The site named `name`.
    pub fn site(&self, name: &str) -> Option<Arc<Site>> {
        self.sites.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Every site, by name.
    pub fn sites(&self) -> Vec<Arc<Site>> {
        self.sites.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// The site named `name`, made now (with no prefixes and no members)
    /// if there was none.
    pub fn add_site(&self, name: &str) -> Arc<Site> {
        let mut sites = self.sites.write().unwrap_or_else(|e| e.into_inner());
        sites.entry(name.to_string()).or_insert_with(|| Arc::new(Site::new(name.to_string()))).clone()
    }

    /// Removes a site and its prefixes; its gateways stay peers.
    pub fn remove_site(&self, name: &str) -> Option<Arc<Site>> {
        let site = self.sites.write().unwrap_or_else(|e| e.into_inner()).remove(name)?;
        self.update_routes(|r| r.retain(|_, owner| !owner.is_site(&site)));
        Some(site)
    }

    /// The prefixes routed to `site`.
    pub fn prefixes_of_site(&self, site: &Site) -> Vec<IpNet> {
        self.routes.load().iter().filter(|(_, owner)| owner.is_site(site)).map(|(n, _)| n).collect()
    }

    /// Makes `site`'s prefixes exactly `nets`, as one swap; a prefix that
    /// another peer or site held moves to this site.
    pub fn set_site_prefixes(&self, site: &Arc<Site>, nets: &[IpNet]) {
        self.update_routes(|r| {
            r.retain(|_, owner| !owner.is_site(site));
            for n in nets {
                r.insert(*n, Route::Site(site.clone()));
            }
        });
    }

    /// Makes each of these peers' prefixes exactly those given with it,
    /// in one swap (a swap per peer made a large reload quadratic); a
    /// prefix another peer held moves to the one given it.
    pub fn set_peer_prefixes(&self, prefixes: &[(Arc<PeerState>, HashSet<IpNet>)]) {
        if prefixes.is_empty() {
            return;
        }
        let owners: HashSet<*const PeerState> = prefixes.iter().map(|(p, _)| Arc::as_ptr(p)).collect();
        self.update_routes(|r| {
            r.retain(|_, owner| !owner.is_peer_in(&owners));
            for (peer, nets) in prefixes {
                for n in nets {
                    r.insert(*n, Route::Peer(peer.clone()));
                }
            }
        });
    }

    /// The site `peer` is a gateway of, if any.
    pub fn site_of(&self, peer: &PeerState) -> Option<Arc<Site>> {
        self.sites().into_iter().find(|s| s.table().has_member(peer))
    }

    /// Takes `peer` out of every site it serves.
    fn leave_sites(&self, peer: &PeerState) {
        for s in self.sites() {
            s.remove_member(peer);
        }
    }

    pub fn peer_for_crypto(&self, crypto: &causeway_wireguard::Peer) -> Option<Arc<PeerState>> {
        self.peer(crypto.public_key())
    }

    /// Adds the next worker's doorbell (workers register in index order).
    pub fn register_waker(&self, bell: Arc<Doorbell>) {
        self.ipsec.early.register_bell(bell.clone());
        self.wakers.lock().unwrap_or_else(|e| e.into_inner()).push(bell);
    }

    /// Wakes worker `i` from poll().
    pub fn wake(&self, i: usize) {
        if let Some(bell) = self.wakers.lock().unwrap_or_else(|e| e.into_inner()).get(i) {
            bell.ring();
        }
    }

    fn wake_all(&self) {
        for bell in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            bell.ring();
        }
    }

    /// A datagram refused before any batch: counted under its reason and
    /// traced, the one place every path that refuses one goes through.
    pub fn refuse(&self, from: std::net::SocketAddr, reason: crate::counters::Drop) {
        tracing::trace!(%from, reason = reason.name(), "dropped datagram");
        self.counters.count(reason);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Asks every worker to stop; idempotent. Workers call it too when
    /// their TUN queue goes away, so it does nothing that needs a
    /// privilege: the data-plane threads hold none.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        self.wake_all();
    }

    /// Stops the interface for a fault (a worker panicked), which
    /// `has_failed` then reports, so the daemon exits with an error and
    /// a service manager restarts it.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.shutdown();
    }

    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemNet;
    use crate::route::Route;

    // Removing several peers at once (one copy of the routing table) takes
    // exactly their prefixes and their places in sites, as one by one did.
    #[test]
    fn removing_peers_takes_their_prefixes_and_site_places_only() {
        let net = MemNet::new();
        let binder = net.host("198.18.0.1".parse().unwrap(), 1);
        let options = Options { mtu: 1420, workers: 1, port: 0, binder, batches_per_worker: 1 };
        let iface = Interface::with_options("mem1".into(), None, options).unwrap();
        let keys: Vec<PublicKey> = (0..4).map(|_| StaticSecret::random(&mut rand_core::OsRng).public_key()).collect();
        let peers: Vec<Arc<PeerState>> =
            keys.iter().enumerate().map(|(i, k)| iface.add_peer(*k, format!("p{i}")).unwrap()).collect();
        iface.update_routes(|r| {
            for (i, p) in peers.iter().enumerate() {
                r.insert(format!("10.{i}.0.0/16").parse().unwrap(), Route::Peer(p.clone()));
                r.insert(format!("fd00:{i}::/32").parse().unwrap(), Route::Peer(p.clone()));
            }
        });
        let site = iface.add_site("east");
        site.set_members(&[peers[1].clone(), peers[2].clone()], causeway_wireguard::Time::ZERO);

        let stranger = StaticSecret::random(&mut rand_core::OsRng).public_key();
        let gone = iface.remove_peers(&[keys[0], stranger, keys[2]]);
        assert_eq!(gone.iter().map(|p| p.name()).collect::<Vec<_>>(), ["p0", "p2"]);
        assert!(iface.peer(&keys[0]).is_none() && iface.peer(&keys[2]).is_none());
        let mut left: Vec<String> = iface.routes().iter().map(|(n, _)| n.to_string()).collect();
        left.sort();
        assert_eq!(left, ["10.1.0.0/16", "10.3.0.0/16", "fd00:1::/32", "fd00:3::/32"]);
        assert!(site.table().has_member(&peers[1]) && !site.table().has_member(&peers[2]));

        iface.remove_all_peers();
        assert!(iface.peers().is_empty() && iface.routes().iter().next().is_none());
    }
}
