//! Causeway's data plane: workers that each own a TUN queue and a UDP
//! socket, move packets in batches, and share the crypto of every peer
//! through ordered per-peer queues. No async runtime, JSON or netlink here:
//! the control plane (the gateway crate) drives it through `Interface`.

pub mod allowed_ips;
pub mod clock;
pub mod counters;
pub mod interface;
pub mod jobs;
pub mod mss;
pub mod ordered;
pub mod peer;
pub mod receive;
pub mod send;
pub mod tun;
pub mod udp;
pub mod worker;
