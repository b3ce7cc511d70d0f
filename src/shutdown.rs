//! Graceful shutdown: a cloneable signal that remembers it fired, and a drain
//! tracker that knows when every session has finished.
//!
//! The four steps (STYLE habit 6): listeners stop accepting when the signal
//! fires; sessions see it at their next safe point and send the protocol
//! goodbye (`421`, `* BYE`); `app` waits for the drain tracker up to the
//! grace deadline; then the process exits.

use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Fires once; every clone sees it, including clones made afterwards.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending side of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// A new signal and its trigger.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Fire the signal (idempotent).
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }

    /// A receiver for the signal.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// A signal that never fires (tests, one-shot commands).
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive forever so `fired` never resolves.
        std::mem::forget(tx);
        Shutdown { rx }
    }

    /// True once the signal fired.
    pub fn is_fired(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when the signal fires (at once if it already has; also if
    /// the trigger was dropped, which counts as firing).
    pub async fn fired(&mut self) {
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

/// Counts live sessions; `wait_idle` resolves when there are none.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    inner: Arc<DrainInner>,
}

#[derive(Debug, Default)]
struct DrainInner {
    live: std::sync::atomic::AtomicUsize,
    idle: Notify,
}

/// Held by one session; dropping it tells the [`Drain`].
#[derive(Debug)]
pub struct DrainGuard {
    inner: Arc<DrainInner>,
}

impl Drain {
    pub fn new() -> Drain {
        Drain::default()
    }

    /// Register a live session.
    pub fn enter(&self) -> DrainGuard {
        self.inner
            .live
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        DrainGuard {
            inner: self.inner.clone(),
        }
    }

    /// Sessions still running.
    pub fn live(&self) -> usize {
        self.inner.live.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once no session is live.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if self
            .inner
            .live
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.inner.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn late_subscribers_see_an_earlier_fire() {
        let (trigger, mut a) = channel();
        trigger.fire();
        a.fired().await;
        let mut b = trigger.subscribe();
        assert!(b.is_fired());
        tokio::time::timeout(Duration::from_secs(1), b.fired())
            .await
            .expect("already fired");
    }

    #[tokio::test]
    async fn drain_waits_for_every_guard() {
        let drain = Drain::new();
        let g1 = drain.enter();
        let g2 = drain.enter();
        let d = drain.clone();
        let waiter = tokio::spawn(async move { d.wait_idle().await });
        drop(g1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(g2);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("idle after the last guard")
            .unwrap();
    }
}
