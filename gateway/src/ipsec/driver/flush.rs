//! Handing the IKE core's work to the network and the data plane, after
//! every message it handled (so what is queued is one message's work):
//!
//! 1. take the datagrams and events the core queued;
//! 2. check and convert each new child SA, and publish its inbound half
//!    in the data plane (`prepare_child`);
//! 3. send the datagrams: port 500 from the IKE socket, port 4500 from the
//!    data plane's, behind the non-ESP marker;
//! 4. apply the events (`driver::apply`): a new SA's sending, SAs removed,
//!    the log lines.
//!
//! Steps 2 and 3 are in this order because the peer sends on a new SA the
//! moment our answer gives it the keys: its first packets must find the
//! SA's inbound half in the table, which before took as long as the send
//! and the scheduler allowed, and under load lost a packet now and then.
//! Step 4 comes after 3 because applying a new SA sends the packets held
//! for it, which the peer cannot open before it has our answer.
//!
//! The core's lock is let go before each send and each apply: `apply` and
//! `prepare_child` take it again (`delete_child`), and other locks after it.

use std::sync::Arc;

use causeway_dataplane::child_sa::ChildSa;
use causeway_dataplane::session::Carrier;
use causeway_ikev2::{Event, Transmit};

use super::{apply, convert, lock, raw_esp_reaches, Shared};

/// Sends what the core wants sent and applies its events, until neither
/// is left: applying an event can queue more (a child SA the data plane
/// could not install is deleted, with the peer told).
pub(super) fn flush(s: &Shared) {
    loop {
        let transmits: Vec<Transmit> = std::iter::from_fn(|| lock(&s.core).poll_transmit()).collect();
        let events: Vec<Event> = std::iter::from_fn(|| lock(&s.core).poll_event()).collect();
        if transmits.is_empty() && events.is_empty() {
            return;
        }
        let prepared: Vec<(Event, Option<Arc<ChildSa>>)> = events
            .into_iter()
            .map(|e| {
                let sa = prepare_child(s, &e);
                (e, sa)
            })
            .collect();
        for t in transmits {
            send(s, t);
        }
        for (e, sa) in prepared {
            apply(s, e, sa);
        }
    }
}

/// For a new child SA (`ChildUp`): the data plane's SA, its inbound half
/// already published; None for any other event, and for an SA the data
/// plane cannot carry, which is deleted with the peer told instead.
fn prepare_child(s: &Shared, e: &Event) -> Option<Arc<ChildSa>> {
    let Event::ChildUp { peer, keys, remote, encap, roams, local_ts, remote_ts, .. } = e else { return None };
    let refuse = |why: &dyn std::fmt::Display| {
        tracing::error!(peer = %peer, "{why}; deleting the child SA");
        lock(&s.core).delete_child(keys.spi_in, std::time::Instant::now());
        None
    };
    // Deleted, not dropped: the core would otherwise count a child SA the
    // data plane never had, and ask for no other until its rekey, an hour
    // on (the peer is added to the data plane before the core, so this is
    // a peer removed meanwhile).
    let Some(ps) = s.iface.ipsec.peer(&peer.0) else {
        return refuse(&"the peer is not in the data plane");
    };
    if !encap {
        if let Err(why) = raw_esp_reaches(&s.iface, &[remote.ip()]) {
            return refuse(&format_args!("{why}; set encap = \"always\""));
        }
    }
    // Deleted rather than left negotiated and missing, so the peer does
    // not send into it.
    let sa = match convert::child_sa(keys, *encap, *roams, local_ts, remote_ts) {
        Ok(sa) => Arc::new(sa),
        Err(e) => return refuse(&format_args!("negotiated keys refused by ESP ({e})")),
    };
    s.iface.ipsec.publish_inbound(&ps, &sa);
    Some(sa)
}

fn send(s: &Shared, t: Transmit) {
    let result = if t.local_port == s.socket.local_port() {
        s.socket.send(t.remote, t.local, &t.data, None)
    } else {
        let set = s.iface.sockets_for(Carrier::EspInUdp);
        let Some(sock) = set.sockets.first() else {
            tracing::warn!(to = %t.remote, "IKE on port 4500 before its sockets were bound");
            return;
        };
        // RFC 3948 §2.2: IKE on port 4500 begins with four zero bytes.
        let mut framed = Vec::with_capacity(4 + t.data.len());
        framed.extend_from_slice(&[0, 0, 0, 0]);
        framed.extend_from_slice(&t.data);
        sock.send(t.remote, t.local, &framed, None)
    };
    if let Err(e) = result {
        tracing::debug!(to = %t.remote, error = %e, "IKE send failed");
    }
}
