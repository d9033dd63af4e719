//! Handing the IKE core's work to the network and the data plane, after
//! every message it handled (so what is queued is one message's work):
//!
//! 1. take the datagrams and events the core queued, and tell the data
//!    plane the inbound SPIs the core now reserves, before any message
//!    offering one leaves (`hand_over_reserved_spis`);
//! 2. check and convert each new child SA, and publish its inbound half
//!    in the data plane (`prepare_child`);
//! 3. apply the events that move sending away from an SA whose Delete is
//!    among the datagrams (`before_send`), as long as they lead the list;
//! 4. send the datagrams: port 500 from the IKE socket, port 4500 from the
//!    data plane's, behind the non-ESP marker;
//! 5. apply the other events (`driver::apply`): a new SA's sending, SAs
//!    removed, the log lines.
//!
//! Steps 2 and 4 are in this order because the peer sends on a new SA the
//! moment our answer gives it the keys: its first packets must find the
//! SA's inbound half in the table, which before took as long as the send
//! and the scheduler allowed, and under load lost a packet now and then.
//! Step 5 comes after 4 because applying a new SA sends the packets held
//! for it, which the peer cannot open before it has our answer. Step 3
//! comes before 4 because a packet sealed on an SA after its Delete left
//! reaches the peer after the Delete, when a peer that drops the SA on it
//! (strongSwan does, for a deleted IKE SA's children at once) can no
//! longer open it.
//!
//! The core's lock is let go before each send and each apply: `apply` and
//! `prepare_child` take it again (`delete_child`), and other locks after it.

use std::sync::Arc;

use causeway_dataplane::child_sa::ChildSa;
use causeway_dataplane::counters::Drop;
use causeway_dataplane::session::Carrier;
use causeway_ikev2::{ChildSend, Event, Transmit};

use super::{apply, convert, lock, raw_esp_reaches, Shared};

/// Gives the data plane the inbound SPIs the core reserves now, when they
/// changed: before a message offering a new one leaves (the peer may send
/// on it before its answer is handled here, and the data plane keeps ESP
/// on reserved SPIs only, `early_esp.rs`), and when one was let go (what
/// was kept for it is dropped and counted). The set is copied out, so the
/// core's lock is not held while the data plane takes it.
fn hand_over_reserved_spis(s: &Shared) {
    let changed = {
        let core = lock(&s.core);
        let version = core.reserved_spis_in_version();
        let mut last = lock(&s.reserved_spis_version);
        (*last != Some(version)).then(|| {
            *last = Some(version);
            core.reserved_spis_in().clone()
        })
    };
    if let Some(spis) = changed {
        let forgotten = s.iface.ipsec.set_reserved_spis(spis);
        s.iface.counters.count_many(Drop::UnknownSpi, forgotten);
    }
}

/// Sends what the core wants sent and applies its events, until neither
/// is left: applying an event can queue more (a child SA the data plane
/// could not install is deleted, with the peer told).
pub(super) fn flush(s: &Shared) {
    loop {
        let transmits: Vec<Transmit> = std::iter::from_fn(|| lock(&s.core).poll_transmit()).collect();
        let events: Vec<Event> = std::iter::from_fn(|| lock(&s.core).poll_event()).collect();
        hand_over_reserved_spis(s);
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
        let mut late = prepared;
        for (e, sa) in take_early(&mut late) {
            apply(s, e, sa);
        }
        for t in transmits {
            send(s, t);
        }
        for (e, sa) in late {
            apply(s, e, sa);
        }
    }
}

/// The events to apply before the sends, taken from the front of
/// `events`: only a leading run of them, so that the core's order among
/// events stands (a ChildStopSending behind a ChildUp that waits for the
/// send waits too, or it would find no SA yet to hand sending to, and
/// the SA it stops would keep sending).
fn take_early<T>(events: &mut Vec<(Event, T)>) -> Vec<(Event, T)> {
    let n = events.iter().take_while(|(e, _)| before_send(e)).count();
    events.drain(..n).collect()
}

/// Whether an event takes effect before the datagrams of the same flush
/// leave. A child SA stops sending (`ChildStopSending`) because its
/// Delete, or its IKE SA's, is among them; and a rekey we started, just
/// answered, sends at once (`ChildSend::Now` with a predecessor) before
/// the Delete of the SA it replaces goes: the peer holds its keys since
/// it answered, and sending stays on the old SA otherwise, the new one
/// being receive-only until then. A new SA of an answer we are sending
/// still waits for the send (the peer has no keys before it), as does
/// every other event, in the core's order.
fn before_send(e: &Event) -> bool {
    matches!(e, Event::ChildStopSending { .. } | Event::ChildUp { send: ChildSend::Now, replaces: Some(_), .. })
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

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_ikev2::{ChildKeys, EspCipher, PeerId};
    use zeroize::Zeroizing;

    fn child_up(send: ChildSend, replaces: Option<u32>) -> Event {
        Event::ChildUp {
            peer: PeerId("p".into()),
            keys: ChildKeys {
                spi_in: 0x1000,
                spi_out: 0x2000,
                cipher: EspCipher::AesGcm16 { key_bits: 256 },
                keymat_in: Zeroizing::new(vec![1; 36]),
                keymat_out: Zeroizing::new(vec![2; 36]),
            },
            remote: "198.18.0.2:4500".parse().unwrap(),
            local: None,
            encap: true,
            roams: false,
            replaces,
            send,
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
        }
    }

    // Our rekey's answer brings the new SA and the old one's Delete in
    // one flush: sending moves to the new SA before the Delete leaves.
    // A first SA of an answer we send waits for it (the peer has no keys).
    #[test]
    fn sending_leaves_an_sa_before_its_delete_does_and_not_before_the_peer_has_the_new_one() {
        assert!(before_send(&child_up(ChildSend::Now, Some(0x0fff))), "our rekey, answered");
        assert!(before_send(&Event::ChildStopSending { peer: PeerId("p".into()), spi_in: 0x0fff }));
        assert!(!before_send(&child_up(ChildSend::Now, None)), "a first SA: maybe the answer we send");
        assert!(!before_send(&child_up(ChildSend::OnceUsed, Some(0x0fff))), "the peer's rekey: it moves first");
        assert!(!before_send(&child_up(ChildSend::Never, Some(0x0fff))));
        let down = Event::ChildDown { peer: PeerId("p".into()), spi_in: 0x0fff, spi_out: 0x0ffe };
        assert!(!before_send(&down), "removed after: it opens what trails the Delete until then");
    }

    // The order among events stands: only a leading run goes first.
    #[test]
    fn only_the_leading_run_of_events_goes_before_the_sends() {
        let stop = || Event::ChildStopSending { peer: PeerId("p".into()), spi_in: 0x0fff };
        let kinds = |v: &[(Event, u8)]| v.iter().map(|(_, k)| *k).collect::<Vec<_>>();
        // Our rekey answered: the new SA, then the old one's stop, first.
        let mut rekey =
            vec![(child_up(ChildSend::Now, Some(0x0fff)), 0), (stop(), 1), (child_up(ChildSend::Now, None), 2)];
        assert_eq!(kinds(&take_early(&mut rekey)), [0, 1]);
        assert_eq!(kinds(&rekey), [2]);
        // A duplicate deleted as IKE_AUTH completes: the stop waits behind
        // the new SA that itself waits for the send.
        let mut duplicate = vec![(child_up(ChildSend::Now, None), 0), (stop(), 1)];
        assert!(take_early(&mut duplicate).is_empty());
        assert_eq!(kinds(&duplicate), [0, 1]);
    }
}
