//! Debian's HAProxy (`haproxy -db`, `mode tcp`) as a child process in
//! front of given backends, stopped by PID when dropped. Used by the PROXY
//! protocol test (`send-proxy` routes to mailshare) and by the relay and
//! IMAP benchmarks as a reference: a TCP relay that parses nothing (and
//! splices where the kernel lets it), the floor any proxy's throughput is
//! held against on the same machine.
#![allow(dead_code)] // each user takes what it needs

use super::upstreams::{free_port, require, terminate, wait_for_greeting};
use std::fs;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One frontend: its name, the backend it relays to, the options of the
/// backend's `server` line (`send-proxy`, or empty), and the greeting the
/// backend sends first (the readiness probe waits for it).
pub struct Route {
    pub name: &'static str,
    pub backend: SocketAddr,
    pub server_options: &'static str,
    pub greeting: &'static str,
}

pub struct HaProxy {
    child: Child,
    dir: tempfile::TempDir,
    /// The frontends' addresses, in the order of the routes.
    pub fronts: Vec<SocketAddr>,
}

impl HaProxy {
    /// Starts HAProxy with one frontend per route; `maxconn` bounds its
    /// connections. Retries when a picked port is taken meanwhile.
    pub fn start(routes: &[Route], maxconn: usize) -> HaProxy {
        let mut last = String::new();
        for _ in 0..3 {
            match HaProxy::try_start(routes, maxconn) {
                Ok(h) => return h,
                Err(e) => last = e,
            }
        }
        panic!("HAProxy did not start: {last}");
    }

    fn try_start(routes: &[Route], maxconn: usize) -> Result<HaProxy, String> {
        let bin = require("haproxy", "haproxy");
        let dir = tempfile::Builder::new()
            .prefix("mailshare-haproxy.")
            .tempdir()
            .unwrap();
        let fronts: Vec<SocketAddr> = routes
            .iter()
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        let mut cfg = format!(
            "# Written by the mailshare test support for one run.\n\
             global\n    maxconn {maxconn}\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 120s\n    timeout server 120s\n    option splice-auto\n"
        );
        for (r, front) in routes.iter().zip(&fronts) {
            cfg.push_str(&format!(
                "frontend {name}\n    bind {front}\n    default_backend {name}\n\
                 backend {name}\n    server s {backend} {opts}\n",
                name = r.name,
                backend = r.backend,
                opts = r.server_options,
            ));
        }
        let cfg_path = dir.path().join("haproxy.cfg");
        fs::write(&cfg_path, cfg).unwrap();
        let log = fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg(&cfg_path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn haproxy: {e}"))?;
        let mut h = HaProxy { child, dir, fronts };
        // Ready when every frontend answers with its backend's greeting.
        let end = Instant::now() + Duration::from_secs(20);
        for (r, front) in routes.iter().zip(&h.fronts) {
            let left = end.saturating_duration_since(Instant::now());
            if !wait_for_greeting(*front, r.greeting, left) {
                let _ = h.child.try_wait();
                return Err(format!("frontend {front} not ready: {}", h.log()));
            }
        }
        Ok(h)
    }

    /// What HAProxy printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// HAProxy's process id (for CPU accounting).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}
