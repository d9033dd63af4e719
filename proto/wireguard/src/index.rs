//! Receiver-index table: the 32-bit indices we hand to peers, mapped back to
//! the handshake or keypair they name. Read on every received packet, so
//! readers share a read lock and clone two `Arc`s; writers are handshakes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rand_core::{OsRng, RngCore};

use crate::{Keypair, Peer};

#[derive(Clone)]
pub enum IndexEntry {
    /// An initiation we sent (response and cookie reply arrive here).
    Handshake(Arc<Peer>),
    /// A session's keypair (data and cookie replies to our response arrive here).
    Keypair(Arc<Peer>, Arc<Keypair>),
}

impl IndexEntry {
    pub fn peer(&self) -> &Arc<Peer> {
        match self {
            IndexEntry::Handshake(p) | IndexEntry::Keypair(p, _) => p,
        }
    }
}

#[derive(Default)]
pub struct IndexTable {
    map: RwLock<HashMap<u32, IndexEntry>>,
}

impl IndexTable {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u32, IndexEntry>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, IndexEntry>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts under a fresh random index. Random rather than sequential so
    /// that indices reveal nothing about how many sessions exist. None for
    /// a peer being removed: a handshake racing `Device::remove_peer` (a
    /// worker or timer still holding the peer) would otherwise leave an
    /// index behind that nothing removes. The peer is marked before its
    /// entries are cleared under this lock, so an insert after the
    /// clearing sees the mark.
    pub fn insert(&self, entry: IndexEntry) -> Option<u32> {
        let mut map = self.write();
        if entry.peer().is_removed() {
            return None;
        }
        loop {
            let idx = OsRng.next_u32();
            if let std::collections::hash_map::Entry::Vacant(v) = map.entry(idx) {
                v.insert(entry);
                return Some(idx);
            }
        }
    }

    /// As `insert`, under a given index; false (and nothing stored) for a
    /// peer being removed.
    pub fn replace(&self, idx: u32, entry: IndexEntry) -> bool {
        let mut map = self.write();
        if entry.peer().is_removed() {
            map.remove(&idx);
            return false;
        }
        map.insert(idx, entry);
        true
    }

    pub fn get(&self, idx: u32) -> Option<IndexEntry> {
        self.read().get(&idx).cloned()
    }

    pub fn remove(&self, idx: u32) {
        self.write().remove(&idx);
    }

    /// Drops every index that belongs to `peer`.
    pub fn remove_peer(&self, peer: &Arc<Peer>) {
        self.write().retain(|_, e| !Arc::ptr_eq(e.peer(), peer));
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
