//! Prometheus metrics on an optional listen address (off by default).
//!
//! Values live where the data path already keeps them (peer counters,
//! drop counters, worker statistics); a scrape reads them into a fresh
//! prometheus-client registry and encodes it, so the data path does no
//! extra work for metrics. The HTTP side is in `http`.

use std::sync::atomic::AtomicU64;
use std::time::UNIX_EPOCH;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use causeway_dataplane::counters::Drop;

use crate::gateway::Gateway;

mod http;
mod sites;
pub use http::{bind, serve};

type Labels = Vec<(String, String)>;

fn counter_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    registry.register(name, help, f.clone());
    f
}

fn gauge_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge<f64, AtomicU64>> {
    let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(name, help, f.clone());
    f
}

/// The metrics text for one scrape.
pub fn render(iface: &Gateway) -> String {
    let mut r = Registry::with_prefix("causeway");
    let rx_bytes =
        counter_family(&mut r, "peer_rx_bytes", "Bytes received from the peer (WireGuard messages or ESP packets)");
    let tx_bytes =
        counter_family(&mut r, "peer_tx_bytes", "Bytes sent to the peer (WireGuard messages or ESP packets)");
    let rx_packets = counter_family(&mut r, "peer_rx_packets", "Authenticated packets received from the peer");
    let tx_packets = counter_family(&mut r, "peer_tx_packets", "Packets sent to the peer");
    let handshakes = counter_family(&mut r, "peer_handshakes", "Handshakes completed with the peer");
    let failovers =
        counter_family(&mut r, "peer_endpoint_failovers", "Switches to the peer's next configured endpoint");
    let latest = gauge_family(&mut r, "peer_latest_handshake_seconds", "Unix time of the latest handshake (0: never)");
    let up = gauge_family(&mut r, "peer_up", "1 when the peer has a usable session");
    let configured = gauge_family(&mut r, "peers_configured", "Peers configured on the interface");
    let peers_up = gauge_family(&mut r, "peers_up", "Peers with a usable session");
    let drops = counter_family(&mut r, "dropped_packets", "Packets dropped, by reason");
    let worker = counter_family(&mut r, "worker_operations", "Data-plane syscalls and packets, per worker");
    let cookies =
        counter_family(&mut r, "cookie_replies_sent", "Handshake messages answered with a cookie (under load)");
    let ike_drops = counter_family(&mut r, "ike_dropped_messages", "IKE messages dropped, by reason");

    let now = iface.clock.now();
    let base = vec![("interface".to_string(), iface.name.clone())];
    let mut n_up = 0;
    let peers = iface.peers();
    for p in &peers {
        let mut l = base.clone();
        l.push(("peer".into(), if p.name().is_empty() { p.public_key().to_base64() } else { p.name() }));
        l.push(("public_key".into(), p.public_key().to_base64()));
        let s = p.crypto().stats();
        rx_bytes.get_or_create(&l).inc_by(s.rx_bytes);
        tx_bytes.get_or_create(&l).inc_by(s.tx_bytes);
        rx_packets.get_or_create(&l).inc_by(s.rx_packets);
        tx_packets.get_or_create(&l).inc_by(s.tx_packets);
        handshakes.get_or_create(&l).inc_by(s.handshakes);
        failovers.get_or_create(&l).inc_by(p.failovers());
        let at = s
            .last_handshake
            .map_or(0.0, |t| iface.clock.wall_time_of(t).duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64());
        latest.get_or_create(&l).set(at);
        let is_up = p.crypto().keypair_for_sending(now).is_ok();
        n_up += usize::from(is_up);
        up.get_or_create(&l).set(if is_up { 1.0 } else { 0.0 });
    }
    // IPsec peers: the same families (labelled protocol="ipsec", with no
    // public key), and the child SAs installed in the data plane.
    let child_sas =
        gauge_family(&mut r, "ipsec_child_sas", "Child SAs installed for the IPsec peer (2 during a rekey)");
    let ipsec = iface.ipsec.peers();
    let spis = iface.ipsec.spis();
    for p in &ipsec {
        let Some(link) = p.ipsec() else { continue };
        let mut l = base.clone();
        l.push(("peer".into(), p.name()));
        l.push(("protocol".into(), "ipsec".into()));
        let ((rx, tx), (rxp, txp)) = (link.bytes(), link.packets());
        rx_bytes.get_or_create(&l).inc_by(rx);
        tx_bytes.get_or_create(&l).inc_by(tx);
        rx_packets.get_or_create(&l).inc_by(rxp);
        tx_packets.get_or_create(&l).inc_by(txp);
        let is_up = link.sending().is_some();
        n_up += usize::from(is_up);
        up.get_or_create(&l).set(if is_up { 1.0 } else { 0.0 });
        child_sas.get_or_create(&l).set(spis.iter().filter(|(_, _, n)| *n == p.name()).count() as f64);
    }
    configured.get_or_create(&base).set((peers.len() + ipsec.len()) as f64);
    peers_up.get_or_create(&base).set(n_up as f64);
    for d in Drop::ALL {
        let mut l = base.clone();
        l.push(("reason".into(), d.name().into()));
        drops.get_or_create(&l).inc_by(iface.counters.get(*d));
    }
    cookies.get_or_create(&base).inc_by(iface.counters.cookie_replies.load(std::sync::atomic::Ordering::Relaxed));
    // Zeros before IKE starts, as `dropped_packets` has every reason: a
    // series that appears only with its first drop is missed by rate().
    let ike = iface.ike().map(|ike| ike.drops()).unwrap_or_default();
    for (reason, n) in ike.iter() {
        let mut l = base.clone();
        l.push(("reason".into(), reason.name().into()));
        ike_drops.get_or_create(&l).inc_by(n);
    }
    for (i, w) in iface.worker_stats.iter().enumerate() {
        for (what, v) in w.snapshot() {
            let mut l = base.clone();
            l.push(("worker".into(), i.to_string()));
            l.push(("what".into(), what.into()));
            worker.get_or_create(&l).inc_by(v);
        }
    }
    sites::render(&mut r, iface, &base);
    let mut out = String::new();
    // Encoding into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use causeway_dataplane::interface::Interface;
    use std::sync::Arc;

    fn interface() -> Gateway {
        let iface = Interface::new(
            "cwtest0".into(),
            Some(causeway_wireguard::StaticSecret::random(&mut rand_core::OsRng)),
            1420,
            1,
            0,
        )
        .unwrap();
        iface
            .add_peer(causeway_wireguard::StaticSecret::random(&mut rand_core::OsRng).public_key(), "dc-east".into())
            .unwrap();
        Gateway::new(Arc::new(iface))
    }

    #[test]
    fn renders_every_family_with_labels() {
        let text = render(&interface());
        for needle in [
            "causeway_peer_rx_bytes_total{interface=\"cwtest0\",peer=\"dc-east\",public_key=",
            "causeway_peer_up{",
            "causeway_peers_configured{interface=\"cwtest0\"} 1",
            "causeway_peers_up{interface=\"cwtest0\"} 0",
            "causeway_dropped_packets_total{interface=\"cwtest0\",reason=\"source_not_allowed\"} 0",
            "causeway_ike_dropped_messages_total{interface=\"cwtest0\",reason=\"unknown_spi\"} 0",
            "causeway_worker_operations_total{interface=\"cwtest0\",worker=\"0\",what=\"tun_reads\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn ipsec_peers_have_their_own_rows() {
        let iface = interface();
        iface.add_ipsec_peer("dc-west");
        let text = render(&iface);
        for needle in [
            "causeway_peer_up{interface=\"cwtest0\",peer=\"dc-west\",protocol=\"ipsec\"} 0",
            "causeway_ipsec_child_sas{interface=\"cwtest0\",peer=\"dc-west\",protocol=\"ipsec\"} 0",
            "causeway_peer_tx_bytes_total{interface=\"cwtest0\",peer=\"dc-west\",protocol=\"ipsec\"} 0",
            "causeway_peers_configured{interface=\"cwtest0\"} 2",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn sites_have_gauges_per_site_and_per_gateway() {
        let gw = interface();
        let key = || causeway_wireguard::StaticSecret::random(&mut rand_core::OsRng).public_key();
        let members: Vec<_> = (1..=2).map(|i| gw.add_peer(key(), format!("west.gw{i}")).unwrap()).collect();
        let site = gw.add_site("west");
        gw.set_site_prefixes(&site, &["10.2.0.0/16".parse().unwrap()]);
        site.set_members(&members, gw.clock.now());
        site.mark(&members[1], false, gw.clock.now());
        let text = render(&gw);
        for needle in [
            "causeway_site_gateways{interface=\"cwtest0\",site=\"west\"} 2",
            "causeway_site_gateways_up{interface=\"cwtest0\",site=\"west\"} 1",
            "causeway_site_routed{interface=\"cwtest0\",site=\"west\"} 1",
            "causeway_site_gateway_up{interface=\"cwtest0\",site=\"west\",peer=\"west.gw1\"} 1",
            "causeway_site_gateway_up{interface=\"cwtest0\",site=\"west\",peer=\"west.gw2\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(!text.contains("causeway_registry_stale"), "only with a registry");
        site.mark(&members[0], false, gw.clock.now());
        assert!(render(&gw).contains("causeway_site_routed{interface=\"cwtest0\",site=\"west\"} 0"));
        gw.set_registry_status(Some(crate::api::types::RegistryStatus {
            endpoints: vec!["http://198.18.0.100:2379".into()],
            site: "east".into(),
            name: "east-gw1".into(),
            state: "stale".into(),
            since_secs: 3,
            last_error: Some("connection refused".into()),
            gateways: 4,
            revision: 9,
        }));
        assert!(render(&gw).contains("causeway_registry_stale{interface=\"cwtest0\"} 1"));
    }

    #[test]
    fn ike_drops_are_counted_by_reason() {
        use crate::ipsec::testing::{gateway_with_ike, send_to_ike, wait_for};
        use causeway_ikev2::DropReason;
        let (net, gw) = gateway_with_ike();
        let line = |reason: DropReason, n: u64| {
            format!("causeway_ike_dropped_messages_total{{interface=\"mem0\",reason=\"{}\"}} {n}", reason.name())
        };
        assert!(render(&gw).contains(&line(DropReason::Malformed, 0)));
        send_to_ike(&net, b"not an IKE message");
        wait_for("the IKE thread to drop it", || render(&gw).contains(&line(DropReason::Malformed, 1)));
        let text = render(&gw);
        for r in DropReason::ALL.into_iter().filter(|r| *r != DropReason::Malformed) {
            assert!(text.contains(&line(r, 0)), "missing {} in\n{text}", line(r, 0));
        }
        gw.stop_ike();
    }

    /// Every metric the Grafana dashboard queries is one the gateway exports.
    #[test]
    fn dashboard_uses_only_exported_metrics() {
        let text = render(&interface());
        let dashboard = include_str!("../../packaging/grafana-dashboard.json");
        let v: serde_json::Value = serde_json::from_str(dashboard).unwrap();
        let mut checked = 0;
        for panel in v["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if word.starts_with("causeway_") {
                        assert!(text.contains(&format!("{word}{{")), "dashboard queries {word}, which is not exported");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 10);
    }
}
