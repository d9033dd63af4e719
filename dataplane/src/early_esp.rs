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
//! So a datagram on an unknown SPI, from an address an IPsec peer is at,
//! is kept here (bounded in count, per SPI too, size and time) instead of
//! dropped, and when an SA with that inbound SPI is published the worker
//! that read it reads it again, through the normal receive path (ICV,
//! replay window):
//! nothing kept here is trusted or opened before then. What no SA claims
//! within `KEPT_FOR` is dropped as unknown_spi, counted when the next
//! datagram is kept.
//!
//! Invariants: a datagram is kept at most once (one read again and still
//! refused is dropped, `Receiver::read_again`); a kept datagram is
//! released by the publication of its SPI whichever comes first, the
//! keeping or the publication (`IpsecTable::keep_early` looks at the SPI
//! table after keeping).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use causeway_wireguard::Time;

use crate::doorbell::Doorbell;
use crate::session::Carrier;

/// The most datagrams kept at once, for all peers: a few round trips' worth
/// of a peer's first packets. Anyone can send from a peer's address, so
/// this bounds what such datagrams cost; beyond it they are dropped as
/// before.
pub(crate) const MAX_KEPT: usize = 64;
/// The most datagrams kept for one SPI. After this gateway restarts, its
/// peers go on sending on their SAs of before for a while, SPIs no SA here
/// will ever have: this keeps one or two of those from taking every place
/// from the first packets of the SAs being negotiated.
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
    /// Whether any kept datagram is released: what each worker loop looks
    /// at, without the lock.
    any_released: AtomicBool,
    /// The workers' doorbells, in index order.
    bells: Mutex<Vec<Arc<Doorbell>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EarlyEsp {
    pub(crate) fn register_bell(&self, bell: Arc<Doorbell>) {
        lock(&self.bells).push(bell);
    }

    /// Keeps `datagram` for SA `spi` if there is room; returns whether it
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
        if full || datagram.len() > MAX_KEPT_LEN {
            return (false, expired);
        }
        kept.push_back(Kept { spi, from, carrier, bytes: datagram.to_vec(), at: now, reader, released: false });
        (true, expired)
    }

    /// The SA of inbound SPI `spi` is published: its kept datagrams go back
    /// to the workers that read them, which are woken.
    pub(crate) fn release(&self, spi: u32) {
        let mut readers = Vec::new();
        {
            let mut kept = lock(&self.kept);
            for k in kept.iter_mut().filter(|k| k.spi == spi && !k.released) {
                k.released = true;
                readers.push(k.reader);
            }
            if readers.is_empty() {
                return;
            }
            self.any_released.store(true, Ordering::Release);
        }
        let bells = lock(&self.bells);
        readers.dedup();
        for r in readers {
            if let Some(bell) = bells.get(r) {
                bell.ring();
            }
        }
    }

    /// Whether a worker should look for released datagrams: one atomic
    /// load on the workers' loop.
    pub(crate) fn any_released(&self) -> bool {
        self.any_released.load(Ordering::Acquire)
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
        self.any_released.store(rest.iter().any(|k| k.released), Ordering::Release);
        *kept = rest;
        mine
    }

    /// Gives back released datagrams a worker could not read again yet
    /// (every batch buffer in flight), first in line for its next look,
    /// and rings its bell so that it looks again before sleeping.
    pub(crate) fn put_back(&self, rest: Vec<Kept>) {
        let Some(reader) = rest.first().map(|k| k.reader) else { return };
        {
            let mut kept = lock(&self.kept);
            for k in rest.into_iter().rev() {
                kept.push_front(k);
            }
            self.any_released.store(true, Ordering::Release);
        }
        if let Some(bell) = lock(&self.bells).get(reader) {
            bell.ring();
        }
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

    fn from(n: u8) -> (SocketAddr, Option<IpAddr>) {
        (SocketAddr::from(([198, 18, 0, n], 4500)), None)
    }

    #[test]
    fn a_release_hands_back_only_that_spis_datagrams_to_their_readers_and_wakes_them() {
        let early = EarlyEsp::default();
        let bells: Vec<Arc<Doorbell>> = (0..2).map(|_| Arc::new(Doorbell::new().unwrap())).collect();
        bells.iter().for_each(|b| early.register_bell(b.clone()));
        let t = Time::from_secs(5);
        assert_eq!(early.keep(0x100, from(2), Carrier::EspInUdp, &[1; 40], 1, t), (true, 0));
        assert_eq!(early.keep(0x200, from(2), Carrier::EspInUdp, &[2; 40], 0, t), (true, 0));
        assert_eq!(early.keep(0x100, from(2), Carrier::EspInUdp, &[3; 40], 1, t), (true, 0));
        assert!(!early.any_released());
        early.release(0x100);
        assert!(early.any_released());
        assert!(rung(&bells[1]) && !rung(&bells[0]), "only the reader is woken");
        assert!(early.take_released(0).is_empty(), "worker 0 read none of them");
        let got = early.take_released(1);
        assert_eq!(got.iter().map(|k| k.bytes[0]).collect::<Vec<_>>(), [1, 3], "in the order they came");
        assert!(!early.any_released());
        assert_eq!(early.len(), 1, "SPI 0x200's still waits");
        // A release of an SPI nothing was kept for changes nothing.
        early.release(0x300);
        assert!(!early.any_released());
    }

    #[test]
    fn kept_datagrams_are_bounded_in_count_size_and_time() {
        let early = EarlyEsp::default();
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
    fn what_a_worker_gives_back_comes_first_next_time() {
        let early = EarlyEsp::default();
        let t = Time::from_secs(5);
        for b in 1..=3 {
            early.keep(0x100, from(2), Carrier::EspInUdp, &[b; 40], 0, t);
        }
        early.release(0x100);
        let mut got = early.take_released(0);
        let rest = got.split_off(1);
        early.put_back(rest);
        assert!(early.any_released());
        assert_eq!(early.take_released(0).iter().map(|k| k.bytes[0]).collect::<Vec<_>>(), [2, 3]);
    }
}
