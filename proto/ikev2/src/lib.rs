//! Causeway's IKEv2 core (RFC 7296), sans-IO like the WireGuard core: it
//! takes datagrams, the time and randomness from its caller and gives back
//! datagrams to send, timers and events (child SAs up, rekeyed, deleted);
//! it never touches a socket or a clock. The gateway's control plane drives
//! it and installs the child SAs it negotiates into the data plane, whose
//! ESP sealing and opening live in `causeway-esp`.
#![forbid(unsafe_code)]

pub mod crypto;
pub mod ids;
pub mod wire;

pub use wire::identity::Identity;
pub use wire::traffic_selector::TrafficSelector;
pub use wire::WireError;
