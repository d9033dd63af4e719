//! One negotiated IPsec child SA as the shared pipeline's `Session`: the
//! ESP core (`causeway-esp`) seals and opens the bytes; any worker calls
//! it at once, and the replay window is checked on the drain.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use causeway_esp::{Arrival, InboundSa, OutboundSa, MAX_SEQ};

use crate::counters::Drop;
use crate::selectors::Selectors;
use crate::session::{Carrier, Opened, Session};

/// Sequence numbers left when the sender asks IKE for a rekey: 2^29, which
/// at 1.2 million packets a second (the 64-byte rate of a fast gateway)
/// lasts over seven minutes, for a rekey that takes a round trip. IKE
/// rekeys by time first at any rate below 2^32 packets a lifetime.
const SEQ_LEFT_AT_REKEY: u64 = 1 << 29;

/// One negotiated child SA: both directions, as IKE made them.
pub struct ChildSa {
    outbound: OutboundSa,
    /// Opens on any worker; its replay window is checked on the drain
    /// (`InboundSa::accept`), where the batches are back in arrival order.
    inbound: InboundSa,
    carrier: Carrier,
    /// None: the SA carries every packet (route-based selectors).
    selectors: Option<Selectors>,
    /// The peer's endpoint follows the source of authenticated packets.
    roams: bool,
    /// When it was installed among its interface's SAs (`IpsecTable`
    /// numbers them from 1; 0 until then): roaming follows only the newest
    /// SA of a peer that packets have come on (`EspLink::heard_on`).
    installed: AtomicU64,
    /// A packet was accepted on it.
    heard: AtomicBool,
    /// Taken out of its interface's SPI table (`IpsecTable::remove_child`).
    removed: AtomicBool,
    /// Installed never to send on (`SendOn::Never`): the redundant SA of a
    /// simultaneous rekey, kept only to receive.
    receive_only: AtomicBool,
}

impl ChildSa {
    /// An AES-256-GCM SA for ESP in UDP, keyed with all 7s, for the
    /// data plane's unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(spi: u32) -> ChildSa {
        use causeway_esp::{Cipher, SaKeys, Zeroizing};
        let cipher = Cipher::AesGcm16 { key_bits: 256 };
        let keys = || SaKeys { spi, cipher, keymat: Zeroizing::new(vec![7; cipher.keymat_len()]) };
        ChildSa::new(OutboundSa::new(keys()).unwrap(), InboundSa::new(keys()).unwrap(), Carrier::EspInUdp)
    }

    pub fn new(outbound: OutboundSa, inbound: InboundSa, carrier: Carrier) -> ChildSa {
        ChildSa {
            outbound,
            inbound,
            carrier,
            selectors: None,
            roams: false,
            installed: AtomicU64::new(0),
            heard: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            receive_only: AtomicBool::new(false),
        }
    }

    /// The SA with roaming on or off, as IKE decided it (`ChildUp`).
    pub fn with_roaming(self, roams: bool) -> ChildSa {
        ChildSa { roams, ..self }
    }

    /// The SA with the traffic selectors it was negotiated for, which the
    /// receive path holds decrypted packets to.
    pub fn with_selectors(self, selectors: Option<Selectors>) -> ChildSa {
        ChildSa { selectors, ..self }
    }

    pub(crate) fn set_installed(&self, n: u64) {
        self.installed.store(n, Ordering::Relaxed);
    }

    pub(crate) fn installed(&self) -> u64 {
        self.installed.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_heard(&self) {
        if !self.heard.load(Ordering::Relaxed) {
            self.heard.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn heard(&self) -> bool {
        self.heard.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_receive_only(&self) {
        self.receive_only.store(true, Ordering::Relaxed);
    }

    /// Undoes `mark_receive_only` for an SA published before its install
    /// (`IpsecTable::publish_inbound`) that is to send after all.
    pub(crate) fn unmark_receive_only(&self) {
        self.receive_only.store(false, Ordering::Relaxed);
    }

    pub(crate) fn receive_only(&self) -> bool {
        self.receive_only.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    pub fn spi_in(&self) -> u32 {
        self.inbound.spi()
    }

    pub fn spi_out(&self) -> u32 {
        self.outbound.spi()
    }

    /// Whether so few sequence numbers are left that it should be
    /// replaced now, before sending stops with the last one.
    pub fn wearing_out(&self) -> bool {
        self.outbound.next_seq() > MAX_SEQ + 1 - SEQ_LEFT_AT_REKEY
    }

    /// The replay check of an opened packet, in arrival order (the drain),
    /// and whether it was the SA's newest so far (`Arrival`).
    pub fn accept(&self, seq: u64) -> Result<Arrival, Drop> {
        self.inbound.accept(seq).map_err(|_| Drop::Replay)
    }
}

impl Session for ChildSa {
    fn carrier(&self) -> Carrier {
        self.carrier
    }

    fn header_len(&self) -> usize {
        self.outbound.header_len()
    }

    fn trailer_len(&self) -> usize {
        self.outbound.trailer_len()
    }

    fn padded_len(&self, len: usize, _mtu: usize) -> usize {
        self.outbound.padded_len(len)
    }

    fn reserve(&self, count: u64) -> Result<u64, Drop> {
        self.outbound.reserve(count).map_err(|_| Drop::Expired)
    }

    fn seal(&self, counter: u64, datagram: &mut [u8], payload_len: usize, padded_len: usize) -> Result<usize, Drop> {
        self.outbound.seal(counter, datagram, payload_len, padded_len).map_err(|_| Drop::Malformed)
    }

    fn open(&self, datagram: &mut [u8]) -> Result<Opened, Drop> {
        match self.inbound.open(datagram) {
            // A dummy packet (next header 59) opens as an empty payload:
            // replay-checked like any other, then nothing is delivered.
            Ok(o) if o.is_dummy() => Ok(Opened { counter: o.seq, at: o.at, len: 0 }),
            // The next header says which IP the payload is; a payload of the
            // other version is not delivered as if it were (RFC 4303 §2.6).
            Ok(o) if datagram.get(o.at).map(|b| b >> 4) != Some(if o.next_header == 41 { 6 } else { 4 }) => {
                Err(Drop::InvalidInnerPacket)
            }
            Ok(o) => Ok(Opened { counter: o.seq, at: o.at, len: o.len }),
            Err(causeway_esp::Error::Authentication) => Err(Drop::Decryption),
            // Refused by the pre-check, before the ICV (RFC 4303 §3.4.3).
            Err(causeway_esp::Error::Replayed) => Err(Drop::Replay),
            Err(_) => Err(Drop::Malformed),
        }
    }

    fn selectors(&self) -> Option<&Selectors> {
        self.selectors.as_ref()
    }

    fn roams(&self) -> bool {
        self.roams
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// An ESP packet of `spi` and sequence number `seq`, sealed with
/// AES-256-GCM under keying material of all 7s (key, then salt: what
/// `ChildSa::for_tests(spi)` opens), whose trailer says `next_header`
/// whatever the payload is: the packet a peer's sealer could send, which
/// ours never does.
#[cfg(test)]
pub(crate) fn sealed_for_tests(spi: u32, payload: &[u8], next_header: u8, seq: u32) -> Vec<u8> {
    let mut plain = payload.to_vec();
    let pad = (4 - (plain.len() + 2) % 4) % 4;
    plain.extend((1..=pad as u8).chain([pad as u8, next_header]));
    let mut header = spi.to_be_bytes().to_vec();
    header.extend(seq.to_be_bytes());
    let iv = u64::from(seq).to_be_bytes();
    let mut nonce = [7u8; 12];
    nonce[4..].copy_from_slice(&iv);
    let key = ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[7; 32]).unwrap());
    let aad = ring::aead::Aad::from(header.clone());
    key.seal_in_place_append_tag(ring::aead::Nonce::assume_unique_for_key(nonce), aad, &mut plain).unwrap();
    header.extend(iv);
    header.extend(plain);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp_packet(payload: &[u8], next_header: u8) -> Vec<u8> {
        sealed_for_tests(0x100, payload, next_header, 1)
    }

    #[test]
    fn a_payload_of_another_ip_version_than_its_next_header_is_dropped() {
        let mut v4 = vec![0u8; 40];
        v4[0] = 0x45;
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        let opened =
            ChildSa::for_tests(0x100).open(&mut esp_packet(&v4, 4)).expect("an IPv4 packet under next header 4");
        assert_eq!((opened.counter, opened.len), (1, 40));
        assert!(ChildSa::for_tests(0x100).open(&mut esp_packet(&v6, 41)).is_ok());
        assert_eq!(ChildSa::for_tests(0x100).open(&mut esp_packet(&v6, 4)).err(), Some(Drop::InvalidInnerPacket));
        assert_eq!(ChildSa::for_tests(0x100).open(&mut esp_packet(&v4, 41)).err(), Some(Drop::InvalidInnerPacket));
    }

    #[test]
    fn a_replayed_packet_is_a_replay_drop_even_with_a_broken_icv() {
        let mut v4 = vec![0u8; 40];
        v4[0] = 0x45;
        let sa = ChildSa::for_tests(0x100);
        let packet = esp_packet(&v4, 4);
        let opened = sa.open(&mut packet.clone()).unwrap();
        sa.accept(opened.counter).unwrap();
        let mut forged = packet.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(sa.open(&mut forged).err(), Some(Drop::Replay));
        assert_eq!(ChildSa::for_tests(0x100).open(&mut forged).err(), Some(Drop::Decryption), "fresh: the ICV decides");
    }
}
