//! SPI allocation for IKE SAs and for our inbound ESP SAs.
//!
//! Invariant (ESP): an inbound SPI we choose is never below 256 (RFC 4303
//! §2.1 reserves 1–255) and never has the octets `[1..=4, 0, 0, 0]`: ESP
//! and WireGuard may share a UDP port, and WireGuard's messages start with
//! a type 1–4 followed by three zero octets, so such an SPI would make an
//! ESP packet look like a WireGuard one. Every inbound SPI goes through
//! [`is_valid_esp_spi`].
//!
//! Invariant (IKE): our IKE SPIs are never zero (zero means "not yet known"
//! in an IKE_SA_INIT request).

use rand_core::RngCore;

/// Whether `spi` may be one of our inbound ESP SPIs.
pub fn is_valid_esp_spi(spi: u32) -> bool {
    let looks_like_wireguard = matches!(spi >> 24, 1..=4) && spi & 0x00ff_ffff == 0;
    spi >= 256 && !looks_like_wireguard
}

/// A fresh inbound ESP SPI that is valid and not `in_use`.
pub(crate) fn new_esp_spi(rng: &mut dyn RngCore, in_use: impl Fn(u32) -> bool) -> u32 {
    loop {
        let spi = rng.next_u32();
        if is_valid_esp_spi(spi) && !in_use(spi) {
            return spi;
        }
    }
}

/// A fresh IKE SPI that is not zero and not `in_use`.
pub(crate) fn new_ike_spi(rng: &mut dyn RngCore, in_use: impl Fn(u64) -> bool) -> u64 {
    loop {
        let spi = rng.next_u64();
        if spi != 0 && !in_use(spi) {
            return spi;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns a fixed sequence, then counts up.
    struct Scripted(Vec<u32>, u32);
    impl RngCore for Scripted {
        fn next_u32(&mut self) -> u32 {
            if self.0.is_empty() {
                self.1 += 1;
                return self.1;
            }
            self.0.remove(0)
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.next_u32())
        }
        fn fill_bytes(&mut self, d: &mut [u8]) {
            d.iter_mut().for_each(|b| *b = self.next_u32() as u8);
        }
        fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(d);
            Ok(())
        }
    }

    #[test]
    fn wireguard_lookalikes_and_reserved_spis_are_never_chosen() {
        for t in 1..=4u32 {
            assert!(!is_valid_esp_spi(t << 24));
            assert!(is_valid_esp_spi((t << 24) | 1));
        }
        assert!(is_valid_esp_spi(5 << 24));
        for s in 0..256 {
            assert!(!is_valid_esp_spi(s));
        }
        assert!(is_valid_esp_spi(256));
        let mut rng = Scripted(vec![0, 255, 0x0100_0000, 0x0400_0000, 0x0300_0000, 0x1234, 0x5678], 0);
        assert_eq!(new_esp_spi(&mut rng, |s| s == 0x1234), 0x5678);
        let mut rng = Scripted(vec![0, 7], 0);
        assert_eq!(new_ike_spi(&mut rng, |_| false), 7);
    }
}
