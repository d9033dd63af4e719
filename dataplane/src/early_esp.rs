//! ESP that arrives before its SA: kept a moment, then read again.
//!
//! A peer sends on a new child SA as soon as it has installed it, and the
//! IKE message that gives us the same SA can arrive after its first
//! packets, or be handled after them (IKE runs on its own thread; the
//! packets go straight to a worker). It happens whenever the peer
//! answered our IKE_AUTH and had traffic waiting, so most of all when
//! both ends initiate at once (both restarted with traffic): each end's
//! first packets race the other's answer. Dropped as of an unknown SPI,
//! they cost a TCP handshake its first SYN (a retry a second later) and a
//! ping its first echo.
//!
//! So a datagram on an SPI that no SA has but IKE has reserved (offered
//! to the peer, `IpsecTable::set_reserved_spis`) is kept here, bounded in
//! count, per SPI too, and in size, instead of dropped; when an SA with
//! that inbound SPI is published the worker that read it reads it again,
//! through the normal receive path (ICV, replay window): nothing kept
//! here is trusted or opened before then. ESP on any other unknown SPI
//! (a peer's SA from before a restart, a forgery: an SPI offered travels
//! only inside encrypted IKE) is dropped at once, as before. A kept
//! datagram is dropped as unknown_spi when IKE lets its SPI go (the
//! negotiation failed), or, unclaimed after `KEPT_FOR`, when the next
//! datagram is kept.
//!
//! Invariants: a datagram is kept at most once (one read again and still
//! refused is dropped, `Receiver::read_again`; one a worker could not
//! read again for want of batch buffers stays with that worker, as a
//! stalled receive does); a kept datagram is released by the publication
//! of its SPI whichever comes first, the keeping or the publication
//! (`IpsecTable::keep_early` looks at the SPI table after keeping).

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use causeway_wireguard::Time;

use crate::doorbell::Doorbell;
use crate::session::Carrier;

/// The most datagrams kept at once, for all peers: a few round trips' worth
/// of a peer's first packets, and a bound on what a peer sending a flood
/// on an SPI we offered can cost; beyond it they are dropped as before.
/// (Released datagrams a worker could not yet read again, for want of
/// batch buffers, wait in that worker and no longer count here; each
/// was kept once, so they are bounded by this too, per release.)
pub(crate) const MAX_KEPT: usize = 64;
/// The most datagrams kept for one SPI, so that the first packets of one
/// SA leave room for those of others negotiated at the same time.
pub(crate) const MAX_KEPT_PER_SPI: usize = 16;
/// The longest datagram kept: ESP of a jumbo-frame tunnel.
pub(crate) const MAX_KEPT_LEN: usize = 9216;
/// How long a kept datagram waits for its SA. The IKE message it raced
/// arrives within milliseconds; a second covers a busy IKE thread.
pub(crate) const KEPT_FOR: Duration = Duration::from_secs(1);

/// A datagram kept for its SA, as it was read.
pub struct Kept {
    pub spi: u32,
    /// (source, our address it came to).
    pub from: (SocketAddr, Option<IpAddr>),
    pub carrier: Carrier,
    pub bytes: Vec<u8>,
    at: Time,
    /// The worker that read it, and reads it again.
    reader: usize,
    /// Its SPI was published: waiting for `reader` to take it.
    released: bool,
}

#[derive(Default)]
pub(crate) struct EarlyEsp {
    kept: Mutex<VecDeque<Kept>>,
    /// Which workers have released datagrams waiting (bit `reader % 64`):
    /// what each worker loop looks at, without the lock.
    released_for: AtomicU64,
    /// The workers' doorbells, in index order.
    bells: Mutex<Vec<Arc<Doorbell>>>,
    /// The inbound SPIs IKE reserves (`set_reserved`): only ESP on one of
    /// these is kept. Read without a lock to refuse the rest at once, and
    /// again under `kept`'s lock before keeping, so a datagram is never
    /// kept for an SPI let go after `set_reserved` forgot its others.
    reserved: ArcSwap<HashSet<u32>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bit(reader: usize) -> u64 {
    1 << (reader % 64)
}

impl EarlyEsp {
    pub(crate) fn register_bell(&self, bell: Arc<Doorbell>) {
        lock(&self.bells).push(bell);
    }

    /// Whether IKE reserves `spi`, without a lock.
    pub(crate) fn is_reserved(&self, spi: u32) -> bool {
        self.reserved.load().contains(&spi)
    }

    /// Takes the SPIs IKE reserves now, and drops the datagrams kept, and
    /// not yet released, for SPIs it no longer does; returns how many.
    pub(crate) fn set_reserved(&self, spis: HashSet<u32>) -> usize {
        self.reserved.store(Arc::new(spis));
        let reserved = self.reserved.load();
        let mut kept = lock(&self.kept);
        let before = kept.len();
        kept.retain(|k| k.released || reserved.contains(&k.spi));
        before - kept.len()
    }

    /// Keeps `datagram` for SA `spi` if IKE reserves it and there is room; returns whether it
    /// was kept, and how many datagrams kept before went unclaimed past
    /// `KEPT_FOR` (dropped now; the caller counts them).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn keep(
        &self,
        spi: u32,
        from: (SocketAddr, Option<IpAddr>),
        carrier: Carrier,
        datagram: &[u8],
        reader: usize,
        now: Time,
    ) -> (bool, usize) {
        let mut kept = lock(&self.kept);
        let before = kept.len();
        kept.retain(|k| k.released || now.saturating_since(k.at) < KEPT_FOR);
        let expired = before - kept.len();
        let full = kept.len() >= MAX_KEPT || kept.iter().filter(|k| k.spi == spi).count() >= MAX_KEPT_PER_SPI;
        if full || datagram.len() > MAX_KEPT_LEN || !self.is_reserved(spi) {
            return (false, expired);
        }
        kept.push_back(Kept { spi, from, carrier, bytes: datagram.to_vec(), at: now, reader, released: false });
        (true, expired)
    }

    /// The SA of inbound SPI `spi` is published: its kept datagrams go back
    /// to the workers that read them, which are woken.
    pub(crate) fn release(&self, spi: u32) {
        let mut readers = 0u64;
        {
            let mut kept = lock(&self.kept);
            for k in kept.iter_mut().filter(|k| k.spi == spi && !k.released) {
                k.released = true;
                readers |= bit(k.reader);
            }
            if readers == 0 {
                return;
            }
            self.released_for.fetch_or(readers, Ordering::Release);
        }
        let bells = lock(&self.bells);
        for (i, bell) in bells.iter().enumerate() {
            if readers & bit(i) != 0 {
                bell.ring();
            }
        }
    }

    /// Whether worker `reader` should look for released datagrams: one
    /// atomic load on the workers' loop (with more than 64 workers, one may
    /// look for nothing now and then).
    pub(crate) fn released_for(&self, reader: usize) -> bool {
        self.released_for.load(Ordering::Acquire) & bit(reader) != 0
    }

    /// Takes the released datagrams `reader` read, in the order they came.
    pub(crate) fn take_released(&self, reader: usize) -> Vec<Kept> {
        let mut kept = lock(&self.kept);
        let mut mine = Vec::new();
        let mut rest = VecDeque::with_capacity(kept.len());
        for k in kept.drain(..) {
            if k.released && k.reader == reader {
                mine.push(k);
            } else {
                rest.push_back(k);
            }
        }
        let still = rest.iter().filter(|k| k.released).fold(0, |m, k| m | bit(k.reader));
        self.released_for.store(still, Ordering::Release);
        *kept = rest;
        mine
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.kept).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rung(bell: &Doorbell) -> bool {
        let mut p = libc::pollfd { fd: bell.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: `p` is one valid pollfd that outlives the call.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    /// An `EarlyEsp` with `spis` reserved.
    fn reserving(spis: &[u32]) -> EarlyEsp {
        let early = EarlyEsp::default();
        assert_eq!(early.set_reserved(spis.iter().copied().collect()), 0);
        early
    }

    fn from(n: u8) -> (SocketAddr, Option<IpAddr>) {
        (SocketAddr::from(([198, 18, 0, n], 4500)), None)
    }

    #[test]
    fn a_release_hands_back_only_that_spis_datagrams_to_their_readers_and_wakes_them() {
        let early = reserving(&[0x100, 0x200]);
        let bells: Vec<Arc<Doorbell>> = (0..2).map(|_| Arc::new(Doorbell::new().unwrap())).collect();
        bells.iter().for_each(|b| early.register_bell(b.clone()));
        let t = Time::from_secs(5);
        assert_eq!(early.keep(0x100, from(2), Carrier::EspInUdp, &[1; 40], 1, t), (true, 0));
        assert_eq!(early.keep(0x200, from(2), Carrier::EspInUdp, &[2; 40], 0, t), (true, 0));
        assert_eq!(early.keep(0x100, from(2), Carrier::EspInUdp, &[3; 40], 1, t), (true, 0));
        assert!(!early.released_for(1));
        early.release(0x100);
        assert!(early.released_for(1) && !early.released_for(0));
        assert!(rung(&bells[1]) && !rung(&bells[0]), "only the reader is woken");
        assert!(early.take_released(0).is_empty(), "worker 0 read none of them");
        let got = early.take_released(1);
        assert_eq!(got.iter().map(|k| k.bytes[0]).collect::<Vec<_>>(), [1, 3], "in the order they came");
        assert!(!early.released_for(1));
        assert_eq!(early.len(), 1, "SPI 0x200's still waits");
        // A release of an SPI nothing was kept for changes nothing.
        early.release(0x300);
        assert!(!early.released_for(0) && !early.released_for(1));
    }

    #[test]
    fn kept_datagrams_are_bounded_in_count_size_and_time() {
        let early = reserving(&[1, 0x100, 0x200, 0x300, 0x1001, 0x1002, 0x1003, 0x2000]);
        let t = Time::from_secs(5);
        assert_eq!(early.keep(1, from(2), Carrier::RawEsp, &vec![0; MAX_KEPT_LEN + 1], 0, t), (false, 0));
        for _ in 0..MAX_KEPT_PER_SPI {
            assert!(early.keep(0x100, from(2), Carrier::RawEsp, &[0; 100], 0, t).0);
        }
        assert_eq!(early.keep(0x100, from(2), Carrier::RawEsp, &[0; 100], 0, t), (false, 0), "full for the SPI");
        for i in MAX_KEPT_PER_SPI..MAX_KEPT {
            let spi = 0x1000 + (i / MAX_KEPT_PER_SPI) as u32;
            assert!(early.keep(spi, from(2), Carrier::RawEsp, &[0; 100], 0, t).0, "{i}");
        }
        assert_eq!(early.keep(0x2000, from(2), Carrier::RawEsp, &[0; 100], 0, t), (false, 0), "full");
        // Released ones wait for their worker, whatever their age.
        early.release(0x100);
        let later = t + KEPT_FOR;
        assert_eq!(
            early.keep(0x200, from(2), Carrier::RawEsp, &[0; 100], 0, later),
            (true, MAX_KEPT - MAX_KEPT_PER_SPI)
        );
        assert_eq!(early.take_released(0).len(), MAX_KEPT_PER_SPI);
        assert_eq!(early.len(), 1);
        // Unclaimed for KEPT_FOR: dropped, and said so, at the next keep.
        assert_eq!(early.keep(0x300, from(2), Carrier::RawEsp, &[0; 100], 0, later + KEPT_FOR), (true, 1));
        assert_eq!(early.len(), 1);
    }

    #[test]
    fn only_reserved_spis_are_kept_and_those_let_go_are_dropped_unless_released() {
        let early = reserving(&[0x100, 0x200, 0x300]);
        let t = Time::from_secs(5);
        assert_eq!(early.keep(0x400, from(2), Carrier::EspInUdp, &[0; 40], 0, t), (false, 0), "not reserved");
        for spi in [0x100, 0x200, 0x300] {
            assert!(early.keep(spi, from(2), Carrier::EspInUdp, &[0; 40], 0, t).0);
        }
        early.release(0x300);
        assert_eq!(early.set_reserved([0x200].into()), 1, "0x100's; 0x300's is released");
        assert!(!early.is_reserved(0x100));
        assert_eq!(early.keep(0x100, from(2), Carrier::EspInUdp, &[0; 40], 0, t), (false, 0), "let go");
        assert_eq!(early.take_released(0).len(), 1);
        assert_eq!(early.len(), 1);
    }
}
