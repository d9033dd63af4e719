//! Typed bird.conf for the two roles BIRD plays in the fleet lab: a
//! gateway's speaker, which learns the kernel routes causewayd installs and
//! exports them over eBGP to its site router, and the site router's, which
//! takes them from every gateway of its site and installs them as one
//! multipath (ECMP) kernel route.
//!
//! Choices, each checked against BIRD 2.0.12 (Debian bookworm):
//!
//! - eBGP, the router in AS 65000+S and every gateway of site S in AS
//!   65100+S: the routes of two gateways then have equal AS paths, which
//!   BIRD's `merge paths` needs to merge them, and eBGP's next hop is the
//!   gateway itself (direct), with no IGP to resolve it.
//! - The router takes sessions from any address of its LAN (dynamic BGP,
//!   `neighbor range`), so a gateway that joins later needs no edit of the
//!   router's configuration.
//! - The gateway imports from the kernel only routes of protocol `static`
//!   (`krt_source = 4`), which is what causewayd installs (RTPROT_STATIC,
//!   `dev IF scope link`), optionally only through its interface: the lab's
//!   own route to its site (`via` the router, protocol `boot`) is never
//!   exported back. `learn` makes BIRD take routes it did not install;
//!   it also hears the kernel's route notifications, so a deleted route is
//!   withdrawn at once, and `scan time 1` is the fallback.
//! - Short BGP timers (hold 3 s, keepalive 1 s, retries after 1 s): a test
//!   waits seconds, not BIRD's default minutes, for a session.
//! - Protocol names avoid BIRD's keywords (`gw`, `router` are ones).
//!
//! Invariants: the text names no file (BIRD logs to stderr, which `Bird`
//! sends to its own log file); addresses, prefixes and AS numbers are typed
//! values, and the one string pasted in, the interface name, is checked
//! first, so a configuration cannot be altered through its inputs.

use std::net::Ipv4Addr;

use anyhow::bail;

/// The BGP timers both roles use.
const TIMERS: &str = "hold time 3; keepalive time 1; connect delay time 1; connect retry time 1; error wait time 1, 5;";

/// The AS of site `site`'s router.
pub fn router_as(site: u8) -> u32 {
    65000 + u32::from(site)
}

/// The AS every gateway of site `site` speaks from.
pub fn gateways_as(site: u8) -> u32 {
    65100 + u32::from(site)
}

/// A gateway's BIRD: kernel routes of causewayd out to the site router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpeaker {
    /// Its LAN address, also its router id.
    pub address: Ipv4Addr,
    pub local_as: u32,
    /// The site router's LAN address.
    pub router: Ipv4Addr,
    pub router_as: u32,
    /// Export only routes through this interface (causewayd's); `None`
    /// exports every `static`-protocol route.
    pub interface: Option<String>,
}

impl GatewaySpeaker {
    pub fn to_bird_conf(&self) -> anyhow::Result<String> {
        let mut import = "krt_source = 4".to_string();
        if let Some(ifname) = &self.interface {
            let valid = !ifname.is_empty()
                && ifname.len() <= 15
                && ifname.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !valid {
                bail!("{ifname:?} is not an interface name");
            }
            import += &format!(" && ifname = \"{ifname}\"");
        }
        let GatewaySpeaker { address, local_as, router, router_as, .. } = self;
        Ok(format!(
            "router id {address};\n\
             log stderr all;\n\
             protocol device {{ scan time 1; }}\n\
             # causewayd's routes (protocol static), learnt from the kernel.\n\
             protocol kernel causeway_routes {{\n  \
               ipv4 {{ import where {import}; export none; }};\n  \
               learn;\n  \
               scan time 1;\n\
             }}\n\
             protocol bgp site_router {{\n  \
               local {address} as {local_as};\n  \
               neighbor {router} as {router_as};\n  \
               {TIMERS}\n  \
               ipv4 {{ import none; export where source = RTS_INHERIT; next hop self; }};\n\
             }}\n"
        ))
    }
}

/// A site router's BIRD: every gateway's routes in, merged into multipath
/// kernel routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSpeaker {
    /// Its LAN address (on the gateways' segment), also its router id.
    pub address: Ipv4Addr,
    pub local_as: u32,
    /// The segment its gateways speak from, such as "10.1.0.0/24".
    pub gateways_range: ipnet::Ipv4Net,
    pub gateways_as: u32,
}

impl RouterSpeaker {
    pub fn to_bird_conf(&self) -> String {
        let RouterSpeaker { address, local_as, gateways_range, gateways_as } = self;
        // BIRD refuses a range with host bits set.
        let gateways_range = gateways_range.trunc();
        format!(
            "router id {address};\n\
             log stderr all;\n\
             protocol device {{ scan time 1; }}\n\
             # BGP routes into the kernel; equal ones from several gateways\n\
             # become one multipath route.\n\
             protocol kernel site_fib {{\n  \
               ipv4 {{ import none; export all; }};\n  \
               merge paths on;\n\
             }}\n\
             protocol bgp site_gateways {{\n  \
               local {address} as {local_as};\n  \
               neighbor range {gateways_range} as {gateways_as};\n  \
               {TIMERS}\n  \
               ipv4 {{ import all; export none; }};\n\
             }}\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(interface: Option<&str>) -> GatewaySpeaker {
        GatewaySpeaker {
            address: Ipv4Addr::new(10, 1, 0, 11),
            local_as: gateways_as(1),
            router: Ipv4Addr::new(10, 1, 0, 1),
            router_as: router_as(1),
            interface: interface.map(String::from),
        }
    }

    #[test]
    fn gateway_exports_causeway_routes_to_its_router() {
        let text = gateway(Some("cw123")).to_bird_conf().unwrap();
        assert!(text.contains("router id 10.1.0.11;"), "{text}");
        assert!(text.contains("import where krt_source = 4 && ifname = \"cw123\";"), "{text}");
        assert!(text.contains("learn;"), "{text}");
        assert!(text.contains("local 10.1.0.11 as 65101;"), "{text}");
        assert!(text.contains("neighbor 10.1.0.1 as 65001;"), "{text}");
        assert!(text.contains("export where source = RTS_INHERIT; next hop self;"), "{text}");
        let any = gateway(None).to_bird_conf().unwrap();
        assert!(any.contains("import where krt_source = 4;"), "{any}");
    }

    #[test]
    fn a_bad_interface_name_is_refused() {
        for bad in ["", "a\"; export all; #", "sixteen-chars-xx", "a b"] {
            assert!(gateway(Some(bad)).to_bird_conf().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn router_merges_paths_from_its_lan() {
        let r = RouterSpeaker {
            address: Ipv4Addr::new(10, 2, 0, 1),
            local_as: router_as(2),
            gateways_range: "10.2.0.1/24".parse().unwrap(),
            gateways_as: gateways_as(2),
        };
        let text = r.to_bird_conf();
        assert!(text.contains("merge paths on;"), "{text}");
        assert!(text.contains("neighbor range 10.2.0.0/24 as 65102;"), "{text}");
        assert!(text.contains("local 10.2.0.1 as 65002;"), "{text}");
        assert!(text.contains("import all; export none;"), "{text}");
    }
}
