//! How long SAs live: when a new SA is rekeyed, and how long a responder
//! keeps a half-open or redundant IKE SA.
//!
//! Invariant: a rekey is always scheduled at least `REKEY_MARGIN_PERCENT`
//! of the lifetime before the hard expiry, so it has time to finish.

use std::time::Duration;

use rand_core::RngCore;

/// Share of a lifetime always left between the rekey and the hard expiry.
pub const REKEY_MARGIN_PERCENT: u32 = 10;

/// A responder's half-open IKE SA (no IKE_AUTH yet) is dropped after this.
pub const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// An IKE SA the peer's rekey replaced is kept this long to answer the
/// rekey's retransmissions (our answer may be lost) and the peer's Delete.
/// The peer retransmits on its own schedule, not ours: strongSwan's
/// default (4 s, times 1.8, five retransmissions) runs 165 s, and a peer
/// whose rekey goes unanswered that long tears the IKE SA down.
pub const REPLACED_SA_LINGER: Duration = Duration::from_secs(180);

/// When to rekey an SA of `lifetime`: its lifetime minus the margin and a
/// random part of up to `jitter_percent`, so two ends rarely collide.
pub(crate) fn rekey_after(lifetime: Duration, jitter_percent: u8, rng: &mut dyn RngCore) -> Duration {
    let jitter = u32::from(jitter_percent.min(80));
    let take = REKEY_MARGIN_PERCENT + rng.next_u32() % (jitter + 1);
    lifetime * (100 - take.min(95)) / 100
}
