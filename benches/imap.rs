//! FETCH throughput through mailshare against Dovecot directly, in the same
//! run, over a corpus with a realistic size mix, capture on (the example
//! policy: most mail is captured, much of it with content). `cargo bench
//! --bench imap`.
//!
//! Each client logs in as alice, selects INBOX and runs `FETCH 1:*
//! (BODY.PEEK[])`, reading every literal. Concurrency 1 and 8; plaintext
//! (proxy → Dovecot plaintext) and implicit TLS (client → proxy TLS, proxy →
//! Dovecot plaintext) compared with Dovecot's own IMAPS. Rounds alternate
//! direct and proxied; the median round is reported, as MB/s, messages/s
//! and the proxied/direct ratio.
//!
//! Env: MAILSHARE_BENCH_MB (corpus size, default 256), MAILSHARE_BENCH_ROUNDS
//! (default 3), MAILSHARE_BENCH_TLS (0 to skip the TLS comparison),
//! MAILSHARE_BENCH_PHASES (default `alice,dave,tls`: capture on, capture
//! off, TLS; `first`: only the first, capturing fetch),
//! MAILSHARE_BENCH_CLIENTS (default `1,8`: the concurrencies),
//! MAILSHARE_BENCH_REFERENCE (default 1: the plaintext rounds also run
//! through HAProxy in `mode tcp` to the same Dovecot, a relay that parses
//! nothing: how much any proxy costs on this machine).

#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/cpu.rs"]
mod cpu;
#[path = "../tests/imap_support/mod.rs"]
mod imap_support;
#[path = "../tests/support/mod.rs"]
mod support;

use imap_support::{append_direct, Options, Proxied};
use rustls::pki_types::pem::PemObject;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::haproxy::{HaProxy, Route};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One client's FETCH of the whole mailbox: (literal bytes, messages).
fn fetch_all<S: Read + Write>(stream: S, user: &str) -> (u64, u64) {
    let mut r = BufReader::with_capacity(64 << 10, stream);
    let mut line = Vec::new();
    let read_line = |r: &mut BufReader<S>, line: &mut Vec<u8>| {
        line.clear();
        r.read_until(b'\n', line).expect("read");
        assert!(!line.is_empty(), "closed");
    };
    read_line(&mut r, &mut line); // greeting
    r.get_mut()
        .write_all(
            format!("l LOGIN {user} pw-{user}\r\ns SELECT INBOX\r\nf FETCH 1:* (BODY.PEEK[])\r\n")
                .as_bytes(),
        )
        .unwrap();
    r.get_mut().flush().unwrap();
    let (mut bytes, mut msgs) = (0u64, 0u64);
    loop {
        read_line(&mut r, &mut line);
        if line.starts_with(b"f ") {
            assert!(
                line.starts_with(b"f OK"),
                "{}",
                String::from_utf8_lossy(&line)
            );
            break;
        }
        if line.starts_with(b"l NO") || line.starts_with(b"s NO") {
            panic!("{}", String::from_utf8_lossy(&line));
        }
        if let Some(n) = imap_support::literal_size(&String::from_utf8_lossy(&line)) {
            let copied = io::copy(&mut (&mut r).take(n as u64), &mut io::sink()).unwrap();
            assert_eq!(copied, n as u64);
            bytes += copied;
            msgs += 1;
        }
    }
    let _ = r.get_mut().write_all(b"z LOGOUT\r\n");
    (bytes, msgs)
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(
        imap_support::repo().join("config/tls/cert.pem"),
    )
    .unwrap()
    {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// `clients` concurrent whole-mailbox fetches; (seconds, bytes, messages).
fn round(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    clients: usize,
    user: &'static str,
) -> (f64, u64, u64) {
    let t = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let tls = tls.cloned();
            std::thread::spawn(move || {
                let tcp = TcpStream::connect(addr).unwrap();
                tcp.set_nodelay(true).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(120)))
                    .unwrap();
                match tls {
                    None => fetch_all(tcp, user),
                    Some(c) => {
                        let conn =
                            rustls::ClientConnection::new(c, "localhost".try_into().unwrap())
                                .unwrap();
                        fetch_all(rustls::StreamOwned::new(conn, tcp), user)
                    }
                }
            })
        })
        .collect();
    let (mut bytes, mut msgs) = (0, 0);
    for h in handles {
        let (b, m) = h.join().unwrap();
        bytes += b;
        msgs += m;
    }
    (t.elapsed().as_secs_f64(), bytes, msgs)
}

/// CPU seconds used so far by the proxy's threads in this process (tokio
/// workers, capture threads): a figure that holds when other processes
/// compete for the cores, unlike wall-clock throughput.
fn proxy_cpu_secs() -> f64 {
    let mut ticks = 0u64;
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, tail)) = stat.rsplit_once(") ") else {
            continue;
        };
        let comm = head.split_once(" (").map_or("", |(_, c)| c);
        if comm.starts_with("tokio-rt-worker") || comm.starts_with("imap-capture") {
            let f: Vec<&str> = tail.split(' ').collect();
            // utime and stime: fields 14 and 15 of stat, 12 and 13 after comm.
            ticks += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        }
    }
    ticks as f64 / 100.0
}

/// (busy, total) jiffies of the whole machine so far (`/proc/stat`).
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// `round` with the share of the machine's CPU time that was busy.
fn timed_round(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    clients: usize,
    user: &'static str,
) -> (f64, u64, u64, f64) {
    let (b0, t0) = machine_jiffies();
    let (s, b, m) = round(addr, tls, clients, user);
    let (b1, t1) = machine_jiffies();
    (s, b, m, (b1 - b0) as f64 / (t1 - t0).max(1) as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A relay measured against direct Dovecot in the same rounds: its
/// address and a CPU reading of it.
struct Via<'a> {
    name: &'static str,
    addr: SocketAddr,
    cpu: &'a dyn Fn() -> f64,
}

fn compare(
    label: &str,
    direct: SocketAddr,
    vias: &[Via<'_>],
    tls: Option<&Arc<rustls::ClientConfig>>,
    clients: usize,
    rounds: usize,
    user: &'static str,
) {
    let mut d = Vec::new();
    let mut p: Vec<Vec<f64>> = vec![Vec::new(); vias.len()];
    let mut cpu = vec![0.0; vias.len()];
    let mut busy = vec![0.0; vias.len()];
    let mut direct_busy = 0.0;
    let (mut bytes, mut msgs) = (0, 0);
    for _ in 0..rounds {
        let (s, b, m, u) = timed_round(direct, tls, clients, user);
        d.push(s);
        direct_busy += u / rounds as f64;
        bytes = b;
        msgs = m;
        for (i, via) in vias.iter().enumerate() {
            let c0 = (via.cpu)();
            let (s, b, m, u) = timed_round(via.addr, tls, clients, user);
            busy[i] += u / rounds as f64;
            cpu[i] += (via.cpu)() - c0;
            assert_eq!((b, m), (bytes, msgs), "{} delivered everything", via.name);
            p[i].push(s);
        }
    }
    let d = median(d);
    let mb = bytes as f64 / 1e6;
    let mut line = format!(
        "{label:<44} clients {clients}: direct {:7.1} MB/s {:7.0} msg/s (machine {:.0}% busy)",
        mb / d,
        msgs as f64 / d,
        direct_busy * 100.0
    );
    for (i, via) in vias.iter().enumerate() {
        let s = median(std::mem::take(&mut p[i]));
        let cpu_per_gb = cpu[i] / (bytes as f64 * rounds as f64 / 1e9);
        line.push_str(&format!(
            " | {} {:7.1} MB/s {:7.0} msg/s ratio {:.2} CPU {:.2} s/GB ({:.0}% busy)",
            via.name,
            mb / s,
            msgs as f64 / s,
            d / s,
            cpu_per_gb,
            busy[i] * 100.0
        ));
    }
    println!("{line}");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mb = env_usize("MAILSHARE_BENCH_MB", 256);
    let rounds = env_usize("MAILSHARE_BENCH_ROUNDS", 3).max(1);
    let tls_too = env_usize("MAILSHARE_BENCH_TLS", 1) != 0;
    let phases =
        std::env::var("MAILSHARE_BENCH_PHASES").unwrap_or_else(|_| "alice,dave,tls".into());
    let phase = |p: &str| phases.split(',').any(|x| x == p);
    let reference = env_usize("MAILSHARE_BENCH_REFERENCE", 1) != 0;
    let concurrency: Vec<usize> = std::env::var("MAILSHARE_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,8".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let p = Proxied::start(Options {
        dovecot_tls: tls_too,
        ..Options::default()
    });
    let messages = corpus::generate(mb << 20, 42);
    let total: usize = messages.iter().map(Vec::len).sum();
    append_direct(&p.up, "alice", "INBOX", &messages);
    println!(
        "corpus: {} messages, {:.1} MB (seed 42); capture on, example policy",
        messages.len(),
        total as f64 / 1e6
    );
    append_direct(&p.up, "dave", "INBOX", &messages);
    // The first pass through the proxy captures every message once
    // (parse + store write): capture-bound, reported apart (phase `first`
    // runs only this).
    if phase("alice") || phase("first") {
        let (s, b, m) = round(p.plain, None, 1, "alice");
        println!(
            "first fetch through mailshare (every message newly captured): {:.1} MB/s, {:.0} msg/s",
            b as f64 / 1e6 / s,
            m as f64 / s
        );
    }
    // The reference: HAProxy relaying TCP to the same Dovecot (it parses
    // nothing, splices), measured in the same rounds.
    let haproxy = reference.then(|| {
        HaProxy::start(
            &[Route {
                name: "imap",
                backend: p.up.imap,
                server_options: "",
                greeting: "* OK",
            }],
            64,
        )
    });
    let haproxy_cpu = || {
        haproxy
            .as_ref()
            .map_or(0.0, |h| cpu::cpu_seconds(Some(h.pid())))
    };
    let mut plain = vec![Via {
        name: "mailshare",
        addr: p.plain,
        cpu: &proxy_cpu_secs,
    }];
    if let Some(h) = &haproxy {
        plain.push(Via {
            name: "haproxy",
            addr: h.fronts[0],
            cpu: &haproxy_cpu,
        });
    }
    for &clients in concurrency.iter().filter(|_| phase("alice")) {
        compare(
            "plaintext, capture on (alice)",
            p.up.imap,
            &plain,
            None,
            clients,
            rounds,
            "alice",
        );
    }
    for &clients in concurrency.iter().filter(|_| phase("dave")) {
        compare(
            "plaintext, not captured (dave: removed)",
            p.up.imap,
            &plain,
            None,
            clients,
            rounds,
            "dave",
        );
    }
    if tls_too && phase("tls") {
        let tls = tls_config();
        for &clients in &concurrency {
            compare(
                "TLS: Dovecot IMAPS vs mailshare implicit TLS",
                p.up.imaps,
                &[Via {
                    name: "mailshare",
                    addr: p.implicit,
                    cpu: &proxy_cpu_secs,
                }],
                Some(&tls),
                clients,
                rounds,
                "alice",
            );
        }
    }
    for result in [
        "full",
        "subject",
        "metadata",
        "skipped",
        "unchanged",
        "known",
        "error",
    ] {
        let n = p.metric("mailshare_imap_captures_total", &[("result", result)]);
        println!("captures {result}: {n}");
    }
}
