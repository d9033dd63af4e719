//! A running gateway as the control plane sees it: the data plane's
//! `Interface` plus what only the control plane keeps — the configuration
//! file that reloads re-read, the kernel routes it installs over netlink,
//! and how often endpoint names are resolved again.
//!
//! Invariant: netlink work (route changes) happens only on control-plane
//! threads, which keep CAP_NET_ADMIN; the data-plane workers hold no
//! capability and never reach this state.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use causeway_dataplane::interface::Interface;
use ipnet::IpNet;

use crate::routes::{RouteSync, SyncReport};

pub struct Gateway {
    pub iface: Arc<Interface>,
    /// The configuration file of `up` mode, which reloads re-read.
    config_path: Mutex<Option<PathBuf>>,
    /// Kernel routes for the allowed IPs, when the configuration asks.
    kernel_routes: Mutex<Option<RouteSync>>,
    /// How often endpoint names are resolved again; `None` is never.
    dns_refresh: Mutex<Option<Duration>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The control plane reads and changes the data plane through the gateway
/// all the time; deref keeps those calls as short as on the interface.
impl Deref for Gateway {
    type Target = Interface;
    fn deref(&self) -> &Interface {
        &self.iface
    }
}

impl Gateway {
    pub fn new(iface: Arc<Interface>) -> Gateway {
        Gateway {
            iface,
            config_path: Mutex::new(None),
            kernel_routes: Mutex::new(None),
            dns_refresh: Mutex::new(Some(causeway_config::DEFAULT_DNS_REFRESH)),
        }
    }

    pub fn set_config_path(&self, path: &Path) {
        *lock(&self.config_path) = Some(path.to_path_buf());
    }

    pub fn config_path(&self) -> Option<PathBuf> {
        lock(&self.config_path).clone()
    }

    /// From now on, keeps kernel routes for the allowed IPs through this
    /// interface, in `table`.
    pub fn install_routes(&self, table: u32, addresses: &[IpNet]) -> std::io::Result<()> {
        *lock(&self.kernel_routes) = Some(RouteSync::new(&self.iface.name, table, addresses)?);
        Ok(())
    }

    /// Brings the kernel routes in line with the current peers, when route
    /// installation is on; cheap when nothing changed.
    pub fn sync_kernel_routes(&self) -> Option<SyncReport> {
        let routes = self.iface.routes_snapshot();
        lock(&self.kernel_routes).as_mut().map(|s| s.sync(&routes))
    }

    /// Removes the routes this daemon installed (at shutdown).
    pub fn remove_kernel_routes(&self) {
        if let Some(mut sync) = lock(&self.kernel_routes).take() {
            sync.remove_all();
        }
    }

    pub fn dns_refresh(&self) -> Option<Duration> {
        *lock(&self.dns_refresh)
    }

    pub fn set_dns_refresh(&self, every: Option<Duration>) {
        *lock(&self.dns_refresh) = every;
    }

    /// The routing table that receives peer routes, when that is on.
    pub fn route_table(&self) -> Option<u32> {
        lock(&self.kernel_routes).as_ref().map(RouteSync::table)
    }

    /// The prefixes routed through the interface by this daemon.
    pub fn kernel_routes(&self) -> Option<Vec<IpNet>> {
        lock(&self.kernel_routes).as_ref().map(|s| s.installed().iter().copied().collect())
    }
}
