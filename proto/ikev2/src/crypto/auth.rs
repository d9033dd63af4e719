//! Pre-shared-key authentication (RFC 7296 §2.15):
//! AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>),
//! SignedOctets = the sender's IKE_SA_INIT message | the peer's nonce data |
//! prf(SK_px, the sender's ID payload body).
//!
//! Invariant: a received AUTH is compared in constant time, and a value of
//! the wrong length is refused without comparing.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::prf::{prf, prf_parts};
use super::PrfAlg;

/// The pad string of §2.15, without a terminating NUL.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// The octets the AUTH payload covers. `first_message` is the sender's whole
/// IKE_SA_INIT message (the request for the initiator, the response for the
/// responder), `peer_nonce` the Nonce Data the other side sent, `sk_p` the
/// sender's SK_pi or SK_pr and `id_payload_body` its IDi or IDr payload
/// without the 4-byte generic header (ID type, 3 reserved bytes, data).
pub fn signed_octets(
    prf_alg: PrfAlg,
    first_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_payload_body: &[u8],
) -> Vec<u8> {
    let maced_id = prf(prf_alg, sk_p, id_payload_body);
    [first_message, peer_nonce, &maced_id[..]].concat()
}

/// The AUTH payload's Authentication Data for the shared key `psk`.
pub fn psk_auth(prf_alg: PrfAlg, psk: &[u8], signed_octets: &[u8]) -> Zeroizing<Vec<u8>> {
    let padded_key = prf(prf_alg, psk, KEY_PAD);
    prf_parts(prf_alg, &padded_key, &[signed_octets])
}

/// Whether `received` is the AUTH `psk` gives over `signed_octets`.
pub fn verify_psk_auth(prf_alg: PrfAlg, psk: &[u8], signed_octets: &[u8], received: &[u8]) -> bool {
    let expected = psk_auth(prf_alg, psk, signed_octets);
    // Lengths are public (the prf's output length); contents are not.
    expected.len() == received.len() && bool::from(expected.ct_eq(received))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::hmac;

    /// Checked against ring's HMAC applied by hand, following §2.15.
    #[test]
    fn psk_auth_matches_the_rfc_formula() {
        let first_message = b"an IKE_SA_INIT request, as sent";
        let nr = [0x4e; 32];
        let sk_pi = [0x70; 32];
        let id_body = [1u8, 0, 0, 0, 198, 18, 0, 1];
        let psk = b"correct horse battery staple";

        let octets = signed_octets(PrfAlg::HmacSha256, first_message, &nr, &sk_pi, &id_body);
        let maced = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &sk_pi), &id_body);
        assert_eq!(octets, [&first_message[..], &nr[..], maced.as_ref()].concat());

        let inner = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, psk), b"Key Pad for IKEv2");
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, inner.as_ref()), &octets);
        let auth = psk_auth(PrfAlg::HmacSha256, psk, &octets);
        assert_eq!(&auth[..], expected.as_ref());

        let inner = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA384, psk), b"Key Pad for IKEv2");
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA384, inner.as_ref()), &octets);
        assert_eq!(&psk_auth(PrfAlg::HmacSha384, psk, &octets)[..], expected.as_ref());
    }

    #[test]
    fn verification_refuses_any_change() {
        let octets = b"signed octets";
        let auth = psk_auth(PrfAlg::HmacSha256, b"psk", octets);
        assert!(verify_psk_auth(PrfAlg::HmacSha256, b"psk", octets, &auth));
        assert!(!verify_psk_auth(PrfAlg::HmacSha256, b"psK", octets, &auth));
        assert!(!verify_psk_auth(PrfAlg::HmacSha256, b"psk", b"signed octetz", &auth));
        assert!(!verify_psk_auth(PrfAlg::HmacSha384, b"psk", octets, &auth));
        assert!(!verify_psk_auth(PrfAlg::HmacSha256, b"psk", octets, &auth[..31]));
        assert!(!verify_psk_auth(PrfAlg::HmacSha256, b"psk", octets, &[]));
        for i in 0..auth.len() {
            let mut bad = auth.to_vec();
            bad[i] ^= 0x80;
            assert!(!verify_psk_auth(PrfAlg::HmacSha256, b"psk", octets, &bad));
        }
    }
}
