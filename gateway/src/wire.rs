//! Serde helpers for the control API's wire format, shared by its message
//! types wherever they live (`api/types.rs`, `registry_status.rs`).

use serde::{Deserialize, Deserializer};

/// An `Option` field that must be in the message, as `null` if empty:
/// serde would otherwise read a missing (say, renamed) field as `None`.
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}
