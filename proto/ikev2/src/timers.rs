//! What an IKE SA does when time passes: retransmit or give up, check
//! liveness, schedule rekeys, expire.
//!
//! Invariants: a peer is declared dead only after a request went
//! unanswered through its retransmissions (RFC 7296 §2.4): every one of
//! them, or, for a liveness check, those that fit in one liveness interval
//! (so a peer quiet for `dpd_interval` is known dead one interval later);
//! an SA past its hard lifetime is deleted whether or not its rekey
//! succeeded.

use std::time::{Duration, Instant};

use crate::effect::Effect;
use crate::event::{DownReason, Failure};
use crate::io::Io;
use crate::peer::Peer;
use crate::sa::{IkeSa, Planned, SaState};

/// How long an expired child SA's Delete may take before it is asked again.
const EXPIRED_DELETE_GRACE: Duration = Duration::from_secs(60);

pub(crate) fn on_timeout(sa: &mut IkeSa, peer: &Peer, io: &mut Io, now: Instant) -> Vec<Effect> {
    if let Some(effects) = crate::sa_init::redo_due(sa, &peer.cfg, io, now) {
        return effects;
    }
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
        let reason = sa.down_reason(DownReason::PeerDead);
        crate::informational::forget(sa, io, reason);
    } else if sa.initiator {
        // An error the responder kept sending, not believed while a valid
        // answer could still come, says more than the timeout.
        io.fail(&sa.peer, sa.init_error.take().unwrap_or(Failure::Timeout));
    }
    vec![Effect::Destroy]
}

fn expire(sa: &mut IkeSa, io: &mut Io, now: Instant) -> Vec<Effect> {
    match sa.state {
        // Half-open or failed: nothing was up, nothing to report.
        SaState::InitReplied | SaState::Dead => vec![Effect::Destroy],
        SaState::Deleting => {
            let reason = sa.down_reason(DownReason::DeletedLocally);
            crate::informational::forget(sa, io, reason);
            vec![Effect::Destroy]
        }
        _ => {
            crate::informational::delete_now(sa, io, now, DownReason::Expired);
            vec![Effect::Destroy]
        }
    }
}
