//! What every SA handler may touch besides its own SA: the randomness, the
//! outgoing datagrams and events, the last failure per peer, the SPIs
//! of ours that are reserved, and the count of messages dropped.
//!
//! Invariants: an SPI handed out here is reserved until whoever holds it
//! frees it (the endpoint, when the SA or the request holding it goes), so
//! no two SAs ever share one of our SPIs; a failure is both recorded for
//! `status` and sent as an event.

use std::collections::{HashMap, HashSet, VecDeque};

use rand_core::RngCore;

use crate::config::PeerId;
use crate::drops::{DropReason, Drops};
use crate::event::{Event, Failure, Transmit};
use crate::spi;

pub(crate) struct Io {
    pub rng: Box<dyn RngCore + Send>,
    pub transmits: VecDeque<Transmit>,
    pub events: VecDeque<Event>,
    pub failures: HashMap<PeerId, Failure>,
    /// Our inbound ESP SPIs in use or offered. Changed only through
    /// `new_spi_in` and `free_spi_in`, which count the changes.
    pub spis_in: HashSet<u32>,
    /// How many times `spis_in` changed: what tells the driver to hand it
    /// to the data plane again (`Endpoint::reserved_spis_in`).
    pub spis_in_version: u64,
    /// Our IKE SPIs in use or offered (the keys of `Endpoint::sas`).
    pub ike_spis: HashSet<u64>,
    /// Here rather than on the endpoint: the exchanges, which see only an
    /// SA and this, make most of the decisions to drop.
    pub drops: Drops,
}

impl Io {
    pub(crate) fn new(rng: Box<dyn RngCore + Send>) -> Io {
        Io {
            rng,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            failures: HashMap::new(),
            spis_in: HashSet::new(),
            spis_in_version: 0,
            ike_spis: HashSet::new(),
            drops: Drops::default(),
        }
    }

    pub(crate) fn fail(&mut self, peer: &PeerId, reason: Failure) {
        self.failures.insert(peer.clone(), reason.clone());
        self.events.push_back(Event::Failed { peer: peer.clone(), reason });
    }

    pub(crate) fn dropped(&mut self, reason: DropReason) {
        self.drops.count(reason);
    }

    /// A fresh inbound ESP SPI, reserved until freed.
    pub(crate) fn new_spi_in(&mut self) -> u32 {
        let used = &self.spis_in;
        let s = spi::new_esp_spi(&mut *self.rng, |s| used.contains(&s));
        self.spis_in.insert(s);
        self.spis_in_version += 1;
        s
    }

    /// Frees one of our inbound ESP SPIs (its SA or its offer is gone).
    pub(crate) fn free_spi_in(&mut self, spi: u32) {
        if self.spis_in.remove(&spi) {
            self.spis_in_version += 1;
        }
    }

    /// A fresh IKE SPI of ours, reserved until freed.
    pub(crate) fn new_ike_spi(&mut self) -> u64 {
        let used = &self.ike_spis;
        let s = spi::new_ike_spi(&mut *self.rng, |s| used.contains(&s));
        self.ike_spis.insert(s);
        s
    }

    pub(crate) fn random(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.rng.fill_bytes(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbound_spis_version_moves_with_every_change_and_only_then() {
        let mut io = Io::new(Box::new(rand_core::OsRng));
        let a = io.new_spi_in();
        let b = io.new_spi_in();
        assert_eq!(io.spis_in_version, 2);
        io.free_spi_in(a);
        assert_eq!(io.spis_in_version, 3);
        io.free_spi_in(a);
        assert_eq!(io.spis_in_version, 3, "freeing one not held changes nothing");
        assert_eq!(io.spis_in, [b].into());
    }
}
