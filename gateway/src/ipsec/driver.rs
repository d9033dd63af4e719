//! IKE on the control plane: one thread drives the sans-IO IKE core
//! (`causeway-ikev2`) for every IPsec peer of an interface, the way an IKE
//! daemon feeds a kernel's SA table. Its loop:
//!
//! 1. wait for a datagram on UDP port 500, the data plane's doorbell (IKE
//!    that arrived on port 4500, or packets that wait for an SA), or the
//!    core's next timer;
//! 2. hand what arrived to the core (`Endpoint::handle`), run its timers;
//! 3. start IKE for peers that should have an SA and have none (at start,
//!    after a failure, on traffic), failing over among their endpoints,
//!    and ask for a child SA on an IKE SA left without one (`start.rs`);
//! 4. publish the inbound half of each new child SA in the data plane,
//!    then send what the core wants sent: port 500 from this thread's
//!    socket, port 4500 from the data plane's, behind the non-ESP marker
//!    (`flush.rs`);
//! 5. apply the core's events: child SAs installed in and removed from
//!    the data plane (one a rekey replaced after a grace, `retired.rs`),
//!    one log line per change or failure.
//!
//! Nothing here touches a packet of the tunnel; the workers never wait on
//! this thread.

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use causeway_config::{Encap, IpsecPeer};
use causeway_dataplane::child_sa::ChildSa;
use causeway_dataplane::interface::Interface;
use causeway_dataplane::io::{Bind, RecvMeta, Socket};
use causeway_dataplane::ipsec::{flush_staged, follow_ike, Request, SendOn};
use causeway_dataplane::session::Carrier;
use causeway_ikev2::{describe_ts, ChildSend, DownReason, Drops, Endpoint, Event, PeerId, PeerStatus, RekeyScheduled};

use super::lookup::{self, Lookup};
use super::retired::Retired;
use super::{convert, keylog};

mod flush;
mod start;
use flush::flush;
use start::{nat_keepalives, start_due, ChildRetry};

/// How long after a failed or lost IKE SA an initiating peer tries again.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// How long the same IKE failure of a peer is counted instead of logged.
const FAILURE_LOG_QUIET: Duration = Duration::from_secs(10);
/// The loop wakes at least this often to start IKE where it is due.
const TICK: Duration = Duration::from_millis(500);
/// Port-500 receives (each one datagram, or a GRO batch) per round of the
/// IKE thread.
const RECEIVES_PER_ROUND: usize = 64;
/// Largest IKE message read (IKE messages here are far smaller; RFC 7296
/// asks for at least 1280 and allows up to 64 KiB).
const MAX_MESSAGE: usize = 65_535;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Tells the data plane where the IPsec peers' endpoints resolved to, so
/// that IKE messages from there are not held to the share of strangers in
/// its request queue (`IpsecTable::set_ike_sources`; the data plane adds
/// each peer's address as it last saw it).
fn publish_sources(iface: &Interface, plans: &HashMap<String, Plan>) {
    iface.ipsec.set_ike_sources(plans.values().flat_map(|p| p.addrs.iter().copied()));
}

/// What the driver keeps per configured peer beside the core's state.
struct Plan {
    config: IpsecPeer,
    /// Index in `config.endpoints` of the address in use.
    index: usize,
    /// When to start IKE next if the peer still has no IKE SA.
    next_try: Option<Instant>,
    /// Since when attempts to the current endpoint have failed.
    failing_since: Option<Instant>,
    /// Traffic asked for an SA (for peers that do not initiate by themselves).
    wanted: bool,
    /// When the last NAT keepalive left.
    keepalive_sent: Option<Instant>,
    /// Whether raw ESP carries this peer's SAs (`Ike::raw_esp_carries`).
    raw: bool,
    /// What the endpoints resolved to last: the addresses the core takes
    /// IKE_SA_INIT from for this peer.
    addrs: Vec<IpAddr>,
    /// A lookup of the endpoints' names, run off the IKE thread.
    lookup: Lookup,
    /// How often a child SA was asked for since one was last installed.
    child_retry: ChildRetry,
    /// The last IKE failure logged for the peer, when, and how many times
    /// it came again since without being logged.
    failure_log: Option<(String, Instant, u32)>,
}

struct Shared {
    iface: Arc<Interface>,
    core: Mutex<Endpoint>,
    /// UDP port 500.
    socket: Arc<dyn Socket>,
    plans: Mutex<HashMap<String, Plan>>,
    bell: UnixStream,
    stop: AtomicBool,
    /// Where child SA keys are written for Wireshark, when the operator
    /// asked (`keylog.rs`).
    keylog: Option<std::path::PathBuf>,
    /// Child SAs IKE deleted after a rekey replaced them, still opening
    /// until their time.
    retired: Retired<Arc<ChildSa>>,
    /// The core's `reserved_spis_in_version` last handed to the data plane
    /// (`flush::hand_over_reserved_spis`); None before the first.
    reserved_spis_version: Mutex<Option<u64>>,
}

/// The IKE thread of an interface, and the handle the rest of the control
/// plane changes its peers through.
pub struct Ike {
    shared: Arc<Shared>,
    ring: Arc<Mutex<UnixStream>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Ike {
    /// Binds UDP `port` (500; 0 picks one, for tests) through `bind`, and
    /// starts the thread. The data plane's port 4500 sockets must be bound
    /// already (`Interface::bind_esp`).
    pub fn start(iface: Arc<Interface>, bind: &dyn Bind, port: u16) -> std::io::Result<Ike> {
        let (sockets, _) = bind.bind(1, port, iface.fwmark())?;
        let socket = sockets.into_iter().next().ok_or_else(|| std::io::Error::other("no IKE socket bound"))?;
        let (bell, ring) = UnixStream::pair()?;
        bell.set_nonblocking(true)?;
        ring.set_nonblocking(true)?;
        let ring = Arc::new(Mutex::new(ring));
        let r = ring.clone();
        iface.ipsec.set_doorbell(Box::new(move || {
            let _ = std::io::Write::write(&mut *lock(&r), &[1]);
        }));
        let shared = Arc::new(Shared {
            iface,
            core: Mutex::new(Endpoint::new(Box::new(rand_core::OsRng))),
            socket,
            plans: Mutex::new(HashMap::new()),
            bell,
            stop: AtomicBool::new(false),
            keylog: keylog::requested(),
            retired: Retired::default(),
            reserved_spis_version: Mutex::new(None),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("cw-ike".into()).spawn(move || run(&s))?;
        Ok(Ike { shared, ring, thread: Mutex::new(Some(thread)) })
    }

    /// The local port of the IKE socket.
    pub fn port(&self) -> u16 {
        self.shared.socket.local_port()
    }

    fn ring(&self) {
        let _ = std::io::Write::write(&mut *lock(&self.ring), &[1]);
    }

    /// Adds a peer, or changes one. An unchanged peer keeps its SAs, and
    /// so does one whose change the running SAs can take (lifetimes,
    /// liveness, endpoints, routes). A change to what was negotiated
    /// (identities, key, proposals, traffic selectors, encapsulation)
    /// deletes the peer's SAs, which IKE then negotiates anew: without
    /// that, rekeys would carry the old selectors and key on for as long
    /// as the SA lives. True when the SAs were deleted.
    /// `resolved` is every endpoint's addresses when they were looked up
    /// ahead (`endpoint_names`); None looks them up now.
    pub fn set_peer(&self, config: &IpsecPeer, resolved: Option<Vec<IpAddr>>) -> bool {
        let name = config.name.clone();
        let renegotiate = match lock(&self.shared.plans).get(&name) {
            Some(p) if p.config == *config => return false,
            Some(p) => convert::needs_new_sas(&p.config, config),
            None => false,
        };
        // Names resolve before the locks are taken: a slow lookup must not
        // stall the IKE thread. (set_peer runs on the control plane, one
        // change at a time, so the check above still holds.)
        let addrs = resolved.unwrap_or_else(|| lookup::resolve_all(config));
        if addrs.is_empty() && !config.endpoints.is_empty() {
            tracing::warn!(
                peer = %name,
                "no endpoint resolves: IKE from this peer is refused until one does (looked up again on each attempt to connect, and at reloads)"
            );
        }
        let raw = config.encap == Encap::Auto && self.raw_esp_carries(&name, &addrs);
        // The data plane's peer first: once the core has the peer, the IKE
        // thread may complete an exchange at once (the peer's IKE_SA_INIT
        // may be waiting), and a child SA for a peer the data plane does
        // not have yet could not be installed.
        self.shared.iface.add_ipsec_peer(&name);
        {
            let mut plans = lock(&self.shared.plans);
            let now = Instant::now();
            let mut core = lock(&self.shared.core);
            if renegotiate {
                // Tells the peer (its Delete) and takes the child SAs out of
                // the data plane (ChildDown, applied by the IKE thread).
                core.remove_peer(&PeerId(name.clone()), now);
            }
            let addrs_kept = addrs.clone();
            core.set_peer(PeerId(name.clone()), convert::peer_config(config, addrs, raw), now);
            drop(core);
            let next_try = config.initiate.then_some(now);
            plans.insert(
                name.clone(),
                Plan {
                    config: config.clone(),
                    index: 0,
                    next_try,
                    failing_since: None,
                    wanted: false,
                    keepalive_sent: None,
                    raw,
                    addrs: addrs_kept,
                    lookup: Lookup::Idle,
                    child_retry: ChildRetry::default(),
                    failure_log: None,
                },
            );
            publish_sources(&self.shared.iface, &plans);
        }
        self.ring();
        renegotiate
    }

    /// Whether raw ESP can carry a peer's child SAs (`raw_esp_reaches`).
    /// Where it cannot, the peer's SAs are negotiated for UDP 4500 as with
    /// encap = "always"; negotiated for raw ESP they could not be
    /// installed, and the tunnel would stay up in IKE with nothing to
    /// carry its packets.
    fn raw_esp_carries(&self, name: &str, addrs: &[IpAddr]) -> bool {
        match raw_esp_reaches(&self.shared.iface, addrs) {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(peer = name, "{why}: ESP goes in UDP 4500 for this peer, as with encap = \"always\"");
                false
            }
        }
    }

    /// Removes a peer: its IKE SA is deleted (the peer is told) and its
    /// child SAs leave the data plane.
    pub fn remove_peer(&self, name: &str) {
        {
            let mut plans = lock(&self.shared.plans);
            plans.remove(name);
            publish_sources(&self.shared.iface, &plans);
        }
        lock(&self.shared.core).remove_peer(&PeerId(name.to_string()), Instant::now());
        if let Some(peer) = self.shared.iface.remove_ipsec_peer(name) {
            tracing::info!(peer = %peer.name(), "IPsec peer removed");
        }
        self.ring();
    }

    /// Rekeys the peer's child SAs, and with `ike` its IKE SA, now
    /// (`Endpoint::rekey_peer_now`): an operator's request.
    pub fn rekey_now(&self, name: &str, ike: bool) -> RekeyScheduled {
        let done = lock(&self.shared.core).rekey_peer_now(&PeerId(name.to_string()), ike, Instant::now());
        self.ring();
        done
    }

    /// Deletes the peer's IKE SAs and child SAs, telling the peer, to set
    /// them up from the start (`Endpoint::reset_peer`): at once for a peer
    /// this gateway initiates to (the IkeDown of a reset is not waited out
    /// as a loss is), else when the peer or traffic starts it. Returns how
    /// many IKE SAs went, or None while an IKE SA rekey is in flight
    /// (`Endpoint::reset_peer`), when nothing is done.
    pub fn reset(&self, name: &str) -> Option<usize> {
        let gone = lock(&self.shared.core).reset_peer(&PeerId(name.to_string()), Instant::now())?;
        if let Some(p) = lock(&self.shared.plans).get_mut(name) {
            p.next_try = p.config.initiate.then(Instant::now);
            p.failing_since = None;
        }
        self.ring();
        Some(gone)
    }

    /// Names of the configured peers.
    pub fn peer_names(&self) -> Vec<String> {
        let mut v: Vec<_> = lock(&self.shared.plans).keys().cloned().collect();
        v.sort();
        v
    }

    /// The peer's configuration as last set.
    pub fn config(&self, name: &str) -> Option<IpsecPeer> {
        lock(&self.shared.plans).get(name).map(|p| p.config.clone())
    }

    pub fn status(&self, name: &str) -> Option<PeerStatus> {
        lock(&self.shared.core).status(&PeerId(name.to_string()))
    }

    /// IKE messages the core dropped since IKE started, by reason.
    pub fn drops(&self) -> Drops {
        lock(&self.shared.core).drops()
    }

    /// Marks IKE's socket (port 500) as `wg set fwmark` marks the data
    /// plane's: policy routing that keeps marked packets out of the tunnel
    /// must see IKE's too.
    pub fn set_fwmark(&self, mark: u32) -> std::io::Result<()> {
        self.shared.socket.set_fwmark(mark)
    }

    /// Stops the thread after deleting every IKE SA (each peer is told).
    pub fn stop(&self) {
        let names = self.peer_names();
        {
            let mut core = lock(&self.shared.core);
            for n in names {
                core.remove_peer(&PeerId(n), Instant::now());
            }
        }
        // The deletes leave before the thread ends: it flushes once more
        // after it sees this (Release: the deletes queued above are then
        // visible to it).
        self.shared.stop.store(true, Ordering::Release);
        self.ring();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Ike {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(s: &Arc<Shared>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut ring = [0u8; 64];
    loop {
        let now = Instant::now();
        let due = lock(&s.core).poll_timeout().map_or(TICK, |t| t.saturating_duration_since(now)).min(TICK);
        let fds = [s.socket.fd(), s.bell.as_raw_fd()];
        let mut pfds = fds.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        // SAFETY: `pfds` is a valid array of two pollfd structs that outlives the call.
        unsafe { libc::poll(pfds.as_mut_ptr(), 2, due.as_millis().clamp(1, 1000) as i32) };
        while matches!((&s.bell).read(&mut ring), Ok(n) if n > 0) {}
        let now = Instant::now();
        let requests = s.iface.ipsec.take_requests();
        // Moves first: what IKE does in this pass (a rekey's ChildUp, which
        // sets the data plane's endpoint) then carries the peer's new
        // address, not the one it left.
        for r in &requests {
            if let Request::Moved { peer, to } = r {
                if lock(&s.core).peer_moved(&PeerId(peer.clone()), *to, now) {
                    tracing::info!(peer = %peer, %to, "IKE follows the peer to where its ESP came from");
                }
            }
        }
        receive(s, &mut buf, now);
        for request in requests {
            match request {
                Request::Ike { local, remote, data } => {
                    lock(&s.core).handle(now, local, remote, &data);
                    flush(s);
                }
                Request::Negotiate(name) => {
                    if let Some(p) = lock(&s.plans).get_mut(&name) {
                        p.wanted = true;
                    }
                }
                Request::Moved { .. } => {}
                Request::Rekey { spi_in } => {
                    if lock(&s.core).rekey_child_now(spi_in, now) {
                        tracing::info!(
                            spi = format_args!("{spi_in:08x}"),
                            "child SA low on sequence numbers: rekeying it"
                        );
                    }
                }
            }
        }
        lock(&s.core).handle_timeout(now);
        for (peer, sa) in s.retired.take_due(now) {
            if s.iface.ipsec.remove_retired(&sa).is_some() {
                removed_child(s, &peer, sa.spi_in(), sa.spi_out());
            }
        }
        if !s.stop.load(Ordering::Relaxed) {
            start_due(s, now);
            nat_keepalives(s, now);
        }
        flush(s);
        if s.stop.load(Ordering::Acquire) {
            // `stop` may have queued its deletes after the flush above.
            flush(s);
            return;
        }
    }
}

/// Whether the interface's raw ESP socket opens (it needs CAP_NET_RAW,
/// which a reload after privileges were dropped lacks) and has the family
/// of each of `addrs`; Err says why not.
fn raw_esp_reaches(iface: &Interface, addrs: &[IpAddr]) -> Result<(), String> {
    if let Err(e) = iface.bind_raw_esp() {
        return Err(format!("cannot open the raw ESP socket (needs CAP_NET_RAW): {e}"));
    }
    let raw = iface.sockets_for(Carrier::RawEsp);
    let reaches = |a: &IpAddr| raw.sockets.first().is_some_and(|r| r.reaches(&SocketAddr::new(*a, 0)));
    match addrs.iter().find(|a| !reaches(a)) {
        Some(a) => Err(format!("no raw ESP socket for {} on this host", if a.is_ipv4() { "IPv4" } else { "IPv6" })),
        None => Ok(()),
    }
}

/// Reads what waits on port 500 and hands it to the core.
fn receive(s: &Shared, buf: &mut [u8], now: Instant) {
    // Bounded, so that a flood of IKE_SA_INIT cannot keep the thread from
    // its timers and sends; the rest waits for the next round.
    for _ in 0..RECEIVES_PER_ROUND {
        let mut meta = [RecvMeta::default()];
        let n = {
            let mut slices = [std::io::IoSliceMut::new(buf)];
            match s.socket.recv(&mut slices, &mut meta) {
                Ok(n) => n,
                Err(_) => return,
            }
        };
        if n == 0 {
            return;
        }
        let m = meta[0];
        let local = m.dst_ip.unwrap_or_else(|| causeway_dataplane::source::unspecified_for(m.addr));
        let local = SocketAddr::new(local, s.socket.local_port());
        let stride = m.stride.max(1);
        for chunk in buf[..m.len].chunks(stride) {
            lock(&s.core).handle(now, local, m.addr, chunk);
            flush(s);
        }
    }
}

fn apply(s: &Shared, event: Event, prepared: Option<Arc<ChildSa>>) {
    match event {
        Event::IkeUp { peer, suite, nat, remote } => {
            tracing::info!(peer = %peer, %remote, suite = %convert::suite_name(&suite), nat, "IKE SA established");
            if let Some(p) = lock(&s.plans).get_mut(&peer.0) {
                p.failing_since = None;
            }
        }
        Event::IkeDown { peer, reason: DownReason::Reset } => {
            // `Ike::reset` set the next try; the operator asked for this.
            tracing::info!(peer = %peer, "IKE SA deleted on request (reset), the peer told");
        }
        Event::IkeDown { peer, reason } => {
            tracing::warn!(peer = %peer, reason = ?reason, "IKE SA down");
            if let Some(p) = lock(&s.plans).get_mut(&peer.0) {
                p.next_try = p.config.initiate.then(|| Instant::now() + RETRY_AFTER);
            }
        }
        Event::Failed { peer, reason } => {
            // The same failure again within FAILURE_LOG_QUIET is counted,
            // not logged: a stranger can repeat a failing request (from a
            // peer's address, a proposal we refuse) as fast as it likes.
            let text = reason.to_string();
            let mut plans = lock(&s.plans);
            let Some(p) = plans.get_mut(&peer.0) else { return };
            let now = Instant::now();
            match &mut p.failure_log {
                Some((last, at, quiet)) if *last == text && now.duration_since(*at) < FAILURE_LOG_QUIET => *quiet += 1,
                entry => {
                    let before = entry.as_ref().map_or(0, |(_, _, quiet)| *quiet);
                    if before > 0 {
                        tracing::warn!(peer = %peer, "IKE failed: {text} (the failure before it came {before} more times, not logged)");
                    } else {
                        tracing::warn!(peer = %peer, "IKE failed: {text}");
                    }
                    *entry = Some((text, now, 0));
                }
            }
        }
        Event::ChildUp { peer, keys, remote, local, encap, replaces, send, local_ts, remote_ts, .. } => {
            // Checked, converted and published inbound before the answer
            // left (`flush::prepare_child`); None if it was refused there.
            let Some(sa) = prepared else { return };
            let Some(ps) = s.iface.ipsec.peer(&peer.0) else { return };
            let (spi_in, spi_out, cipher) = (keys.spi_in, keys.spi_out, keys.cipher);
            if let Some(path) = &s.keylog {
                keylog::append(path, &keys, remote.ip(), local);
            }
            // As a failure's log line writes them.
            let selectors = format!("{} === {}", describe_ts(&local_ts), describe_ts(&remote_ts));
            // Raw ESP has no port; an IPv6 address keeps its scope.
            let mut endpoint = remote;
            if !encap {
                endpoint.set_port(0);
            }
            ps.set_endpoint(endpoint);
            if let Some(l) = local {
                ps.observe(ps.endpoint().map_or(remote, |e| e.addr), Some(l));
            }
            let send = match send {
                ChildSend::Now => SendOn::Now,
                ChildSend::OnceUsed => SendOn::OnceUsed,
                ChildSend::Never => SendOn::Never,
            };
            s.iface.ipsec.install_child(&ps, sa, send);
            if let Some(p) = lock(&s.plans).get_mut(&peer.0) {
                p.child_retry.installed();
            }
            tracing::info!(
                peer = %peer,
                spi_in = %format_args!("{spi_in:08x}"),
                spi_out = %format_args!("{spi_out:08x}"),
                %cipher,
                encap,
                rekey = replaces.is_some(),
                send = ?send,
                %selectors,
                "child SA installed"
            );
            flush_staged(&s.iface, &ps);
        }
        Event::PeerMoved { peer, remote } => {
            if let Some(ps) = s.iface.ipsec.peer(&peer.0) {
                follow_ike(&ps, remote);
            }
        }
        Event::ChildStopSending { peer, spi_in } => {
            if s.iface.ipsec.stop_sending(spi_in) {
                tracing::info!(
                    peer = %peer,
                    spi_in = %format_args!("{spi_in:08x}"),
                    "child SA receives only until its IKE SA's Delete is answered"
                );
            }
        }
        Event::ChildDown { peer, spi_in, spi_out } => match s.iface.ipsec.retire_child(spi_in) {
            Some(sa) => s.retired.add(Instant::now(), peer, sa),
            None => remove_child(s, &peer, spi_in, spi_out),
        },
    }
}

/// Removes a child SA from the data plane, and logs it.
fn remove_child(s: &Shared, peer: &PeerId, spi_in: u32, spi_out: u32) {
    if s.iface.ipsec.remove_child(spi_in).is_some() {
        removed_child(s, peer, spi_in, spi_out);
    }
}

/// After a child SA left the data plane.
fn removed_child(s: &Shared, peer: &PeerId, spi_in: u32, spi_out: u32) {
    // Without an SA left, site health counts the peer as failing from
    // now (`EspLink::lost_sa`).
    if let Some(link) = s.iface.ipsec.peer(&peer.0).as_deref().and_then(|p| p.ipsec()) {
        link.lost_sa(s.iface.clock.now());
    }
    tracing::info!(
        peer = %peer,
        spi_in = %format_args!("{spi_in:08x}"),
        spi_out = %format_args!("{spi_out:08x}"),
        "child SA removed"
    );
}
