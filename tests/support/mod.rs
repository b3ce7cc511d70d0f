//! Shared integration-test support: real upstream servers (`upstreams`).
//! Include with `mod support;` from a test crate.
#![allow(dead_code)]

pub mod mailshare;
pub mod upstreams;

/// Fails the whole test binary if a test runs past `secs` (a hang must never
/// stall the suite). Dropping the guard disarms it.
pub struct Deadline(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Deadline {
    pub fn new(name: &'static str, secs: u64) -> Deadline {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
            while std::time::Instant::now() < end {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            eprintln!("test {name} exceeded its {secs} s deadline");
            kill_children();
            std::process::exit(101);
        });
        Deadline(done)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// SIGTERM every direct child process (Dovecot's master stops its own), so
/// a test killed by its deadline leaves nothing running.
fn kill_children() {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
}
