//! Hours of rekeys, liveness checks and crossing initiations over a
//! network that loses datagrams at random. The targeted tests elsewhere
//! lose one chosen message each; here the losses fall anywhere, several
//! exchanges in flight at once (a rekey from each end, a liveness check,
//! a Delete). Whatever they did, once the losses stop both ends must
//! settle, within a few liveness intervals and rekeys, on one IKE SA
//! with child SAs each end has installed and sends on, and neither end
//! may keep state the other has let go of (SAs, reserved SPIs).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::RngCore;

use super::lifecycle::data_plane;
use super::net::*;
use crate::{Endpoint, IkeState};

/// What the gateway's IKE thread does besides the core (`start.rs`):
/// start IKE again a while after a failure, and ask for a child SA on an
/// IKE SA left without one, less often while none comes; both only for a
/// peer that initiates (no traffic asks here).
struct Driver {
    initiates: bool,
    next_connect: Instant,
    next_child: Instant,
    child_wait: Duration,
}

impl Driver {
    fn new(initiates: bool, now: Instant) -> Driver {
        Driver { initiates, next_connect: now, next_child: now, child_wait: Duration::from_secs(10) }
    }

    fn run(&mut self, side: Side, n: &mut Net) {
        let now = n.now;
        if !self.initiates {
            return;
        }
        let (ep, peer, remote, local) = match side {
            Side::A => (&mut n.a, peer_b(), B_IP, A_IP),
            Side::B => (&mut n.b, peer_a(), A_IP, B_IP),
        };
        match ep.status(&peer).map(|s| (s.state, s.children.len())) {
            None | Some((IkeState::Down, _)) if now >= self.next_connect => {
                ep.connect(&peer, SocketAddr::new(remote, 500), Some(local), now);
                // The driver's RETRY_AFTER.
                self.next_connect = now + Duration::from_secs(2);
            }
            Some((IkeState::Established, 0)) if now >= self.next_child => {
                ep.create_child(&peer, now);
                self.next_child = now + self.child_wait;
                self.child_wait = (self.child_wait * 2).min(Duration::from_secs(300));
            }
            Some((_, c)) if c > 0 => self.child_wait = Duration::from_secs(10),
            _ => {}
        }
    }
}

/// IKE SAs, reserved inbound SPIs and IKE SPIs an endpoint holds: small
/// and bounded whatever the losses do.
fn assert_bounded(e: &Endpoint, what: &str) {
    assert!(e.sas.len() <= 4, "{what}: {} IKE SAs", e.sas.len());
    assert!(e.io.spis_in.len() <= 8, "{what}: {} inbound SPIs reserved", e.io.spis_in.len());
    assert!(e.io.ike_spis.len() <= 6, "{what}: {} IKE SPIs reserved", e.io.ike_spis.len());
    for sa in e.sas.values() {
        assert!(sa.children.len() <= 4, "{what}: an IKE SA with {} child SAs", sa.children.len());
    }
}

/// Every inbound SPI and IKE SPI an endpoint reserves belongs to an SA it
/// holds (nothing left behind by an exchange that was given up).
fn assert_no_stray_spis(e: &Endpoint, what: &str) {
    let children: std::collections::HashSet<u32> =
        e.sas.values().flat_map(|sa| sa.children.iter().map(|c| c.spi_in)).collect();
    assert_eq!(e.io.spis_in, children, "{what}: inbound SPIs reserved beyond the child SAs held");
    let ike: std::collections::HashSet<u64> = e.sas.keys().copied().collect();
    assert_eq!(e.io.ike_spis, ike, "{what}: IKE SPIs reserved beyond the IKE SAs held");
}

/// How a run differs from the plain one: both ends initiating, rekey
/// times spread by the usual jitter.
#[derive(Clone, Copy, Default)]
struct Case {
    /// No jitter: both ends rekey each SA at the same moment, so rekeys
    /// collide, lost messages and all.
    no_jitter: bool,
    /// A behind a NAT, and only A initiates (B cannot reach A first).
    nat: bool,
    /// B restarts with no state every 20 minutes, 10 minutes in: A's SAs
    /// are stale until INITIAL_CONTACT or its liveness checks clear them.
    restarts: bool,
}

/// One run: `hours` of short lifetimes and liveness checks with `loss`
/// percent of datagrams lost either way, then 15 minutes without loss.
fn lossy_run(seed: u64, loss: u32, hours: u64, case: Case) {
    let mut cfg = config_a();
    cfg.ike_lifetime = Duration::from_secs(300);
    cfg.child_lifetime = Duration::from_secs(120);
    cfg.dpd_interval = Duration::from_secs(10);
    if case.no_jitter {
        cfg.rekey_jitter_percent = 0;
    }
    let mut cfg_b = mirror(&cfg);
    cfg_b.initiate = !case.nat;
    if case.nat {
        cfg_b.remote_addrs = vec![NAT_IP];
    }
    let mut n = Net::new(cfg.clone(), cfg_b.clone());
    n.nat = case.nat;
    n.a = Endpoint::new(Box::new(TestRng(0x7a7a_0000 + seed)));
    n.a.set_peer(peer_b(), cfg, n.now);
    n.b = Endpoint::new(Box::new(TestRng(0x0b0b_0000 + seed)));
    n.b.set_peer(peer_a(), cfg_b.clone(), n.now);
    let mut rng = TestRng(0x1055_0000 ^ (seed << 8) | 1);
    n.drop = Box::new(move |_, _| rng.next_u32() % 100 < loss);
    let (mut drive_a, mut drive_b) = (Driver::new(true, n.now), Driver::new(!case.nat, n.now));
    let what = |t: &str| format!("seed {seed}, {loss}% lost, {t}");
    for s in 0..hours * 3600 {
        n.advance(Duration::from_secs(1));
        drive_a.run(Side::A, &mut n);
        drive_b.run(Side::B, &mut n);
        n.run();
        if case.restarts && s % 1200 == 600 {
            n.b = Endpoint::new(Box::new(TestRng(0x0c0c_0000 + seed + s)));
            n.b.set_peer(peer_a(), cfg_b.clone(), n.now);
            n.events_b.clear();
        }
        if s % 60 == 0 {
            assert_bounded(&n.a, &what(&format!("A at {s} s")));
            assert_bounded(&n.b, &what(&format!("B at {s} s")));
        }
    }
    // The losses fell on a tunnel at work: child SAs came up again and
    // again (rekeys, and new ones after a loss), not only once it ended.
    let ups = |e: &[crate::Event]| e.iter().filter(|e| matches!(e, crate::Event::ChildUp { .. })).count();
    let minimum = if case.restarts { 10 } else { 15 };
    assert!(ups(&n.events_a) >= minimum, "{}: {} child SAs up at A", what("while losing"), ups(&n.events_a));
    n.drop = Box::new(|_, _| false);
    for _ in 0..15 * 60 {
        n.advance(Duration::from_secs(1));
        drive_a.run(Side::A, &mut n);
        drive_b.run(Side::B, &mut n);
        n.run();
    }
    let what = what("after 15 min without loss");
    let up = |e: &Endpoint| -> Vec<(u64, u64)> {
        e.sas.values().filter(|sa| sa.up).map(|sa| (sa.spi_i, sa.spi_r)).collect()
    };
    assert_eq!(up(&n.a).len(), 1, "{what}: one IKE SA up at A: {:x?}", up(&n.a));
    assert_eq!(up(&n.a), up(&n.b), "{what}: the same IKE SA at both ends");
    assert_eq!((n.a.sas.len(), n.b.sas.len()), (1, 1), "{what}: nothing else held");
    for (e, peer) in [(&n.a, peer_b()), (&n.b, peer_a())] {
        assert_eq!(e.status(&peer).map(|s| s.state), Some(IkeState::Established), "{what}");
        assert_no_stray_spis(e, &what);
    }
    let (a, b) = (data_plane(&n.events_a), data_plane(&n.events_b));
    for (side, (installed, sends), (held, _)) in [("A", &a, &b), ("B", &b, &a)] {
        assert!(!installed.is_empty() && installed.len() <= 2, "{what}: {side} holds {installed:08x?}");
        assert!(!sends.is_empty(), "{what}: {side} has nothing to send on");
        for spi in sends {
            assert!(held.iter().any(|&(i, _)| i == *spi), "{what}: {side} sends on {spi:08x}, not held: {held:08x?}");
        }
    }
    // What each data plane holds is what the core holds, and mirrored.
    let mirrored: Vec<(u32, u32)> = b.0.iter().map(|&(i, o)| (o, i)).collect();
    let (mut at_a, mut at_b) = (a.0.clone(), mirrored);
    at_a.sort_unstable();
    at_b.sort_unstable();
    assert_eq!(at_a, at_b, "{what}: the child SAs of one end are the other's");
}

#[test]
fn rekeys_and_liveness_checks_over_a_lossy_network_settle_on_one_sa() {
    for seed in 0..6 {
        lossy_run(seed, [10, 20, 30][seed as usize % 3], 1, Case::default());
    }
}

#[test]
fn colliding_rekeys_over_a_lossy_network_settle_on_one_sa() {
    for seed in 0..3 {
        lossy_run(seed, [10, 30, 50][seed as usize], 1, Case { no_jitter: true, ..Case::default() });
    }
}

#[test]
fn an_initiator_behind_a_nat_over_a_lossy_network_settles_on_one_sa() {
    for seed in 0..3 {
        lossy_run(seed, [10, 30, 50][seed as usize], 1, Case { nat: true, ..Case::default() });
    }
}

#[test]
fn a_peer_restarting_over_a_lossy_network_is_followed_to_one_sa() {
    for seed in 0..3 {
        lossy_run(seed, [10, 30, 50][seed as usize], 1, Case { restarts: true, ..Case::default() });
    }
}
