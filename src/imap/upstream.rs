//! The upstream leg before login: connect (TCP, implicit TLS or STARTTLS,
//! verified against the configured roots), read the greeting and the
//! capabilities, and replay the client's credentials. Commands carrying
//! credentials are encoded by imap-codec (quoting, literals, base64).
//!
//! STARTTLS towards the upstream follows the rules against response
//! injection (CVE-2021-38371): bytes after the upstream's `OK` to STARTTLS
//! abort the connection, and capabilities are read again over TLS.

use super::capability;
use super::prelogin::{Credentials, Method, Secret};
use super::stream::UpstreamStream;
use super::syntax::{classify, trim_eol, ServerLine};
use crate::config::TlsMode;
use imap_codec::encode::{Encoder, Fragment};
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::{AuthenticateDataCodec, CommandCodec};
use rustls::pki_types::ServerName;
use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where and how to reach the upstream.
#[derive(Clone)]
pub struct UpstreamSettings {
    /// `host:port`.
    pub address: String,
    /// TLS server name.
    pub host: String,
    pub tls: TlsMode,
    /// Verifies the upstream's certificate (required unless `tls` is `none`).
    pub connector: Option<tokio_rustls::TlsConnector>,
    pub connect_timeout: Duration,
    /// Longest wait for a response the upstream owes.
    pub timeout: Duration,
    /// Longest response line accepted before login.
    pub max_line: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("connecting timed out")]
    ConnectTimeout,
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("the upstream closed the connection")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl UpstreamError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout => "connect",
            UpstreamError::Tls(_) => "tls",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Closed | UpstreamError::Io(_) => "closed",
            UpstreamError::Protocol(_) => "protocol",
        }
    }
}

/// The upstream's answer to the replayed credentials.
#[derive(Debug)]
pub struct AuthReply {
    pub ok: bool,
    /// What to write to the client: untagged lines and the tagged response,
    /// capability lists filtered.
    pub reply: Vec<u8>,
}

/// A connection to the upstream that has greeted and not yet logged in.
pub struct Upstream {
    stream: UpstreamStream,
    /// Bytes read and not consumed.
    buf: Vec<u8>,
    caps: Vec<String>,
    timeout: Duration,
    max_line: usize,
}

impl Upstream {
    /// Connect, read the greeting, STARTTLS if configured, learn the
    /// capabilities.
    ///
    /// # Errors
    /// Connection, TLS, timeout or protocol failures; never with secrets.
    pub async fn connect(s: &UpstreamSettings) -> Result<Upstream, UpstreamError> {
        let deadline = Instant::now() + s.connect_timeout;
        let tcp = tokio::time::timeout(s.connect_timeout, TcpStream::connect(&s.address))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(UpstreamError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let stream = match s.tls {
            TlsMode::Implicit => UpstreamStream::Tls(Box::new(handshake(s, tcp, deadline).await?)),
            TlsMode::Starttls | TlsMode::None => UpstreamStream::Plain(tcp),
        };
        let mut up = Upstream {
            stream,
            buf: Vec::new(),
            caps: Vec::new(),
            timeout: s.timeout,
            max_line: s.max_line,
        };
        let greeting = up.read_line().await?;
        match classify(&greeting) {
            Some(ServerLine::Status { bye: false, .. })
                if greeting.len() > 4 && greeting[2..4].eq_ignore_ascii_case(b"OK") => {}
            Some(ServerLine::Status { bye: true, .. }) => {
                return Err(UpstreamError::Protocol("the upstream greeted with BYE"))
            }
            _ => return Err(UpstreamError::Protocol("unexpected greeting")),
        }
        let mut caps = capability::names(&greeting);
        if s.tls == TlsMode::Starttls {
            up.send(b"M1 STARTTLS\r\n").await?;
            let (_, tagged) = up.until_tagged(b"M1").await?;
            if !matches!(classify(&tagged), Some(ServerLine::Tagged { ok: true, .. })) {
                return Err(UpstreamError::Protocol("the upstream refused STARTTLS"));
            }
            if !up.buf.is_empty() {
                return Err(UpstreamError::Protocol(
                    "the upstream sent bytes after its STARTTLS response",
                ));
            }
            let UpstreamStream::Plain(tcp) = up.stream else {
                unreachable!("STARTTLS starts from a plain stream")
            };
            up.stream = UpstreamStream::Tls(Box::new(handshake(s, tcp, deadline).await?));
            caps = None;
        }
        up.caps = match caps {
            Some(c) => c,
            None => {
                up.send(b"M2 CAPABILITY\r\n").await?;
                let (untagged, _) = up.until_tagged(b"M2").await?;
                untagged
                    .iter()
                    .find_map(|l| capability::names(l))
                    .unwrap_or_default()
            }
        };
        Ok(up)
    }

    /// The upstream's capabilities (uppercase), as read before login.
    pub fn capabilities(&self) -> &[String] {
        &self.caps
    }

    fn has(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }

    /// Replay the client's credentials under the client's tag.
    ///
    /// # Errors
    /// Transport and protocol failures (a refusal is an `Ok` with `ok: false`).
    pub async fn authenticate(
        &mut self,
        tag: &str,
        credentials: &Credentials,
    ) -> Result<AuthReply, UpstreamError> {
        let mut reply = Vec::new();
        let command = |body| {
            Command::new(tag.to_string(), body).map_err(|_| UpstreamError::Protocol("invalid tag"))
        };
        match &credentials.method {
            Method::Password {
                authzid,
                authcid,
                password,
            } if self.has("AUTH=PLAIN") => {
                let mut raw =
                    Vec::with_capacity(authzid.len() + authcid.len() + password.expose().len() + 2);
                raw.extend_from_slice(authzid);
                raw.push(0);
                raw.extend_from_slice(authcid);
                raw.push(0);
                raw.extend_from_slice(password.expose());
                let raw = Secret::new(raw);
                self.sasl(command, AuthMechanism::Plain, &raw, &mut reply)
                    .await?;
            }
            Method::Password {
                authcid, password, ..
            } if !self.has("LOGINDISABLED") => {
                let body = CommandBody::login(authcid.clone(), password.expose().to_vec())
                    .map_err(|_| UpstreamError::Protocol("credentials cannot be encoded"))?;
                let encoded = CommandCodec::default().encode(&command(body)?);
                for fragment in encoded {
                    match fragment {
                        Fragment::Line { data } => {
                            let data = Secret::new(data);
                            self.send(data.expose()).await?;
                        }
                        Fragment::Literal { data, mode } => {
                            let data = Secret::new(data);
                            if matches!(mode, imap_codec::imap_types::core::LiteralMode::Sync)
                                && !self.continuation(tag.as_bytes(), &mut reply).await?
                            {
                                return Ok(AuthReply { ok: false, reply });
                            }
                            self.send(data.expose()).await?;
                        }
                    }
                }
            }
            Method::Password { .. } => {
                reply.extend_from_slice(
                    format!(
                        "{tag} NO [UNAVAILABLE] The upstream server offers no password login\r\n"
                    )
                    .as_bytes(),
                );
                return Ok(AuthReply { ok: false, reply });
            }
            Method::XOAuth2 { payload } => {
                self.sasl(command, AuthMechanism::XOAuth2, payload, &mut reply)
                    .await?;
            }
        }
        // Read to the tagged response; a challenge at this point is a SASL
        // error report (XOAUTH2), answered with the empty response the
        // mechanism requires.
        loop {
            let line = self.read_line().await?;
            match classify(&line) {
                Some(ServerLine::Continuation) => self.send(b"\r\n").await?,
                Some(ServerLine::Tagged { tag: t, ok, .. }) if t == tag.as_bytes() => {
                    reply.extend_from_slice(&capability::filter_line(&line));
                    return Ok(AuthReply { ok, reply });
                }
                _ => reply.extend_from_slice(&capability::filter_line(&line)),
            }
        }
    }

    /// AUTHENTICATE with SASL-IR when the upstream has it, else after its `+`.
    async fn sasl<F>(
        &mut self,
        command: F,
        mechanism: AuthMechanism<'static>,
        raw: &Secret,
        reply: &mut Vec<u8>,
    ) -> Result<(), UpstreamError>
    where
        F: Fn(CommandBody<'static>) -> Result<Command<'static>, UpstreamError>,
    {
        if self.has("SASL-IR") {
            let body = CommandBody::authenticate_with_ir(mechanism, raw.expose().to_vec());
            let line = Secret::new(CommandCodec::default().encode(&command(body)?).dump());
            return self.send(line.expose()).await;
        }
        let tag = {
            let c = command(CommandBody::authenticate(mechanism))?;
            let line = CommandCodec::default().encode(&c).dump();
            self.send(&line).await?;
            c.tag.as_ref().as_bytes().to_vec()
        };
        if self.continuation(&tag, reply).await? {
            let data = AuthenticateData::r#continue(raw.expose().to_vec());
            let line = Secret::new(AuthenticateDataCodec::default().encode(&data).dump());
            self.send(line.expose()).await?;
        } else {
            // Refused before the exchange: the tagged response was kept in
            // `reply`; put it back for the caller's loop.
            let tagged = split_last_line(reply);
            self.buf.splice(0..0, tagged);
        }
        Ok(())
    }

    /// Wait for `+`; untagged lines go to `reply`. False when the command
    /// was answered (its tagged line is then the end of `reply`).
    async fn continuation(
        &mut self,
        tag: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<bool, UpstreamError> {
        loop {
            let line = self.read_line().await?;
            match classify(&line) {
                Some(ServerLine::Continuation) => return Ok(true),
                Some(ServerLine::Tagged { tag: t, .. }) if t == tag => {
                    reply.extend_from_slice(&capability::filter_line(&line));
                    return Ok(false);
                }
                _ => reply.extend_from_slice(&capability::filter_line(&line)),
            }
        }
    }

    /// Lines up to the tagged response for `tag`: (untagged, tagged).
    async fn until_tagged(&mut self, tag: &[u8]) -> Result<(Vec<Vec<u8>>, Vec<u8>), UpstreamError> {
        let mut untagged = Vec::new();
        loop {
            let line = self.read_line().await?;
            match classify(&line) {
                Some(ServerLine::Tagged { tag: t, .. }) if t == tag => return Ok((untagged, line)),
                _ if untagged.len() < 64 => untagged.push(line),
                _ => return Err(UpstreamError::Protocol("too many untagged responses")),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        tokio::time::timeout(self.timeout, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| UpstreamError::Timeout(self.timeout))?
        .map_err(UpstreamError::Io)
    }

    /// One response line (LF included), bounded.
    async fn read_line(&mut self) -> Result<Vec<u8>, UpstreamError> {
        let mut searched = 0;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[searched..]) {
                let line: Vec<u8> = self.buf.drain(..searched + i + 1).collect();
                if announces_literal(&line) {
                    return Err(UpstreamError::Protocol(
                        "a literal in a response before login",
                    ));
                }
                return Ok(line);
            }
            searched = self.buf.len();
            if self.buf.len() > self.max_line {
                return Err(UpstreamError::Protocol("response line too long"));
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(self.timeout, self.stream.read(&mut chunk))
                .await
                .map_err(|_| UpstreamError::Timeout(self.timeout))??;
            if n == 0 {
                return Err(UpstreamError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The stream and the bytes already read past the login response.
    pub fn into_parts(self) -> (UpstreamStream, Vec<u8>) {
        (self.stream, self.buf)
    }
}

/// Data lines before login never end in a literal; status texts may look
/// like one but carry none.
fn announces_literal(line: &[u8]) -> bool {
    let status = matches!(
        classify(line),
        Some(ServerLine::Status { .. } | ServerLine::Tagged { .. } | ServerLine::Continuation)
    );
    !status && trim_eol(line).ends_with(b"}")
}

fn split_last_line(reply: &mut Vec<u8>) -> Vec<u8> {
    let body = &reply[..reply.len().saturating_sub(1)];
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    reply.split_off(start)
}

async fn handshake(
    s: &UpstreamSettings,
    tcp: TcpStream,
    deadline: Instant,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
    let connector = s.connector.clone().ok_or(UpstreamError::Protocol(
        "no TLS configuration for the upstream",
    ))?;
    let name = ServerName::try_from(s.host.clone())
        .map_err(|_| UpstreamError::Protocol("the upstream host is not a valid TLS name"))?;
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, connector.connect(name, tcp))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Tls)
}
