//! The `[interface]` settings a gateway takes once, at start-up, as the
//! file it started from gave them: reloads compare against these (a leaf,
//! so the gateway can keep them and `reload.rs` read them).

use ipnet::IpNet;

/// The `[interface]` settings that are applied once, at start-up: the
/// interface is created with them (name, addresses, workers), the metrics
/// listener is bound and privileges are dropped before any reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedAtStart {
    name: Option<String>,
    addresses: Vec<IpNet>,
    workers: Option<usize>,
    metrics_listen: Option<std::net::SocketAddr>,
    user: Option<String>,
    /// The file's MTU (its default where it sets none), not the link's:
    /// `ip link set mtu` changes the link, and a reload of an unchanged
    /// file must not read that as the file's change.
    mtu: u32,
}

impl FixedAtStart {
    pub fn of(i: &causeway_config::Interface) -> FixedAtStart {
        FixedAtStart {
            name: i.name.clone(),
            addresses: i.addresses.clone(),
            workers: i.workers,
            metrics_listen: i.metrics_listen,
            user: i.user.clone(),
            mtu: i.mtu,
        }
    }

    /// The fields of `now` that differ from these, by their names in the file.
    pub(crate) fn changed(&self, now: &FixedAtStart) -> Vec<String> {
        let fields = [
            ("name", self.name != now.name),
            ("addresses", self.addresses != now.addresses),
            ("workers", self.workers != now.workers),
            ("metrics_listen", self.metrics_listen != now.metrics_listen),
            ("user", self.user != now.user),
            ("mtu", self.mtu != now.mtu),
        ];
        fields.into_iter().filter(|(_, differs)| *differs).map(|(name, _)| name.to_string()).collect()
    }
}
