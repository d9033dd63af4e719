//! What an IKE SA keeps while a rekey (RFC 7296 §1.3.2, §1.3.3) is under
//! way: our outstanding child or IKE SA rekey, and a rekey of the peer's we
//! answered meanwhile, by which a collision (§2.8.1, §2.8.2) is resolved.
//! The exchanges themselves are in `rekey`; this is the state the SA holds.
//!
//! Invariant: of two colliding rekeys, the one with the lowest of the four
//! nonces made the redundant SA — both ends reach opposite verdicts over
//! the same nonces, so exactly one SA survives.

use crate::crypto::DhPrivate;

/// Our outstanding child rekey.
pub(crate) struct ChildRekey {
    /// The inbound SPI of the child being replaced.
    pub old: u32,
    /// Our inbound SPI of the new one.
    pub spi_in: u32,
    pub ni: Vec<u8>,
    pub dh: Option<DhPrivate>,
}

/// Our outstanding IKE SA rekey.
pub(crate) struct IkeRekey {
    /// Our SPI in the new SA (its SPIi).
    pub spi: u64,
    pub ni: Vec<u8>,
    pub dh: DhPrivate,
}

/// A rekey we answered while our own rekey of the same SA was out.
#[derive(Debug, Clone)]
pub(crate) struct Collision {
    /// The peer's request nonce and our response nonce.
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    /// The SA that exchange created: our inbound SPI (child) or our SPI
    /// of the new IKE SA.
    pub created: u64,
}

/// Whether the exchange with nonces (`ours_ni`, `ours_nr`) holds the
/// lowest of the four nonces, making the SA it created redundant.
pub(crate) fn ours_is_redundant(ours_ni: &[u8], ours_nr: &[u8], c: &Collision) -> bool {
    let ours = ours_ni.min(ours_nr);
    let theirs = c.ni.as_slice().min(c.nr.as_slice());
    ours < theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exchange_with_the_lowest_nonce_is_redundant() {
        let c = Collision { ni: vec![5; 32], nr: vec![7; 32], created: 1 };
        assert!(ours_is_redundant(&[9; 32], &[4; 32], &c));
        assert!(!ours_is_redundant(&[6; 32], &[9; 32], &c));
        // Both ends reach opposite verdicts over the same four nonces.
        let theirs = Collision { ni: vec![9; 32], nr: vec![4; 32], created: 2 };
        assert!(!ours_is_redundant(&[5; 32], &[7; 32], &theirs));
    }
}
