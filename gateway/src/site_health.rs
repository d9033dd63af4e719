//! The sites' health tick, on the control plane's 100 ms timer: observes
//! every gateway of every site (`site::observe_peer`), moves flows off a
//! gateway that went down and back when it returns (a new bucket table),
//! and keeps the probes going:
//!
//! - a WireGuard gateway that is down gets a handshake initiation every
//!   tick, which the protocol turns into at most one per REKEY_TIMEOUT
//!   (5 s), so it is found again when it returns; one that restarted
//!   reaches out itself, and is up as soon as that handshake completes;
//! - a WireGuard gateway with a persistent keepalive gets a keepalive
//!   when nothing went to it for that long, even while packets arrive from
//!   it (when the protocol's own keepalive stays silent): it watches us as
//!   we watch it, and must not take us for dead because our side of the
//!   traffic took another of our site's gateways.
//!
//! IPsec gateways are not probed here: IKE retries (`initiate`) and its
//! dead peer detection are what bring them back or take their SA away; a
//! gateway left without an SA counts as failing from then on (see
//! `observe_peer`), so a dead one goes down even while idle.

use causeway_dataplane::health::Change;
use causeway_dataplane::io::Socket;
use causeway_dataplane::site::observe_peer;
use causeway_dataplane::wireguard::{send_initiation, send_keepalive};
use causeway_wireguard::Time;

use crate::gateway::Gateway;

/// One tick over every site; returns how many gateways changed state.
pub fn tick(gw: &Gateway, sock: &dyn Socket, now: Time) -> usize {
    let mut changes = 0;
    for site in gw.sites() {
        let tick = site.tick(now, |p| observe_peer(p, now));
        for t in &tick.transitions {
            changes += 1;
            let peer = t.peer.label();
            match t.change {
                Change::Down(why) => tracing::warn!(
                    site = site.name(),
                    %peer,
                    reason = why.name(),
                    silent_secs = format!("{:.1}", t.silent_for.as_secs_f64()),
                    "site gateway down: its flows move to the site's other gateways"
                ),
                Change::Up => {
                    tracing::info!(site = site.name(), %peer, "site gateway up: its flows come back to it")
                }
            }
        }
        for due in &tick.due {
            // Without an endpoint there is nobody to probe: it calls us.
            if due.peer.wireguard().is_none() || due.peer.endpoint().is_none() {
                continue;
            }
            if due.probe {
                send_initiation(gw, &due.peer, sock, now);
            } else if due.keepalive {
                send_keepalive(gw, &due.peer, sock, now);
            }
        }
    }
    changes
}
