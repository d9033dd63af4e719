//! A data-plane worker: owns one TUN queue and (by index) one of the UDP
//! sockets, and loops: run the crypto jobs waiting (any worker's), wait for
//! the TUN, the socket or a wake-up, then read in bounded batches and queue
//! what was read as jobs. One peer's batches are thus sealed and opened on
//! every worker, and leave through the peer's ordered queues (`ordered.rs`,
//! `jobs.rs`). No lock is held across a syscall or an AEAD operation.
//!
//! The worker is where the protocol is chosen (`Protocol`, WireGuard
//! today) and where the I/O comes in (`Tun`, and the interface's
//! `Socket`s), real or in memory.

use std::sync::Arc;

use tun_rs::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};

use crate::counters::{Counters, Drop, WorkerStats};
use crate::doorbell::Doorbell;
use crate::interface::Interface;
use crate::io::{Read, Socket, Tun, TunGone};
use crate::jobs::Job;
use crate::protocol::Protocol;
use crate::receive::{Receiver, RxStatus, ToTun};
use crate::send::Sender;
use crate::session::Carrier;
use crate::super_packet::SuperPacket;
use crate::tun::{MAX_PACKET, RAW_READ};
use crate::tunnels::Tunnels;

/// The reader's buffers for packets that come alone (a super-packet stays
/// in the raw buffer): the most one fill gathers.
const READ_BATCH: usize = tun_rs::IDEAL_BATCH_SIZE;

/// Batches taken from one source before looking at the other, so neither
/// direction starves the other under load.
const BATCHES_PER_TURN: usize = 8;

/// Room kept for the next read. It was sized for tun-rs's split of a
/// super-packet into these buffers; a real TUN read now brings one
/// packet, so a fill of lone packets stops at 65, past the 64 that one
/// send batch takes. (The in-memory TUN hands over up to this many.)
const SEGMENTS_PER_READ: usize = 64;

/// Reads from the TUN until it is drained, the batch has no room for
/// another super-packet, or a super-packet came (it is queued next, after
/// the packets before it). A packet that is not TSO comes one per read,
/// so without this a batch would hold one small packet and cost a send
/// syscall of its own; filled batches share GSO sends.
/// With `eager`, stops after the first read that brings packets, so they
/// are sent before the read that would find the queue empty.
/// A read the TUN layer refused as malformed (shorter than its virtio
/// header, a partial checksum outside its packet) is counted and passed
/// over: the packets behind it are still read.
/// Returns the packet count, whether the queue was drained, and the
/// length of a super-packet left in `raw`.
fn fill_from_tun(
    tun: &mut dyn Tun,
    bufs: &mut [Vec<u8>],
    sizes: &mut [usize],
    raw: &mut [u8],
    (stats, counters): (&WorkerStats, &Counters),
    eager: bool,
) -> Result<(usize, bool, Option<usize>), TunGone> {
    let mut filled = 0;
    while bufs.len() - filled >= SEGMENTS_PER_READ && !(eager && filled > 0) {
        match tun.read_batch(&mut bufs[filled..], &mut sizes[filled..], raw) {
            Ok(Read::Packets(n)) => {
                filled += n;
                WorkerStats::add(&stats.tun_reads, 1);
                WorkerStats::add(&stats.tun_packets, n as u64);
            }
            Ok(Read::Super(len)) => {
                WorkerStats::add(&stats.tun_reads, 1);
                return Ok((filled, false, Some(len)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok((filled, true, None)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => counters.count(Drop::Malformed),
            // EBADFD only, as for writes (`receive.rs`): a link set down is
            // not a deleted interface.
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) => return Err(TunGone),
            Err(e) => {
                tracing::debug!(error = %e, "TUN read failed");
                return Ok((filled, true, None));
            }
        }
    }
    Ok((filled, false, None))
}

/// Waits until one of `fds` is readable (or in error); returns their
/// revents. A negative descriptor is skipped (poll's rule).
fn wait<const N: usize>(fds: [i32; N], timeout_ms: i32) -> std::io::Result<[i16; N]> {
    let mut pfds = fds.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
    // SAFETY: `pfds` is a valid array of N pollfd structs that outlives the call.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok([0; N]);
        }
        return Err(e);
    }
    Ok(pfds.map(|p| p.revents))
}

/// What one worker owns. Any worker seals or opens any peer's batches and
/// drains any peer's queues, through its own TUN queue and UDP socket.
struct Worker<T, P> {
    iface: Arc<Interface>,
    index: usize,
    tun: T,
    proto: P,
    sender: Sender,
    receiver: Receiver,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// A raw TUN read: a super-packet and its virtio header.
    raw: Vec<u8>,
    /// Packets read from the TUN and not yet queued: `bufs[from..to]`,
    /// left when every batch buffer was in flight.
    unsent: (usize, usize),
    /// A super-packet in `raw` (its length) and the first of its segments
    /// not yet queued; queued after `unsent`, which was read before it.
    unsent_super: Option<(usize, usize)>,
    /// The socket whose receive stalled, and what it carries, while
    /// `receiver` is stalled.
    stalled_on: Option<(Arc<dyn Socket>, Carrier)>,
    /// The last TUN read found the queue empty after at most one packet:
    /// traffic is sparse, so the next packet read goes out before the
    /// queue is read again. A lone packet (a ping, a handshake's reply)
    /// then does not wait for the read that finds nothing behind it,
    /// while a busy queue keeps filling whole batches.
    tun_sparse: bool,
    /// Kept ESP released to this worker that it could not read again yet,
    /// every batch buffer being in flight (`read_kept`).
    kept_left: Vec<crate::early_esp::Kept>,
}

impl<T: Tun, P: Protocol> Worker<T, P> {
    /// Runs queued crypto jobs until none is left. Err when the TUN is gone.
    fn run_jobs(&mut self, sock: &dyn Socket) -> Result<(), TunGone> {
        let iface = self.iface.clone();
        while let Some(job) = iface.jobs.pop() {
            let now = iface.clock.now();
            match job {
                Job::Seal(batch) => {
                    if let Some(peer) = crate::send::seal_batch(&iface, &batch, self.index) {
                        drop(batch);
                        let (sender, proto) = (&mut self.sender, &self.proto);
                        peer.tx.drain(&mut |b| sender.transmit_batch(proto, &iface, b, now));
                    }
                }
                Job::Open(batch) => {
                    if let Some(peer) = crate::receive::open_batch(&iface, &batch, self.index) {
                        drop(batch);
                        let mut sink = ToTun {
                            proto: &self.proto,
                            receiver: &mut self.receiver,
                            tun: &mut self.tun,
                            iface: &iface,
                            sock,
                            now,
                            gone: false,
                        };
                        peer.rx.drain(&mut sink);
                        if sink.gone {
                            return Err(TunGone);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Wakes idle workers to share the jobs now waiting, keeping one for
    /// this worker: a single batch is sealed here without a wake-up.
    fn call_helpers(&self) {
        let extra = self.iface.jobs.waiting().saturating_sub(1);
        let iface = &self.iface;
        let woken = iface.jobs.helpers_to_wake(self.index, extra, |i| iface.wake(i));
        WorkerStats::add(&iface.worker_stats[self.index].helper_wakeups, woken as u64);
    }

    /// Queues the packets read and not yet queued, then the super-packet's
    /// segments; true when all are.
    fn queue_unsent(&mut self, sock: &dyn Socket) -> bool {
        let (from, to) = self.unsent;
        if from < to {
            let now = self.iface.clock.now();
            let taken = self.sender.enqueue(
                &self.proto,
                &self.iface,
                sock,
                &mut self.bufs[from..to],
                &self.sizes[from..to],
                now,
            );
            self.unsent = (from + taken, to);
            self.call_helpers();
        }
        if let Some((len, next)) = self.unsent_super.filter(|_| self.unsent.0 == self.unsent.1) {
            self.unsent_super = self.queue_super(sock, len, next);
            self.call_helpers();
        }
        self.unsent.0 == self.unsent.1 && self.unsent_super.is_none()
    }

    /// Queues the segments of the super-packet in `raw` from `next` on;
    /// returns what is left (None when all were queued, or when it was
    /// malformed and dropped).
    fn queue_super(&mut self, sock: &dyn Socket, len: usize, next: usize) -> Option<(usize, usize)> {
        let iface = &self.iface;
        let (hdr, packet) = self.raw[..VIRTIO_NET_HDR_LEN + len].split_at_mut(VIRTIO_NET_HDR_LEN);
        let hdr = VirtioNetHdr::decode(hdr).expect("the raw buffer holds a header");
        if next == 0 {
            // A TSO super-packet never carries a SYN, so this only ever
            // finds one where something else made the super-packet.
            if let Some(limits) = iface.mss_limits() {
                crate::mss::clamp(packet, limits);
            }
        }
        let Some(sp) = SuperPacket::parse(&hdr, packet) else {
            iface.counters.count(Drop::Malformed);
            return None;
        };
        let reached = self.sender.enqueue_super(&self.proto, iface, sock, &sp, next, iface.clock.now());
        // Counted as they are taken: a call may stop at any segment, even
        // the first, for want of a batch buffer.
        WorkerStats::add(&iface.worker_stats[self.index].tun_packets, (reached - next) as u64);
        (reached < sp.count()).then_some((len, reached))
    }

    /// Reads from the TUN and queues what was read, for a few batches.
    fn read_tun(&mut self, sock: &dyn Socket) -> Result<(), TunGone> {
        for _ in 0..BATCHES_PER_TURN {
            let stats = (&self.iface.worker_stats[self.index], &self.iface.counters);
            let (n, drained, sp) =
                fill_from_tun(&mut self.tun, &mut self.bufs, &mut self.sizes, &mut self.raw, stats, self.tun_sparse)?;
            self.tun_sparse = drained && n <= 1;
            self.unsent = (0, n);
            self.unsent_super = sp.map(|len| (len, 0));
            let all = self.queue_unsent(sock);
            self.run_jobs(sock)?;
            if drained || !all {
                break;
            }
        }
        Ok(())
    }

    /// Receives from a UDP socket (WireGuard's, or ESP's on port 4500) and
    /// queues what arrived, for a few batches. `sock` also sends what the
    /// jobs run meanwhile drain.
    fn read_udp(&mut self, from: &Arc<dyn Socket>, carrier: Carrier, sock: &dyn Socket) -> Result<(), TunGone> {
        for _ in 0..BATCHES_PER_TURN {
            let status =
                self.receiver.receive_batch(&self.proto, &self.iface, &**from, carrier, self.iface.clock.now());
            self.call_helpers();
            if matches!(status, RxStatus::Stalled) {
                self.stalled_on = Some((from.clone(), carrier));
            }
            self.run_jobs(sock)?;
            match status {
                RxStatus::More => {}
                RxStatus::Empty | RxStatus::Stalled => break,
            }
        }
        Ok(())
    }

    /// Goes on with reading that stopped for want of batch buffers.
    fn resume(&mut self, sock: &dyn Socket) -> Result<(), TunGone> {
        if self.unsent.0 < self.unsent.1 || self.unsent_super.is_some() {
            self.queue_unsent(sock);
        }
        if self.receiver.is_stalled() {
            // The stalled receive goes on with the socket it came from: its
            // protocol messages are answered there.
            let from = self.stalled_on.clone();
            let (from, carrier) = from.as_ref().map_or((sock, Carrier::WireGuard), |(s, c)| (&**s, *c));
            if !matches!(
                self.receiver.receive_batch(&self.proto, &self.iface, from, carrier, self.iface.clock.now()),
                RxStatus::Stalled
            ) {
                self.stalled_on = None;
            }
            self.call_helpers();
        }
        if !self.kept_left.is_empty() && !self.receiver.is_stalled() {
            let kept = std::mem::take(&mut self.kept_left);
            self.kept_left = self.receiver.read_again(&self.proto, &self.iface, sock, kept, self.iface.clock.now());
            self.call_helpers();
        }
        self.run_jobs(sock)?;
        if self.stalled() {
            // The buffers are with other workers' crypto; let them finish.
            std::thread::yield_now();
        }
        Ok(())
    }

    /// Reads again the ESP this worker read before its SA was published,
    /// once it is (`early_esp.rs`), after what it could not read again
    /// before for want of batch buffers (a stall, resumed like a
    /// receive's).
    fn read_kept(&mut self, sock: &dyn Socket) -> Result<(), TunGone> {
        let iface = self.iface.clone();
        let mut kept = std::mem::take(&mut self.kept_left);
        if iface.ipsec.early.released_for(self.index) {
            kept.extend(iface.ipsec.early.take_released(self.index));
        }
        if kept.is_empty() {
            return Ok(());
        }
        self.kept_left = self.receiver.read_again(&self.proto, &iface, sock, kept, iface.clock.now());
        self.call_helpers();
        self.run_jobs(sock)
    }

    fn stalled(&self) -> bool {
        self.unsent.0 < self.unsent.1
            || self.unsent_super.is_some()
            || self.receiver.is_stalled()
            || !self.kept_left.is_empty()
    }
}

/// Runs worker `index` of `iface` until the interface shuts down or its
/// TUN queue goes away. `bell` is the doorbell the interface rings for it
/// (`Interface::register_waker`, in index order).
pub fn run<T: Tun>(iface: Arc<Interface>, index: usize, tun: T, bell: Arc<Doorbell>) {
    let offload = tun.offload();
    let mut w = Worker {
        iface: iface.clone(),
        index,
        tun,
        proto: Tunnels,
        sender: Sender::new(index),
        receiver: Receiver::new(index, offload),
        bufs: (0..READ_BATCH).map(|_| vec![0u8; MAX_PACKET]).collect(),
        sizes: vec![0usize; READ_BATCH],
        raw: vec![0u8; RAW_READ],
        unsent: (0, 0),
        unsent_super: None,
        stalled_on: None,
        tun_sparse: true,
        kept_left: Vec::new(),
    };
    let gone = || tracing::info!(worker = index, "TUN queue gone: the interface was deleted");
    let mut raw_first = 0usize;
    while !iface.is_shutting_down() {
        let set = iface.sockets();
        let sock = set.sockets[index % set.sockets.len()].clone();
        // ESP in UDP and IKE on port 4500, once an IPsec peer needs them.
        let esp_set = iface.sockets_for(Carrier::EspInUdp);
        let esp = (!esp_set.sockets.is_empty()).then(|| esp_set.sockets[index % esp_set.sockets.len()].clone());
        // Raw ESP: the interface's sockets, one per address family
        // (`raw_esp.rs`), each polled and read by worker 0 only. Were every
        // worker to read them, consecutive packets of one flow would be
        // decrypted and written to the TUN by different workers and arrive
        // out of order (TCP takes that for loss and retransmits); and the
        // TUN would then send that flow's replies from whichever queue
        // wrote last. ESP in UDP keeps a flow on one worker through
        // SO_REUSEPORT's hash, which this matches; other workers may still
        // take batches of its crypto (the pool).
        let raw_set = iface.sockets_for(Carrier::RawEsp);
        let raw = [0, 1].map(|i| raw_set.sockets.get(i).filter(|_| index == 0).cloned());
        if w.run_jobs(&*sock).is_err() {
            gone();
            break;
        }
        if iface.ipsec.early.released_for(index) && !w.receiver.is_stalled() && w.read_kept(&*sock).is_err() {
            gone();
            break;
        }
        if w.stalled() {
            if w.resume(&*sock).is_err() {
                gone();
                break;
            }
            continue;
        }
        let timeout = if iface.jobs.sleep(index) { 1000 } else { 0 };
        let esp_fd = esp.as_ref().map_or(-1, |s| s.fd());
        let raw_fds = raw.each_ref().map(|r| r.as_ref().map_or(-1, |s| s.fd()));
        let polled = wait([w.tun.fd(), sock.fd(), esp_fd, raw_fds[0], raw_fds[1], bell.fd()], timeout);
        iface.jobs.awake(index);
        let revents = match polled {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "poll failed; stopping");
                break;
            }
        };
        if revents[5] != 0 {
            bell.clear();
            continue;
        }
        if revents[0] & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            tracing::info!(worker = index, "TUN queue closed: the interface was deleted");
            break;
        }
        let result = (|| {
            if revents[0] & libc::POLLIN != 0 {
                w.read_tun(&*sock)?;
            }
            if revents[1] & libc::POLLIN != 0 && !w.receiver.is_stalled() {
                w.read_udp(&sock, Carrier::WireGuard, &*sock)?;
            }
            // The two raw ESP families take turns at being read first, so
            // that one whose reads keep using up the batch buffers (the
            // receiver stalls) cannot hold the other off.
            raw_first ^= 1;
            let (a, b) = (raw_first, raw_first ^ 1);
            let extras = [
                (&esp, Carrier::EspInUdp, revents[2]),
                (&raw[a], Carrier::RawEsp, revents[3 + a]),
                (&raw[b], Carrier::RawEsp, revents[3 + b]),
            ];
            for (extra, carrier, ready) in extras {
                if let Some(s) = extra.as_ref().filter(|_| ready & libc::POLLIN != 0) {
                    if !w.receiver.is_stalled() {
                        w.read_udp(s, carrier, &*sock)?;
                    }
                }
            }
            Ok::<(), TunGone>(())
        })();
        if result.is_err() {
            gone();
            break;
        }
    }
    iface.shutdown();
}

/// Starts one worker per TUN queue (named `cw-worker-N`), each with its
/// doorbell registered in `iface` in index order, as `run` expects.
pub fn spawn<T: Tun + 'static>(
    iface: &Arc<Interface>,
    queues: Vec<T>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    spawn_each(iface, queues, spawn_one)
}

/// `spawn`, with the step that starts one worker given (a test makes it
/// fail part way).
fn spawn_each<T>(
    iface: &Arc<Interface>,
    queues: Vec<T>,
    mut start: impl FnMut(&Arc<Interface>, usize, T) -> std::io::Result<std::thread::JoinHandle<()>>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut workers = Vec::with_capacity(queues.len());
    for (i, q) in queues.into_iter().enumerate() {
        match start(iface, i, q) {
            Ok(w) => workers.push(w),
            Err(e) => {
                // The ones already running hold TUN queues: they stop
                // before the error is returned, so that whoever sees it
                // may take it that nothing of this interface still runs.
                iface.shutdown();
                for w in workers {
                    let _ = w.join();
                }
                return Err(e);
            }
        }
    }
    Ok(workers)
}

fn spawn_one<T: Tun + 'static>(iface: &Arc<Interface>, i: usize, q: T) -> std::io::Result<std::thread::JoinHandle<()>> {
    let bell = Arc::new(Doorbell::new()?);
    iface.register_waker(bell.clone());
    let iface = iface.clone();
    std::thread::Builder::new().name(format!("cw-worker-{i}")).spawn(move || {
        // A worker that panicked would leave its socket in the
        // SO_REUSEPORT group and its TUN queue unread: its share of
        // the flows lost, silently. The whole interface stops instead
        // (the panic message is printed by the hook), marked failed.
        let it = iface.clone();
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(it, i, q, bell))).is_err() {
            tracing::error!(worker = i, "worker panicked: stopping the interface");
            iface.fail();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory;

    fn packet(n: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[39] = n;
        p
    }

    /// An interface on an in-memory network, without workers; the network
    /// must outlive it.
    fn interface(workers: usize) -> (Arc<memory::MemNet>, Arc<Interface>) {
        let net = memory::MemNet::new();
        let options = crate::interface::Options {
            mtu: 1420,
            workers,
            port: 51820,
            binder: net.host("198.18.0.1".parse().unwrap(), 64),
            batches_per_worker: 8,
        };
        let iface = Arc::new(Interface::with_options("mem0".into(), None, options).unwrap());
        (net, iface)
    }

    /// A TUN queue that panics as soon as the worker polls it.
    struct PanickingTun;

    impl Tun for PanickingTun {
        fn fd(&self) -> i32 {
            panic!("a fault in a worker (test)")
        }
        fn read_batch(&mut self, _: &mut [Vec<u8>], _: &mut [usize], _: &mut [u8]) -> std::io::Result<Read> {
            unreachable!()
        }
        fn write_batch(&mut self, _: &[Vec<u8>]) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_worker_that_panics_stops_the_interface_as_failed() {
        let (_net, iface) = interface(1);
        for w in spawn(&iface, vec![PanickingTun]).unwrap() {
            w.join().unwrap();
        }
        assert!(iface.is_shutting_down() && iface.has_failed());
    }

    /// Workers already running when a later one cannot start are stopped
    /// and joined before the error comes back: each holds a TUN queue, and
    /// the caller gives up the interface's name on that error.
    #[test]
    fn a_start_that_fails_part_way_stops_the_workers_it_started() {
        let (_net, iface) = interface(3);
        let (_host, tuns) = memory::tun(3);
        let result = spawn_each(&iface, tuns, |iface, i, q| {
            if i == 2 {
                return Err(std::io::Error::other("no more threads (test)"));
            }
            spawn_one(iface, i, q)
        });
        assert_eq!(result.err().map(|e| e.to_string()).as_deref(), Some("no more threads (test)"));
        assert!(iface.is_shutting_down() && !iface.has_failed());
        // The two workers that ran each held the interface; both have ended.
        assert_eq!(Arc::strong_count(&iface), 1);
    }

    // The in-memory TUN hands over every queued packet in one read (the
    // real one gives one per read), so what tells the two modes apart is
    // whether the read that finds the queue empty came before returning.
    /// One in-memory TUN queue and what a worker reads it into.
    struct Reader {
        host: memory::MemTunHost,
        tun: memory::MemTun,
        stats: WorkerStats,
        counters: Counters,
        bufs: Vec<Vec<u8>>,
        sizes: Vec<usize>,
        raw: Vec<u8>,
    }

    impl Reader {
        fn new() -> Reader {
            let (host, mut tuns) = memory::tun(1);
            Reader {
                host,
                tun: tuns.remove(0),
                stats: WorkerStats::default(),
                counters: Counters::default(),
                bufs: vec![vec![0u8; MAX_PACKET]; READ_BATCH],
                sizes: vec![0usize; READ_BATCH],
                raw: vec![0u8; RAW_READ],
            }
        }

        fn fill(&mut self, eager: bool) -> (usize, bool, Option<usize>) {
            let counts = (&self.stats, &self.counters);
            fill_from_tun(&mut self.tun, &mut self.bufs, &mut self.sizes, &mut self.raw, counts, eager).unwrap()
        }
    }

    /// A TUN whose first reads fail as the real one's do on a read it
    /// refuses (shorter than the virtio header, a partial checksum
    /// outside its packet).
    struct Refusing {
        inner: memory::MemTun,
        refusals: usize,
    }

    impl Tun for Refusing {
        fn fd(&self) -> std::os::fd::RawFd {
            self.inner.fd()
        }

        fn read_batch(&mut self, bufs: &mut [Vec<u8>], sizes: &mut [usize], raw: &mut [u8]) -> std::io::Result<Read> {
            if self.refusals > 0 {
                self.refusals -= 1;
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "refused"));
            }
            self.inner.read_batch(bufs, sizes, raw)
        }

        fn write_batch(&mut self, bufs: &[Vec<u8>]) -> std::io::Result<()> {
            self.inner.write_batch(bufs)
        }
    }

    #[test]
    fn a_refused_read_is_counted_and_the_packets_behind_it_are_read() {
        let mut r = Reader::new();
        r.host.send(0, [packet(7)]);
        let mut tun = Refusing { inner: r.tun, refusals: 2 };
        let counts = (&r.stats, &r.counters);
        let got = fill_from_tun(&mut tun, &mut r.bufs, &mut r.sizes, &mut r.raw, counts, false).unwrap();
        assert_eq!(got, (1, true, None), "the packet after the refused reads");
        assert_eq!(r.bufs[0][39], 7);
        assert_eq!(r.counters.get(Drop::Malformed), 2);
    }

    #[test]
    fn an_eager_fill_returns_before_the_read_that_finds_the_queue_empty() {
        let mut r = Reader::new();
        r.host.send(0, [packet(1)]);
        assert_eq!(r.fill(true), (1, false, None), "the lone packet comes back at once, the queue not yet found empty");
        assert_eq!(r.bufs[0][39], 1);
        assert_eq!(r.stats.tun_reads.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(r.fill(true), (0, true, None), "the next fill finds nothing behind it");

        r.host.send(0, [packet(2), packet(3)]);
        assert_eq!(r.fill(false), (2, true, None), "a batching fill reads on until the queue is empty");
        assert_eq!((r.bufs[0][39], r.bufs[1][39]), (2, 3));
    }

    // A super-packet ends the fill that reads it, after the packets read
    // before it, so that it is queued behind them; what came after it
    // waits for the next fill.
    #[test]
    fn a_super_packet_ends_its_fill_and_stays_in_the_raw_buffer() {
        let mut r = Reader::new();
        let hdr = VirtioNetHdr { gso_type: 1, gso_size: 1000, csum_start: 20, csum_offset: 16, ..Default::default() };
        r.host.send(0, [packet(1)]);
        r.host.send_super(0, hdr, vec![0x45; 3000]);
        r.host.send(0, [packet(2)]);
        assert_eq!(r.fill(false), (1, false, Some(3000)));
        assert_eq!(r.bufs[0][39], 1);
        assert_eq!(VirtioNetHdr::decode(&r.raw).unwrap().gso_size, 1000);
        assert_eq!(&r.raw[VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + 3000], &[0x45; 3000][..]);
        assert_eq!(r.fill(false), (1, true, None));
        assert_eq!(r.bufs[0][39], 2);
    }
}
