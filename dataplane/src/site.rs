//! A site: prefixes served by several gateways, each a peer. Traffic to
//! the site goes to one of its gateways that are up, chosen by the flow's
//! hash through a bucket table (`buckets.rs`), so a flow stays on one
//! gateway, and in order, while that gateway stays up; traffic from any
//! of its gateways is accepted for the site's prefixes (`receive.rs`).
//!
//! Two halves, as for routes: the control plane keeps the members and
//! their health (`Health`, behind a mutex only it takes), and the
//! workers read an immutable `SiteTable` (members and buckets) swapped
//! in whole when the membership or a member's health changes. A packet
//! to a site thus costs one atomic load, a hash and an index; nothing is
//! allocated or locked per packet.
//!
//! Invariant: the table's members are the site's members, in the same
//! order, and every bucket indexes one of them (the table is rebuilt under
//! the members' lock on every change of either).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use causeway_wireguard::Time;

use crate::buckets::{assign, bucket_of, member_id};
use crate::health::{Change, Health, Observation};
use crate::peer::{Link, PeerState};

/// What the workers read: the members and where each bucket goes.
pub struct SiteTable {
    members: Vec<Arc<PeerState>>,
    up: Vec<bool>,
    /// Index into `members` per bucket; empty when there are no members.
    buckets: Vec<u16>,
}

impl SiteTable {
    fn empty() -> SiteTable {
        SiteTable { members: Vec::new(), up: Vec::new(), buckets: Vec::new() }
    }

    /// The gateway for a flow hash; `None` for a site without gateways.
    pub fn pick(&self, flow: u64) -> Option<&Arc<PeerState>> {
        let i = *self.buckets.get(bucket_of(flow))?;
        self.members.get(usize::from(i))
    }

    /// Whether `peer` is one of the site's gateways (up or not: a
    /// gateway that is down may still send, and is believed).
    pub fn has_member(&self, peer: &PeerState) -> bool {
        self.members.iter().any(|m| std::ptr::eq(Arc::as_ptr(m), peer))
    }

    pub fn members(&self) -> &[Arc<PeerState>] {
        &self.members
    }

    /// Whether member `i` (in `members` order) is up.
    pub fn is_up(&self, i: usize) -> bool {
        self.up.get(i).copied().unwrap_or(false)
    }

    /// Whether any gateway is up: the site's kernel routes exist only then.
    pub fn any_up(&self) -> bool {
        self.up.iter().any(|u| *u)
    }

    /// Buckets per member, in `members` order.
    pub fn shares(&self) -> Vec<usize> {
        let mut shares = vec![0; self.members.len()];
        for &i in &self.buckets {
            if let Some(s) = shares.get_mut(usize::from(i)) {
                *s += 1;
            }
        }
        shares
    }
}

struct Member {
    peer: Arc<PeerState>,
    id: u64,
    health: Health,
}

/// One member's state for status output.
#[derive(Clone)]
pub struct MemberStatus {
    pub peer: Arc<PeerState>,
    pub health: Health,
    /// Buckets it serves now, of `buckets::BUCKETS`.
    pub buckets: usize,
}

/// A member's health changed.
pub struct Transition {
    pub peer: Arc<PeerState>,
    pub change: Change,
    /// When it was last heard from, for the log.
    pub silent_for: Duration,
}

/// What the control plane should do for a member after a tick.
pub struct Due {
    pub peer: Arc<PeerState>,
    /// Down: probe it (a handshake initiation, rate-limited by the
    /// protocol) so that it is found when it returns.
    pub probe: bool,
    /// Nothing went to it for its keepalive interval.
    pub keepalive: bool,
}

/// The outcome of one health tick of a site.
#[derive(Default)]
pub struct Tick {
    pub transitions: Vec<Transition>,
    pub due: Vec<Due>,
}

pub struct Site {
    name: String,
    /// The control plane's side; `table` is rebuilt from it.
    members: Mutex<Vec<Member>>,
    table: ArcSwap<SiteTable>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Site {
    pub fn new(name: String) -> Site {
        Site { name, members: Mutex::new(Vec::new()), table: ArcSwap::from_pointee(SiteTable::empty()) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The workers' view, without a lock.
    pub fn table(&self) -> arc_swap::Guard<Arc<SiteTable>> {
        self.table.load()
    }

    /// The table as an owned snapshot.
    pub fn table_full(&self) -> Arc<SiteTable> {
        self.table.load_full()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds and swaps in the table for `members`; under their lock, so
    /// two changes never race to publish.
    fn publish(&self, members: &[Member]) {
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        let up: Vec<bool> = members.iter().map(|m| m.health.is_up()).collect();
        let buckets = assign(&ids, &up);
        self.table.store(Arc::new(SiteTable {
            members: members.iter().map(|m| m.peer.clone()).collect(),
            up,
            buckets,
        }));
    }

    /// Makes the members exactly `peers`: members that stay keep their
    /// health, new ones start up (see `health.rs`). Returns whether the
    /// membership changed.
    pub fn set_members(&self, peers: &[Arc<PeerState>], now: Time) -> bool {
        let mut members = self.lock();
        // A member renamed (by a reload) is the same peer under a new
        // label: its id follows the label, so that every gateway given
        // the same names builds the same table (`buckets.rs`).
        let same = members.len() == peers.len()
            && members
                .iter()
                .all(|m| peers.iter().any(|p| Arc::ptr_eq(p, &m.peer)) && m.id == member_id(&m.peer.label()));
        if same {
            return false;
        }
        let mut old = std::mem::take(&mut *members);
        for p in peers {
            if members.iter().any(|m| Arc::ptr_eq(&m.peer, p)) {
                continue;
            }
            let member = match old.iter().position(|m| Arc::ptr_eq(&m.peer, p)) {
                Some(i) => {
                    let mut kept = old.swap_remove(i);
                    kept.id = member_id(&p.label());
                    kept
                }
                None => Member { peer: p.clone(), id: member_id(&p.label()), health: Health::new(now) },
            };
            members.push(member);
        }
        // An order of their own, so a listing does not depend on the
        // caller's; the buckets do not depend on it anyway.
        members.sort_by_key(|m| m.peer.order);
        self.publish(&members);
        true
    }

    /// Adds one member (kept as is if it is one already).
    pub fn add_member(&self, peer: &Arc<PeerState>, now: Time) -> bool {
        let mut peers: Vec<Arc<PeerState>> = self.lock().iter().map(|m| m.peer.clone()).collect();
        if peers.iter().any(|p| Arc::ptr_eq(p, peer)) {
            return false;
        }
        peers.push(peer.clone());
        self.set_members(&peers, now)
    }

    /// Removes one member; returns whether it was one.
    pub fn remove_member(&self, peer: &PeerState) -> bool {
        let mut members = self.lock();
        let before = members.len();
        members.retain(|m| !std::ptr::eq(Arc::as_ptr(&m.peer), peer));
        if members.len() == before {
            return false;
        }
        self.publish(&members);
        true
    }

    pub fn members(&self) -> Vec<Arc<PeerState>> {
        self.lock().iter().map(|m| m.peer.clone()).collect()
    }

    /// Every member with its health and bucket share.
    pub fn status(&self) -> Vec<MemberStatus> {
        let members = self.lock();
        let shares = self.table.load().shares();
        members
            .iter()
            .enumerate()
            .map(|(i, m)| MemberStatus {
                peer: m.peer.clone(),
                health: m.health.clone(),
                buckets: shares.get(i).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Marks a member up or down by hand (tests; a down mark sticks until
    /// marked up). Returns whether its state changed.
    pub fn mark(&self, peer: &PeerState, up: bool, now: Time) -> bool {
        let mut members = self.lock();
        let Some(m) = members.iter_mut().find(|m| std::ptr::eq(Arc::as_ptr(&m.peer), peer)) else {
            return false;
        };
        let changed = m.health.mark(up, now).is_some();
        if changed {
            self.publish(&members);
        }
        changed
    }

    /// One health tick: observes every member with `observe`, publishes a
    /// new table if any came up or went down, and says what to send.
    pub fn tick(&self, now: Time, mut observe: impl FnMut(&PeerState) -> Observation) -> Tick {
        let mut members = self.lock();
        let mut tick = Tick::default();
        for m in members.iter_mut() {
            let o = observe(&m.peer);
            if let Some(change) = m.health.observe(&o, now) {
                let silent_for = now.saturating_since(m.health.last_heard());
                tick.transitions.push(Transition { peer: m.peer.clone(), change, silent_for });
            }
            let keepalive = m.health.keepalive_due(&o, now);
            let probe = !m.health.is_up();
            if probe || keepalive {
                tick.due.push(Due { peer: m.peer.clone(), probe, keepalive });
            }
        }
        if !tick.transitions.is_empty() {
            self.publish(&members);
        }
        tick
    }
}

/// What the control plane observes of a member's peer (see `health.rs`).
/// WireGuard: heard from when an authenticated packet arrives or a
/// handshake completes; a session is a current keypair; failing while
/// handshake attempts run. IPsec: heard from when an ESP packet arrives
/// or a new child SA is installed (IKE heard from it); a session is an
/// installed outbound SA; failing while packets wait for an SA, or since
/// IKE took the last one away (`EspLink::lost_sa`: its dead peer
/// detection, an expiry), whether or not anything is sent to it. An IPsec
/// peer has no keepalive of its own in the data plane, so only failing
/// negotiation or a lost SA not replaced within `failover_after` takes
/// it down.
pub fn observe_peer(peer: &PeerState, now: Time) -> Observation {
    let failover_after = peer.failover_after();
    let reachable = peer.endpoint().is_some();
    match &peer.link {
        Link::WireGuard(wg) => {
            let s = wg.stats();
            let keepalive = wg.timers.persistent_keepalive();
            Observation {
                heard: peer.heard(),
                sent: s.tx_packets,
                session: wg.keypair_for_sending(now).is_ok(),
                reachable,
                failing_since: wg.timers.handshake_attempts_started(),
                keepalive: (keepalive > 0).then(|| Duration::from_secs(u64::from(keepalive))),
                failover_after,
            }
        }
        Link::Ipsec(l) => {
            let (_, tx) = l.packets();
            Observation {
                heard: peer.heard(),
                sent: tx,
                session: l.sending().is_some(),
                reachable: reachable || !peer.configured_endpoints.lock().unwrap_or_else(|e| e.into_inner()).is_empty(),
                failing_since: l.negotiation_started(),
                keepalive: None,
                failover_after,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buckets::BUCKETS;
    use crate::health::Down;
    use causeway_wireguard::{Device, StaticSecret};

    fn peers(n: usize) -> Vec<Arc<PeerState>> {
        let device = Device::new(Some(StaticSecret::random(&mut rand_core::OsRng)));
        (0..n)
            .map(|i| {
                let key = StaticSecret::random(&mut rand_core::OsRng).public_key();
                Arc::new(PeerState::new(device.add_peer(key, None, 0).unwrap(), format!("west.gw{i}"), i as u64))
            })
            .collect()
    }

    /// Which member each bucket's flows go to, by member index.
    fn routing(site: &Site, members: &[Arc<PeerState>]) -> Vec<usize> {
        let table = site.table_full();
        (0..BUCKETS as u64)
            .map(|b| {
                let p = table.pick(b << (64 - BUCKETS.trailing_zeros())).unwrap();
                members.iter().position(|m| Arc::ptr_eq(m, p)).unwrap()
            })
            .collect()
    }

    // The table depends on the members' names only, whichever gateway
    // builds it and whatever it did before: a member renamed by a reload
    // routes as one started with the new name would.
    #[test]
    fn a_renamed_member_routes_as_one_started_with_the_new_name() {
        let members = peers(3);
        let site = Site::new("west".into());
        assert!(site.set_members(&members, Time::ZERO));
        *members[1].name.lock().unwrap() = "west.a".into();
        assert!(site.set_members(&members, Time::ZERO), "the rename changes the table");
        assert!(!site.set_members(&members, Time::ZERO), "and only once");
        let fresh = Site::new("west".into());
        fresh.set_members(&members, Time::ZERO);
        assert_eq!(routing(&site, &members), routing(&fresh, &members));
    }

    #[test]
    fn a_site_without_gateways_routes_nowhere() {
        let site = Site::new("west".into());
        assert!(site.table().pick(42).is_none());
        assert!(!site.table().any_up());
    }

    #[test]
    fn a_member_marked_down_loses_its_buckets_and_gets_them_back() {
        let members = peers(3);
        let site = Site::new("west".into());
        assert!(site.set_members(&members, Time::ZERO));
        let before = routing(&site, &members);
        assert_eq!(site.table().shares().iter().sum::<usize>(), BUCKETS);
        assert!(site.table().shares().iter().all(|&s| s > 200), "{:?}", site.table().shares());
        assert!(site.mark(&members[1], false, Time::ZERO));
        let during = routing(&site, &members);
        for b in 0..BUCKETS {
            if before[b] == 1 {
                assert_ne!(during[b], 1);
            } else {
                assert_eq!(during[b], before[b], "bucket {b} moved though its gateway stayed up");
            }
        }
        assert!(site.table().has_member(&members[1]), "down, but still a gateway of the site");
        assert!(!site.table().is_up(1) && site.table().any_up());
        assert!(site.mark(&members[1], true, Time::ZERO));
        assert_eq!(routing(&site, &members), before);
    }

    #[test]
    fn membership_changes_keep_the_health_of_members_that_stay() {
        let members = peers(3);
        let site = Site::new("west".into());
        site.set_members(&members[..2], Time::ZERO);
        site.mark(&members[0], false, Time::ZERO);
        assert!(!site.set_members(&[members[1].clone(), members[0].clone()], Time::ZERO), "same set");
        assert!(site.set_members(&[members[2].clone(), members[0].clone()], Time::ZERO));
        let status = site.status();
        let names: Vec<String> = status.iter().map(|m| m.peer.name()).collect();
        assert_eq!(names, ["west.gw0", "west.gw2"]);
        assert_eq!(status[0].health.reason(), Some(Down::Marked), "kept");
        assert!(status[1].health.is_up(), "a new member starts up");
        assert_eq!((status[0].buckets, status[1].buckets), (0, BUCKETS));
        assert!(!site.table().has_member(&members[1]));
        assert!(site.remove_member(&members[2]));
        assert!(!site.remove_member(&members[2]));
        assert_eq!(site.table().members().len(), 1);
        // Only a down member left: it carries everything (still probed).
        assert_eq!(site.table().shares(), vec![BUCKETS]);
        assert!(site.add_member(&members[1], Time::ZERO));
        assert!(!site.add_member(&members[1], Time::ZERO));
        assert_eq!(site.table().shares(), vec![0, BUCKETS]);
    }

    #[test]
    fn a_tick_publishes_health_changes_and_asks_for_probes_and_keepalives() {
        let members = peers(2);
        let site = Site::new("west".into());
        site.set_members(&members, Time::ZERO);
        let observe = |heard: u64| {
            move |_: &PeerState| Observation {
                heard,
                sent: 0,
                session: true,
                reachable: true,
                failing_since: None,
                keepalive: Some(Duration::from_secs(1)),
                failover_after: Duration::from_secs(3),
            }
        };
        let tick = site.tick(Time::ZERO, observe(0));
        assert!(tick.transitions.is_empty() && tick.due.is_empty());
        let tick = site.tick(Time::from_secs(1), observe(0));
        assert!(tick.transitions.is_empty());
        assert_eq!(tick.due.iter().filter(|d| d.keepalive && !d.probe).count(), 2, "nothing sent for 1 s");
        let tick = site.tick(Time::from_secs(3), observe(0));
        assert_eq!(tick.transitions.len(), 2);
        assert!(tick.transitions.iter().all(|t| t.change == Change::Down(Down::Silent)));
        assert_eq!(tick.transitions[0].silent_for, Duration::from_secs(3));
        assert!(tick.due.iter().all(|d| d.probe), "down members are probed");
        assert!(!site.table().any_up());
        assert_eq!(site.table().shares().iter().sum::<usize>(), BUCKETS, "all down: still sent to");
        let tick = site.tick(Time::from_secs(4), observe(1));
        assert_eq!(tick.transitions.len(), 2);
        assert!(site.table().any_up());
    }

    #[test]
    fn what_an_ipsec_member_looks_like_before_its_first_sa() {
        let p = PeerState::with_link(Link::Ipsec(crate::esp_link::EspLink::default()), "west.gw3".into(), 0);
        let o = observe_peer(&p, Time::from_secs(1));
        assert_eq!((o.session, o.reachable, o.failing_since, o.keepalive), (false, false, None, None));
        p.configured_endpoints.lock().unwrap().push("198.18.0.5:500".parse().unwrap());
        assert!(observe_peer(&p, Time::from_secs(1)).reachable, "IKE knows where to reach it");
    }

    #[test]
    fn what_a_wireguard_member_looks_like_before_any_handshake() {
        let p = &peers(1)[0];
        p.set_failover_after(Duration::from_secs(3));
        let o = observe_peer(p, Time::from_secs(1));
        assert_eq!((o.session, o.reachable, o.failing_since, o.keepalive), (false, false, None, None));
        assert_eq!(o.failover_after, Duration::from_secs(3));
        p.set_endpoint("198.18.0.3:51820".parse().unwrap());
        p.crypto().timers.set_persistent_keepalive(1);
        let o = observe_peer(p, Time::from_secs(1));
        assert_eq!((o.reachable, o.keepalive), (true, Some(Duration::from_secs(1))));
    }
}
