//! The responder's defence against IKE_SA_INIT floods (RFC 7296 §2.6): past
//! a number of half-open IKE SAs, a request is answered with a COOKIE
//! notification and only a request echoing a valid cookie creates state.
//!
//! Invariant: while under the threshold, cookies are neither asked for nor
//! checked, so a peer that sends one anyway is served as usual.

use std::net::SocketAddr;

use crate::endpoint::Endpoint;
use crate::ids::notify as n;
use crate::sa::{notify, SaState};
use crate::wire::notify::Notify;
use crate::wire::payload::Payload;

impl Endpoint {
    /// Whether an IKE_SA_INIT request may create state; if not, the cookie
    /// it must echo has been sent.
    pub(crate) fn cookie_ok(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        spi_i: u64,
        ni: &[u8],
        p: &[Payload],
    ) -> bool {
        let half_open = self.sas.values().filter(|s| s.state == SaState::InitReplied).count();
        if half_open < self.cookie_threshold {
            return true;
        }
        let Some(secret) = &self.cookie else { return true };
        if let Some(c) = notify(p, n::COOKIE) {
            if secret.check(&c.data, ni, remote.ip(), spi_i) {
                return true;
            }
        }
        let cookie = secret.make(ni, remote.ip(), spi_i);
        crate::sa_init::answer_plain(&mut self.io, local, remote, spi_i, Notify::new(n::COOKIE, cookie));
        false
    }
}
