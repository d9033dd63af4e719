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
    /// Our inbound ESP SPIs in use or offered.
    pub spis_in: HashSet<u32>,
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
        s
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
