//! The responder's defence against IKE_SA_INIT floods (RFC 7296 §2.6): past
//! a number of half-open IKE SAs, a request is answered with a COOKIE
//! notification and only a request echoing a valid cookie creates state.
//!
//! Invariant: while under the threshold, cookies are neither asked for nor
//! checked, so a peer that sends one anyway is served as usual.

use std::net::SocketAddr;

use crate::crypto::CookieSecret;
use crate::ids::notify as n;
use crate::sa::notify;
use crate::wire::notify::Notify;
use crate::wire::payload::Payload;

/// The endpoint's cookie policy: its secret (none if the endpoint's random
/// source failed when it was made, and then no cookies) and threshold.
pub(crate) struct Cookies {
    pub secret: Option<CookieSecret>,
    /// Half-open IKE SAs from which on a cookie is required.
    pub threshold: usize,
}

impl Cookies {
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
