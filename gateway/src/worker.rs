//! A data-plane worker: owns one TUN queue and (by index) one of the UDP
//! sockets, and loops: wait for either to be readable, drain each in
//! bounded batches, repeat. Workers share nothing mutable but the peers'
//! protocol state, whose locks are never held across a syscall.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use tun_rs::IDEAL_BATCH_SIZE;

use crate::counters::WorkerStats;
use crate::interface::Interface;
use crate::receive::{Receiver, RxStatus};
use crate::send::Sender;
use crate::tun::{TunQueue, MAX_PACKET};

/// Batches taken from one source before looking at the other, so neither
/// direction starves the other under load.
const BATCHES_PER_TURN: usize = 8;

/// Room a single TUN read needs: a TSO super-packet splits into up to
/// this many MTU-sized packets at common MSS values.
const SEGMENTS_PER_READ: usize = 64;

/// The TUN queue was closed: the interface is gone.
struct TunGone;

/// Reads from the TUN until it is drained or the batch has no room for
/// another super-packet. A packet that is not TSO comes one per read, so
/// without this a batch would hold one small packet and cost a send
/// syscall of its own; filled batches share GSO sends.
/// Returns the packet count and whether the queue was drained.
fn fill_from_tun(
    tun: &mut TunQueue,
    bufs: &mut [Vec<u8>],
    sizes: &mut [usize],
    stats: &WorkerStats,
) -> Result<(usize, bool), TunGone> {
    let mut filled = 0;
    while bufs.len() - filled >= SEGMENTS_PER_READ {
        match tun.read_batch(&mut bufs[filled..], &mut sizes[filled..], 0) {
            Ok(n) => {
                filled += n;
                WorkerStats::add(&stats.tun_reads, 1);
                WorkerStats::add(&stats.tun_packets, n as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok((filled, true)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) || e.raw_os_error() == Some(libc::EIO) => {
                return Err(TunGone)
            }
            Err(e) => {
                tracing::debug!(error = %e, "TUN read failed");
                return Ok((filled, true));
            }
        }
    }
    Ok((filled, false))
}

/// Waits until one of `fds` is readable (or in error); returns their revents.
fn wait(fds: [i32; 3], timeout_ms: i32) -> std::io::Result<[i16; 3]> {
    let mut pfds = fds.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
    // SAFETY: `pfds` is a valid array of three pollfd structs that outlives the call.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok([0; 3]);
        }
        return Err(e);
    }
    Ok([pfds[0].revents, pfds[1].revents, pfds[2].revents])
}

pub fn run(iface: Arc<Interface>, index: usize, mut tun: TunQueue, mut wake: UnixStream) {
    let mut sender = Sender::new(index);
    let mut receiver = Receiver::new(index);
    let mut bufs: Vec<Vec<u8>> = (0..IDEAL_BATCH_SIZE).map(|_| vec![0u8; MAX_PACKET]).collect();
    let mut sizes = vec![0usize; IDEAL_BATCH_SIZE];
    let _ = wake.set_nonblocking(true);
    let mut drain = [0u8; 64];
    while !iface.is_shutting_down() {
        let set = iface.sockets();
        let sock = set.sockets[index % set.sockets.len()].clone();
        let revents = match wait([tun.fd(), sock.fd(), wake.as_raw_fd()], 1000) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "poll failed; stopping");
                iface.shutdown();
                break;
            }
        };
        if revents[2] != 0 {
            while matches!(wake.read(&mut drain), Ok(n) if n > 0) {}
            continue;
        }
        if revents[0] & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            tracing::info!(worker = index, "TUN queue closed: the interface was deleted");
            iface.shutdown();
            break;
        }
        if revents[0] & libc::POLLIN != 0 {
            for _ in 0..BATCHES_PER_TURN {
                let Ok((n, drained)) = fill_from_tun(&mut tun, &mut bufs, &mut sizes, &iface.worker_stats[index])
                else {
                    tracing::info!(worker = index, "TUN queue gone: the interface was deleted");
                    iface.shutdown();
                    return;
                };
                if n > 0 {
                    sender.send_batch(&iface, &sock, &mut bufs[..n], &sizes[..n], iface.clock.now());
                }
                if drained {
                    break;
                }
            }
        }
        if revents[1] & libc::POLLIN != 0 {
            for _ in 0..BATCHES_PER_TURN {
                match receiver.receive_batch(&iface, &sock, &mut tun, iface.clock.now()) {
                    RxStatus::More => {}
                    RxStatus::Empty => break,
                    RxStatus::TunGone => {
                        tracing::info!(worker = index, "TUN queue gone: the interface was deleted");
                        iface.shutdown();
                        return;
                    }
                }
            }
        }
    }
}
