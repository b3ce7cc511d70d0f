//! Store write throughput under concurrent captures: how well group commit
//! groups. `cargo bench --bench store` prints captures/s and captures per
//! flush for 1 and 8 threads, with and without content (each message has a
//! unique text body, so a `full` capture also writes and fsyncs one blob).
//!
//! Uses the local stand-in rules of the store's tests (the store's cost, not
//! the engine's, is measured here).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use mailshare::engine::{Direction, Level};
use mailshare::store::{SledStore, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn run(threads: usize, per_thread: usize, level: Level, delay: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options();
    opts.max_batch_delay = delay;
    let store = Arc::new(SledStore::open(dir.path(), opts).unwrap());
    let p = Arc::new(policy());
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, p) = (store.clone(), p.clone());
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let m = Mail::new(
                        &format!("b{t}-{i}@acme.example"),
                        1_700_000_000 + i as i64,
                        &format!("c{}@client{}.example", i % 50, t),
                        "bench",
                    );
                    let c = m.content();
                    store
                        .capture(&p, m.input(&c, copy(ALICE, Direction::Outbound, level)))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed();
    let s = store.stats().unwrap();
    let n = (threads * per_thread) as f64;
    println!(
        "threads {threads:>2} level {:<8} delay {:>4?}: {:>7.0} captures/s, {:>5} flushes, {:>5.1} captures/flush",
        level.as_str(),
        delay,
        n / elapsed.as_secs_f64(),
        s.flushes,
        n / s.flushes.max(1) as f64
    );
}

fn main() {
    for delay in [Duration::ZERO, Duration::from_millis(1)] {
        for level in [Level::Subject, Level::Full] {
            run(1, 200, level, delay);
            run(8, 100, level, delay);
        }
    }
}
