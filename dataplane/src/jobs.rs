//! Crypto work shared by all workers. A worker that reads a batch puts it
//! in its peer's ordered queue, then here; any worker takes it from here,
//! seals or opens it, and drains the peer's queue (see `ordered.rs`).
//! Idle workers sleep in poll() and are woken through their eventfd doorbells.
//!
//! Buffers live in fixed pools made at start-up: no allocation per packet,
//! and the pools bound the memory in flight. When a pool is empty, the
//! reader helps with the crypto until a buffer comes back, so a burst
//! slows the reading down rather than growing queues.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::batch::{RxData, TxData};
use crate::peer::{RxBatch, TxBatch};

/// Batch buffers per worker and direction: enough for a full TUN read and
/// a full GRO receive to be in flight while the previous ones drain.
pub const BATCHES_PER_WORKER: usize = 12;

pub enum Job {
    Seal(Arc<TxBatch>),
    Open(Arc<RxBatch>),
}

pub struct Jobs {
    queue: ArrayQueue<Job>,
    /// Set by a worker about to sleep in poll(), cleared by it on waking
    /// or by whoever wakes it.
    sleeping: Vec<AtomicBool>,
    pub tx_pool: ArrayQueue<Arc<TxBatch>>,
    pub rx_pool: ArrayQueue<Arc<RxBatch>>,
}

impl Jobs {
    pub fn new(workers: usize) -> Jobs {
        Jobs::with_pools(workers, BATCHES_PER_WORKER)
    }

    /// With `per_worker` batch buffers per worker and direction (tests use
    /// few, to reach an empty pool).
    pub fn with_pools(workers: usize, per_worker: usize) -> Jobs {
        let per_direction = per_worker.max(1) * workers;
        let tx_pool = ArrayQueue::new(per_direction);
        let rx_pool = ArrayQueue::new(per_direction);
        for _ in 0..per_direction {
            let _ = tx_pool.push(Arc::new(TxBatch::new(TxData::with_buffers())));
            let _ = rx_pool.push(Arc::new(RxBatch::new(RxData::with_buffers())));
        }
        Jobs {
            // Every job holds a pooled batch, so this never fills.
            queue: ArrayQueue::new(2 * per_direction),
            sleeping: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            tx_pool,
            rx_pool,
        }
    }

    pub fn push(&self, job: Job) {
        if self.queue.push(job).is_err() {
            unreachable!("the job queue holds every pooled batch");
        }
    }

    pub fn pop(&self) -> Option<Job> {
        self.queue.pop()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Worker `me` is about to sleep; returns false if work arrived, in
    /// which case it must not sleep.
    pub fn sleep(&self, me: usize) -> bool {
        self.sleeping[me].store(true, Ordering::SeqCst);
        // Pairs with the fence in `helpers_to_wake`: either the pusher sees
        // us sleeping, or we see its job.
        fence(Ordering::SeqCst);
        if self.queue.is_empty() {
            return true;
        }
        self.sleeping[me].store(false, Ordering::SeqCst);
        false
    }

    pub fn awake(&self, me: usize) {
        self.sleeping[me].store(false, Ordering::Relaxed);
    }

    /// Claims up to `n` sleeping workers other than `me` for waking; the
    /// caller rings their doorbells.
    pub fn helpers_to_wake(&self, me: usize, n: usize, mut wake: impl FnMut(usize)) -> usize {
        if n == 0 {
            return 0;
        }
        fence(Ordering::SeqCst);
        let mut woken = 0;
        for (i, s) in self.sleeping.iter().enumerate() {
            if woken == n {
                break;
            }
            if i != me && s.load(Ordering::Relaxed) && s.swap(false, Ordering::SeqCst) {
                wake(i);
                woken += 1;
            }
        }
        woken
    }

    /// Jobs waiting for a worker.
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_about_to_sleep_sees_new_work_or_is_woken() {
        let jobs = Arc::new(Jobs::new(2));
        for _ in 0..2_000 {
            let j2 = jobs.clone();
            let pusher = std::thread::spawn(move || {
                j2.push(Job::Seal(j2.tx_pool.pop().unwrap()));
                let mut woken = false;
                j2.helpers_to_wake(0, 1, |i| woken = i == 1);
                woken
            });
            let slept = jobs.sleep(1);
            let woken = pusher.join().unwrap();
            assert!(!slept || woken, "slept through a job without being woken");
            jobs.awake(1);
            let Some(Job::Seal(b)) = jobs.pop() else { panic!("the job is there") };
            jobs.tx_pool.push(b).ok().unwrap();
        }
    }

    #[test]
    fn wakes_only_sleepers_and_not_itself() {
        let jobs = Jobs::new(3);
        assert!(jobs.sleep(0));
        assert!(jobs.sleep(2));
        let mut woken = Vec::new();
        assert_eq!(jobs.helpers_to_wake(0, 5, |i| woken.push(i)), 1);
        assert_eq!(woken, [2]);
        assert_eq!(jobs.helpers_to_wake(1, 5, |i| woken.push(i)), 1, "0 still sleeps");
        assert_eq!(jobs.helpers_to_wake(1, 5, |_| unreachable!()), 0, "each sleeper is woken once");
    }
}
