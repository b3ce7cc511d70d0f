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
//! A failed flush fails every ticket of its batch: each waiter of that batch
//! gets the error (the next flush retries whatever is still dirty, so later
//! batches may succeed). If the flusher thread dies, waiters get
//! [`StoreError::Closed`] instead of blocking forever.

use super::StoreError;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How many failed batches are remembered for waiters that wake late.
const MAX_FAILURES: usize = 1024;

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

    /// Take a ticket for writes already applied; wakes the flusher.
    pub(crate) fn issue(&self) -> u64 {
        let mut st = self.lock();
        st.issued += 1;
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
        while st.done < ticket {
            if st.dead {
                return Err(StoreError::Closed);
            }
            st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
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

    /// The flusher loop; returns after [`shutdown`](Self::shutdown) once
    /// nothing is pending. `flush(covered)` must make every write of tickets
    /// `<= covered` durable.
    pub(crate) fn run_flusher(
        &self,
        max_batch_delay: Duration,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn waiters_of_a_failed_batch_all_get_the_error() {
        let gc = Arc::new(GroupCommit::default());
        let t1 = gc.issue();
        let t2 = gc.issue();
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
        let t3 = gc.issue();
        gc.wait(t3).unwrap();
        gc.shutdown();
        flusher.join().unwrap();
        assert_eq!(gc.flushes(), 2);
        // No flusher any more: a new ticket cannot be waited for forever.
        let t4 = gc.issue();
        assert!(matches!(gc.wait(t4), Err(StoreError::Closed)));
    }
}
