//! A Linux bridge inside a lab namespace: one L2 segment that several
//! namespaces plug into, each with a veth whose other end is a port of the
//! bridge. The fleet's WAN (gateways and etcd members on 198.18.0.0/24) and
//! each site's LAN (router and gateways on 10.S.0.0/24) are bridges.
//!
//! Invariants: a `Bridge` does not own its namespace; the bridge and every
//! port go with that namespace (and a plugged namespace's veth end goes
//! with its own namespace, taking the port with it). Port names are unique
//! per process (`unique`), so plugging never collides.

use anyhow::Context;

use crate::{unique, Netns};

/// A bridge device in a namespace.
#[derive(Debug, Clone)]
pub struct Bridge {
    /// The bridge's device name in its namespace.
    pub name: String,
    /// The namespace holding it.
    pub netns: String,
}

impl Bridge {
    /// Creates the bridge `name` in `ns`, up, with `addrs` on it (the
    /// router's LAN address, say; none for a plain switch). The bridge has
    /// no STP, so a port forwards as soon as it is up.
    pub fn new(ns: &Netns, name: &str, addrs: &[&str]) -> anyhow::Result<Bridge> {
        ns.ip(&["link", "add", name, "type", "bridge"]).context("cannot create a bridge")?;
        for addr in addrs {
            ns.ip(&["addr", "add", addr, "dev", name])?;
        }
        ns.ip(&["link", "set", name, "up"])?;
        Ok(Bridge { name: name.to_string(), netns: ns.name.clone() })
    }

    /// Plugs `ns` into the bridge: a veth named `ifname` in `ns`, with
    /// `addrs`, whose peer is a new port of the bridge. Returns the port's
    /// name (in the bridge's namespace): setting it down cuts `ns` off.
    pub fn attach(&self, ns: &Netns, ifname: &str, addrs: &[&str]) -> anyhow::Result<String> {
        let port = unique("bp");
        let out = std::process::Command::new("ip")
            .args(["link", "add", ifname, "netns", &ns.name, "type", "veth", "peer", "name", &port])
            .args(["netns", &self.netns])
            .output()
            .context("cannot run ip")?;
        if !out.status.success() {
            anyhow::bail!(
                "cannot plug {} into {}: {}",
                ns.name,
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let in_bridge_ns = |args: &[&str]| -> anyhow::Result<()> {
            let out = std::process::Command::new("ip").arg("-n").arg(&self.netns).args(args).output()?;
            if !out.status.success() {
                anyhow::bail!("ip {args:?} in {}: {}", self.netns, String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(())
        };
        in_bridge_ns(&["link", "set", &port, "master", &self.name])?;
        in_bridge_ns(&["link", "set", &port, "up"])?;
        for addr in addrs {
            ns.ip(&["addr", "add", addr, "dev", ifname])?;
        }
        ns.ip(&["link", "set", ifname, "up"])?;
        Ok(port)
    }

    /// Sets a port down or up (a cable pulled, or plugged back).
    pub fn set_port(&self, port: &str, up: bool) -> anyhow::Result<()> {
        let state = if up { "up" } else { "down" };
        let out = std::process::Command::new("ip").args(["-n", &self.netns, "link", "set", port, state]).output()?;
        if !out.status.success() {
            anyhow::bail!("cannot set {port} {state}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}
