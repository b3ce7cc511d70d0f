//! Fill a store with a synthetic corpus through the real capture path, for
//! load figures (`scripts/load-admin`). Not a test, not shipped.
//!
//! ```text
//! fill_store <store dir> <policy.toml> <messages> [writer threads]
//! ```
//!
//! With the demo policy (`config/policy.toml`): 70% alice's sent mail to
//! people at client-a.example (stored full, each with its own small body),
//! 30% bob's received mail from them (stored at his inbound level); every
//! message lands on Client A Ltd's timeline. Dates run one minute apart
//! from 2024-01-01. Prints the contact id of that timeline.

use mailshare::engine::{self, Direction};
use mailshare::ingest::{self, IngestRequest};
use mailshare::store::{Durability, SledStore, Store, StoreOptions};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const START: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

fn message(i: usize) -> (Direction, &'static str, String) {
    let date = START + i as i64 * 60;
    let person = i % 500;
    let (direction, owner, from, to) = if i % 10 < 7 {
        (
            Direction::Outbound,
            "alice@acme.example",
            "Alice Smith <alice@acme.example>".to_string(),
            format!("Person {person} <p{person}@client-a.example>"),
        )
    } else {
        (
            Direction::Inbound,
            "bob@acme.example",
            format!("Person {person} <p{person}@client-a.example>"),
            "Bob Jones <bob@acme.example>".to_string(),
        )
    };
    let raw = format!(
        "Message-ID: <load-{i}@acme.example>\r\nDate: {date_rfc}\r\nFrom: {from}\r\nTo: {to}\r\n\
         Subject: Project update {i}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Hello,\r\n\r\nthis is update number {i} on the project, with the figures for week {w}.\r\n\
         Regards\r\n",
        date_rfc = rfc2822(date),
        w = i % 52,
    );
    (direction, owner, raw)
}

fn rfc2822(secs: i64) -> String {
    // Days → civil date (Hinnant), enough for a Date header.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{d} {} {y} {:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: fill_store <store dir> <policy.toml> <messages> [threads]");
        std::process::exit(2);
    }
    let policy =
        mailshare::config::load_policy(Path::new(&args[2])).map_err(|d| format!("{d:?}"))?;
    let n: usize = args[3].parse()?;
    let threads: usize = args.get(4).map_or(Ok(8), |t| t.parse())?;
    let store = Arc::new(SledStore::open(
        Path::new(&args[1]),
        StoreOptions::default(),
    )?);
    let policy = Arc::new(policy);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (store, policy, next) = (store.clone(), policy.clone(), next.clone());
            std::thread::spawn(move || -> Result<(), String> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    let (direction, owner, raw) = message(i);
                    let req = IngestRequest {
                        owner,
                        direction,
                        envelope_recipients: &[],
                        now: START,
                        max_capture_bytes: 1 << 20,
                        durability: Durability::Background,
                    };
                    ingest::ingest(store.as_ref(), &policy, raw.as_bytes(), &req)
                        .map_err(|e| e.to_string())?;
                    if i > 0 && i % 20_000 == 0 {
                        eprintln!(
                            "{i} messages, {:.0}/s",
                            i as f64 / started.elapsed().as_secs_f64()
                        );
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "writer panicked")??;
    }
    store.flush()?;
    let stats = store.stats()?;
    eprintln!(
        "{n} messages in {:.1} s; store: {} records, {} contacts, {} bytes on disk",
        started.elapsed().as_secs_f64(),
        stats.messages,
        stats.contacts,
        stats.bytes_on_disk
    );
    println!("{}", engine::policy_contact_id("Client A Ltd"));
    Ok(())
}
