//! Two endpoints driven back to back through an in-memory network with
//! injected time (quinn-proto's way): establishment, failures, NAT,
//! retransmission, liveness, rekeys.

mod cookies;
mod drops;
mod establish;
mod lifecycle;
mod lossy;
pub(crate) mod net;
mod new_child;
mod operator;
mod refused;
mod rekey;
mod shared_address;
