//! The comparison's topologies: how the namespaces are wired (two
//! gateways on a veth WAN, and in the routed topology a host on an MTU
//! 1500 LAN behind each), and the routing and MSS clamp the routed one
//! adds on the gateways.

use std::time::Duration;

use causeway_lab::{self as lab, Netns};

/// How the namespaces are wired.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// Two gateways on the WAN; traffic between their tunnel addresses.
    Direct,
    /// host-a — gw-a —WAN— gw-b — host-b: the gateways forward between an
    /// MTU 1500 LAN and the MTU 1420 tunnel; traffic between the hosts.
    Routed,
}

impl Topology {
    pub fn name(self) -> &'static str {
        match self {
            Topology::Direct => "direct",
            Topology::Routed => "routed",
        }
    }

    pub fn describe(name: &str) -> &'static str {
        match name {
            "routed" => {
                "routed: host-a — gw-a —WAN— gw-b — host-b, LANs MTU 1500, tunnel MTU 1420; iperf3 and ping between \
                 the hosts; TCP MSS clamped to the tunnel on the gateways, 1380 (1360 for strongSwan's 1400-byte TUN; by \
                 Causeway itself, by iptables TCPMSS for the others)"
            }
            _ => "direct: two gateways on a veth WAN, tunnel MTU 1420; iperf3 and ping between the tunnel addresses",
        }
    }
}

/// Routed topology: the LAN behind each gateway and the host on it.
pub const LAN_A: &str = "10.91.1.0/24";
pub const LAN_B: &str = "10.91.2.0/24";
pub const HOST_B: &str = "10.91.2.2";

/// Routed topology: makes `gw` a router between its LAN and the tunnel
/// interface `ifname`, with a route to the peer's LAN through the tunnel.
/// `clamp` adds iptables' TCPMSS clamp for SYNs leaving through the tunnel
/// (for the implementations that do not clamp themselves).
pub fn route_through_tunnel(gw: &Netns, ifname: &str, peer_lan: &str, clamp: bool) -> anyhow::Result<()> {
    // The daemon may bring its interface up a moment after its socket.
    let mut tries = 0;
    while let Err(e) = gw.ip(&["route", "add", peer_lan, "dev", ifname]) {
        tries += 1;
        if tries == 50 {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if clamp {
        clamp_mss(gw, ifname)?;
    }
    Ok(())
}

/// iptables' TCPMSS clamp for SYNs the gateway forwards into `ifname`.
pub fn clamp_mss(gw: &Netns, ifname: &str) -> anyhow::Result<()> {
    gw.exec(
        "iptables",
        &[
            "-t",
            "mangle",
            "-A",
            "FORWARD",
            "-o",
            ifname,
            "-p",
            "tcp",
            "--tcp-flags",
            "SYN,RST",
            "SYN",
            "-j",
            "TCPMSS",
            "--clamp-mss-to-pmtu",
        ],
    )?;
    Ok(())
}

/// Routed topology: a host on an MTU 1500 LAN behind `gw`.
pub fn lan_host(gw: &Netns, tag: &str, gw_addr: &str, host_addr: &str) -> anyhow::Result<Netns> {
    let host = Netns::new(tag)?;
    lab::veth(gw, "lan0", &[&format!("{gw_addr}/24")], &host, "lan0", &[&format!("{host_addr}/24")])?;
    gw.ip(&["link", "set", "lan0", "mtu", "1500"])?;
    host.ip(&["link", "set", "lan0", "mtu", "1500"])?;
    host.ip(&["route", "add", "default", "via", gw_addr])?;
    gw.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
    Ok(host)
}
