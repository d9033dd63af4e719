//! strongSwan in the comparison: charon to charon with kernel-libipsec
//! (lab/src/strongswan.rs), in the same topologies as the WireGuard
//! implementations. Its tunnel differs in two ways the results carry as a
//! note: ESP always in UDP (kernel-libipsec has no raw ESP) and a TUN MTU
//! fixed at 1400. The CPU measured is charon's, which runs IKE and ESP.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use causeway_lab::strongswan::{Charon, Connection, StartAction};
use causeway_lab::Netns;

use crate::topology::{clamp_mss, LAN_A, LAN_B};

/// What strongSwan is measured with: the proposals Causeway's IPsec is
/// compared on, and why its tunnel differs from the others'.
const STRONGSWAN_IKE: &str = "aes256gcm16-prfsha256-x25519";
const STRONGSWAN_ESP: &str = "aes256gcm16";
pub const STRONGSWAN_NOTE: &str = "strongswan: strongSwan 5.9.8 charon to charon, IKE aes256gcm16-prfsha256-x25519, \
    ESP aes256gcm16 in UDP (encap = yes: kernel-libipsec has no raw ESP), ESP in charon's threads through \
    kernel-libipsec's TUN, whose MTU is fixed at 1400 (not 1420); CPU is charon's (IKE and ESP)";

/// strongSwan on both gateways, b answering and a initiating. Direct: the
/// traffic selectors are the gateways' inner addresses (10.90.0.x/32 on
/// lo, where charon's table-220 route finds its source); routed: the LANs,
/// with iptables' clamp on libipsec's TUN. charon installs the routes.
pub fn start_strongswan(a: &Netns, b: &Netns, dir: &Path, routed: bool) -> anyhow::Result<Vec<Charon>> {
    let (ts_a, ts_b) = if routed {
        (LAN_A, LAN_B)
    } else {
        a.ip(&["addr", "add", "10.90.0.1/32", "dev", "lo"])?;
        b.ip(&["addr", "add", "10.90.0.2/32", "dev", "lo"])?;
        ("10.90.0.1/32", "10.90.0.2/32")
    };
    let conn = Connection::new("198.18.0.1", "198.18.0.2")
        .ids("bench-a.causeway.test", "bench-b.causeway.test")
        .proposals(STRONGSWAN_IKE, STRONGSWAN_ESP)
        .traffic(&[ts_a], &[ts_b])
        .encap(true)
        .start_action(StartAction::Start);
    let responder = Charon::start(b, dir, &conn.mirror())?;
    let initiator = Charon::start(a, dir, &conn)?;
    initiator
        .wait_for_log("CHILD_SA * established with SPIs", Duration::from_secs(20))
        .with_context(|| format!("strongSwan: no CHILD_SA; the responder's log:\n{}", responder.log_text()))?;
    if routed {
        clamp_mss(a, &initiator.tun_name()?)?;
        clamp_mss(b, &responder.tun_name()?)?;
    }
    Ok(vec![initiator, responder])
}
