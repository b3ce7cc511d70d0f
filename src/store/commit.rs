//! Group commit: many writers share one flush.
//!
//! A writer applies its changes to the database (not yet durable), takes a
//! *ticket* with [`GroupCommit::issue`] and blocks in [`GroupCommit::wait`]
//! until a flush that started after its ticket was issued has completed. One
//! flusher thread ([`GroupCommit::run_flusher`]) loops: wait for unflushed
//! tickets, optionally linger `max_batch_delay` to gather more, note the
//! highest ticket issued so far (`covered`), flush, then wake every waiter
//! whose ticket is `<= covered`. While one flush runs, the next batch gathers
//! on its own, so under load one fsync serves many writers without any delay
//! being configured.
//!
//! Two waits make batches larger without making anyone wait longer than
//! needed (a flush costs the same CPU whatever it covers):
//! - **followers**: a writer that [`enter`](GroupCommit::enter)ed (it is
//!   applying its batch under the store's write lock, a matter of
//!   microseconds) is waited for, up to [`FOLLOWER_WAIT`], so it shares this
//!   flush instead of needing the next one;
//! - **background**: while nobody [`wait`](GroupCommit::wait)s (only
//!   `Durability::Background` captures are pending), the flusher lingers up
//!   to [`BACKGROUND_LINGER`]: a burst of IMAP captures costs a few flushes,
//!   not one each. A waiter arriving ends the linger at once.
//!
//! A failed flush fails every ticket of its batch: each waiter of that batch
//! gets the error (the next flush retries whatever is still dirty, so later
//! batches may succeed). If the flusher thread dies, waiters get
//! [`StoreError::Closed`] instead of blocking forever.

use super::StoreError;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How many failed batches are remembered for waiters that wake late.
const MAX_FAILURES: usize = 1024;
/// Longest wait for writers applying their batch to join a flush.
const FOLLOWER_WAIT: Duration = Duration::from_millis(1);
/// Longest a flush is put off while nobody waits for it.
const BACKGROUND_LINGER: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Failure {
    first: u64,
    last: u64,
    message: String,
}

#[derive(Debug, Default)]
struct State {
    /// The last ticket issued.
    issued: u64,
    /// Every ticket `<= done` has been through a flush (successful or not).
    done: u64,
    failures: VecDeque<Failure>,
    /// Failures of tickets `<= forgotten` were dropped from `failures`.
    forgotten: u64,
    shutdown: bool,
    /// The flusher thread has exited.
    dead: bool,
    /// Writers between [`GroupCommit::enter`] and their ticket.
    in_progress: usize,
    /// The highest ticket somebody waits, or will wait, for.
    wanted: u64,
}

/// The shared state between writers and the flusher thread.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
    flushes: AtomicU64,
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A writer is about to apply a batch and take a ticket: the next flush
    /// waits (briefly) for it. The guard takes the ticket
    /// ([`Entered::issue`]); dropped without one (an error path), it ends the
    /// wait all the same.
    pub(crate) fn enter(&self) -> Entered<'_> {
        self.lock().in_progress += 1;
        Entered(Some(self))
    }

    /// Take a ticket for writes already applied; wakes the flusher. `wait`:
    /// the caller will [`wait`](Self::wait) for it (else the flusher may
    /// linger for more).
    pub(crate) fn issue(&self, wait: bool) -> u64 {
        let mut st = self.lock();
        self.issue_locked(&mut st, wait)
    }

    fn issue_locked(&self, st: &mut State, wait: bool) -> u64 {
        st.issued += 1;
        if wait {
            st.wanted = st.issued;
        }
        self.work.notify_one();
        st.issued
    }

    /// Block until a flush covering `ticket` completed.
    ///
    /// # Errors
    /// [`StoreError::Flush`] when that flush failed, [`StoreError::Closed`]
    /// when the flusher is gone.
    pub(crate) fn wait(&self, ticket: u64) -> Result<(), StoreError> {
        let mut st = self.lock();
        if st.wanted < ticket {
            // A lingering flusher flushes now that somebody waits.
            st.wanted = ticket;
            self.work.notify_one();
        }
        while st.done < ticket && !st.dead {
            st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        if st.done < ticket {
            return Err(StoreError::Closed);
        }
        if let Some(f) = st
            .failures
            .iter()
            .find(|f| f.first <= ticket && ticket <= f.last)
        {
            return Err(StoreError::Flush {
                message: f.message.clone(),
            });
        }
        if ticket <= st.forgotten {
            // Fail closed: we no longer know whether this batch was flushed.
            return Err(StoreError::Flush {
                message: "flush outcome no longer known".into(),
            });
        }
        Ok(())
    }

    /// Number of flushes run so far.
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Number of tickets issued so far (committed write operations).
    pub(crate) fn commits(&self) -> u64 {
        self.lock().issued
    }

    /// Ask the flusher to flush what is pending and exit.
    pub(crate) fn shutdown(&self) {
        let mut st = self.lock();
        st.shutdown = true;
        self.work.notify_all();
    }

    /// Wait on `work` while `cond` holds, until `until` or shutdown.
    fn linger<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        until: Instant,
        cond: impl Fn(&State) -> bool,
    ) -> MutexGuard<'a, State> {
        while cond(&st) && !st.shutdown {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .work
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        st
    }

    /// The flusher loop; returns after [`shutdown`](Self::shutdown) once
    /// nothing is pending. `flush(covered)` must make every write of tickets
    /// `<= covered` durable.
    pub(crate) fn run_flusher(
        &self,
        max_batch_delay: Duration,
        flush: impl FnMut(u64) -> Result<(), String>,
    ) {
        self.run_flusher_with(max_batch_delay, FOLLOWER_WAIT, BACKGROUND_LINGER, flush);
    }

    /// [`run_flusher`](Self::run_flusher) with its two waits given.
    fn run_flusher_with(
        &self,
        max_batch_delay: Duration,
        follower_wait: Duration,
        background_linger: Duration,
        mut flush: impl FnMut(u64) -> Result<(), String>,
    ) {
        struct DeadOnDrop<'a>(&'a GroupCommit);
        impl Drop for DeadOnDrop<'_> {
            fn drop(&mut self) {
                let mut st = self.0.lock();
                st.dead = true;
                self.0.done.notify_all();
            }
        }
        let _dead = DeadOnDrop(self);
        loop {
            {
                let mut st = self.lock();
                while st.issued == st.done && !st.shutdown {
                    st = self.work.wait(st).unwrap_or_else(PoisonError::into_inner);
                }
                if st.issued == st.done {
                    return;
                }
                let ready = Instant::now();
                st = self.linger(st, ready + background_linger, |st| st.wanted <= st.done);
                st = self.linger(st, Instant::now() + follower_wait, |st| st.in_progress > 0);
                drop(st);
            }
            if !max_batch_delay.is_zero() {
                std::thread::sleep(max_batch_delay);
            }
            let (first, covered) = {
                let st = self.lock();
                (st.done + 1, st.issued)
            };
            let result = flush(covered);
            self.flushes.fetch_add(1, Ordering::Relaxed);
            let mut st = self.lock();
            st.done = covered;
            if let Err(message) = result {
                st.failures.push_back(Failure {
                    first,
                    last: covered,
                    message,
                });
                while st.failures.len() > MAX_FAILURES {
                    if let Some(f) = st.failures.pop_front() {
                        st.forgotten = st.forgotten.max(f.last);
                    }
                }
            }
            self.done.notify_all();
        }
    }
}

/// A writer between [`GroupCommit::enter`] and its ticket.
pub(crate) struct Entered<'a>(Option<&'a GroupCommit>);

impl Entered<'_> {
    /// Take the ticket and end the writer's turn in one step, so the flusher
    /// never waits for a writer that is already done.
    pub(crate) fn issue(mut self, wait: bool) -> u64 {
        let gc = self.0.take().expect("an Entered guard issues once");
        let mut st = gc.lock();
        st.in_progress -= 1;
        gc.issue_locked(&mut st, wait)
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if let Some(gc) = self.0.take() {
            let mut st = gc.lock();
            st.in_progress -= 1;
            gc.work.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waiters_of_a_failed_batch_all_get_the_error() {
        let gc = Arc::new(GroupCommit::default());
        let t1 = gc.issue(true);
        let t2 = gc.issue(true);
        let g = gc.clone();
        let flusher = std::thread::spawn(move || {
            let mut n = 0;
            g.run_flusher(Duration::ZERO, |_| {
                n += 1;
                if n == 1 {
                    Err("disk on fire".into())
                } else {
                    Ok(())
                }
            })
        });
        assert!(matches!(gc.wait(t1), Err(StoreError::Flush { .. })));
        assert!(matches!(gc.wait(t2), Err(StoreError::Flush { .. })));
        let t3 = gc.issue(true);
        gc.wait(t3).unwrap();
        gc.shutdown();
        flusher.join().unwrap();
        assert_eq!(gc.flushes(), 2);
        // No flusher any more: a new ticket cannot be waited for forever.
        let t4 = gc.issue(true);
        assert!(matches!(gc.wait(t4), Err(StoreError::Closed)));
    }

    /// A flusher with long waits (so the test does not depend on timing),
    /// recording what each flush covered.
    fn flusher(gc: &Arc<GroupCommit>) -> (std::thread::JoinHandle<()>, Arc<Mutex<Vec<u64>>>) {
        let covered = Arc::new(Mutex::new(Vec::new()));
        let (g, c) = (gc.clone(), covered.clone());
        let h = std::thread::spawn(move || {
            let long = Duration::from_secs(30);
            g.run_flusher_with(Duration::ZERO, long, long, |upto| {
                c.lock().unwrap().push(upto);
                Ok(())
            });
        });
        (h, covered)
    }

    #[test]
    fn background_tickets_wait_for_a_waiter_and_share_its_flush() {
        let gc = Arc::new(GroupCommit::default());
        let (h, covered) = flusher(&gc);
        gc.issue(false);
        gc.issue(false);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            covered.lock().unwrap().is_empty(),
            "nobody waits: no flush yet"
        );
        let t3 = gc.issue(false);
        let started = Instant::now();
        gc.wait(t3).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a waiter ends the linger"
        );
        assert_eq!(*covered.lock().unwrap(), vec![3], "one flush for all three");
        gc.shutdown();
        h.join().unwrap();
    }

    #[test]
    fn a_flush_waits_for_writers_applying_their_batch() {
        let gc = Arc::new(GroupCommit::default());
        let (h, covered) = flusher(&gc);
        let follower = gc.enter();
        let t1 = gc.issue(true);
        let g = gc.clone();
        let waiter = std::thread::spawn(move || g.wait(t1));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            covered.lock().unwrap().is_empty(),
            "a writer is still applying"
        );
        let t2 = follower.issue(true);
        gc.wait(t2).unwrap();
        waiter.join().unwrap().unwrap();
        assert_eq!(*covered.lock().unwrap(), vec![2], "one flush for both");
        gc.shutdown();
        h.join().unwrap();
        // Shutdown flushes at once, whatever is pending or in progress.
        let gc = Arc::new(GroupCommit::default());
        let (h, covered) = flusher(&gc);
        let _busy = gc.enter();
        gc.issue(false);
        gc.shutdown();
        h.join().unwrap();
        assert_eq!(*covered.lock().unwrap(), vec![1]);
    }
}
