//! A peer's ordered queue, one per direction: batches join it in the order
//! they were read, any worker may finish (seal or open) any of them, and
//! they leave in the order they joined. This is how one peer's traffic uses
//! every core without a thread per peer and without reordering.
//!
//! Invariants:
//! - A batch is pushed before its crypto starts, so its place is fixed by
//!   the order of reading, not by which worker finishes first.
//! - Only the head leaves, and only once it is done; the completed prefix
//!   leaves through one worker at a time (the drainer), in order.
//! - No lock is held while a batch is processed: the queue's mutex guards
//!   a push or a pop, and the drainer flag only tells other workers that
//!   someone is already draining.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A batch that can be waited for in a queue.
pub trait Completion {
    /// Whether the batch's crypto has finished.
    fn is_done(&self) -> bool;
}

/// Where a drain puts the batches it takes from a queue.
pub trait Sink<T> {
    fn emit(&mut self, batch: Arc<T>);
    /// Runs after the batches emitted and before another worker may drain:
    /// whatever `emit` buffered must leave now, or the next drainer's
    /// output could overtake it.
    fn flush(&mut self) {}
}

impl<T, F: FnMut(Arc<T>)> Sink<T> for F {
    fn emit(&mut self, batch: Arc<T>) {
        self(batch)
    }
}

/// A batch in a queue: its data, handed from the reader to a worker that
/// does its crypto, then to the drainer. The mutex is never contended,
/// since those steps follow one another; it is what lets the hand-over
/// happen between threads without unsafe code.
pub struct Batch<D> {
    done: AtomicBool,
    data: Mutex<D>,
}

impl<D> Batch<D> {
    pub fn new(data: D) -> Batch<D> {
        Batch { done: AtomicBool::new(false), data: Mutex::new(data) }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, D> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The crypto is finished: a drainer may take the batch.
    pub fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
    }

    /// Ready for reuse from the pool.
    pub fn recycle(&self) {
        self.done.store(false, Ordering::SeqCst);
    }
}

impl<D> Completion for Batch<D> {
    fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

pub struct OrderedQueue<T> {
    batches: Mutex<VecDeque<Arc<T>>>,
    draining: AtomicBool,
}

impl<T> Default for OrderedQueue<T> {
    fn default() -> Self {
        OrderedQueue { batches: Mutex::new(VecDeque::new()), draining: AtomicBool::new(false) }
    }
}

impl<T: Completion> OrderedQueue<T> {
    /// Appends `batch` after running `reserve` under the queue's lock, so
    /// what `reserve` hands out (nonces) follows the queue's order. If
    /// `reserve` fails, nothing is appended.
    pub fn push_with<E>(&self, batch: Arc<T>, reserve: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        let mut q = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        reserve()?;
        q.push_back(batch);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.batches.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn pop_done(&self) -> Option<Arc<T>> {
        let mut q = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        if q.front().is_some_and(|b| b.is_done()) {
            q.pop_front()
        } else {
            None
        }
    }

    fn head_done(&self) -> bool {
        self.batches.lock().unwrap_or_else(|e| e.into_inner()).front().is_some_and(|b| b.is_done())
    }

    /// Hands the completed prefix to `sink`, in order, unless another
    /// worker is draining this queue already (it then emits ours too).
    /// Call after marking a batch done. Returns how many batches left.
    pub fn drain(&self, sink: &mut impl Sink<T>) -> usize {
        let mut emitted = 0;
        loop {
            // SeqCst pairs with the completer's SeqCst store of its done
            // flag: either it sees the flag taken after our re-check below
            // would have seen its batch done, or it takes the flag itself.
            if self.draining.swap(true, Ordering::SeqCst) {
                return emitted;
            }
            let before = emitted;
            while let Some(b) = self.pop_done() {
                sink.emit(b);
                emitted += 1;
            }
            if emitted > before {
                sink.flush();
            }
            self.draining.store(false, Ordering::SeqCst);
            // A batch finished while we held the flag left its emission to
            // us; without this look it would wait for the next completion.
            if !self.head_done() {
                return emitted;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    struct Item {
        seq: u64,
        done: AtomicBool,
    }

    impl Completion for Item {
        fn is_done(&self) -> bool {
            self.done.load(Ordering::SeqCst)
        }
    }

    fn item(seq: u64) -> Arc<Item> {
        Arc::new(Item { seq, done: AtomicBool::new(false) })
    }

    #[test]
    fn leaves_in_order_whatever_order_it_completes_in() {
        let q = OrderedQueue::default();
        let items: Vec<_> = (0..4).map(item).collect();
        for i in &items {
            q.push_with(i.clone(), || Ok::<(), ()>(())).unwrap();
        }
        let mut out = Vec::new();
        items[2].done.store(true, Ordering::SeqCst);
        assert_eq!(q.drain(&mut |b: Arc<Item>| out.push(b.seq)), 0, "the head is not done");
        items[0].done.store(true, Ordering::SeqCst);
        assert_eq!(q.drain(&mut |b: Arc<Item>| out.push(b.seq)), 1, "stops at the first unfinished batch");
        items[3].done.store(true, Ordering::SeqCst);
        items[1].done.store(true, Ordering::SeqCst);
        assert_eq!(q.drain(&mut |b: Arc<Item>| out.push(b.seq)), 3);
        assert_eq!(out, [0, 1, 2, 3]);
        assert!(q.is_empty());
    }

    struct Logged<'a> {
        q: &'a OrderedQueue<Item>,
        later: Arc<Item>,
        log: Vec<String>,
    }

    impl Sink<Item> for Logged<'_> {
        fn emit(&mut self, b: Arc<Item>) {
            self.log.push(format!("emit {}", b.seq));
        }

        fn flush(&mut self) {
            if self.later.seq == 1 && !self.later.is_done() {
                // Another worker finishing now must find the queue still taken.
                self.q.push_with(self.later.clone(), || Ok::<(), ()>(())).unwrap();
                self.later.done.store(true, Ordering::SeqCst);
                assert_eq!(self.q.drain(&mut |_: Arc<Item>| panic!("overtook the flush")), 0);
            }
            self.log.push("flush".into());
        }
    }

    #[test]
    fn flush_runs_before_the_next_drainer_may_start() {
        let q = OrderedQueue::default();
        let it = item(0);
        q.push_with(it.clone(), || Ok::<(), ()>(())).unwrap();
        it.done.store(true, Ordering::SeqCst);
        let mut sink = Logged { q: &q, later: item(1), log: Vec::new() };
        q.drain(&mut sink);
        assert_eq!(sink.log, ["emit 0", "flush", "emit 1", "flush"], "the drainer picks up what finished meanwhile");
    }

    #[test]
    fn a_failed_reservation_appends_nothing() {
        let q = OrderedQueue::default();
        assert_eq!(q.push_with(item(0), || Err("expired")), Err("expired"));
        assert!(q.is_empty());
    }

    /// Many threads complete batches in random order and drain; every batch
    /// leaves exactly once, in push order, with one drainer at a time.
    #[test]
    fn concurrent_completion_keeps_order_and_loses_nothing() {
        const N: u64 = 20_000;
        let q = Arc::new(OrderedQueue::default());
        let pending = Arc::new(crossbeam_queue::ArrayQueue::new(N as usize));
        let next = AtomicU64::new(0);
        for seq in 0..N {
            let it = item(seq);
            q.push_with(it.clone(), || {
                assert_eq!(next.fetch_add(1, Ordering::Relaxed), seq, "reservation follows queue order");
                Ok::<(), ()>(())
            })
            .unwrap();
            pending.push(it).ok().unwrap();
        }
        let out = Arc::new(Mutex::new(Vec::new()));
        let inside = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (q, pending, out, inside) = (q.clone(), pending.clone(), out.clone(), inside.clone());
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    let mut rng = t as u64 * 7919 + 1;
                    loop {
                        // Finish the batches taken, in a scrambled order.
                        while let Some(b) = pending.pop() {
                            held.push(b);
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            if held.len() > (rng % 5) as usize {
                                break;
                            }
                        }
                        if held.is_empty() {
                            return;
                        }
                        while let Some(b) = held.pop() {
                            b.done.store(true, Ordering::SeqCst);
                            q.drain(&mut |b: Arc<Item>| {
                                assert!(!inside.swap(true, Ordering::SeqCst), "two drainers at once");
                                out.lock().unwrap().push(b.seq);
                                inside.store(false, Ordering::SeqCst);
                            });
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let out = out.lock().unwrap();
        assert_eq!(out.len() as u64, N, "every batch left once");
        assert!(out.iter().copied().eq(0..N), "in push order");
        assert!(q.is_empty(), "nothing left behind");
    }
}
