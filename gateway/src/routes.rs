//! Kernel routes for the peers' allowed IPs through the interface, kept in
//! step with the peer set over rtnetlink: what wg-quick does with `ip route`,
//! so a spoke needs no hand-written routes and a removed peer leaves none
//! behind. A site's prefixes are routed only while at least one of its
//! gateways is up, so a routing daemon that exports kernel routes (BIRD,
//! FRR) withdraws a site that can no longer be reached (`wanted`).

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use causeway_dataplane::interface::{Route, Routes};

/// Routes this daemon added, and the netlink socket to change them with.
/// The socket is opened at start-up so that changes keep working after
/// privileges are dropped (CAP_NET_ADMIN stays).
pub struct RouteSync {
    socket: Socket,
    seq: u32,
    ifindex: u32,
    table: u32,
    /// Prefixes the interface's own addresses already route.
    connected: BTreeSet<IpNet>,
    installed: BTreeSet<IpNet>,
    /// The prefixes last made real, to skip unchanged ticks (and retry a
    /// refused prefix on the next change, not on every tick).
    synced: Option<BTreeSet<IpNet>>,
    /// Wanted prefixes the kernel refused (another route holds them),
    /// logged once, and tried again at each `audit`.
    refused: BTreeSet<IpNet>,
    /// Installed prefixes no longer wanted whose removal failed, logged
    /// once, and tried again at each `audit`: left in place, such a route
    /// would send a prefix that moved elsewhere (to another gateway, or
    /// out of the tunnel) into this interface.
    unremoved: BTreeSet<IpNet>,
    warned_default: bool,
}

/// The prefixes to route through the interface: every peer's, and a
/// site's while any of its gateways is up; not those the interface's own
/// addresses already route (`connected`), nor a default route (returned
/// apart: it would carry the tunnel's own packets into the tunnel).
pub fn wanted(routes: &Routes, connected: &BTreeSet<IpNet>) -> (BTreeSet<IpNet>, Option<IpNet>) {
    let mut nets = BTreeSet::new();
    let mut default = None;
    for (net, owner) in routes.iter() {
        if let Route::Site(site) = owner {
            if !site.table().any_up() {
                continue;
            }
        }
        if net.prefix_len() == 0 {
            default = Some(net);
        } else if !connected.contains(&net) {
            nets.insert(net);
        }
    }
    (nets, default)
}

/// What one pass changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub removed: usize,
    pub failed: usize,
}

impl RouteSync {
    pub fn new(ifname: &str, table: u32, addresses: &[IpNet]) -> io::Result<RouteSync> {
        let ifindex = std::fs::read_to_string(format!("/sys/class/net/{ifname}/ifindex"))?
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "unreadable ifindex"))?;
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // The kernel then filters `audit`'s dumps by table and interface
        // (4.20 on): a host running a routing daemon can hold a full
        // Internet table, which an unfiltered dump would copy out every
        // few seconds. Without it `ours` still filters, at that cost.
        if let Err(e) = socket.set_netlink_get_strict_chk(true) {
            tracing::debug!(error = %e, "no strict netlink checking: route dumps are filtered here");
        }
        Ok(RouteSync {
            socket,
            seq: 0,
            ifindex,
            table,
            connected: if table == causeway_config::RouteTable::MAIN.0 {
                addresses.iter().map(IpNet::trunc).collect()
            } else {
                BTreeSet::new()
            },
            installed: BTreeSet::new(),
            synced: None,
            refused: BTreeSet::new(),
            unremoved: BTreeSet::new(),
            warned_default: false,
        })
    }

    pub fn table(&self) -> u32 {
        self.table
    }

    pub fn installed(&self) -> &BTreeSet<IpNet> {
        &self.installed
    }

    /// Makes the installed routes match what `routes` wants now (`wanted`),
    /// if that changed since the last pass. A prefix the kernel refuses is
    /// logged and tried again on the next change.
    pub fn sync(&mut self, routes: &Arc<Routes>) -> SyncReport {
        let (wanted, default) = wanted(routes, &self.connected);
        if self.synced.as_ref() == Some(&wanted) {
            return SyncReport::default();
        }
        self.synced = Some(wanted.clone());
        if let Some(net) = default.filter(|_| !self.warned_default) {
            // A default route through the tunnel would also carry the
            // tunnel's own UDP packets to the peer; wg-quick needs policy
            // routing for that, which is left to the operator.
            tracing::warn!(prefix = %net, "not installing a default route through the tunnel; add a policy route by hand");
            self.warned_default = true;
        }
        let mut report = SyncReport::default();
        let stale: Vec<IpNet> = self.installed.difference(&wanted).copied().collect();
        for net in stale {
            match self.change(net, false) {
                Ok(()) => report.removed += 1,
                // Gone already (the operator removed it, or the link went down).
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => report.removed += 1,
                Err(e) => {
                    if self.unremoved.insert(net) {
                        tracing::warn!(prefix = %net, error = %e, "cannot remove route (tried again every few seconds)");
                    }
                    report.failed += 1;
                    continue;
                }
            }
            if self.unremoved.remove(&net) {
                tracing::info!(prefix = %net, table = self.table, "route removed at last");
            }
            self.installed.remove(&net);
        }
        let new: Vec<IpNet> = wanted.difference(&self.installed).copied().collect();
        for net in new {
            match self.change(net, true) {
                Ok(()) => {
                    if self.refused.remove(&net) {
                        tracing::info!(prefix = %net, table = self.table, "route installed, the one in its way gone");
                    }
                    self.installed.insert(net);
                    report.added += 1;
                }
                Err(e) => {
                    let why = if e.raw_os_error() == Some(libc::EEXIST) {
                        "a route for this prefix exists already; it is left alone (tried again every few seconds)"
                            .to_string()
                    } else {
                        e.to_string()
                    };
                    if self.refused.insert(net) {
                        tracing::warn!(prefix = %net, table = self.table, "cannot install route: {why}");
                    }
                    report.failed += 1;
                }
            }
        }
        if report.added + report.removed > 0 {
            tracing::info!(added = report.added, removed = report.removed, table = self.table, "routes updated");
        }
        report
    }

    /// Compares with the kernel's table: a route of ours someone removed
    /// (`ip route flush`, the link taken down and up, a network manager
    /// cleaning up routes it does not know) no longer counts as installed,
    /// and the next `sync` adds it back, as it tries again a prefix refused
    /// before because another route held it (which the operator may have
    /// removed since, at a cut-over from the box this replaces). One dump
    /// of the table per family; called every few seconds.
    pub fn audit(&mut self) -> io::Result<()> {
        let present = self.dump()?;
        let before = self.installed.len();
        self.installed.retain(|n| present.contains(n));
        let lost = before - self.installed.len();
        if lost > 0 {
            tracing::warn!(lost, table = self.table, "routes of ours were removed from the kernel; adding them back");
        }
        // A refused prefix now routed through the interface in our table
        // is ours after all (an add that failed with EEXIST against our
        // own route): counted again, so it is removed with its peer.
        let ours_already: Vec<IpNet> = self.refused.iter().filter(|n| present.contains(n)).copied().collect();
        for n in ours_already {
            self.refused.remove(&n);
            self.installed.insert(n);
        }
        self.refused.retain(|n| self.synced.as_ref().is_some_and(|w| w.contains(n)));
        // One removed by someone else, or wanted again, needs no removal.
        self.unremoved.retain(|n| self.installed.contains(n) && !self.synced.as_ref().is_some_and(|w| w.contains(n)));
        if lost > 0 || !self.refused.is_empty() || !self.unremoved.is_empty() {
            self.synced = None;
        }
        Ok(())
    }

    /// The prefixes routed through the interface in the table now. A dump
    /// the kernel marks interrupted (the table changed under it) is an
    /// error: it may have missed routes, which `audit` would then re-add.
    fn dump(&mut self) -> io::Result<BTreeSet<IpNet>> {
        let mut found = BTreeSet::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            msg.header.table = u8::try_from(self.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
            msg.attributes = vec![RouteAttribute::Table(self.table), RouteAttribute::Oif(self.ifindex)];
            let (table, ifindex) = (self.table, self.ifindex);
            self.exchange(RouteNetlinkMessage::GetRoute(msg), NLM_F_REQUEST | NLM_F_DUMP, |reply| {
                if reply.header.flags & NLM_F_DUMP_INTR != 0 {
                    return Some(Err(io::Error::new(io::ErrorKind::Interrupted, "route dump interrupted")));
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => Some(Ok(())),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        let e = e.to_io();
                        // IPv4 says so of a table with no route yet.
                        Some(if e.raw_os_error() == Some(libc::ENOENT) { Ok(()) } else { Err(e) })
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => {
                        found.extend(ours(&r, table, ifindex));
                        None
                    }
                    _ => None,
                }
            })?;
        }
        Ok(found)
    }

    /// Removes every route this daemon installed. At shutdown the device
    /// is gone and the kernel has removed them with it: not found (or no
    /// such device) is what is expected then.
    pub fn remove_all(&mut self) {
        for net in std::mem::take(&mut self.installed) {
            if let Err(e) = self.change(net, false) {
                if !matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENODEV)) {
                    tracing::warn!(prefix = %net, error = %e, "cannot remove route");
                }
            }
        }
        self.synced = None;
    }

    /// Adds (exclusively) or deletes the route `net dev <interface>`.
    fn change(&mut self, net: IpNet, add: bool) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = match net {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        msg.header.destination_prefix_length = net.prefix_len();
        // Tables above 255 only fit the attribute.
        msg.header.table = u8::try_from(self.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Link;
        msg.header.kind = RouteType::Unicast;
        msg.attributes = vec![
            RouteAttribute::Destination(RouteAddress::from(net.network())),
            RouteAttribute::Oif(self.ifindex),
            RouteAttribute::Table(self.table),
        ];
        let (inner, flags) = if add {
            (RouteNetlinkMessage::NewRoute(msg), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        } else {
            (RouteNetlinkMessage::DelRoute(msg), NLM_F_REQUEST | NLM_F_ACK)
        };
        self.request(inner, flags)
    }

    /// Sends one request and waits for its acknowledgement.
    fn request(&mut self, inner: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.exchange(inner, flags, |reply| match reply.payload {
            NetlinkPayload::Error(e) => Some(match e.code {
                None => Ok(()),
                Some(_) => Err(e.to_io()),
            }),
            _ => None,
        })
    }

    /// Sends `inner` and hands each reply to it to `on_reply` until that
    /// returns an outcome (an acknowledgement, the end of a dump, an error).
    fn exchange(
        &mut self,
        inner: RouteNetlinkMessage,
        flags: u16,
        mut on_reply: impl FnMut(NetlinkMessage<RouteNetlinkMessage>) -> Option<io::Result<()>>,
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(inner));
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        self.socket.send(&out, 0)?;
        // A dump's parts come up to 32 KiB each.
        let mut buf = Vec::with_capacity(32 << 10);
        loop {
            buf.clear();
            let n = self.socket.recv(&mut buf, 0)?;
            let mut at = 0;
            while at < n {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    if let Some(outcome) = on_reply(reply) {
                        return outcome;
                    }
                }
                if len == 0 {
                    break;
                }
                at += len;
            }
        }
    }
}

/// The destination of a dumped route, if it is through interface
/// `ifindex` in `table`. (The kernel filters by both with strict checking;
/// this holds without it.)
fn ours(r: &RouteMessage, table: u32, ifindex: u32) -> Option<IpNet> {
    let mut in_table = u32::from(r.header.table);
    let (mut oif, mut dst) = (None, None);
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => in_table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(std::net::IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(std::net::IpAddr::V6(*ip)),
            _ => {}
        }
    }
    if in_table != table || oif != Some(ifindex) {
        return None;
    }
    IpNet::new(dst?, r.header.destination_prefix_length).ok()
}

impl Drop for RouteSync {
    fn drop(&mut self) {
        self.remove_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_dataplane::interface::Interface;
    use causeway_wireguard::{StaticSecret, Time};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn a_sites_prefixes_are_wanted_only_while_one_of_its_gateways_is_up() {
        let iface = Interface::new("cwrt0".into(), Some(StaticSecret::random(&mut rand_core::OsRng)), 1420, 1, 0);
        let iface = iface.unwrap();
        let key = || StaticSecret::random(&mut rand_core::OsRng).public_key();
        let (hub, gw1, gw2) = (
            iface.add_peer(key(), "hub".into()).unwrap(),
            iface.add_peer(key(), "west.gw1".into()).unwrap(),
            iface.add_peer(key(), "west.gw2".into()).unwrap(),
        );
        iface.update_routes(|r| {
            r.insert(net("10.1.0.0/16"), hub.clone().into());
            r.insert(net("10.255.0.0/24"), hub.clone().into());
            r.insert(net("0.0.0.0/0"), hub.clone().into());
            r.insert(net("10.255.2.1/32"), gw1.clone().into());
        });
        let west = iface.add_site("west");
        iface.set_site_prefixes(&west, &[net("10.2.0.0/16"), net("fd00:2::/48")]);
        let empty = iface.add_site("empty");
        iface.set_site_prefixes(&empty, &[net("10.9.0.0/16")]);
        let connected: BTreeSet<IpNet> = [net("10.255.0.0/24")].into();
        let wanted_now = || wanted(&iface.routes_snapshot(), &connected);

        // No gateways yet: the site is unrouted; so is the empty one.
        let peers_only: BTreeSet<IpNet> = [net("10.1.0.0/16"), net("10.255.2.1/32")].into();
        assert_eq!(wanted_now(), (peers_only.clone(), Some(net("0.0.0.0/0"))));
        west.set_members(&[gw1.clone(), gw2.clone()], Time::ZERO);
        let mut with_west = peers_only.clone();
        with_west.extend([net("10.2.0.0/16"), net("fd00:2::/48")]);
        assert_eq!(wanted_now().0, with_west, "gateways that start up route the site");
        west.mark(&gw1, false, Time::ZERO);
        assert_eq!(wanted_now().0, with_west, "one of two down: still routed");
        west.mark(&gw2, false, Time::ZERO);
        assert_eq!(wanted_now().0, peers_only, "the last one down: withdrawn");
        west.mark(&gw2, true, Time::ZERO);
        assert_eq!(wanted_now().0, with_west, "one back: routed again");
        iface.remove_peer(gw2.public_key());
        assert_eq!(wanted_now().0, peers_only, "the only gateway up removed");
    }
}
