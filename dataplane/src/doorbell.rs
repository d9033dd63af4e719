//! A worker's doorbell: what other threads ring to end its poll() when
//! crypto jobs wait for it or the interface shuts down.
//!
//! An eventfd rather than a socket pair: ringing one adds to a counter in
//! the kernel, where a socket write allocates, queues and frees a buffer
//! for each wake-up, and helpers are woken many thousand times a second
//! under load. Rings that come before the worker looks are merged into
//! one readable state, which is all a doorbell needs to say.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: eventfd takes no pointers; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
        Ok(Doorbell { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Makes the doorbell readable until `clear`. Never blocks: a counter
    /// that would overflow (2^64 - 2 rings unread) is readable already.
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, which outlives the call, to an
        // fd this struct owns.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Takes every ring so far; the doorbell is not readable after it
    /// until the next ring.
    pub fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into `count`, which outlives the call.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }

    /// For poll().
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(d: &Doorbell) -> bool {
        let mut p = libc::pollfd { fd: d.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn rings_merge_until_cleared() {
        let d = Doorbell::new().unwrap();
        assert!(!readable(&d));
        d.ring();
        d.ring();
        assert!(readable(&d));
        d.clear();
        assert!(!readable(&d), "one clear takes every ring");
        d.clear();
        assert!(!readable(&d), "clearing a silent doorbell does not block or fail");
        d.ring();
        assert!(readable(&d));
    }
}
