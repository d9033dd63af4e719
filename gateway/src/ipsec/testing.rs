//! A gateway with IKE running on an in-memory network, and a stranger
//! that sends to its port 500: for the tests of what the status and the
//! metrics report of IKE, which need the IKE thread's real counters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_dataplane::interface::{Interface, Options};
use causeway_dataplane::io::Bind;
use causeway_dataplane::memory::MemNet;

use crate::gateway::Gateway;

const GATEWAY: &str = "198.18.0.1";

/// A gateway named "mem0" at 198.18.0.1, IKE started on port 500.
pub(crate) fn gateway_with_ike() -> (Arc<MemNet>, Gateway) {
    let net = MemNet::new();
    let binder = net.host(GATEWAY.parse().unwrap(), 64);
    let options = Options { mtu: 1420, workers: 1, port: 51820, binder: binder.clone(), batches_per_worker: 8 };
    let iface = Interface::with_options("mem0".into(), None, options).unwrap();
    let gw = Gateway::new(Arc::new(iface));
    gw.set_ipsec_ports(500, 4500);
    gw.ensure_ike(&*binder, false).unwrap();
    (net, gw)
}

/// Sends `data` to the gateway's port 500 from a host no peer is at.
pub(crate) fn send_to_ike(net: &Arc<MemNet>, data: &[u8]) {
    let (sockets, _) = net.host("198.18.0.99".parse().unwrap(), 1).bind(1, 0, 0).unwrap();
    let to = SocketAddr::new(GATEWAY.parse().unwrap(), 500);
    sockets[0].send(to, None, data, None).unwrap();
}

/// Waits for the IKE thread to have done what `done` checks, or panics.
pub(crate) fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
