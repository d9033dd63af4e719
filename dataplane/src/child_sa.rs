//! One negotiated IPsec child SA as the shared pipeline's `Session`: the
//! ESP core (`causeway-esp`) seals and opens the bytes; any worker calls
//! it at once, and the replay window is checked on the drain.

use std::any::Any;

use causeway_esp::{InboundSa, OutboundSa};

use crate::counters::Drop;
use crate::session::{Carrier, Opened, Session};

/// One negotiated child SA: both directions, as IKE made them.
pub struct ChildSa {
    outbound: OutboundSa,
    /// Opens on any worker; its replay window is checked on the drain
    /// (`InboundSa::accept`), where the batches are back in arrival order.
    inbound: InboundSa,
    carrier: Carrier,
}

impl ChildSa {
    pub fn new(outbound: OutboundSa, inbound: InboundSa, carrier: Carrier) -> ChildSa {
        ChildSa { outbound, inbound, carrier }
    }

    pub fn spi_in(&self) -> u32 {
        self.inbound.spi()
    }

    pub fn spi_out(&self) -> u32 {
        self.outbound.spi()
    }

    /// The replay check of an opened packet, in arrival order (the drain).
    pub fn accept(&self, seq: u64) -> Result<(), Drop> {
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
            Ok(o) => Ok(Opened { counter: o.seq, at: o.at, len: o.len }),
            Err(causeway_esp::Error::Authentication) => Err(Drop::Decryption),
            Err(_) => Err(Drop::Malformed),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
