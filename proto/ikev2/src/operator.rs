//! What an operator asks of a peer's SAs by hand (`tunctl peer rekey`,
//! `tunctl peer reset`), as strongSwan's `swanctl --rekey` and
//! `--terminate`, or an SRX's `clear security ike security-associations`,
//! do: new keys now, or the SAs deleted and set up from the start.

use std::time::Instant;

use crate::config::PeerId;
use crate::endpoint::Endpoint;
use crate::event::DownReason;
use crate::sa::SaState;

/// What `Endpoint::rekey_peer_now` scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RekeyScheduled {
    /// The IKE SA is rekeyed too.
    pub ike: bool,
    /// Child SAs to rekey.
    pub children: usize,
}

impl Endpoint {
    /// Rekeys the peer's child SAs, and with `ike` its IKE SA, at the next
    /// `handle_timeout` instead of at the end of their lifetimes. Only SAs
    /// of an established IKE SA, and not being rekeyed or deleted already
    /// (a rekey under way gives new keys anyway), are scheduled. The
    /// rekeys are the ordinary ones, each SA keeping its traffic until
    /// its successor takes over, so nothing in flight is lost.
    pub fn rekey_peer_now(&mut self, id: &PeerId, ike: bool, now: Instant) -> RekeyScheduled {
        self.clock = Some(now);
        let mut done = RekeyScheduled::default();
        let live = self.sas.values_mut().filter(|sa| &sa.peer == id && sa.up && sa.state == SaState::Established);
        for sa in live {
            // `rekey_at` is None on an IKE SA whose rekey is queued or out,
            // and on one being replaced.
            if ike && sa.rekey_at.is_some() {
                sa.rekey_at = Some(now);
                done.ike = true;
            }
            for c in sa.children.iter_mut().filter(|c| !c.retiring) {
                c.rekey_at = c.rekey_at.min(now);
                done.children += 1;
            }
        }
        done
    }

    /// Deletes the peer's IKE SAs with their child SAs, telling the peer
    /// (one Delete each, as `remove_peer`), and keeps the peer configured:
    /// its next IKE SA starts from IKE_SA_INIT, with INITIAL_CONTACT, so
    /// the peer drops anything of the old ones a lost Delete left it.
    /// Returns how many IKE SAs were deleted (half-open ones included),
    /// or None, deleting nothing, while an IKE SA rekey is in flight: our
    /// request may have reached the peer, whose new SA we do not hold yet,
    /// and the peer takes a Delete of the old SA then as the rekey's end
    /// (RFC 7296 §2.8) and keeps sending on the new one into nothing.
    /// Who sets the next one up is as after any IKE SA goes down: the
    /// caller, for a peer we initiate to, or the peer.
    pub fn reset_peer(&mut self, id: &PeerId, now: Instant) -> Option<usize> {
        self.clock = Some(now);
        if self.sas.values().any(|sa| &sa.peer == id && sa.ike_rekey_in_flight()) {
            return None;
        }
        let gone = self.delete_sas_of(id, now, DownReason::Reset);
        self.io.failures.remove(id);
        Some(gone)
    }
}
