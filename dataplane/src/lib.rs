//! Causeway's data plane: workers that each own a TUN queue and a UDP
//! socket, move packets in batches, and share the crypto of every peer
//! through ordered per-peer queues. No async runtime, JSON or netlink here:
//! the control plane (the gateway crate) drives it through `Interface`.

pub mod allowed_ips;
pub mod batch;
pub mod buckets;
pub mod checksum;
pub mod child_sa;
pub mod clock;
pub mod counters;
pub mod doorbell;
pub mod early_esp;
pub mod esp_link;
pub mod flow_hash;
pub mod gro;
pub mod health;
pub mod interface;
pub mod io;
pub mod ipsec;
pub mod ipsec_table;
pub mod ipv6;
pub mod jobs;
pub mod last_lookup;
pub mod memory;
pub mod mss;
pub mod ordered;
pub mod peer;
pub mod protocol;
pub mod raw_esp;
pub mod receive;
pub mod route;
pub mod selectors;
pub mod send;
pub mod session;
pub mod site;
pub mod source;
pub mod super_packet;
pub mod transmit;
pub mod tun;
pub mod tunnels;
pub mod udp;
pub mod wireguard;
pub mod worker;
