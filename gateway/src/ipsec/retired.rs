//! Child SAs that IKE deleted after a rekey replaced them. They send no
//! more (`IpsecTable::retire_child`) but keep opening for a grace period,
//! since packets the peer sealed with them before it switched may trail
//! the Delete, which travels on another socket and thread.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use causeway_ikev2::PeerId;

/// How long a retired SA still opens. strongSwan's `delete_rekeyed_delay`
/// default, which keeps its own side of the same SA as long.
pub const GRACE: Duration = Duration::from_secs(5);

/// A retired SA: when it goes, its peer, and the SA `S` (the data plane's
/// own, not its SPI: IKE has freed the SPI, which a new SA may hold by
/// the time this one goes).
type Entry<S> = (Instant, PeerId, S);

pub struct Retired<S> {
    list: Mutex<Vec<Entry<S>>>,
}

impl<S> Default for Retired<S> {
    fn default() -> Self {
        Retired { list: Mutex::new(Vec::new()) }
    }
}

impl<S> Retired<S> {
    fn list(&self) -> MutexGuard<'_, Vec<Entry<S>>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The SA goes `GRACE` after `now`.
    pub fn add(&self, now: Instant, peer: PeerId, sa: S) {
        self.list().push((now + GRACE, peer, sa));
    }

    /// The SAs whose grace is over at `now`, taken out of the list.
    pub fn take_due(&self, now: Instant) -> Vec<(PeerId, S)> {
        let mut list = self.list();
        let (due, wait): (Vec<Entry<S>>, Vec<Entry<S>>) =
            std::mem::take(&mut *list).into_iter().partition(|e| e.0 <= now);
        *list = wait;
        due.into_iter().map(|(_, peer, sa)| (peer, sa)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sa_goes_once_its_grace_is_over() {
        let r = Retired::default();
        let t = Instant::now();
        r.add(t, PeerId("a".into()), 1);
        r.add(t + Duration::from_secs(2), PeerId("b".into()), 3);
        assert!(r.take_due(t + GRACE - Duration::from_millis(1)).is_empty());
        assert_eq!(r.take_due(t + GRACE), [(PeerId("a".into()), 1)]);
        assert!(r.take_due(t + GRACE).is_empty(), "taken once");
        assert_eq!(r.take_due(t + GRACE * 2), [(PeerId("b".into()), 3)]);
    }
}
