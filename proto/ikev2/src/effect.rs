//! What an SA handler asks the endpoint to do beyond the SA itself: the
//! exchanges change one IKE SA, and anything touching the SA table or a
//! peer comes back to the endpoint as an [`Effect`].
//!
//! Invariant: a handler returning `Destroy` has already sent the events its
//! SA owes; the endpoint then only frees what the SA held.

use crate::sa::IkeSa;

pub(crate) enum Effect {
    /// Remove the SA (its events are already out).
    Destroy,
    /// The peer started over: drop its other IKE SAs.
    InitialContact,
    /// An IKE SA with this peer came up.
    Contacted,
    /// This SA came up by IKE_AUTH (after any `InitialContact`): delete
    /// the peer's duplicate of it if it is ours to delete (`duplicates.rs`).
    CheckDuplicates,
    /// A rekey made this new IKE SA; file it.
    NewSa(Box<IkeSa>),
    /// A rekey collision was lost: the children (and their planned
    /// exchanges) go to the peer's new IKE SA, filed under `to`.
    MoveChildren {
        to: u64,
    },
    ChildRekeyed,
}
