//! What an IKE SA does when time passes: retransmit or give up, check
//! liveness, schedule rekeys, expire.
//!
//! Invariants: a peer is declared dead only after every retransmission of
//! a request went unanswered (RFC 7296 §2.4); an SA past its hard lifetime
//! is deleted whether or not its rekey succeeded.

use std::time::{Duration, Instant};

use rand_core::RngCore;

use crate::endpoint::{Effect, Io, Peer};
use crate::event::{DownReason, Failure};
use crate::sa::{IkeSa, Planned, SaState};

/// Share of a lifetime always left between the rekey and the hard expiry.
pub const REKEY_MARGIN_PERCENT: u32 = 10;

/// How long an expired child SA's Delete may take before it is asked again.
const EXPIRED_DELETE_GRACE: Duration = Duration::from_secs(60);

/// When to rekey an SA of `lifetime`: its lifetime minus the margin and a
/// random part of up to `jitter_percent`, so two ends rarely collide.
pub(crate) fn rekey_after(lifetime: Duration, jitter_percent: u8, rng: &mut dyn RngCore) -> Duration {
    let jitter = u32::from(jitter_percent.min(80));
    let take = REKEY_MARGIN_PERCENT + rng.next_u32() % (jitter + 1);
    lifetime * (100 - take.min(95)) / 100
}

pub(crate) fn on_timeout(sa: &mut IkeSa, peer: &Peer, io: &mut Io, now: Instant) -> Vec<Effect> {
    if sa.retransmit_due(io, now) {
        return give_up(sa, io);
    }
    if sa.expire_at.is_some_and(|t| t <= now) {
        return expire(sa, io, now);
    }
    if sa.state != SaState::Established {
        return Vec::new();
    }
    if sa.rekey_at.is_some_and(|t| t <= now) {
        sa.rekey_at = None;
        sa.queue.push_back(Planned::RekeyIke);
    }
    let mut dead_children = Vec::new();
    for c in sa.children.iter_mut() {
        if c.expire_at <= now {
            dead_children.push(c.spi_in);
            c.retiring = true;
            // Asked once; if the Delete goes unanswered the IKE SA dies.
            c.expire_at = now + EXPIRED_DELETE_GRACE;
        } else if !c.retiring && c.rekey_at <= now {
            c.retiring = true;
            sa.queue.push_back(Planned::RekeyChild(c.spi_in));
        }
    }
    if !dead_children.is_empty() {
        sa.queue.push_back(Planned::DeleteChildren(dead_children));
    }
    let dpd = peer.cfg.dpd_interval;
    if !dpd.is_zero() && sa.pending.is_none() && sa.queue.is_empty() && now >= sa.last_received + dpd {
        sa.queue.push_back(Planned::Dpd);
    }
    crate::exchange::kick(sa, peer, io, now)
}

/// Every retransmission went unanswered.
fn give_up(sa: &mut IkeSa, io: &mut Io) -> Vec<Effect> {
    if sa.up {
        crate::informational::forget(sa, io, DownReason::PeerDead);
    } else if sa.initiator {
        io.fail(&sa.peer, Failure::Timeout);
    }
    vec![Effect::Destroy]
}

fn expire(sa: &mut IkeSa, io: &mut Io, now: Instant) -> Vec<Effect> {
    match sa.state {
        // Half-open or failed: nothing was up, nothing to report.
        SaState::InitReplied | SaState::Dead => vec![Effect::Destroy],
        SaState::Deleting => {
            crate::informational::forget(sa, io, DownReason::DeletedLocally);
            vec![Effect::Destroy]
        }
        _ => {
            crate::informational::delete_now(sa, io, now, DownReason::Expired);
            vec![Effect::Destroy]
        }
    }
}
