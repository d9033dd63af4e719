//! The `status` answer, read from the running gateway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use causeway_dataplane::counters::{Drop, WorkerStats};

use std::collections::HashMap;

use causeway_dataplane::peer::PeerState as DpPeer;
use causeway_ikev2::IkeState;
use ipnet::IpNet;

use super::types::{ChildSaStatus, IpsecPeerStatus, KernelRoutes, PeerState, PeerStatus, Status, WorkerCounters};
use crate::gateway::Gateway;

/// The interface's state as tunctl shows it.
pub fn status(iface: &Gateway) -> Status {
    let now = iface.clock.now();
    let by_peer = iface.allowed_ips_by_peer();
    let peers = iface
        .peers()
        .iter()
        .map(|p| {
            let (rx_rate, tx_rate) = p.rates();
            let allowed = by_peer.get(&Arc::as_ptr(p)).map(Vec::as_slice).unwrap_or_default();
            let stats = p.crypto().stats();
            let handshake_unix = stats
                .last_handshake
                .map(|t| iface.clock.wall_time_of(t).duration_since(UNIX_EPOCH).unwrap_or_default().as_secs());
            let has_session = p.crypto().keypair_for_sending(now).is_ok();
            let state = match (has_session, stats.last_handshake, p.crypto().handshake_in_flight()) {
                (true, _, _) => PeerState::Up,
                (false, _, true) => PeerState::Handshaking,
                (false, Some(_), false) => PeerState::Stale,
                (false, None, false) => PeerState::Configured,
            };
            PeerStatus {
                name: p.name(),
                public_key: p.public_key().to_base64(),
                endpoint: p.endpoint().map(|e| e.addr.to_string()),
                allowed_ips: allowed.iter().map(ToString::to_string).collect(),
                latest_handshake: handshake_unix,
                latest_handshake_age_secs: stats.last_handshake.map(|t| now.saturating_since(t).as_secs()),
                rx_bytes: stats.rx_bytes,
                tx_bytes: stats.tx_bytes,
                rx_packets: stats.rx_packets,
                tx_packets: stats.tx_packets,
                persistent_keepalive: p.crypto().timers.persistent_keepalive(),
                handshakes_initiated: p.handshakes_initiated.load(Ordering::Relaxed),
                state,
                staged_packets: p.staged_len(),
                tx_batches_queued: p.tx.len(),
                rx_batches_queued: p.rx.len(),
                endpoint_failovers: p.failovers(),
                rx_bytes_per_sec: rx_rate,
                tx_bytes_per_sec: tx_rate,
            }
        })
        .collect();
    Status {
        interface: iface.name.clone(),
        public_key: iface.device.public_key().map(|k| k.to_base64()),
        listen_port: iface.listen_port(),
        mtu: iface.mtu(),
        workers: iface.workers,
        udp_gso_segments: iface.sockets().sockets[0].max_gso_segments(),
        kernel_routes: iface.route_table().map(|table| KernelRoutes {
            table,
            installed: iface.kernel_routes().unwrap_or_default().iter().map(ToString::to_string).collect(),
        }),
        peers,
        ipsec_peers: ipsec_peers(iface, &by_peer),
        drops: Drop::ALL.iter().map(|d| (d.name().to_string(), iface.counters.get(*d))).collect(),
        cookie_replies_sent: iface.counters.cookie_replies.load(Ordering::Relaxed),
        worker_stats: iface.worker_stats.iter().map(worker_counters).collect(),
        ike_drops: iface
            .ike()
            .map(|ike| ike.drops().iter().map(|(r, n)| (r.name().to_string(), n)).collect())
            .unwrap_or_default(),
    }
}

/// IPsec peers: the IKE core's view and the data plane's counters.
fn ipsec_peers(gw: &Gateway, by_peer: &HashMap<*const DpPeer, Vec<IpNet>>) -> Vec<IpsecPeerStatus> {
    let Some(ike) = gw.ike() else { return Vec::new() };
    gw.ipsec
        .peers()
        .iter()
        .filter_map(|p| {
            let name = p.name();
            let cfg = ike.config(&name)?;
            let st = ike.status(&name);
            let link = p.ipsec()?;
            let (rx_bytes, tx_bytes) = link.bytes();
            let (rx_packets, tx_packets) = link.packets();
            let state = st.as_ref().map_or(IkeState::Down, |s| s.state);
            Some(IpsecPeerStatus {
                ike_state: ike_state_name(state).into(),
                up: link.sending().is_some(),
                remote: st.as_ref().and_then(|s| s.remote).map(|a| a.to_string()),
                local_id: cfg.local_id.to_string(),
                remote_id: cfg.remote_id.to_string(),
                ike_proposal: st.as_ref().and_then(|s| s.suite).map(|s| crate::ipsec::convert::suite_name(&s)),
                ike_spis: st.as_ref().map_or(String::new(), |s| format!("{:016x}_i {:016x}_r", s.spi_i, s.spi_r)),
                initiator: st.as_ref().is_some_and(|s| s.initiator),
                nat: st.as_ref().is_some_and(|s| s.nat),
                child_sas: st
                    .as_ref()
                    .map(|s| {
                        s.children
                            .iter()
                            .map(|c| ChildSaStatus {
                                spi_in: format!("{:08x}", c.spi_in),
                                spi_out: format!("{:08x}", c.spi_out),
                                cipher: c.cipher.to_string(),
                                encapsulation: if c.encap { "udp" } else { "esp" }.into(),
                                age_secs: c.age.as_secs(),
                                local_ts: c.local_ts.iter().map(ToString::to_string).collect(),
                                remote_ts: c.remote_ts.iter().map(ToString::to_string).collect(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                ike_rekeys: st.as_ref().map_or(0, |s| s.ike_rekeys),
                child_rekeys: st.as_ref().map_or(0, |s| s.child_rekeys),
                allowed_ips: by_peer
                    .get(&Arc::as_ptr(p))
                    .map(|v| v.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                rx_bytes,
                tx_bytes,
                rx_packets,
                tx_packets,
                staged_packets: p.staged_len(),
                last_failure: st.and_then(|s| s.failure).map(|f| f.to_string()),
                name,
            })
        })
        .collect()
}

/// Field by field rather than through `WorkerStats::snapshot`'s names, so
/// a counter renamed in the data plane does not compile until it is
/// renamed (or kept) here too.
fn worker_counters(w: &WorkerStats) -> WorkerCounters {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    WorkerCounters {
        tun_reads: g(&w.tun_reads),
        tun_packets: g(&w.tun_packets),
        udp_sends: g(&w.udp_sends),
        udp_datagrams_sent: g(&w.udp_datagrams_sent),
        udp_receives: g(&w.udp_receives),
        udp_datagrams_received: g(&w.udp_datagrams_received),
        tun_writes: g(&w.tun_writes),
        tun_packets_written: g(&w.tun_packets_written),
        crypto_batches: g(&w.crypto_batches),
        crypto_batches_helped: g(&w.crypto_batches_helped),
        helper_wakeups: g(&w.helper_wakeups),
        pool_stalls: g(&w.pool_stalls),
    }
}

/// An IKE state as the status (and `tunctl peers`) words it.
pub(super) fn ike_state_name(state: IkeState) -> &'static str {
    match state {
        IkeState::Established => "established",
        IkeState::Connecting => "connecting",
        IkeState::Deleting => "deleting",
        IkeState::Down => "down",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipsec::testing::{gateway_with_ike, send_to_ike, wait_for};
    use causeway_ikev2::DropReason;

    #[test]
    fn ike_drops_are_reported_while_ike_runs() {
        let (net, gw) = gateway_with_ike();
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        let before = status(&gw).ike_drops;
        assert_eq!(before.keys().map(String::as_str).collect::<Vec<_>>(), names, "every reason, zeros too");
        assert!(before.values().all(|n| *n == 0), "{before:?}");
        send_to_ike(&net, b"not an IKE message");
        wait_for("the IKE thread to drop it", || status(&gw).ike_drops.get("malformed") == Some(&1));
        let after = status(&gw).ike_drops;
        assert_eq!(after.values().sum::<u64>(), 1, "{after:?}");
        gw.stop_ike();
        assert!(status(&gw).ike_drops.is_empty(), "nothing to tell without IKE");
    }
}
