//! When the IKE thread starts something on its own: IKE for peers that
//! should have an IKE SA and have none (failing over among endpoints,
//! their names looked up off the thread), a child SA on an IKE SA left
//! without one, and NAT keepalives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_dataplane::session::Carrier;
use causeway_ikev2::{IkeState, PeerId};

use super::super::lookup::{self, Lookup};
use super::{convert, lock, Plan, Shared, RETRY_AFTER};

/// The wait after the first request for a child SA that did not end in
/// an installed one; it doubles with each further request.
const CHILD_RETRY: Duration = Duration::from_secs(10);
/// The longest wait between requests for a child SA. A peer that refuses
/// for a lasting reason (its selectors, its proposals) or a child SA this
/// host cannot install is then asked, and logged, twice in ten minutes
/// instead of every ten seconds; once the peer is fixed, the child SA
/// comes within this, or at once if the peer asks for it.
const CHILD_RETRY_MAX: Duration = Duration::from_secs(300);

/// Requests for a child SA on an IKE SA without one, since a child SA was
/// last installed for the peer: the back-off between them.
#[derive(Debug, Default)]
pub(super) struct ChildRetry {
    asked: u32,
}

impl ChildRetry {
    /// Counts a request just made and returns how long to wait before the
    /// next: 10 s, 20 s, 40 s and so on up to `CHILD_RETRY_MAX`.
    pub(super) fn asked(&mut self) -> Duration {
        let wait = CHILD_RETRY.saturating_mul(1 << self.asked.min(16)).min(CHILD_RETRY_MAX);
        self.asked = self.asked.saturating_add(1);
        wait
    }

    /// A child SA was installed: the next request, if one is ever needed,
    /// is answered by the short wait again.
    pub(super) fn installed(&mut self) {
        self.asked = 0;
    }
}

/// Starts IKE for peers that should have an IKE SA and have none.
pub(super) fn start_due(s: &Arc<Shared>, now: Instant) {
    let mut plans = lock(&s.plans);
    let mut core = lock(&s.core);
    let mut moved = false;
    for (name, plan) in plans.iter_mut() {
        let id = PeerId(name.clone());
        expire_held(s, name);
        // One status per peer and round (it copies the peer's SAs).
        let status = core.status(&id);
        let mut state = status.as_ref().map_or(IkeState::Down, |st| st.state);
        if state == IkeState::Connecting {
            // An endpoint that does not answer for failover_after is left
            // for the next at once, not after every retransmission.
            let stuck = plan.config.endpoints.len() > 1
                && plan.failing_since.is_some_and(|t| now.duration_since(t) >= plan.config.failover_after);
            if !(stuck && core.abandon_setup(&id, now)) {
                continue;
            }
            plan.next_try = Some(now);
            state = IkeState::Down;
        }
        let due = plan.next_try.is_some_and(|t| now >= t) || (plan.wanted && plan.next_try.is_none_or(|t| now >= t));
        if state == IkeState::Established {
            // An IKE SA whose child SA the peer deleted (or refused in
            // IKE_AUTH) carries nothing, and liveness checks keep it up:
            // ask for a child SA on it, less often while none comes.
            let childless = status.as_ref().is_some_and(|st| st.children.is_empty());
            if childless && due && (plan.wanted || plan.config.initiate) && core.create_child(&id, now) {
                let wait = plan.child_retry.asked();
                tracing::info!(peer = %name, next_in_s = wait.as_secs(), "IKE SA up without a child SA: asking for one");
                plan.wanted = false;
                plan.next_try = Some(now + wait);
            }
            continue;
        } else if state != IkeState::Down {
            continue;
        }
        if !due || plan.config.endpoints.is_empty() {
            continue;
        }
        // Failover: attempts to one endpoint failed for failover_after.
        let since = *plan.failing_since.get_or_insert(now);
        if now.duration_since(since) >= plan.config.failover_after && plan.config.endpoints.len() > 1 {
            plan.index = (plan.index + 1) % plan.config.endpoints.len();
            plan.failing_since = Some(now);
            tracing::warn!(peer = %name, to = %plan.config.endpoints[plan.index], "IKE failing: trying the next endpoint");
        }
        let remote = match &plan.config.endpoints[plan.index] {
            causeway_config::Endpoint::Addr(a) => Some(*a),
            causeway_config::Endpoint::Host { .. } => match std::mem::replace(&mut plan.lookup, Lookup::Idle) {
                Lookup::Done { index, remote, addrs } if index == plan.index => {
                    if !addrs.is_empty() && addrs != plan.addrs {
                        // The names now say where the peer is; its IKE is
                        // taken from there (set_peer keeps the SAs).
                        plan.addrs = addrs;
                        moved = true;
                        core.set_peer(
                            id.clone(),
                            convert::peer_config(&plan.config, plan.addrs.clone(), plan.raw),
                            now,
                        );
                    }
                    remote
                }
                Lookup::Running => {
                    plan.lookup = Lookup::Running;
                    continue;
                }
                _ => {
                    look_up(s, name, plan);
                    continue;
                }
            },
        };
        let Some(remote) = remote else {
            tracing::warn!(peer = %name, endpoint = %plan.config.endpoints[plan.index], "endpoint does not resolve");
            plan.next_try = Some(now + RETRY_AFTER);
            continue;
        };
        tracing::debug!(peer = %name, %remote, "starting IKE");
        core.connect(&id, remote, s.socket.local_address_towards(remote), now);
        plan.wanted = false;
        plan.next_try = plan.config.initiate.then_some(now + RETRY_AFTER);
    }
    if moved {
        super::publish_sources(&s.iface, &plans);
    }
}

/// Drops the packets held for the peer once they have waited
/// HELD_PATIENCE for an SA (`Interface::expire_held`): by then IKE is
/// failing; new traffic is held again.
fn expire_held(s: &Shared, name: &str) {
    let Some(ps) = s.iface.ipsec.peer(name) else { return };
    let dropped = s.iface.expire_held(&ps);
    if dropped > 0 {
        tracing::info!(peer = name, dropped, "no SA in 90 s: dropping the packets held for the peer");
    }
}

/// Resolves `plan`'s endpoints on a thread of its own; `start_due` takes
/// the answer on its next round (the IKE thread wakes at least every
/// `TICK`).
fn look_up(s: &Arc<Shared>, name: &str, plan: &mut Plan) {
    plan.lookup = Lookup::Running;
    let (s, peer) = (s.clone(), name.to_string());
    let spawned = lookup::spawn(plan.config.endpoints.clone(), plan.index, move |endpoints, done| {
        // A peer whose endpoints changed meanwhile, or that was removed,
        // has a lookup of its own.
        if let Some(p) = lock(&s.plans).get_mut(&peer).filter(|p| p.config.endpoints == endpoints) {
            p.lookup = done;
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(peer = %name, error = %e, "cannot start a name lookup");
        plan.lookup = Lookup::Idle;
        plan.next_try = Some(Instant::now() + RETRY_AFTER);
    }
}

/// RFC 3948 §2.3: while a NAT lies between the peers, one 0xff byte to the
/// peer's port 4500 every `nat_keepalive` keeps the NAT's mapping, so the
/// peer's ESP still reaches us after a quiet spell.
pub(super) fn nat_keepalives(s: &Shared, now: Instant) {
    let mut plans = lock(&s.plans);
    let core = lock(&s.core);
    for (name, plan) in plans.iter_mut() {
        let every = plan.config.nat_keepalive;
        if every.is_zero() || plan.keepalive_sent.is_some_and(|t| now.duration_since(t) < every) {
            continue;
        }
        let Some(st) = core.status(&PeerId(name.clone())) else { continue };
        let Some(remote) = st.remote.filter(|_| st.nat && st.state == IkeState::Established) else { continue };
        let set = s.iface.sockets_for(Carrier::EspInUdp);
        if let Some(sock) = set.sockets.first() {
            let _ = sock.send(remote, None, &[0xff], None);
            plan.keepalive_sent = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_sa_requests_back_off_to_a_ceiling_and_start_over_once_one_is_installed() {
        let mut retry = ChildRetry::default();
        let waits: Vec<u64> = (0..8).map(|_| retry.asked().as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300, 300]);
        for _ in 0..100 {
            assert_eq!(retry.asked(), CHILD_RETRY_MAX, "no overflow however long it goes on");
        }
        retry.installed();
        assert_eq!(retry.asked(), CHILD_RETRY);
        assert_eq!(retry.asked(), 2 * CHILD_RETRY);
    }
}
