//! IKE messages the endpoint drops without acting on them, counted by
//! reason so that an operator can see them: a drop leaves no other trace
//! (nothing is answered, no event goes out), and a peer with the wrong key,
//! a stale SA after a restart or a flood of forgeries looks from outside
//! like silence.
//!
//! Invariants: a message counts once, for the first check it fails (the
//! cheap header checks come before the integrity check, so a forgery with
//! a wrong message ID counts as that). One the endpoint acts on counts
//! nowhere: a request refused with an answer (the peer's failure reports
//! it), a retransmitted request answered again from the cache. A message
//! that does not parse is the exception: it counts even when answered (an
//! IKE_SA_INIT request with an unsupported critical payload), as nothing
//! else reports it.

/// Why an IKE message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Not an IKE message (RFC 7296 §3): it does not parse (counted from
    /// any address, answered or not), or it is an IKE_SA_INIT request from
    /// a peer's address with a zero initiator SPI.
    Malformed,
    /// An IKE_SA_INIT request from an address no configured peer may call
    /// from.
    UnknownPeer,
    /// No IKE SA of ours has the SPI it is for: one that expired, was
    /// deleted or rekeyed (the peer's answer to our Delete of an SA that
    /// is gone once the Delete leaves, as when a peer is removed), one
    /// from before we restarted, or a forgery.
    UnknownSpi,
    /// Our SPI is right, but the peer's SPI or the roles (initiator flag)
    /// do not fit that IKE SA.
    SaMismatch,
    /// Its SK payload failed the integrity check or decryption, or it had
    /// none where one is required: corrupted, forged, or sealed with keys
    /// we do not hold.
    IntegrityCheckFailed,
    /// Outside the message-ID window (RFC 7296 §2.3): a response to no
    /// request of ours outstanding (late copies of one already taken
    /// included, and the answer to a liveness check dropped when the
    /// peer's IKE rekey came first), a request neither the next expected nor the last one
    /// answered, an IKE_SA_INIT retransmitted after IKE_AUTH came, or one
    /// with a message ID other than zero.
    UnexpectedMessageId,
    /// An exchange the IKE SA cannot take in its state: INFORMATIONAL
    /// before IKE_AUTH is done (RFC 7296 §1.4), IKE_SA_INIT (a request, or
    /// a response in another exchange's place) on an SA past it.
    UnexpectedExchange,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::Malformed,
        DropReason::UnknownPeer,
        DropReason::UnknownSpi,
        DropReason::SaMismatch,
        DropReason::IntegrityCheckFailed,
        DropReason::UnexpectedMessageId,
        DropReason::UnexpectedExchange,
    ];

    /// Its counter's place. A match rather than `as usize`: a reason added
    /// without a place here does not compile, where an index past the
    /// array would panic on the IKE thread.
    fn index(self) -> usize {
        match self {
            DropReason::Malformed => 0,
            DropReason::UnknownPeer => 1,
            DropReason::UnknownSpi => 2,
            DropReason::SaMismatch => 3,
            DropReason::IntegrityCheckFailed => 4,
            DropReason::UnexpectedMessageId => 5,
            DropReason::UnexpectedExchange => 6,
        }
    }

    /// Stable snake_case name, used as a metric label and in `tunctl show`.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::UnknownSpi => "unknown_spi",
            DropReason::SaMismatch => "sa_mismatch",
            DropReason::IntegrityCheckFailed => "integrity_check_failed",
            DropReason::UnexpectedMessageId => "unexpected_message_id",
            DropReason::UnexpectedExchange => "unexpected_exchange",
        }
    }
}

/// Messages dropped since the endpoint was made, per reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    counts: [u64; DropReason::ALL.len()],
}

impl Drops {
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason.index()]
    }

    /// Every reason with its count, zeros included, in `DropReason::ALL`'s order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }

    pub(crate) fn count(&mut self, reason: DropReason) {
        let c = &mut self.counts[reason.index()];
        *c = c.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_own_counter_and_name() {
        let mut d = Drops::default();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            for _ in 0..=i {
                d.count(*r);
            }
        }
        let counts: Vec<u64> = d.iter().map(|(_, n)| n).collect();
        assert_eq!(counts, [1, 2, 3, 4, 5, 6, 7]);
        assert!(DropReason::ALL.iter().enumerate().all(|(i, r)| r.index() == i), "ALL is in counter order");
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}
