//! The accept loop every protocol listener runs: a per-listener permit is
//! taken *before* accepting (excess clients wait in the kernel backlog), a
//! per-client-IP count is checked after (excess clients get the protocol's
//! busy reply), TCP_NODELAY is set, and errors never end the loop (capped
//! back-off). Stops accepting when shutdown fires; each session holds a
//! [`DrainGuard`](crate::shutdown::DrainGuard) so `app` can wait for them.

use crate::shutdown::{Drain, DrainGuard, Shutdown};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counts open connections per client IP across every listener sharing it.
#[derive(Debug)]
pub struct IpLimiter {
    max_per_ip: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; releases its count on drop.
#[derive(Debug)]
pub struct IpPermit {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

impl IpLimiter {
    pub fn new(max_per_ip: usize) -> Arc<IpLimiter> {
        Arc::new(IpLimiter {
            max_per_ip: max_per_ip.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Count a connection from `ip`, or `None` when it already has the maximum.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpPermit> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(IpPermit {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections currently counted for `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        let mut open = self
            .limiter
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// An accepted connection. Its permits (listener slot, per-IP count, drain
/// registration) are held by the accept loop's task for as long as the
/// session future runs, whatever the handler does with this value.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    /// The client's address (with PROXY protocol: the one the header names).
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

#[derive(Debug)]
struct SessionPermits {
    _listener: OwnedSemaphorePermit,
    _ip: IpPermit,
    _drain: DrainGuard,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client's IP already has the maximum number of connections.
    TooManyFromIp,
}

/// How long a client of a `proxy_protocol` listener has to send its header.
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits and shared counters for one listener.
#[derive(Clone, Debug)]
pub struct ListenerOptions {
    /// Metric/log label, e.g. `smtp:127.0.0.1:2587`.
    pub name: Arc<str>,
    pub max_connections: usize,
    pub ip_limiter: Arc<IpLimiter>,
    pub drain: Drain,
    /// Expect a HAProxy PROXY v1/v2 header on every connection; the client
    /// address it names is the session's peer (logs, per-IP limits).
    pub proxy_protocol: bool,
    /// How long a client has to send the PROXY header.
    pub proxy_header_timeout: Duration,
}

impl ListenerOptions {
    /// Options with the default PROXY-header timeout and no PROXY protocol.
    pub fn new(
        name: &str,
        max_connections: usize,
        ip_limiter: Arc<IpLimiter>,
        drain: Drain,
    ) -> Self {
        ListenerOptions {
            name: name.into(),
            max_connections,
            ip_limiter,
            drain,
            proxy_protocol: false,
            proxy_header_timeout: PROXY_HEADER_TIMEOUT,
        }
    }
}

/// Accept until shutdown fires. `handle` runs each session in its own task;
/// `refuse` writes the protocol's busy reply to a refused client (it should
/// be short; it runs in its own task too).
pub async fn serve<H, HF, R, RF>(
    listener: TcpListener,
    options: ListenerOptions,
    mut shutdown: Shutdown,
    handle: H,
    refuse: R,
) where
    H: Fn(Accepted) -> HF + Send + Sync + 'static,
    HF: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream, Refusal) -> RF + Send + Sync + 'static,
    RF: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let handle = Arc::new(handle);
    let refuse = Arc::new(refuse);
    let mut backoff = Duration::from_millis(5);
    loop {
        let slot = tokio::select! {
            biased;
            _ = shutdown.fired() => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = shutdown.fired() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) => {
                // EMFILE, ENOBUFS, a reset before accept…: never fatal.
                tracing::warn!(listener = %options.name, error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let options = options.clone();
        let (handle, refuse) = (handle.clone(), refuse.clone());
        if options.proxy_protocol {
            // The header is read in the session's task: a slow client never
            // holds up the accept loop.
            tokio::spawn(async move {
                let mut stream = stream;
                let header = tokio::time::timeout(
                    options.proxy_header_timeout,
                    super::proxy::read_header(&mut stream),
                )
                .await;
                let client = match header {
                    Ok(Ok(Some(client))) => client,
                    Ok(Ok(None)) => peer,
                    Ok(Err(e)) => {
                        tracing::info!(listener = %options.name, %peer, error = %e, "PROXY header rejected");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(listener = %options.name, %peer, "no PROXY header in time");
                        return;
                    }
                };
                dispatch(
                    stream,
                    client,
                    slot,
                    &options,
                    handle.as_ref(),
                    refuse.as_ref(),
                )
                .await;
            });
        } else {
            tokio::spawn(async move {
                dispatch(
                    stream,
                    peer,
                    slot,
                    &options,
                    handle.as_ref(),
                    refuse.as_ref(),
                )
                .await;
            });
        }
    }
}

/// Count the client against its IP's limit, then run the session (or the
/// refusal) holding its permits until it ends.
async fn dispatch<H, HF, R, RF>(
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    options: &ListenerOptions,
    handle: &H,
    refuse: &R,
) where
    H: Fn(Accepted) -> HF,
    HF: Future<Output = ()>,
    R: Fn(TcpStream, Refusal) -> RF,
    RF: Future<Output = ()>,
{
    let local = stream.local_addr().unwrap_or(peer);
    let Some(ip_permit) = options.ip_limiter.try_acquire(peer.ip()) else {
        tracing::info!(listener = %options.name, "refused: too many connections from one address");
        drop(slot);
        refuse(stream, Refusal::TooManyFromIp).await;
        return;
    };
    let permits = SessionPermits {
        _listener: slot,
        _ip: ip_permit,
        _drain: options.drain.enter(),
    };
    handle(Accepted {
        stream,
        peer,
        local,
    })
    .await;
    drop(permits);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn per_ip_limit_refuses_and_releases() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        let drain = Drain::new();
        let options = ListenerOptions::new("test", 10, IpLimiter::new(2), drain.clone());
        let server = tokio::spawn(serve(
            listener,
            options,
            shutdown,
            |mut a: Accepted| async move {
                let _ = a.stream.write_all(b"hello\n").await;
                let mut buf = [0u8; 1];
                let _ = a.stream.read(&mut buf).await; // until the client closes
            },
            |mut s: TcpStream, _| async move {
                let _ = s.write_all(b"busy\n").await;
            },
        ));
        let greet = |mut s: TcpStream| async move {
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            (s, String::from_utf8_lossy(&buf).into_owned())
        };
        let (a, ga) = greet(TcpStream::connect(addr).await.unwrap()).await;
        let (_b, gb) = greet(TcpStream::connect(addr).await.unwrap()).await;
        let (_c, gc) = greet(TcpStream::connect(addr).await.unwrap()).await;
        assert_eq!(
            (ga.as_str(), gb.as_str(), gc.as_str()),
            ("hello", "hello", "busy\n")
        );
        drop(a);
        // The count is released when the session ends.
        let mut ok = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let (_d, gd) = greet(TcpStream::connect(addr).await.unwrap()).await;
            if gd == "hello" {
                ok = true;
                break;
            }
        }
        assert!(ok, "a slot came back after a session ended");
        trigger.fire();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("accept loop stops on shutdown")
            .unwrap();
    }
}

#[cfg(test)]
mod proxy_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn proxy_protocol_peer_is_the_named_client_and_limits_count_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        let mut options = ListenerOptions::new("proxied", 10, IpLimiter::new(1), Drain::new());
        options.proxy_protocol = true;
        options.proxy_header_timeout = Duration::from_millis(300);
        tokio::spawn(serve(
            listener,
            options,
            shutdown,
            |mut a: Accepted| async move {
                let line = format!("peer {}\n", a.peer);
                let _ = a.stream.write_all(line.as_bytes()).await;
                let mut buf = [0u8; 1];
                let _ = a.stream.read(&mut buf).await;
            },
            |mut s: TcpStream, _| async move {
                let _ = s.write_all(b"busy\n").await;
            },
        ));
        async fn talk(addr: SocketAddr, header: &[u8]) -> (TcpStream, String) {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(header).await.unwrap();
            let mut out = Vec::new();
            let mut b = [0u8; 1];
            while let Ok(1) = s.read(&mut b).await {
                out.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            (s, String::from_utf8_lossy(&out).into_owned())
        }
        let (_a, got) = talk(addr, b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 25\r\n").await;
        assert_eq!(got, "peer 203.0.113.7:5000\n");
        // Same real client again: over its limit of one, though the socket peer differs.
        let (_b, got) = talk(addr, b"PROXY TCP4 203.0.113.7 10.0.0.1 5001 25\r\n").await;
        assert_eq!(got, "busy\n");
        // Another client is fine.
        let (_c, got) = talk(addr, b"PROXY TCP4 198.51.100.1 10.0.0.1 5002 25\r\n").await;
        assert_eq!(got, "peer 198.51.100.1:5002\n");
        // No header, or none in time: closed without a word.
        let (_d, got) = talk(addr, b"EHLO x\r\n").await;
        assert_eq!(got, "");
        let (_e, got) = talk(addr, b"").await;
        assert_eq!(got, "");
        trigger.fire();
    }
}
