//! causewayd, the Causeway gateway: data plane workers over a multi-queue
//! TUN and per-worker UDP sockets, and the control plane around them.

pub mod allowed_ips;
pub mod api;
pub mod clock;
pub mod control;
pub mod counters;
pub mod daemon;
pub mod demo;
pub mod interface;
pub mod jobs;
pub mod lab;
pub mod metrics;
pub mod mss;
pub mod ordered;
pub mod peer;
pub mod privileges;
pub mod receive;
pub mod reload;
pub mod routes;
pub mod send;
pub mod tun;
pub mod uapi;
pub mod udp;
pub mod worker;
