//! The Causeway gateway's control plane: bring-up, the UAPI and tunctl
//! API sockets, reloads as differences, metrics, kernel routes and
//! privileges, the fleet registry on etcd, around the data plane of
//! `causeway-dataplane`. The binaries `causewayd` and `tunctl` are built
//! on it.

pub mod api;
pub mod control;
pub mod daemon;
pub mod endpoint_names;
pub mod error;
pub mod gateway;
pub mod ipsec;
pub mod metrics;
pub mod name_lock;
pub mod privileges;
pub mod registry;
pub mod registry_status;
pub mod reload;
pub mod report;
pub mod routes;
pub mod site_health;
pub mod sites;
pub mod sockets;
pub mod start_settings;
pub mod uapi;
mod wire;

pub use error::{Error, Result};
