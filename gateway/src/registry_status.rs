//! The fleet registry's state as this gateway last saw it: kept in the
//! `Gateway` by the registry task, read by status, `tunctl sites` and the
//! metrics. A leaf module, so the gateway and the control API can both
//! name it without depending on each other.

use serde::{Deserialize, Serialize};

use crate::wire::present;

/// The fleet registry as this gateway sees it (`[registry]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryStatus {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Where this gateway is registered (its site and name); the site is
    /// empty after `tunctl site leave`, until it joins one again.
    pub site: String,
    pub name: String,
    /// "connecting" (never synced yet), "synced", or "stale" (the store is
    /// unreachable: the last known state is kept and still applied).
    pub state: String,
    /// Seconds since the state last changed.
    pub since_secs: u64,
    /// The last error talking to the store; `null` when synced.
    #[serde(deserialize_with = "present")]
    pub last_error: Option<String>,
    /// Gateway records in the last known state, this one's included.
    pub gateways: usize,
    /// The store revision the last known state was read at.
    pub revision: i64,
}
