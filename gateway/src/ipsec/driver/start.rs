//! When the IKE thread starts something on its own: IKE for peers that
//! should have an IKE SA and have none (failing over among endpoints,
//! their names looked up off the thread), a child SA on an IKE SA left
//! without one, and NAT keepalives.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use causeway_dataplane::session::Carrier;
use causeway_ikev2::{IkeState, PeerId};

use super::super::lookup::{self, Lookup};
use super::{convert, lock, Plan, Shared, CHILD_RETRY, RETRY_AFTER};

/// Starts IKE for peers that should have an IKE SA and have none.
pub(super) fn start_due(s: &Arc<Shared>, now: Instant) {
    let mut plans = lock(&s.plans);
    let mut core = lock(&s.core);
    for (name, plan) in plans.iter_mut() {
        let id = PeerId(name.clone());
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
            // ask for a child SA on it, as often as IKE is retried.
            let childless = status.as_ref().is_some_and(|st| st.children.is_empty());
            if childless && due && (plan.wanted || plan.config.initiate) && core.create_child(&id, now) {
                tracing::info!(peer = %name, "IKE SA up without a child SA: asking for one");
                plan.wanted = false;
                plan.next_try = Some(now + CHILD_RETRY);
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
        core.connect(&id, remote, local_address_towards(remote), now);
        plan.wanted = false;
        plan.next_try = plan.config.initiate.then_some(now + RETRY_AFTER);
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

/// Our address on the route to `remote`, which NAT detection hashes: a
/// connected UDP socket learns it from the routing table without sending
/// anything. None when there is no route (then the core assumes a NAT).
fn local_address_towards(remote: SocketAddr) -> Option<IpAddr> {
    let probe = std::net::UdpSocket::bind((causeway_dataplane::udp::unspecified_for(remote), 0)).ok()?;
    probe.connect(remote).ok()?;
    probe.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
}
