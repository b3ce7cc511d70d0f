//! Store ingest rate and bytes on disk per message, through the same
//! `ingest::ingest` path as `mailshare ingest`, with several writer threads
//! so group commit is exercised (every capture is durable before it returns).
//! `cargo bench --bench store`.
//!
//! Each level runs twice: every capture durable before it returns (SMTP's
//! 250), and `Durability::Background` (IMAP fetches: applied at once, made
//! durable by the flusher in larger groups; the time includes the final
//! flush). CPU is the process's user + system time per message.
//!
//! Env: MAILSHARE_BENCH_MESSAGES (default 100000), MAILSHARE_BENCH_THREADS (default 8),
//! MAILSHARE_BENCH_LEVELS (default `metadata,full`).

#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/cpu.rs"]
mod cpu;

use mailshare::engine::{Direction, Policy};
use mailshare::ingest::{self, IngestOutcome, IngestRequest};
use mailshare::store::{Durability, SledStore, Store, StoreOptions};
use std::path::Path;
use std::time::Instant;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn policy(outbound: &str, dir: &Path) -> Policy {
    let text = format!(
        r#"
[organization]
name = "Bench"
internal_domains = ["acme.example"]
auto_create_contacts = "sent"

[defaults]
inbound = "{outbound}"
outbound = "{outbound}"

[[users]]
address = "alice@acme.example"
logins = ["alice"]

[[users]]
address = "bob@acme.example"
logins = ["bob"]

[[users]]
address = "carol@acme.example"
logins = ["carol"]
"#
    );
    let p = dir.join(format!("policy-{outbound}.toml"));
    std::fs::write(&p, text).expect("write bench policy");
    mailshare::config::load_policy(&p).unwrap_or_else(|d| panic!("bench policy: {d:?}"))
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn run(level: &str, messages: &[Vec<u8>], threads: usize, durability: Durability) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let policy = policy(level, tmp.path());
    let store_path = tmp.path().join("store");
    let store = SledStore::open(&store_path, StoreOptions::default()).expect("open store");
    let t = Instant::now();
    let cpu0 = cpu::cpu_seconds(None);
    let stored = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for chunk in messages.chunks(messages.len().div_ceil(threads)) {
            let (store, policy, stored) = (&store, &policy, &stored);
            s.spawn(move || {
                for m in chunk {
                    let req = IngestRequest {
                        owner: "alice",
                        direction: Direction::Inbound,
                        envelope_recipients: &[],
                        now: 1_800_000_000,
                        max_capture_bytes: 64 << 20,
                        durability,
                    };
                    if let Ok(IngestOutcome::Stored { .. }) = ingest::ingest(store, policy, m, &req)
                    {
                        stored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    store.flush().expect("flush");
    let elapsed = t.elapsed();
    let cpu = cpu::cpu_seconds(None) - cpu0;
    let stats = store.stats().expect("stats");
    drop(store);
    let stored = stored.into_inner();
    let disk = dir_size(&store_path);
    let mode = match durability {
        Durability::Wait => "durable each",
        Durability::Background => "background",
    };
    println!(
        "{level:>8} {mode:>12}: {stored} stored of {} in {:.2}s = {:.0} msg/s ({threads} writers), \
         {:.1} µs CPU per message; {:.0} bytes on disk per message ({} bytes total; stats: {stats:?})",
        messages.len(),
        elapsed.as_secs_f64(),
        stored as f64 / elapsed.as_secs_f64(),
        cpu * 1e6 / stored.max(1) as f64,
        disk as f64 / stored.max(1) as f64,
        disk
    );
}

fn main() {
    let n = env_usize("MAILSHARE_BENCH_MESSAGES", 100_000);
    let threads = env_usize("MAILSHARE_BENCH_THREADS", 8).max(1);
    let messages = corpus::small_messages(n, 7);
    let avg = messages.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
    println!("{n} messages of {avg:.0} bytes on average");
    let levels = std::env::var("MAILSHARE_BENCH_LEVELS").unwrap_or_else(|_| "metadata,full".into());
    for level in levels.split(',') {
        for durability in [Durability::Wait, Durability::Background] {
            run(level, &messages, threads, durability);
        }
    }
}
