//! The answer to the lookup asked last, kept for the next packet that asks
//! the same: packets come in runs (a TSO read's segments, a GRO receive's
//! datagrams) that share their addresses, their site and their verdict, so
//! one lookup serves a run.
//!
//! Invariant: it lives for one batch at most, so a table swapped in
//! between batches (a reload, a peer change) is never answered from an
//! older one.

pub struct LastLookup<K, V> {
    last: Option<(K, V)>,
}

impl<K: PartialEq + Copy, V> LastLookup<K, V> {
    pub fn new() -> Self {
        LastLookup { last: None }
    }

    /// The value for `key`: the one kept if `key` was asked last, else
    /// `lookup()`, which is kept in its place.
    pub fn get(&mut self, key: K, lookup: impl FnOnce() -> V) -> &V {
        if !matches!(&self.last, Some((k, _)) if *k == key) {
            self.last = Some((key, lookup()));
        }
        &self.last.as_ref().expect("set above").1
    }
}

impl<K: PartialEq + Copy, V> Default for LastLookup<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_only_when_the_key_changes() {
        let mut calls = 0;
        let mut memo = LastLookup::new();
        for (key, want) in [(1, 10), (1, 10), (2, 20), (2, 20), (1, 10)] {
            let got = *memo.get(key, || {
                calls += 1;
                key * 10
            });
            assert_eq!(got, want);
        }
        assert_eq!(calls, 3, "once per run of one key");
    }
}
