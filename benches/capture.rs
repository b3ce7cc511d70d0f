//! Parse + capture throughput against mail-parser's bare parse of the same
//! bytes, in one run, so the engine's overhead is a ratio that holds on a
//! noisy machine. `cargo bench --bench capture`.
//!
//! - bare parse: `MessageParser::default().parse(bytes)`
//! - capture: `mail::parse` → facts → content → `engine::decide` → `engine::merge`
//!   (everything before the store; the store has its own bench)
//!
//! Env: MAILSHARE_BENCH_MB (corpus size, default 256), MAILSHARE_BENCH_ROUNDS (default 5).

#[path = "support/corpus.rs"]
mod corpus;

use mailshare::engine::{self, Decision, Direction, Level};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mb = env_usize("MAILSHARE_BENCH_MB", 256);
    let rounds = env_usize("MAILSHARE_BENCH_ROUNDS", 5).max(1);
    let policy = mailshare::config::load_policy(std::path::Path::new("config/policy.toml"))
        .unwrap_or_else(|d| panic!("config/policy.toml: {d:?}"));
    let corpus = corpus::generate(mb << 20, 42);
    let bytes: usize = corpus.iter().map(Vec::len).sum();
    let n = corpus.len();

    let bare = || {
        let t = Instant::now();
        for m in &corpus {
            black_box(mail_parser::MessageParser::default().parse(black_box(&m[..])));
        }
        t.elapsed()
    };
    let mut levels = [0usize; 4];
    let mut capture = |count: bool| {
        let t = Instant::now();
        for m in &corpus {
            let parsed = mailshare::mail::parse(black_box(&m[..])).expect("corpus parses");
            let facts = parsed.facts(&[]);
            let content = parsed.content();
            let owner = if facts
                .from
                .iter()
                .any(|f| f.address.ends_with("@acme.example"))
            {
                (facts.from[0].address.clone(), Direction::Outbound)
            } else {
                ("alice@acme.example".to_string(), Direction::Inbound)
            };
            if let Decision::Capture(c) = engine::decide(&policy, &facts, &owner.0, owner.1, 0) {
                let rec = engine::merge(&policy, None, &facts, c, &[], 0, true);
                if count {
                    levels[rec.stored as usize] += 1;
                }
                black_box((rec, &content));
            } else if count {
                levels[Level::Hidden as usize] += 1;
            }
        }
        t.elapsed()
    };
    // Warm-up, then alternate so drift affects both alike.
    bare();
    capture(true);
    let (mut tb, mut tc) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        tb.push(bare());
        tc.push(capture(false));
    }
    let (b, c) = (median(tb), median(tc));
    let mbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    let mps = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "corpus: {n} messages, {:.1} MB; stored levels hidden/metadata/subject/full: {levels:?}",
        bytes as f64 / 1e6
    );
    println!(
        "bare parse : {:8.1} MB/s {:9.0} msg/s (median of {rounds})",
        mbs(b),
        mps(b)
    );
    println!(
        "capture    : {:8.1} MB/s {:9.0} msg/s (median of {rounds})",
        mbs(c),
        mps(c)
    );
    println!(
        "capture / bare parse time: {:.2}x (target <= 1.5x)",
        c.as_secs_f64() / b.as_secs_f64()
    );
}
