//! Moving a known number of bytes from one plain TCP socket to another
//! inside the kernel, through a pipe (Linux `splice(2)`), instead of
//! reading them into the process and writing them out again.
//!
//! The IMAP relay uses it for the large FETCH literals it has no reason to
//! look at (not teed for capture): two copies per byte fewer, which is most
//! of what a relay spends beyond the kernel's TCP work. Only where both
//! legs are plain TCP; TLS needs the bytes in user space.
//!
//! The sockets stay owned by the relay's streams. [`SplicePair`] holds
//! duplicates of their descriptors, registered with the runtime on their
//! own (epoll tells a duplicate apart from the original), so readiness for
//! the splices is awaited without touching the streams. The caller splices
//! only at a point where neither stream has bytes buffered.

use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The pipe's capacity asked for (the kernel may give less).
const PIPE_BYTES: usize = 128 * 1024;

/// Why a splice stopped short.
#[derive(Debug)]
pub enum SpliceError {
    /// The source closed before the bytes were all read.
    SourceClosed,
    /// The source sent nothing for the read wait.
    SourceTimedOut,
    Source(io::Error),
    /// The destination took nothing for the write wait.
    DestinationTimedOut,
    Destination(io::Error),
}

/// A source socket and a destination socket, both plain TCP.
pub struct SplicePair {
    /// Duplicates of the relay's sockets: dropping them closes only the
    /// duplicate descriptors, never the connections.
    from: TcpStream,
    to: TcpStream,
}

impl SplicePair {
    /// Duplicates both descriptors and registers them with the runtime.
    pub fn new(from: &TcpStream, to: &TcpStream) -> io::Result<SplicePair> {
        let dup = |s: &TcpStream| -> io::Result<TcpStream> {
            // Already non-blocking: the flag belongs to the shared open file.
            let std = std::net::TcpStream::from(s.as_fd().try_clone_to_owned()?);
            TcpStream::from_std(std)
        };
        Ok(SplicePair {
            from: dup(from)?,
            to: dup(to)?,
        })
    }

    /// Moves exactly `n` bytes from the source to the destination. Each
    /// wait for the source is bounded by `read_wait` (None: unbounded),
    /// each wait for the destination by `write_wait`. On error some of the
    /// bytes may have moved: the caller ends the session.
    pub async fn forward(
        &self,
        n: u64,
        read_wait: Option<Duration>,
        write_wait: Duration,
    ) -> Result<(), SpliceError> {
        if n == 0 {
            return Ok(());
        }
        let (pipe_r, pipe_w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
            .map_err(|e| SpliceError::Source(e.into()))?;
        // A larger pipe halves the system calls; refused (a user's pipe
        // quota), the default 64 KiB serves.
        let cap = fcntl_setpipe_size(&pipe_w, PIPE_BYTES).unwrap_or(64 * 1024);
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        let mut left = n;
        let mut in_pipe = 0usize;
        while left > 0 || in_pipe > 0 {
            // Fill the pipe from the source while it has data and room.
            let mut source_dry = false;
            if left > 0 && in_pipe < cap {
                let want = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(cap - in_pipe);
                let r = self.from.try_io(Interest::READABLE, || {
                    splice(&self.from, None, &pipe_w, None, want, flags).map_err(io::Error::from)
                });
                match r {
                    Ok(0) => return Err(SpliceError::SourceClosed),
                    Ok(k) => {
                        left -= k as u64;
                        in_pipe += k;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => source_dry = true,
                    Err(e) => return Err(SpliceError::Source(e)),
                }
            }
            if in_pipe > 0 {
                let r = self.to.try_io(Interest::WRITABLE, || {
                    splice(&pipe_r, None, &self.to, None, in_pipe, flags).map_err(io::Error::from)
                });
                match r {
                    Ok(k) => {
                        in_pipe -= k;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // The destination is full: wait for it, then go on.
                        match tokio::time::timeout(write_wait, self.to.writable()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Err(SpliceError::Destination(e)),
                            Err(_) => return Err(SpliceError::DestinationTimedOut),
                        }
                        continue;
                    }
                    Err(e) => return Err(SpliceError::Destination(e)),
                }
            }
            if source_dry {
                let ready = self.from.readable();
                let r = match read_wait {
                    Some(w) => tokio::time::timeout(w, ready)
                        .await
                        .map_err(|_| SpliceError::SourceTimedOut)?,
                    None => ready.await,
                };
                r.map_err(SpliceError::Source)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[tokio::test]
    async fn moves_exactly_n_bytes_and_leaves_the_rest_to_the_stream() {
        // upstream_far → [from] relay [to] → client_far
        let (mut upstream_far, from) = pair().await;
        let (to, mut client_far) = pair().await;
        let n = 3 * 1024 * 1024 + 17;
        let mut data = pattern(n);
        data.extend_from_slice(b"NEXT LINE\r\n");
        let writer = tokio::spawn(async move {
            // Written in uneven pieces, so the splices meet partial data.
            for chunk in data.chunks(100_003) {
                upstream_far.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            upstream_far
        });
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; n];
            // A slow reader: the destination fills up on the way.
            let mut at = 0;
            while at < n {
                let k = client_far
                    .read(&mut got[at..(at + 50_000).min(n)])
                    .await
                    .unwrap();
                assert!(k > 0);
                at += k;
                tokio::task::yield_now().await;
            }
            got
        });
        let p = SplicePair::new(&from, &to).unwrap();
        p.forward(
            n as u64,
            Some(Duration::from_secs(10)),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(reader.await.unwrap(), pattern(n));
        // The bytes after the n are still the stream's to read.
        let mut from = from;
        let mut rest = [0u8; 11];
        from.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"NEXT LINE\r\n");
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_source_that_closes_early_or_goes_silent_is_told_apart() {
        let (mut upstream_far, from) = pair().await;
        let (to, _client_far) = pair().await;
        upstream_far.write_all(&pattern(1000)).await.unwrap();
        drop(upstream_far);
        let p = SplicePair::new(&from, &to).unwrap();
        let r = p.forward(5000, Some(Duration::from_secs(10)), Duration::from_secs(10));
        assert!(matches!(r.await, Err(SpliceError::SourceClosed)));

        let (mut upstream_far, from) = pair().await;
        let (to, _client_far) = pair().await;
        upstream_far.write_all(&pattern(1000)).await.unwrap();
        let p = SplicePair::new(&from, &to).unwrap();
        let r = p.forward(
            5000,
            Some(Duration::from_millis(200)),
            Duration::from_secs(10),
        );
        assert!(matches!(r.await, Err(SpliceError::SourceTimedOut)));
    }

    #[tokio::test]
    async fn a_destination_that_reads_nothing_times_out() {
        let (mut upstream_far, from) = pair().await;
        let (to, _client_far) = pair().await;
        let n = 64 * 1024 * 1024;
        let writer = tokio::spawn(async move {
            let chunk = pattern(1 << 20);
            for _ in 0..64 {
                if upstream_far.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let p = SplicePair::new(&from, &to).unwrap();
        let r = p.forward(n, Some(Duration::from_secs(10)), Duration::from_millis(300));
        assert!(matches!(r.await, Err(SpliceError::DestinationTimedOut)));
        drop(from);
        writer.abort();
    }
}
