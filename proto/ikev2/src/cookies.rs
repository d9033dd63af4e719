//! The responder's defence against IKE_SA_INIT floods (RFC 7296 §2.6): past
//! a number of half-open IKE SAs, or of new requests in the last second, a
//! request is answered with a COOKIE notification and only a request
//! echoing a valid cookie creates state or costs a Diffie-Hellman. The
//! count of requests matters as much as the half-open SAs: a spoofed
//! request that fails after its DH (a key share out of range, say) leaves
//! no SA behind, yet cost the work.
//!
//! Invariant: while under the threshold, cookies are neither asked for nor
//! checked, so a peer that sends one anyway is served as usual.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::crypto::CookieSecret;
use crate::ids::notify as n;
use crate::sa::notify;
use crate::wire::notify::Notify;
use crate::wire::payload::Payload;

/// The endpoint's cookie policy: its secret (none if the endpoint's random
/// source failed when it was made, and then no cookies) and threshold.
pub(crate) struct Cookies {
    pub secret: Option<CookieSecret>,
    /// Half-open IKE SAs, or new requests earlier in the same second, from
    /// which on a cookie is required.
    pub threshold: usize,
    /// When the secret was last replaced; set by the first message or
    /// timer, since the core has no clock of its own.
    pub rotated_at: Option<Instant>,
    /// New IKE_SA_INIT requests counted since the start of the current
    /// one-second window.
    pub window: Option<(Instant, usize)>,
}

/// How long new requests are counted together.
const REQUEST_WINDOW: Duration = Duration::from_secs(1);

/// How often the secret is replaced (RFC 7296 §2.6: frequently). A cookie
/// stays valid until the rotation after the one that follows its making,
/// so an initiator's retry always finds it good, and one captured once
/// is good for ten minutes at most.
pub(crate) const COOKIE_ROTATION: Duration = Duration::from_secs(300);

impl Cookies {
    /// Counts a new IKE_SA_INIT request at `now` and returns how many came
    /// before it in the current window.
    pub(crate) fn count_request(&mut self, now: Instant) -> usize {
        let (start, earlier) = match self.window {
            Some((start, n)) if now.saturating_duration_since(start) < REQUEST_WINDOW => (start, n),
            _ => (now, 0),
        };
        self.window = Some((start, earlier + 1));
        earlier
    }

    /// When the secret is next due to be replaced.
    pub(crate) fn rotation_due(&self) -> Option<Instant> {
        self.secret.as_ref()?;
        Some(self.rotated_at? + COOKIE_ROTATION)
    }

    /// Replaces the secret if it is due at `now`.
    pub(crate) fn rotate_if_due(&mut self, now: Instant, rng: &mut dyn rand_core::RngCore) {
        let Some(secret) = &mut self.secret else { return };
        match self.rotated_at {
            None => self.rotated_at = Some(now),
            Some(t) if now.saturating_duration_since(t) >= COOKIE_ROTATION => {
                // A failed draw keeps the old secret, to be tried again.
                if secret.rotate(rng).is_ok() {
                    self.rotated_at = Some(now);
                }
            }
            Some(_) => {}
        }
    }

    /// Whether an IKE_SA_INIT request may create state while `half_open`
    /// IKE SAs are; if not, the COOKIE notification to answer it with.
    pub(crate) fn admit(
        &self,
        half_open: usize,
        remote: SocketAddr,
        spi_i: u64,
        ni: &[u8],
        p: &[Payload],
    ) -> Result<(), Notify> {
        if half_open < self.threshold {
            return Ok(());
        }
        let Some(secret) = &self.secret else { return Ok(()) };
        if let Some(c) = notify(p, n::COOKIE) {
            if secret.check(&c.data, ni, remote.ip(), spi_i) {
                return Ok(());
            }
        }
        Err(Notify::new(n::COOKIE, secret.make(ni, remote.ip(), spi_i)))
    }
}
