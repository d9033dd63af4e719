//! An operator's request on its way to the registry client, and who owns
//! it. The client carries out one thing at a time over one connection, so
//! a request can wait behind a slow store (a join is several calls, each
//! bounded by `store::CALL_TIMEOUT`). The operator is told either what was
//! done, or that nothing was, and that answer must stay true afterwards:
//! a request the operator was told was not carried out must never run
//! later, and one already under way is not reported as not done.
//!
//! Invariant: a ticket leaves `WAITING` once, to `STARTED` (the client
//! took it and will answer) or `ABANDONED` (the requester stopped waiting
//! for the start, and the client drops it). Whichever side moves it first
//! decides.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use super::ChangeError;

const WAITING: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

#[derive(Debug, Default)]
pub(crate) struct Ticket(AtomicU8);

impl Ticket {
    /// For the client: whether to carry the request out (false when the
    /// requester has given up on it).
    pub(crate) fn start(&self) -> bool {
        self.0.compare_exchange(WAITING, STARTED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    fn abandon(&self) -> bool {
        self.0.compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

/// How long a request may wait for the client to start it.
pub(crate) const START_PATIENCE: Duration = Duration::from_secs(15);
/// How long a started request may take: longer than the store calls of
/// any change together (a join withdraws, reads and writes, with retries),
/// each bounded by `store::CALL_TIMEOUT`, so this is only reached by a
/// client that hangs outside them.
pub(crate) const FINISH_PATIENCE: Duration = Duration::from_secs(90);

/// The requester's side: the answer, or why there is none.
pub(crate) fn wait(
    answer: &Receiver<Result<String, ChangeError>>,
    ticket: &Arc<Ticket>,
    start_patience: Duration,
    finish_patience: Duration,
) -> Result<String, ChangeError> {
    match answer.recv_timeout(start_patience) {
        Ok(a) => return a,
        Err(RecvTimeoutError::Disconnected) => return Err(ChangeError::Stopped),
        Err(RecvTimeoutError::Timeout) => {}
    }
    if ticket.abandon() {
        return Err(ChangeError::NotStarted(start_patience.as_secs()));
    }
    match answer.recv_timeout(finish_patience) {
        Ok(a) => a,
        Err(RecvTimeoutError::Disconnected) => Err(ChangeError::Stopped),
        Err(RecvTimeoutError::Timeout) => {
            Err(ChangeError::Unfinished(start_patience.as_secs() + finish_patience.as_secs()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    const SHORT: Duration = Duration::from_millis(50);

    #[test]
    fn a_request_not_started_in_time_is_reported_undone_and_never_runs() {
        let (_tx, rx) = channel();
        let ticket = Arc::new(Ticket::default());
        assert_eq!(wait(&rx, &ticket, SHORT, SHORT), Err(ChangeError::NotStarted(0)));
        assert!(!ticket.start(), "the client finds it abandoned and drops it");
    }

    #[test]
    fn a_started_request_is_waited_for_past_the_start_patience() {
        let (tx, rx) = channel();
        let ticket = Arc::new(Ticket::default());
        let client = {
            let ticket = ticket.clone();
            std::thread::spawn(move || {
                assert!(ticket.start());
                std::thread::sleep(SHORT * 4);
                tx.send(Ok("registered in site east as gw1".to_string())).unwrap();
            })
        };
        assert_eq!(wait(&rx, &ticket, SHORT, Duration::from_secs(30)), Ok("registered in site east as gw1".into()));
        client.join().unwrap();
        assert!(!ticket.abandon(), "started stays started");
    }

    #[test]
    fn a_started_request_that_never_ends_says_it_may_still_complete() {
        let (_tx, rx) = channel();
        let ticket = Arc::new(Ticket::default());
        assert!(ticket.start());
        let e = wait(&rx, &ticket, SHORT, SHORT).unwrap_err();
        assert_eq!(e, ChangeError::Unfinished(0));
        assert!(e.to_string().contains("may still complete"), "{e}");
    }

    #[test]
    fn a_client_that_stopped_is_reported() {
        let (tx, rx) = channel::<Result<String, ChangeError>>();
        drop(tx);
        assert_eq!(wait(&rx, &Arc::new(Ticket::default()), SHORT, SHORT), Err(ChangeError::Stopped));
    }
}
