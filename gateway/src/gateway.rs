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
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use causeway_dataplane::interface::Interface;
use ipnet::IpNet;

use crate::ipsec::Ike;
use crate::routes::{RouteSync, SyncReport};

pub struct Gateway {
    pub iface: Arc<Interface>,
    /// The configuration file of `up` mode, which reloads re-read.
    config_path: Mutex<Option<PathBuf>>,
    /// Kernel routes for the allowed IPs, when the configuration asks.
    kernel_routes: Mutex<Option<RouteSync>>,
    /// How often endpoint names are resolved again; `None` is never.
    dns_refresh: Mutex<Option<Duration>>,
    /// IKE for the IPsec peers, started with the first of them.
    ike: Mutex<Option<Arc<Ike>>>,
    /// The UDP ports of IKE and of ESP in UDP: 500 and 4500 (other ports
    /// only in tests, where several gateways share one network).
    ipsec_ports: Mutex<(u16, u16)>,
    /// The registry's state, kept by the registry task for status and
    /// metrics; `None` without `[registry]`.
    registry_status: Mutex<Option<crate::registry_status::RegistryStatus>>,
    /// The registry client, with `[registry]`: reloads merge its view and
    /// the control API's `site` requests go through it.
    registry: Mutex<Option<Arc<crate::registry::Registry>>>,
    /// The settings of the file `up` started from that only a restart
    /// applies; reloads compare the file against these, not against the
    /// running interface, so a command-line override is no change.
    started_with: Mutex<Option<crate::start_settings::FixedAtStart>>,
    /// Held by whatever changes the peers (a reload or the first
    /// configuration, a registry update, the control API's peer changes, a
    /// UAPI set), so that the checks a change passes (a free name, no
    /// overlap) still hold when it is applied.
    changes: Mutex<()>,
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
            ike: Mutex::new(None),
            ipsec_ports: Mutex::new((causeway_config::IKE_PORT, causeway_config::NAT_T_PORT)),
            registry_status: Mutex::new(None),
            registry: Mutex::new(None),
            started_with: Mutex::new(None),
            changes: Mutex::new(()),
        }
    }

    pub fn registry_status(&self) -> Option<crate::registry_status::RegistryStatus> {
        lock(&self.registry_status).clone()
    }

    pub fn set_registry_status(&self, status: Option<crate::registry_status::RegistryStatus>) {
        *lock(&self.registry_status) = status;
    }

    pub fn registry(&self) -> Option<Arc<crate::registry::Registry>> {
        lock(&self.registry).clone()
    }

    pub fn set_registry(&self, registry: Option<Arc<crate::registry::Registry>>) {
        *lock(&self.registry) = registry;
    }

    /// IKE, if an IPsec peer started it.
    pub fn ike(&self) -> Option<Arc<Ike>> {
        lock(&self.ike).clone()
    }

    /// Whether a running peer of either protocol has this name; a
    /// WireGuard peer with key `except` (the one being changed) aside.
    /// Names are unique across protocols: tunctl, metrics and the logs
    /// know a peer by its name alone.
    pub fn name_in_use(&self, name: &str, except: Option<&causeway_wireguard::PublicKey>) -> bool {
        self.peers().iter().any(|p| p.name() == name && Some(p.public_key()) != except)
            || self.ike().is_some_and(|ike| ike.peer_names().iter().any(|n| n == name))
    }

    /// Other ports than 500 and 4500, before the first IPsec peer (tests).
    pub fn set_ipsec_ports(&self, ike: u16, nat_t: u16) {
        *lock(&self.ipsec_ports) = (ike, nat_t);
    }

    /// IKE, started now if it was not: the port 4500 sockets of the data
    /// plane, the raw ESP sockets when a peer may go without UDP (it needs
    /// CAP_NET_RAW, so it opens now, before privileges are dropped), and
    /// the IKE thread on port 500.
    pub fn ensure_ike(&self, bind: &dyn causeway_dataplane::io::Bind, raw: bool) -> std::io::Result<Arc<Ike>> {
        let mut ike = lock(&self.ike);
        if let Some(i) = &*ike {
            return Ok(i.clone());
        }
        let (ike_port, nat_t) = *lock(&self.ipsec_ports);
        self.iface.bind_esp(nat_t)?;
        if raw {
            if let Err(e) = self.iface.bind_raw_esp() {
                tracing::warn!(error = %e, "no raw ESP socket (needs CAP_NET_RAW): child SAs without a NAT will fail; encap = \"always\" avoids them");
            }
        }
        let started = Arc::new(Ike::start(self.iface.clone(), bind, ike_port)?);
        tracing::info!(ike_port = started.port(), nat_t_port = nat_t, "IKE started");
        *ike = Some(started.clone());
        Ok(started)
    }

    /// Marks every socket of the gateway, the data plane's and IKE's, with
    /// `mark`; on failure the mark goes back to what it was.
    pub fn set_fwmark(&self, mark: u32) -> std::io::Result<()> {
        let old = self.iface.fwmark();
        if let Err(e) = self.iface.set_fwmark(mark) {
            // Some of its sockets may have taken the new mark already.
            let _ = self.iface.set_fwmark(old);
            return Err(e);
        }
        if let Some(ike) = self.ike() {
            if let Err(e) = ike.set_fwmark(mark) {
                let _ = self.iface.set_fwmark(old);
                let _ = ike.set_fwmark(old);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Stops IKE, deleting every IKE SA (each peer is told).
    pub fn stop_ike(&self) {
        // Taken out first: the lock is not held while the thread is joined,
        // so a scrape or `tunctl show` asking for `ike()` meanwhile is
        // answered without IKE instead of waiting for its last round. The
        // daemon stops IKE holding the change lock for good, so no
        // `ensure_ike` can start another on port 500 in between.
        let ike = lock(&self.ike).take();
        if let Some(ike) = ike {
            ike.stop();
        }
    }

    pub fn set_config_path(&self, path: &Path) {
        *lock(&self.config_path) = Some(path.to_path_buf());
    }

    pub fn config_path(&self) -> Option<PathBuf> {
        lock(&self.config_path).clone()
    }

    /// One change of the peers at a time (`changes`); not re-entrant.
    pub fn changing(&self) -> MutexGuard<'_, ()> {
        lock(&self.changes)
    }

    /// Records what the file `up` started from said of the settings only
    /// a restart applies.
    pub fn set_started_with(&self, fixed: crate::start_settings::FixedAtStart) {
        *lock(&self.started_with) = Some(fixed);
    }

    pub fn started_with(&self) -> Option<crate::start_settings::FixedAtStart> {
        lock(&self.started_with).clone()
    }

    /// From now on, keeps kernel routes for the allowed IPs through this
    /// interface, in `table`.
    pub fn install_routes(&self, table: u32, addresses: &[IpNet]) -> std::io::Result<()> {
        *lock(&self.kernel_routes) = Some(RouteSync::new(&self.iface.name, table, addresses)?);
        Ok(())
    }

    /// Brings the kernel routes in line with the current peers, when route
    /// installation is on; cheap when nothing changed. Does nothing (None)
    /// while a change is being applied: a reload re-keying a peer, or
    /// moving a prefix between peers and sites, removes the prefix before
    /// it adds it back, possibly seconds later (a name to resolve between),
    /// and a kernel route withdrawn meanwhile would send that traffic
    /// unencrypted down the host's default route. The timer's next tick
    /// after the change syncs.
    pub fn sync_kernel_routes(&self) -> Option<SyncReport> {
        let _between_changes = match self.changes.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock) => return None,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
        };
        let routes = self.iface.routes_snapshot();
        lock(&self.kernel_routes).as_mut().map(|s| s.sync(&routes))
    }

    /// Notices kernel routes of ours that someone removed, so that the
    /// next `sync_kernel_routes` adds them back (`RouteSync::audit`). Any
    /// time, a change in progress included: it only corrects what counts
    /// as installed, and withdraws nothing.
    pub fn audit_kernel_routes(&self) {
        if let Some(sync) = lock(&self.kernel_routes).as_mut() {
            if let Err(e) = sync.audit() {
                tracing::debug!(error = %e, "cannot read the kernel's routes");
            }
        }
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
