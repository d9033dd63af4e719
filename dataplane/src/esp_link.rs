//! An IPsec peer's part of the data plane: the child SA it sends with,
//! its traffic counters, and since when it has been without an SA while
//! one is wanted (packets wait for one, or the last one was lost).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwapOption;
use causeway_wireguard::Time;

use crate::child_sa::ChildSa;

/// How often one peer's packets may ask for a negotiation.
const NEGOTIATE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An IPsec peer's part of the data plane: the SA it sends with, and
/// its traffic counters.
#[derive(Default)]
pub struct EspLink {
    pub(crate) outbound: ArcSwapOption<ChildSa>,
    /// The SA that takes over sending once the peer uses it (a rekey we
    /// answered; `SendOn::OnceUsed`).
    pub(crate) pending: ArcSwapOption<ChildSa>,
    /// Held by whoever moves an SA between `pending` and `outbound` (the
    /// drain taking the new SA into use, IKE installing or removing one),
    /// so that no two such moves interleave: each reads one slot and
    /// writes the other, and interleaved they could leave `outbound`
    /// empty while an SA is up. Senders only load `outbound`.
    pub(crate) switch: Mutex<()>,
    /// When packets first asked for an SA that has not come yet (for
    /// failover among the peer's addresses), and when they last asked.
    pub(crate) negotiation: Mutex<(Option<Time>, Option<Time>)>,
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) rx_packets: AtomicU64,
    pub(crate) tx_packets: AtomicU64,
    /// Nanoseconds of protocol time of the last authenticated packet.
    pub(crate) last_rx: AtomicU64,
    /// Nanoseconds of protocol time when a worn SA last asked for a rekey.
    pub(crate) rekey_asked: AtomicU64,
    /// The install number (`ChildSa::installed`) of the newest SA that
    /// packets have come on; 0 when that SA has gone.
    pub(crate) newest_heard: AtomicU64,
}

impl EspLink {
    pub fn sending(&self) -> Option<Arc<ChildSa>> {
        self.outbound.load_full()
    }

    /// (received, sent) bytes on the wire.
    pub fn bytes(&self) -> (u64, u64) {
        (self.rx_bytes.load(Ordering::Relaxed), self.tx_bytes.load(Ordering::Relaxed))
    }

    /// (received, sent) packets.
    pub fn packets(&self) -> (u64, u64) {
        (self.rx_packets.load(Ordering::Relaxed), self.tx_packets.load(Ordering::Relaxed))
    }

    /// When the last authenticated packet arrived, if one did.
    pub fn last_received(&self) -> Option<Time> {
        match self.last_rx.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Time::from_nanos(n)),
        }
    }

    /// A packet opened on `sa` on the drain: if `sa` waited to take over
    /// sending, the peer has installed it, so it does now.
    pub(crate) fn used(&self, sa: &ChildSa) {
        let is_pending = || self.pending.load().as_deref().is_some_and(|p| std::ptr::eq(p, sa));
        // Checked once without the lock: it holds for one packet per rekey.
        if is_pending() {
            let _switch = lock(&self.switch);
            if is_pending() {
                self.outbound.store(self.pending.swap(None));
            }
        }
    }

    /// A packet was accepted on `sa`: whether `sa` is the newest SA of
    /// the peer that packets have come on. A peer moves to a new SA when
    /// it installs it and does not go back, so a packet on an older one,
    /// once the new one has carried packets (the SA a rekey replaced,
    /// still in flight), was sent before those. Which SA we send on does
    /// not say: the two ends of one peer may each send on a different SA
    /// (both initiated at once), or the peer not have taken ours yet.
    pub(crate) fn heard_on(&self, sa: &ChildSa) -> bool {
        let n = sa.installed();
        sa.mark_heard();
        // A load only, for all but the first packet on a new SA.
        let newest = self.newest_heard.load(Ordering::Relaxed);
        if n <= newest {
            return n == newest;
        }
        let before = self.newest_heard.fetch_max(n, Ordering::SeqCst);
        // A packet sorted to the SA before `remove_child` took it out can
        // be accepted after: it must not raise the newest back to an SA
        // that is gone, or no packet on the others would count again.
        // Either this sees the mark, or the removal's reset comes after
        // the raise (both SeqCst).
        if sa.is_removed() {
            let _ = self.newest_heard.compare_exchange(n, before, Ordering::SeqCst, Ordering::SeqCst);
            return false;
        }
        before <= n
    }

    /// Whether a worn SA's sender at `now` should ask IKE for a rekey: at
    /// most once per `NEGOTIATE_EVERY` (every batch sent on it asks).
    pub(crate) fn should_ask_rekey(&self, now: Time) -> bool {
        let last = self.rekey_asked.load(Ordering::Relaxed);
        let due = last == 0 || now.as_nanos().saturating_sub(last) >= NEGOTIATE_EVERY.as_nanos() as u64;
        due && self
            .rekey_asked
            .compare_exchange(last, now.as_nanos().max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Since when packets have waited for an SA, if they are waiting.
    pub fn negotiation_started(&self) -> Option<Time> {
        lock(&self.negotiation).0
    }

    /// The control plane took away an SA (IKE lost the peer, or the SA
    /// expired): if none is left to send with, the peer counts as
    /// negotiating from `now`, as when packets wait for an SA, so that a
    /// site sees its gateway failing even while nothing is sent to it. The
    /// next SA installed clears it.
    pub fn lost_sa(&self, now: Time) {
        // Under the lock: `install_child` sets the SA before it clears this.
        let mut n = lock(&self.negotiation);
        if self.outbound.load().is_none() && n.0.is_none() {
            n.0 = Some(now);
        }
    }

    /// Whether a packet at `now` should ask the control plane for an SA:
    /// at most once per `NEGOTIATE_EVERY`.
    pub(crate) fn should_ask(&self, now: Time) -> bool {
        let mut n = lock(&self.negotiation);
        if n.0.is_none() {
            n.0 = Some(now);
        }
        if n.1.is_some_and(|last| now.saturating_since(last) < NEGOTIATE_EVERY) {
            return false;
        }
        n.1 = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipsec_table::{IpsecTable, SendOn};
    use crate::peer::{Link, PeerState};

    fn child_sa(spi: u32) -> Arc<ChildSa> {
        Arc::new(ChildSa::for_tests(spi))
    }

    fn ipsec_peer() -> Arc<PeerState> {
        Arc::new(PeerState::with_link(Link::Ipsec(EspLink::default()), "west.gw1".into(), 0))
    }

    #[test]
    fn losing_the_last_sa_counts_as_negotiating_until_the_next() {
        let table = IpsecTable::default();
        let peer = ipsec_peer();
        let link = peer.ipsec().unwrap();
        let (old, new) = (child_sa(0x100), child_sa(0x200));
        table.install_child(&peer, old.clone(), SendOn::Now);
        // A rekey: the new SA sends before the old one goes.
        table.install_child(&peer, new.clone(), SendOn::Now);
        table.remove_child(old.spi_in());
        link.lost_sa(Time::from_secs(5));
        assert_eq!(link.negotiation_started(), None, "an SA is left");
        table.remove_child(new.spi_in());
        link.lost_sa(Time::from_secs(6));
        assert_eq!(link.negotiation_started(), Some(Time::from_secs(6)));
        link.lost_sa(Time::from_secs(7));
        assert_eq!(link.negotiation_started(), Some(Time::from_secs(6)), "failing since the first loss");
        table.install_child(&peer, child_sa(0x300), SendOn::Now);
        assert_eq!(link.negotiation_started(), None);
    }

    /// A retired SA's SPI, freed by IKE, given to a new SA before the
    /// retired one's grace is over: the retired one's removal leaves the
    /// new one in place.
    #[test]
    fn removing_a_retired_sa_spares_a_new_one_with_its_spi() {
        let table = IpsecTable::default();
        let peer = ipsec_peer();
        let (old, successor) = (child_sa(0x100), child_sa(0x200));
        table.install_child(&peer, old.clone(), SendOn::Now);
        table.install_child(&peer, successor.clone(), SendOn::Now);
        let retired = table.retire_child(old.spi_in()).expect("another SA sends");
        assert!(Arc::ptr_eq(&retired, &old));
        let reused = child_sa(0x100);
        table.install_child(&peer, reused.clone(), SendOn::Never);
        assert!(table.remove_retired(&retired).is_none(), "the new SA is not the retired one");
        let held = table.child(0x100).expect("the new SA stays");
        assert!(Arc::ptr_eq(&held.1, &reused));
        assert!(table.remove_retired(&successor).is_some(), "an SA still held goes");
    }

    // Our answer to the peer's rekey goes out before its SA is installed,
    // so the peer's first packets on it can come at once. Were the SPI
    // published before the SA is pending, such a packet would be opened,
    // find nothing pending (`used`), and leave us sending on the old SA.
    // The install is held at the switch lock, between the two steps.
    #[test]
    fn an_sa_that_takes_over_once_used_is_pending_before_its_spi_is_found() {
        let table = Arc::new(IpsecTable::default());
        let peer = ipsec_peer();
        let (old, new) = (child_sa(0x100), child_sa(0x200));
        table.install_child(&peer, old.clone(), SendOn::Now);
        let link = peer.ipsec().unwrap();
        let held = lock(&link.switch);
        let install = {
            let (table, peer, new) = (table.clone(), peer.clone(), new.clone());
            std::thread::spawn(move || table.install_child(&peer, new, SendOn::OnceUsed))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(table.child(new.spi_in()).is_none(), "the SPI was found before the SA was pending");
        drop(held);
        install.join().unwrap();
        let (_, found) = table.child(new.spi_in()).expect("published");
        link.used(&found);
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &new)), "the first packet on it moved sending");
    }

    // Both ends initiated at once: the peer holds two SAs, one from each
    // IKE SA. When the one sending goes (its IKE SA is deleted), the other
    // takes over rather than leaving the peer with nothing to send on; a
    // redundant SA of a simultaneous rekey never does.
    #[test]
    fn when_the_sending_sa_goes_another_sa_of_the_peer_takes_over() {
        let table = IpsecTable::default();
        let peer = ipsec_peer();
        let link = peer.ipsec().unwrap();
        let (a, b, redundant) = (child_sa(0x100), child_sa(0x200), child_sa(0x300));
        table.install_child(&peer, a.clone(), SendOn::Now);
        table.install_child(&peer, b.clone(), SendOn::Now);
        table.install_child(&peer, redundant.clone(), SendOn::Never);
        table.remove_child(b.spi_in());
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &a)), "the other SA sends");
        table.remove_child(a.spi_in());
        assert!(link.sending().is_none(), "not the redundant one");
        // An SA that is not sending goes: nothing changes.
        table.install_child(&peer, a.clone(), SendOn::Now);
        table.install_child(&peer, b.clone(), SendOn::Now);
        table.remove_child(a.spi_in());
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &b)));
    }

    // IKE deletes a duplicate IKE SA: its child stops sending at once and
    // hands over to the other SA of the peer, but still opens what the
    // peer sends on it until removed; it never sends again. Alone, it
    // goes on sending rather than leave the peer with nothing, and stays
    // a stand-in.
    #[test]
    fn an_sa_that_stops_sending_hands_over_and_still_receives() {
        let table = IpsecTable::default();
        let peer = ipsec_peer();
        let link = peer.ipsec().unwrap();
        let (stays, goes) = (child_sa(0x100), child_sa(0x200));
        table.install_child(&peer, stays.clone(), SendOn::Now);
        table.install_child(&peer, goes.clone(), SendOn::Now);
        assert!(table.stop_sending(goes.spi_in()));
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &stays)), "the other SA sends");
        assert!(table.child(goes.spi_in()).is_some(), "still there to receive on");
        // When the one that stays goes first, the one stopped is no stand-in.
        table.remove_child(stays.spi_in());
        assert!(link.sending().is_none());
        assert!(!table.stop_sending(0x999), "unknown SPI");
        let alone = child_sa(0x300);
        table.install_child(&peer, alone.clone(), SendOn::Now);
        assert!(table.stop_sending(alone.spi_in()));
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &alone)), "nothing to hand over to");
        // Still sending, it stands in for a newer SA that goes first.
        let newer = child_sa(0x400);
        table.install_child(&peer, newer.clone(), SendOn::Now);
        table.remove_child(newer.spi_in());
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &alone)));
    }

    // An SA published before IKE's answer leaves opens at once but sends
    // only once installed: another SA's removal in between does not hand
    // sending to it (it may be a collision's redundant SA), and installed
    // to send, it does.
    #[test]
    fn a_published_sa_opens_but_sends_only_once_installed() {
        let table = IpsecTable::default();
        let peer = ipsec_peer();
        let link = peer.ipsec().unwrap();
        let (old, new) = (child_sa(0x100), child_sa(0x200));
        table.install_child(&peer, old.clone(), SendOn::Now);
        table.publish_inbound(&peer, &new);
        assert!(table.child(new.spi_in()).is_some(), "found by its SPI");
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &old)));
        table.remove_child(old.spi_in());
        assert!(link.sending().is_none(), "not handed to the SA not yet installed");
        table.install_child(&peer, new.clone(), SendOn::Now);
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &new)));
        // Installed as a collision's redundant SA, it stays out of the hand-over.
        let (a, redundant) = (child_sa(0x300), child_sa(0x400));
        table.publish_inbound(&peer, &redundant);
        table.install_child(&peer, redundant.clone(), SendOn::Never);
        table.install_child(&peer, a.clone(), SendOn::Now);
        table.remove_child(a.spi_in());
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &new)), "the installed one, not the redundant");
    }

    // A rekeyed SA's Delete: sending moves to its successor (pending or
    // up) at once, and it still opens until removed; with no other SA of
    // the peer to send, it is left for the caller to remove at once.
    #[test]
    fn a_retired_sa_hands_over_sending_and_keeps_receiving() {
        let table = IpsecTable::default();
        let peer = ipsec_peer();
        let link = peer.ipsec().unwrap();
        let (old, new) = (child_sa(0x100), child_sa(0x200));
        table.install_child(&peer, old.clone(), SendOn::Now);
        table.install_child(&peer, new.clone(), SendOn::OnceUsed);
        assert!(table.retire_child(old.spi_in()).is_some());
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &new)), "the successor sends");
        assert!(table.child(old.spi_in()).is_some(), "still opens");
        assert!(table.retire_child(new.spi_in()).is_none(), "nothing else could send");
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &new)));
        assert!(table.remove_child(old.spi_in()).is_some());
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &new)), "removing the retired one changes nothing");
        assert!(table.retire_child(0x999).is_none(), "unknown SPI");
    }

    // Roaming follows the newest SA packets came on. When that SA goes,
    // the newest left that carried packets takes its place (not none, so a
    // late packet on an even older one stays late); and a packet on the
    // removed SA accepted after it went (it was sorted before) does not
    // make it the newest again.
    #[test]
    fn the_newest_sa_heard_is_the_newest_still_there() {
        let table = IpsecTable::default();
        let peer = ipsec_peer();
        let link = peer.ipsec().unwrap();
        let (a, b, c) = (child_sa(0x100), child_sa(0x200), child_sa(0x300));
        for sa in [&a, &b, &c] {
            table.install_child(&peer, sa.clone(), SendOn::Now);
        }
        assert!(link.heard_on(&a) && link.heard_on(&b) && link.heard_on(&c), "each newer in turn");
        assert!(!link.heard_on(&a), "older than the newest heard");
        table.remove_child(c.spi_in());
        assert!(!link.heard_on(&c), "accepted after its SA went");
        assert!(!link.heard_on(&a), "b is the newest left that was heard");
        assert!(link.heard_on(&b));
        table.remove_child(b.spi_in());
        assert!(link.heard_on(&a));
    }

    // The peer takes our answered rekey's SA into use (the drain's `used`)
    // while IKE deletes the SA it replaced (`remove_child`). Each reads one
    // slot and writes the other; interleaved, they could leave the peer
    // with nothing to send on. Both therefore move SAs only under the
    // link's switch lock: here the drain, finding the lock taken, waits
    // and leaves the slots alone until it is free.
    #[test]
    fn the_drain_takes_a_new_sa_into_use_only_under_the_switch_lock() {
        let table = IpsecTable::default();
        let peer = ipsec_peer();
        let (old, new) = (child_sa(0x100), child_sa(0x200));
        table.install_child(&peer, old.clone(), SendOn::Now);
        table.install_child(&peer, new.clone(), SendOn::OnceUsed);
        let link = peer.ipsec().unwrap();
        let held = lock(&link.switch);
        let drain = {
            let (peer, new) = (peer.clone(), new.clone());
            std::thread::spawn(move || peer.ipsec().unwrap().used(&new))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &old)), "moved while the lock was held");
        assert!(link.pending.load().as_ref().is_some_and(|p| Arc::ptr_eq(p, &new)));
        drop(held);
        drain.join().unwrap();
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &new)));
        assert!(link.pending.load().is_none());
        // The old SA's removal after that leaves the new one sending.
        table.remove_child(old.spi_in());
        assert!(link.sending().is_some_and(|s| Arc::ptr_eq(&s, &new)));
    }
}
