//! Whether one gateway of a site is up: the state machine the control
//! plane feeds with what it observes of the member's peer every tick.
//! Sans-IO: the caller gathers an `Observation` (`site::observe_peer`)
//! and passes the time.
//!
//! A member starts up: it may carry traffic before anything is known of
//! it, so the first packets to it start its handshake, and a gateway that
//! restarts does not shift every flow while its sessions come back. It
//! goes down when
//! - it cannot be reached: no session and no endpoint to start one with;
//! - handshakes (IKE for IPsec) have been failing for `failover_after`,
//!   and nothing authenticated has come from it for as long: a member
//!   still heard on its old session (a rekey whose packet was lost) is
//!   alive, and taking it down would only flip it back up at its next
//!   packet, tick after tick;
//! - it is expected to send (persistent keepalive) and nothing
//!   authenticated has come from it for `silence_limit`: the larger of
//!   `failover_after` and two keepalive intervals and a second, so one
//!   lost keepalive never takes a member down.
//!
//! It comes back up as soon as something authenticated arrives from it
//! while a session is usable (a handshake it answered, a keepalive).
//! Heard-from is a counter that changes when anything authenticated
//! arrives, compared tick to tick, so the data path does no extra work.
//! A member marked down by hand (`Down::Marked`) stays down until marked
//! up.

use std::time::Duration;

use causeway_wireguard::Time;

/// Why a member is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// No session and no endpoint to start one with.
    Unreachable,
    /// Handshakes (or IKE) failing for `failover_after`.
    HandshakesFailing,
    /// Nothing authenticated from it for `silence_limit`.
    Silent,
    /// Marked down by hand.
    Marked,
}

impl Down {
    pub fn name(self) -> &'static str {
        match self {
            Down::Unreachable => "unreachable",
            Down::HandshakesFailing => "handshakes failing",
            Down::Silent => "silent",
            Down::Marked => "marked down",
        }
    }
}

/// A change of a member's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Up,
    Down(Down),
}

/// What the control plane sees of a member's peer at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Changes whenever something authenticated arrives from the member.
    pub heard: u64,
    /// Changes whenever something is sent to the member.
    pub sent: u64,
    /// A session usable for sending now.
    pub session: bool,
    /// An endpoint is known, so a session can be started.
    pub reachable: bool,
    /// Since when handshakes (IKE) have been failing, if they are.
    pub failing_since: Option<Time>,
    /// The member's persistent keepalive interval, when it has one: it is
    /// then expected to send at least this often.
    pub keepalive: Option<Duration>,
    pub failover_after: Duration,
}

/// How long a member that keeps alive every `keepalive` may stay silent.
pub fn silence_limit(keepalive: Duration, failover_after: Duration) -> Duration {
    failover_after.max(keepalive * 2 + Duration::from_secs(1))
}

#[derive(Debug, Clone)]
pub struct Health {
    up: bool,
    since: Time,
    reason: Option<Down>,
    /// The `heard` counter last seen; `None` before the first observation,
    /// which only records it (what came before the member joined is not
    /// news).
    heard: Option<u64>,
    last_heard: Time,
    sent: Option<u64>,
    last_sent: Time,
}

impl Health {
    /// A member that joined at `now`: up, and heard from now for the
    /// silence count (it gets `silence_limit` to say something).
    pub fn new(now: Time) -> Health {
        Health { up: true, since: now, reason: None, heard: None, last_heard: now, sent: None, last_sent: now }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// When the current state began.
    pub fn since(&self) -> Time {
        self.since
    }

    /// Why it is down, while it is.
    pub fn reason(&self) -> Option<Down> {
        self.reason
    }

    /// When something authenticated last arrived (or the member joined).
    pub fn last_heard(&self) -> Time {
        self.last_heard
    }

    fn set(&mut self, up: bool, reason: Option<Down>, now: Time) -> Option<Change> {
        if self.up == up && self.reason == reason {
            return None;
        }
        let changed = self.up != up;
        (self.up, self.reason, self.since) = (up, reason, if changed { now } else { self.since });
        changed.then(|| reason.map_or(Change::Up, Change::Down))
    }

    /// Takes one observation; returns the change it caused.
    pub fn observe(&mut self, o: &Observation, now: Time) -> Option<Change> {
        let heard = self.heard.is_some_and(|h| h != o.heard);
        self.heard = Some(o.heard);
        if heard {
            self.last_heard = now;
        }
        if self.reason == Some(Down::Marked) {
            return None;
        }
        if !self.up {
            return (heard && o.session).then(|| self.set(true, None, now)).flatten();
        }
        let reason = if !o.session && !o.reachable {
            Some(Down::Unreachable)
        } else if o.failing_since.is_some_and(|t| now.saturating_since(t) >= o.failover_after)
            && now.saturating_since(self.last_heard) >= o.failover_after
        {
            Some(Down::HandshakesFailing)
        } else if o
            .keepalive
            .is_some_and(|k| now.saturating_since(self.last_heard) >= silence_limit(k, o.failover_after))
        {
            Some(Down::Silent)
        } else {
            None
        };
        reason.and_then(|r| self.set(false, Some(r), now))
    }

    /// Whether to send the member a keepalive now: it has one (so it
    /// watches us as we watch it) and nothing went to it for that long.
    /// The protocol's own persistent keepalive is silent while packets
    /// arrive, but a gateway that only receives from us must still hear
    /// from us, or it would take us for dead.
    pub fn keepalive_due(&mut self, o: &Observation, now: Time) -> bool {
        if self.sent != Some(o.sent) {
            self.sent = Some(o.sent);
            self.last_sent = now;
            return false;
        }
        match o.keepalive {
            Some(k) if now.saturating_since(self.last_sent) >= k => {
                self.last_sent = now;
                true
            }
            _ => false,
        }
    }

    /// Marks the member up or down by hand; `Down::Marked` sticks until
    /// marked up.
    pub fn mark(&mut self, up: bool, now: Time) -> Option<Change> {
        if up {
            self.set(true, None, now)
        } else {
            self.set(false, Some(Down::Marked), now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Time {
        Time::from_nanos(ms * 1_000_000)
    }

    /// A WireGuard member with a session, keepalive 1 s, failover 3 s.
    fn seen(heard: u64) -> Observation {
        Observation {
            heard,
            sent: 0,
            session: true,
            reachable: true,
            failing_since: None,
            keepalive: Some(Duration::from_secs(1)),
            failover_after: Duration::from_secs(3),
        }
    }

    #[test]
    fn a_killed_member_is_down_after_three_seconds_of_silence_and_up_on_its_next_word() {
        let mut h = Health::new(at(0));
        // Keepalives every second, observed every 100 ms.
        let mut heard = 0;
        for t in (0..10_000).step_by(100) {
            if t % 1000 == 0 {
                heard += 1;
            }
            assert_eq!(h.observe(&seen(heard), at(t)), None, "at {t} ms");
        }
        // Killed at 10 s, right after its keepalive at 10 s.
        heard += 1;
        assert_eq!(h.observe(&seen(heard), at(10_000)), None);
        for t in (10_100..13_000).step_by(100) {
            assert_eq!(h.observe(&seen(heard), at(t)), None, "at {t} ms");
        }
        assert_eq!(h.observe(&seen(heard), at(13_000)), Some(Change::Down(Down::Silent)));
        assert!(!h.is_up() && h.since() == at(13_000) && h.reason() == Some(Down::Silent));
        // Down stays down while silent, whatever else happens.
        assert_eq!(h.observe(&seen(heard), at(60_000)), None);
        // Back: its handshake completes (a new counter value).
        assert_eq!(h.observe(&seen(heard + 1), at(61_000)), Some(Change::Up));
        assert_eq!((h.is_up(), h.reason(), h.last_heard()), (true, None, at(61_000)));
    }

    #[test]
    fn heard_without_a_usable_session_is_not_up() {
        let mut h = Health::new(at(0));
        h.observe(&seen(1), at(0));
        assert_eq!(h.observe(&seen(1), at(3000)), Some(Change::Down(Down::Silent)));
        let no_session = Observation { session: false, ..seen(2) };
        assert_eq!(h.observe(&no_session, at(3100)), None);
        // The counter moved before; only a later change counts.
        assert_eq!(h.observe(&seen(2), at(3200)), None);
        assert_eq!(h.observe(&seen(3), at(3300)), Some(Change::Up));
    }

    #[test]
    fn what_came_before_joining_is_not_news() {
        let mut h = Health::new(at(0));
        h.mark(false, at(0));
        h.mark(true, at(0));
        assert_eq!(h.observe(&seen(500), at(100)), None);
        assert_eq!(h.last_heard(), at(0), "the first observation only records the counter");
        // And the silence count starts when the member joined.
        assert_eq!(h.observe(&seen(500), at(2900)), None);
        assert_eq!(h.observe(&seen(500), at(3000)), Some(Change::Down(Down::Silent)));
    }

    #[test]
    fn failing_handshakes_take_it_down_after_failover_after() {
        let mut h = Health::new(at(0));
        let failing = Observation { keepalive: None, session: false, failing_since: Some(at(1000)), ..seen(0) };
        assert_eq!(h.observe(&failing, at(3999)), None);
        assert_eq!(h.observe(&failing, at(4000)), Some(Change::Down(Down::HandshakesFailing)));
        // Without keepalives, silence alone is no reason.
        let mut quiet = Health::new(at(0));
        let no_keepalive = Observation { keepalive: None, ..seen(0) };
        assert_eq!(quiet.observe(&no_keepalive, at(3_600_000)), None);
        assert!(quiet.is_up());
    }

    // A rekey whose initiation was lost: handshakes fail for longer than
    // failover_after while the old session still carries the member's
    // packets. It stays up (it used to go down and come back every
    // other tick), and goes down once it has also been silent that long.
    #[test]
    fn failing_handshakes_of_a_member_still_heard_do_not_take_it_down() {
        let mut h = Health::new(at(0));
        let rekeying = |heard| Observation { keepalive: None, failing_since: Some(at(1000)), ..seen(heard) };
        let mut heard = 0;
        for t in (0..10_000).step_by(100) {
            heard += 1;
            assert_eq!(h.observe(&rekeying(heard), at(t)), None, "at {t} ms");
        }
        assert!(h.is_up());
        // It dies at 10 s: down 3 s later.
        for t in (10_000..12_900).step_by(100) {
            assert_eq!(h.observe(&rekeying(heard), at(t)), None, "at {t} ms");
        }
        assert_eq!(h.observe(&rekeying(heard), at(12_900)), Some(Change::Down(Down::HandshakesFailing)));
    }

    #[test]
    fn no_session_and_no_endpoint_is_unreachable() {
        let mut h = Health::new(at(0));
        let o = Observation { session: false, reachable: false, keepalive: None, ..seen(0) };
        assert_eq!(h.observe(&o, at(0)), Some(Change::Down(Down::Unreachable)));
        // It calls us: a session, and something heard.
        assert_eq!(h.observe(&Observation { session: true, ..o }, at(10)), None, "nothing heard yet");
        assert_eq!(h.observe(&Observation { session: true, heard: 1, ..o }, at(20)), Some(Change::Up));
    }

    #[test]
    fn silence_limit_allows_a_lost_keepalive() {
        let s = Duration::from_secs;
        assert_eq!(silence_limit(s(1), s(3)), s(3));
        assert_eq!(silence_limit(s(1), s(1)), s(3));
        assert_eq!(silence_limit(s(25), s(10)), s(51));
    }

    #[test]
    fn a_marked_member_stays_down_until_marked_up() {
        let mut h = Health::new(at(0));
        assert_eq!(h.mark(false, at(5)), Some(Change::Down(Down::Marked)));
        assert_eq!(h.mark(false, at(6)), None);
        assert_eq!(h.observe(&seen(1), at(10)), None);
        assert_eq!(h.observe(&seen(2), at(20)), None, "heard, yet marked");
        assert_eq!(h.mark(true, at(30)), Some(Change::Up));
        assert_eq!(h.since(), at(30));
    }

    #[test]
    fn keepalives_go_when_nothing_was_sent_for_an_interval() {
        let mut h = Health::new(at(0));
        let o = |sent| Observation { sent, ..seen(0) };
        assert!(!h.keepalive_due(&o(7), at(0)), "first sight records the counter");
        assert!(!h.keepalive_due(&o(7), at(900)));
        assert!(h.keepalive_due(&o(7), at(1000)));
        assert!(!h.keepalive_due(&o(8), at(1100)), "the keepalive went out");
        assert!(!h.keepalive_due(&o(9), at(2000)), "traffic went out");
        assert!(h.keepalive_due(&o(9), at(3000)));
        let none = Observation { keepalive: None, ..o(9) };
        assert!(!h.keepalive_due(&none, at(9000)), "no keepalive configured");
    }
}
