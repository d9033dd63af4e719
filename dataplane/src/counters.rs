//! Why packets were dropped, counted per reason so a slow or broken tunnel
//! can be explained from `tunctl` or metrics rather than guessed at.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! drop_reasons {
    ($($name:ident => $text:literal,)*) => {
        /// A reason a packet was dropped.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Drop { $($name,)* }

        impl Drop {
            pub const ALL: &'static [Drop] = &[$(Drop::$name,)*];
            /// Stable snake_case name, used as a metric label.
            pub fn name(self) -> &'static str {
                match self { $(Drop::$name => $text,)* }
            }
        }
    };
}

drop_reasons! {
    NoRoute => "no_route",
    NoEndpoint => "no_endpoint",
    OutboundOutsideSelectors => "outbound_outside_traffic_selectors",
    StagedQueueFull => "staged_queue_full",
    StagedExpired => "held_without_session",
    InvalidInnerPacket => "invalid_inner_packet",
    SourceNotAllowed => "source_not_allowed",
    OutsideSelectors => "outside_traffic_selectors",
    Malformed => "malformed",
    UnknownPeer => "unknown_peer",
    UnknownIndex => "unknown_receiver_index",
    UnknownSpi => "unknown_spi",
    WrongCarrier => "wrong_carrier",
    BadMac => "bad_mac",
    Decryption => "decryption_failed",
    Replay => "replay",
    HandshakeRejected => "handshake_rejected",
    Expired => "keypair_expired",
    NoPrivateKey => "no_private_key",
    TunWrite => "tun_write_error",
    UdpSend => "udp_send_error",
}

/// What one worker moved, counted per batch (not per packet), so the
/// average batch sizes explain a slow run: small TUN batches mean packets
/// arrive one by one, small GSO runs mean many peers or sizes interleave.
#[derive(Default)]
pub struct WorkerStats {
    pub tun_reads: AtomicU64,
    pub tun_packets: AtomicU64,
    pub udp_sends: AtomicU64,
    pub udp_datagrams_sent: AtomicU64,
    pub udp_receives: AtomicU64,
    pub udp_datagrams_received: AtomicU64,
    pub tun_writes: AtomicU64,
    pub tun_packets_written: AtomicU64,
    /// Batches this worker sealed or opened, whoever read them.
    pub crypto_batches: AtomicU64,
    /// Of those, batches another worker read: the parallel share.
    pub crypto_batches_helped: AtomicU64,
    /// Idle workers this one woke to help with its batches.
    pub helper_wakeups: AtomicU64,
    /// Times every batch buffer was in flight, so reading waited for
    /// crypto to catch up.
    pub pool_stalls: AtomicU64,
}

impl WorkerStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// One batch sealed or opened; `helped` when another worker read it.
    pub fn count_batch(&self, helped: bool) {
        Self::add(&self.crypto_batches, 1);
        if helped {
            Self::add(&self.crypto_batches_helped, 1);
        }
    }

    pub fn snapshot(&self) -> [(&'static str, u64); 12] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("tun_reads", g(&self.tun_reads)),
            ("tun_packets", g(&self.tun_packets)),
            ("udp_sends", g(&self.udp_sends)),
            ("udp_datagrams_sent", g(&self.udp_datagrams_sent)),
            ("udp_receives", g(&self.udp_receives)),
            ("udp_datagrams_received", g(&self.udp_datagrams_received)),
            ("tun_writes", g(&self.tun_writes)),
            ("tun_packets_written", g(&self.tun_packets_written)),
            ("crypto_batches", g(&self.crypto_batches)),
            ("crypto_batches_helped", g(&self.crypto_batches_helped)),
            ("helper_wakeups", g(&self.helper_wakeups)),
            ("pool_stalls", g(&self.pool_stalls)),
        ]
    }
}

#[derive(Default)]
pub struct Counters {
    drops: [AtomicU64; Drop::ALL.len()],
    /// Handshake messages answered with a cookie because we were under
    /// load: how a flood shows up.
    pub cookie_replies: AtomicU64,
}

impl Counters {
    pub fn count(&self, reason: Drop) {
        self.count_many(reason, 1);
    }

    /// Counts `packets` dropped for one reason at once (a batch).
    pub fn count_many(&self, reason: Drop, packets: usize) {
        self.drops[reason as usize].fetch_add(packets as u64, Ordering::Relaxed);
    }

    pub fn get(&self, reason: Drop) -> u64 {
        self.drops[reason as usize].load(Ordering::Relaxed)
    }

    /// Every reason with a non-zero count.
    pub fn nonzero(&self) -> Vec<(Drop, u64)> {
        Drop::ALL.iter().map(|&d| (d, self.get(d))).filter(|(_, n)| *n > 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_reason() {
        let c = Counters::default();
        c.count(Drop::Replay);
        c.count(Drop::Replay);
        c.count(Drop::BadMac);
        assert_eq!(c.get(Drop::Replay), 2);
        assert_eq!(c.nonzero(), vec![(Drop::BadMac, 1), (Drop::Replay, 2)]);
        assert_eq!(Drop::SourceNotAllowed.name(), "source_not_allowed");
    }

    #[test]
    fn a_batch_counts_each_of_its_packets() {
        let c = Counters::default();
        c.count_many(Drop::UdpSend, 0);
        assert!(c.nonzero().is_empty(), "an empty batch counts nothing");
        c.count_many(Drop::UdpSend, 5);
        c.count(Drop::UdpSend);
        assert_eq!(c.nonzero(), vec![(Drop::UdpSend, 6)]);
    }
}
