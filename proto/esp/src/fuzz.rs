//! The body of a fuzz target for the ESP core (the lead wires it into
//! `fuzz/`: `libfuzzer_sys::fuzz_target!(|d: &[u8]| causeway_esp::fuzz::esp(d))`),
//! checking properties beyond "does not panic". Test keys only.

use std::sync::OnceLock;

use zeroize::Zeroizing;

use crate::{Cipher, InboundSa, OutboundSa, SaKeys};

const SPI: u32 = 0x0000_1000;
/// Payload bytes sealed per input at most, like an MTU.
const MAX_PAYLOAD: usize = 1500;

fn sas() -> &'static [(OutboundSa, InboundSa); 4] {
    static SAS: OnceLock<[(OutboundSa, InboundSa); 4]> = OnceLock::new();
    SAS.get_or_init(|| {
        Cipher::ALL.map(|cipher| {
            let keys = || SaKeys {
                spi: SPI,
                cipher,
                keymat: Zeroizing::new((0..cipher.keymat_len()).map(|i| i as u8 ^ 0x5a).collect()),
            };
            (OutboundSa::new(keys()).expect("outbound"), InboundSa::new(keys()).expect("inbound"))
        })
    })
}

/// One input. The first byte picks the cipher (low two bits) and the mode:
/// - bit 2 clear: the rest is a datagram arriving on the SA. Whatever it
///   is, `open` returns without panicking and, if it says it opened, the
///   inner packet lies inside the datagram. (Forging an ICV is out of the
///   fuzzer's reach, so it exercises the length, SPI, replay pre-check
///   (sequence number 0) and ICV checks.)
/// - bit 2 set: the rest is a payload to seal. `seal` refuses it exactly
///   when it is neither empty nor IPv4/IPv6; otherwise `open` gives back
///   exactly the payload (or a dummy packet for an empty one), and
///   flipping any one byte, picked by the input, makes `open` fail.
pub fn esp(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (out, inb) = &sas()[usize::from(mode & 3)];
    if mode & 4 == 0 {
        let mut datagram = rest.to_vec();
        if let Ok(o) = inb.open(&mut datagram) {
            assert!(o.at.checked_add(o.len).is_some_and(|end| end <= datagram.len()));
        }
        return;
    }
    let payload = &rest[..rest.len().min(MAX_PAYLOAD)];
    let padded = out.padded_len(payload.len());
    let mut buf = vec![0; out.wire_len(padded)];
    let h = out.header_len();
    buf[h..h + payload.len()].copy_from_slice(payload);
    // A fixed sequence number: reusing nonces under test keys is harmless,
    // and reserving would run the SA dry on a long fuzzing run.
    let seq = 1 + payload.len() as u64;
    let is_ip = payload.first().is_none_or(|b| matches!(b >> 4, 4 | 6));
    let n = match out.seal(seq, &mut buf, payload.len(), padded) {
        Ok(n) => n,
        Err(e) => {
            assert!(!is_ip, "refused an IP payload: {e}");
            return;
        }
    };
    assert!(is_ip, "sealed a payload that is not IP");
    let sealed = buf[..n].to_vec();
    let o = inb.open(&mut buf[..n]).expect("own packet opens");
    assert_eq!(o.seq, seq);
    if payload.is_empty() {
        assert!(o.is_dummy() && o.len == 0);
    } else {
        assert_eq!(&buf[o.at..o.at + o.len], payload);
    }
    let flip = usize::from(rest.last().copied().unwrap_or(0)) * 7 % n;
    let mut bad = sealed;
    bad[flip] ^= 0x20;
    assert!(inb.open(&mut bad).is_err(), "a changed byte at {flip} went unnoticed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_body_holds_on_a_spread_of_inputs() {
        for mode in 0..8u8 {
            for len in [0usize, 1, 3, 4, 20, 33, 40, 57, 100, 1400, 1600] {
                for first in [0x45u8, 0x60, 0x00, 0xff, 0x12] {
                    let mut input = vec![mode, first];
                    input.extend((0..len).map(|i| (i * 13) as u8));
                    esp(&input);
                }
            }
        }
        esp(&[]);
        esp(&[4]);
    }
}
