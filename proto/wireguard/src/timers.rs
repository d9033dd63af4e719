//! Per-peer protocol timers (whitepaper section 6), as timestamps.
//!
//! The kernel arms and cancels kernel timers; a sans-IO core instead records
//! *when* each timer was armed and lets the caller `poll` with the current
//! time. The hooks called on the data path for every batch are single atomic
//! stores, so workers never contend on a lock to feed the timers; the
//! handshake-related timers, touched a few times per handshake, sit behind a
//! mutex.
//!
//! Encoded times in atomics are `nanos + 1`, so 0 means "not armed".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand_core::{OsRng, RngCore};

use crate::{Time, KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX};

/// What a peer must do now, as decided by `Timers::poll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// Send an empty data message (passive keepalive, or persistent keepalive).
    SendKeepalive,
    /// Data went unanswered for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: start a
    /// fresh handshake.
    InitiateHandshake,
    /// The initiation in flight got no response within REKEY_TIMEOUT: send it again.
    RetryHandshake,
    /// Handshake attempts went on for REKEY_ATTEMPT_TIME: stop, and drop the
    /// packets queued for this peer.
    GiveUpHandshake,
    /// No new session for 3 × REJECT_AFTER_TIME: erase every key of the peer.
    ClearKeys,
}

fn enc(t: Time) -> u64 {
    t.as_nanos().saturating_add(1)
}

fn dec(v: u64) -> Option<Time> {
    v.checked_sub(1).map(Time::from_nanos)
}

/// A jitter below REKEY_TIMEOUT_JITTER_MAX from `random` bits.
fn jitter_of(random: u64) -> Duration {
    Duration::from_nanos(random % REKEY_TIMEOUT_JITTER_MAX.as_nanos() as u64)
}

fn jitter() -> Duration {
    jitter_of(OsRng.next_u64())
}

/// The new-handshake timer's jitter (wireguard-go adds the retransmission
/// jitter there too), so that two peers that stop hearing each other at the
/// same moment do not initiate in lockstep. That timer is armed on the data
/// path, as often as once per batch in a two-way stream (every receive
/// disarms it), where asking the kernel for randomness would cost more than
/// the rest of the batch's bookkeeping. The spread only has to differ
/// between peers and arms: the arm time's nanoseconds, mixed with a seed
/// each peer draws once, give that for a multiply.
fn data_jitter(seed: u64, now: Time) -> Duration {
    jitter_of((seed ^ now.as_nanos()).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32)
}

#[derive(Default)]
struct HandshakeTimers {
    /// When the current series of handshake attempts began.
    attempts_started: Option<Time>,
    retransmit_at: Option<Time>,
    zero_keys_at: Option<Time>,
}

#[derive(Default)]
pub struct Timers {
    /// Persistent keepalive interval in seconds; 0 is off.
    persistent_keepalive: AtomicU64,
    /// Armed when data is received and nothing is pending; disarmed by any
    /// authenticated send. Fires a keepalive.
    keepalive_armed: AtomicU64,
    /// Armed when data is sent and nothing is pending; disarmed by any
    /// authenticated receive. Fires a new handshake. Holds the arm time
    /// plus its jitter.
    new_handshake_armed: AtomicU64,
    /// Drawn once per peer, for `data_jitter`.
    jitter_seed: u64,
    /// Last time any authenticated packet went either way.
    last_traversal: AtomicU64,
    handshake: Mutex<HandshakeTimers>,
}

impl Timers {
    pub fn new(persistent_keepalive_secs: u16) -> Timers {
        let t = Timers { jitter_seed: OsRng.next_u64(), ..Timers::default() };
        t.set_persistent_keepalive(persistent_keepalive_secs);
        t
    }

    pub fn set_persistent_keepalive(&self, secs: u16) {
        self.persistent_keepalive.store(secs as u64, Ordering::Relaxed);
    }

    pub fn persistent_keepalive(&self) -> u16 {
        self.persistent_keepalive.load(Ordering::Relaxed) as u16
    }

    fn hs(&self) -> std::sync::MutexGuard<'_, HandshakeTimers> {
        self.handshake.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A data message (not a keepalive) was sent.
    pub fn on_data_sent(&self, now: Time) {
        // A load first, so the jitter is worked out only when the timer is
        // armed, not for every batch while it already is.
        if self.new_handshake_armed.load(Ordering::Relaxed) == 0 {
            let armed = enc(now + data_jitter(self.jitter_seed, now));
            let _ = self.new_handshake_armed.compare_exchange(0, armed, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// A data message (not a keepalive) was received.
    pub fn on_data_received(&self, now: Time) {
        let _ = self.keepalive_armed.compare_exchange(0, enc(now), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Any authenticated packet (data, keepalive, handshake) was sent.
    pub fn on_authenticated_packet_sent(&self, now: Time) {
        self.keepalive_armed.store(0, Ordering::Relaxed);
        self.last_traversal.store(enc(now), Ordering::Relaxed);
    }

    /// Any authenticated packet was received.
    pub fn on_authenticated_packet_received(&self, now: Time) {
        self.new_handshake_armed.store(0, Ordering::Relaxed);
        self.last_traversal.store(enc(now), Ordering::Relaxed);
    }

    /// An initiation was sent; `retry` when it repeats one that went unanswered.
    pub fn on_handshake_initiated(&self, now: Time, retry: bool) {
        let mut hs = self.hs();
        if !retry || hs.attempts_started.is_none() {
            hs.attempts_started = Some(now);
        }
        hs.retransmit_at = Some(now + REKEY_TIMEOUT + jitter());
    }

    /// A handshake completed (response consumed, or first data on a responder's session).
    pub fn on_handshake_complete(&self) {
        let mut hs = self.hs();
        hs.attempts_started = None;
        hs.retransmit_at = None;
    }

    /// New transport keys were derived.
    pub fn on_session_derived(&self, now: Time) {
        self.hs().zero_keys_at = Some(now + REJECT_AFTER_TIME * 3);
    }

    /// Everything was reset (keys cleared, peer reconfigured).
    pub fn reset(&self) {
        self.keepalive_armed.store(0, Ordering::Relaxed);
        self.new_handshake_armed.store(0, Ordering::Relaxed);
        *self.hs() = HandshakeTimers::default();
    }

    /// When the current series of handshake attempts began, if one runs.
    pub fn handshake_attempts_started(&self) -> Option<Time> {
        self.hs().attempts_started
    }

    /// Whether handshake attempts are under way (for status output).
    pub fn handshake_in_progress(&self) -> bool {
        self.hs().attempts_started.is_some()
    }

    /// The next action due at `now`, if any. Each returned action disarms its
    /// own timer, so polling again returns the next one; callers loop until
    /// `None`.
    pub fn poll(&self, now: Time) -> Option<TimerAction> {
        {
            let mut hs = self.hs();
            if hs.zero_keys_at.is_some_and(|t| now >= t) {
                // A series of attempts under way goes on with new keys, as
                // in wireguard-go, rather than stop with packets held.
                *hs = HandshakeTimers { zero_keys_at: None, ..*hs };
                drop(hs);
                self.keepalive_armed.store(0, Ordering::Relaxed);
                self.new_handshake_armed.store(0, Ordering::Relaxed);
                return Some(TimerAction::ClearKeys);
            }
            if hs.retransmit_at.is_some_and(|t| now >= t) {
                hs.retransmit_at = None;
                let started = hs.attempts_started.unwrap_or(now);
                if now.saturating_since(started) >= REKEY_ATTEMPT_TIME {
                    hs.attempts_started = None;
                    if hs.zero_keys_at.is_none() {
                        hs.zero_keys_at = Some(now + REJECT_AFTER_TIME * 3);
                    }
                    drop(hs);
                    // Giving up also cancels the pending reasons to try again.
                    self.keepalive_armed.store(0, Ordering::Relaxed);
                    self.new_handshake_armed.store(0, Ordering::Relaxed);
                    return Some(TimerAction::GiveUpHandshake);
                }
                // Re-armed here, not only when the retry's initiation goes
                // out: one that cannot (no endpoint yet) would otherwise
                // leave the series started with nothing to end it.
                hs.retransmit_at = Some(now + REKEY_TIMEOUT + jitter());
                return Some(TimerAction::RetryHandshake);
            }
        }
        if let Some(armed) = dec(self.keepalive_armed.load(Ordering::Relaxed)) {
            if now >= armed + KEEPALIVE_TIMEOUT {
                self.keepalive_armed.store(0, Ordering::Relaxed);
                return Some(TimerAction::SendKeepalive);
            }
        }
        if let Some(armed) = dec(self.new_handshake_armed.load(Ordering::Relaxed)) {
            if now >= armed + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT {
                self.new_handshake_armed.store(0, Ordering::Relaxed);
                return Some(TimerAction::InitiateHandshake);
            }
        }
        let interval = self.persistent_keepalive.load(Ordering::Relaxed);
        if interval > 0 {
            // Never traversed yet: send right away, which opens the NAT
            // mapping and starts the first handshake, as the kernel does.
            let due = match dec(self.last_traversal.load(Ordering::Relaxed)) {
                None => true,
                Some(last) => now >= last + Duration::from_secs(interval),
            };
            if due {
                self.last_traversal.store(enc(now), Ordering::Relaxed);
                return Some(TimerAction::SendKeepalive);
            }
        }
        None
    }

    /// The earliest time at which `poll` may return an action, so a caller
    /// can sleep until then (it may also poll earlier; nothing is lost).
    pub fn next_deadline(&self) -> Option<Time> {
        let hs = self.hs();
        let mut next: Option<Time> = None;
        let mut consider = |t: Option<Time>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(hs.zero_keys_at);
        consider(hs.retransmit_at);
        consider(dec(self.keepalive_armed.load(Ordering::Relaxed)).map(|t| t + KEEPALIVE_TIMEOUT));
        consider(dec(self.new_handshake_armed.load(Ordering::Relaxed)).map(|t| t + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT));
        let interval = self.persistent_keepalive.load(Ordering::Relaxed);
        if interval > 0 {
            consider(Some(match dec(self.last_traversal.load(Ordering::Relaxed)) {
                None => Time::ZERO,
                Some(last) => last + Duration::from_secs(interval),
            }));
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Time {
        Time::from_secs(s)
    }

    #[test]
    fn keepalive_after_data_received_and_nothing_sent() {
        let t = Timers::new(0);
        t.on_data_received(secs(100));
        t.on_data_received(secs(105)); // does not push the deadline
        assert_eq!(t.poll(secs(109)), None);
        assert_eq!(t.next_deadline(), Some(secs(110)));
        assert_eq!(t.poll(secs(110)), Some(TimerAction::SendKeepalive));
        assert_eq!(t.poll(secs(111)), None);
        // Sending anything cancels it.
        t.on_data_received(secs(200));
        t.on_authenticated_packet_sent(secs(201));
        assert_eq!(t.poll(secs(300)), None);
    }

    #[test]
    fn new_handshake_when_sent_data_goes_unanswered() {
        let t = Timers::new(0);
        t.on_data_sent(secs(10));
        t.on_data_sent(secs(12)); // does not push the deadline
        let due = t.next_deadline().unwrap();
        assert!(due >= secs(25) && due < secs(25) + REKEY_TIMEOUT_JITTER_MAX, "{due:?}");
        assert_eq!(t.poll(due - Duration::from_nanos(1)), None);
        assert_eq!(t.poll(due), Some(TimerAction::InitiateHandshake));
        assert_eq!(t.poll(secs(100)), None);
        t.on_data_sent(secs(30));
        t.on_authenticated_packet_received(secs(31));
        assert_eq!(t.poll(secs(100)), None);
    }

    #[test]
    fn the_new_handshake_jitter_differs_between_peers_and_arms() {
        let jitters = |t: &Timers| -> Vec<Duration> {
            (0..20u64)
                .map(|i| {
                    // Arm times a few microseconds apart, as batches are.
                    let at = Time::from_nanos(1_000_000_000_000 + i * 3_517);
                    t.on_data_sent(at);
                    let due = t.next_deadline().unwrap();
                    t.on_authenticated_packet_received(at);
                    due.saturating_since(at) - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
                })
                .collect()
        };
        let (a, b) = (jitters(&Timers::new(0)), jitters(&Timers::new(0)));
        for j in a.iter().chain(&b) {
            assert!(*j < REKEY_TIMEOUT_JITTER_MAX, "{j:?}");
        }
        let distinct = |v: &[Duration]| v.iter().collect::<std::collections::BTreeSet<_>>().len();
        assert!(distinct(&a) >= 15 && distinct(&b) >= 15, "{a:?}\n{b:?}");
        // The same arm times, another peer: other jitters.
        assert_ne!(a, b);
        // Spread over the range, not bunched at one end.
        let ms = |v: &[Duration]| v.iter().map(|j| j.as_millis()).collect::<Vec<_>>();
        let all: Vec<u128> = [ms(&a), ms(&b)].concat();
        assert!(all.iter().any(|&m| m < 167) && all.iter().any(|&m| m >= 167), "{all:?}");
    }

    #[test]
    fn retries_every_rekey_timeout_then_gives_up_after_90s() {
        let t = Timers::new(0);
        let mut now = secs(1000);
        t.on_handshake_initiated(now, false);
        let mut retries = 0;
        loop {
            let deadline = t.next_deadline().unwrap();
            assert!(deadline >= now + REKEY_TIMEOUT && deadline < now + REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX);
            assert_eq!(t.poll(deadline - Duration::from_millis(1)), None);
            now = deadline;
            match t.poll(now) {
                Some(TimerAction::RetryHandshake) => {
                    retries += 1;
                    t.on_handshake_initiated(now, true);
                }
                Some(TimerAction::GiveUpHandshake) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        // 90 s of attempts at 5 s to 5.33 s apart.
        assert!((16..=18).contains(&retries), "{retries} retries");
        assert!(now.saturating_since(secs(1000)) >= REKEY_ATTEMPT_TIME);
        assert!(!t.handshake_in_progress());
        // After giving up, keys are erased 540 s later.
        assert_eq!(t.poll(now + Duration::from_secs(539)), None);
        assert_eq!(t.poll(now + Duration::from_secs(540)), Some(TimerAction::ClearKeys));
    }

    // A retry whose initiation could not go out (no endpoint yet) does not
    // leave the series hanging: it goes on, and still gives up at 90 s.
    #[test]
    fn retries_that_send_nothing_still_end_the_series() {
        let t = Timers::new(0);
        t.on_handshake_initiated(secs(1000), false);
        let mut retries = 0;
        let end = loop {
            let now = t.next_deadline().expect("the series goes on");
            match t.poll(now) {
                Some(TimerAction::RetryHandshake) => retries += 1,
                Some(TimerAction::GiveUpHandshake) => break now,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!((16..=18).contains(&retries), "{retries} retries");
        assert!(end.saturating_since(secs(1000)) >= REKEY_ATTEMPT_TIME);
        assert!(!t.handshake_in_progress());
    }

    // Keys erased 540 s after the last session while attempts run: the
    // attempts go on.
    #[test]
    fn erasing_keys_does_not_stop_attempts_under_way() {
        let t = Timers::new(0);
        t.on_session_derived(secs(0));
        t.on_handshake_initiated(secs(538), false);
        assert_eq!(t.poll(secs(540)), Some(TimerAction::ClearKeys));
        assert!(t.handshake_in_progress());
        let retry_at = t.next_deadline().unwrap();
        assert!(retry_at >= secs(543));
        assert_eq!(t.poll(retry_at), Some(TimerAction::RetryHandshake));
    }

    #[test]
    fn completion_stops_retries_and_session_schedules_zeroing() {
        let t = Timers::new(0);
        t.on_handshake_initiated(secs(0), false);
        t.on_handshake_complete();
        t.on_session_derived(secs(1));
        assert_eq!(t.poll(secs(60)), None);
        assert_eq!(t.next_deadline(), Some(secs(541)));
        assert_eq!(t.poll(secs(541)), Some(TimerAction::ClearKeys));
        assert_eq!(t.poll(secs(542)), None);
    }

    #[test]
    fn persistent_keepalive_fires_at_start_and_every_interval_of_silence() {
        let t = Timers::new(25);
        assert_eq!(t.poll(secs(0)), Some(TimerAction::SendKeepalive));
        t.on_authenticated_packet_sent(secs(0));
        assert_eq!(t.poll(secs(24)), None);
        assert_eq!(t.poll(secs(25)), Some(TimerAction::SendKeepalive));
        t.on_authenticated_packet_sent(secs(25));
        t.on_authenticated_packet_received(secs(40));
        assert_eq!(t.poll(secs(64)), None);
        assert_eq!(t.poll(secs(65)), Some(TimerAction::SendKeepalive));
        t.set_persistent_keepalive(0);
        assert_eq!(t.poll(secs(1000)), None);
    }
}
