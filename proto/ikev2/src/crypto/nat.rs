//! NAT detection (RFC 7296 §2.23): the data of NAT_DETECTION_SOURCE_IP and
//! NAT_DETECTION_DESTINATION_IP is SHA-1(SPIi | SPIr | IP | Port).
//!
//! SHA-1 is what the RFC mandates and both sides must compute the same
//! bytes; the hash only detects address rewriting, it protects nothing, so
//! its collision weakness does not matter here. aws-lc-rs provides it under
//! the name SHA1_FOR_LEGACY_USE_ONLY.

use std::net::{IpAddr, SocketAddr};

use aws_lc_rs::digest;

/// SHA-1 of the SPIs (network order; SPIr is zero in the IKE_SA_INIT
/// request), the address (4 or 16 bytes) and the port (2 bytes).
pub fn nat_detection_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> [u8; 20] {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => ctx.update(&ip.octets()),
        IpAddr::V6(ip) => ctx.update(&ip.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_the_rfc_fields() {
        let spi_i: u64 = 0x0102030405060708;
        let spi_r: u64 = 0x1112131415161718;
        let v4: SocketAddr = "198.18.0.1:500".parse().expect("addr");
        let mut input = Vec::new();
        input.extend_from_slice(&spi_i.to_be_bytes());
        input.extend_from_slice(&spi_r.to_be_bytes());
        input.extend_from_slice(&[198, 18, 0, 1]);
        input.extend_from_slice(&500u16.to_be_bytes());
        let expected = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
        assert_eq!(&nat_detection_hash(spi_i, spi_r, v4)[..], expected.as_ref());

        let v6: SocketAddr = "[fd00::1]:4500".parse().expect("addr");
        let mut input = Vec::new();
        input.extend_from_slice(&spi_i.to_be_bytes());
        input.extend_from_slice(&0u64.to_be_bytes());
        input.extend_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().expect("v6").octets());
        input.extend_from_slice(&4500u16.to_be_bytes());
        let expected = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
        assert_eq!(&nat_detection_hash(spi_i, 0, v6)[..], expected.as_ref());
    }

    #[test]
    fn any_field_changes_the_hash() {
        let a: SocketAddr = "198.18.0.1:500".parse().expect("addr");
        let base = nat_detection_hash(1, 2, a);
        assert_ne!(base, nat_detection_hash(3, 2, a));
        assert_ne!(base, nat_detection_hash(1, 3, a));
        assert_ne!(base, nat_detection_hash(1, 2, "198.18.0.2:500".parse().expect("addr")));
        assert_ne!(base, nat_detection_hash(1, 2, "198.18.0.1:4500".parse().expect("addr")));
    }

    /// SHA-1 itself, FIPS 180 "abc", so the legacy digest is the one meant.
    #[test]
    fn sha1_is_sha1() {
        let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, b"abc");
        assert_eq!(hex::encode(d.as_ref()), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
