//! HAProxy PROXY protocol v1 and v2 on a listener (`proxy_protocol = true`):
//! the load balancer in front prefixes each connection with the real
//! client's address. Exactly the header's bytes are read (never more: what
//! follows is the mail protocol, or a TLS ClientHello on implicit-TLS
//! listeners); `ppp` validates and parses them.

use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line (spec: 107 bytes including CRLF).
const V1_MAX: usize = 107;
/// Cap on a v2 header's address+TLV part (the spec allows 65535; balancers
/// send well under 1 KiB).
pub const V2_MAX_PAYLOAD: usize = 2048;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    /// Closed without sending a byte: a balancer's TCP health check (or a
    /// port scan), not a broken header.
    #[error("connection closed before sending anything")]
    Empty,
    #[error("connection closed before a complete PROXY header")]
    Closed,
    #[error("no PROXY protocol header (the listener requires one)")]
    Missing,
    #[error("PROXY header too long")]
    TooLong,
    #[error("invalid PROXY header: {0}")]
    Invalid(String),
    #[error("read error: {0}")]
    Io(String),
}

fn io(e: std::io::Error) -> ProxyError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ProxyError::Closed
    } else {
        ProxyError::Io(e.to_string())
    }
}

/// Read one PROXY header from the start of a connection. Returns the client
/// address it names, or `None` for `LOCAL` / `UNKNOWN` (health checks: use
/// the socket's peer).
pub async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<SocketAddr>, ProxyError> {
    let mut buf = vec![0u8; 5];
    if r.read(&mut buf[..1]).await.map_err(io)? == 0 {
        return Err(ProxyError::Empty);
    }
    r.read_exact(&mut buf[1..]).await.map_err(io)?;
    if buf == b"PROXY" {
        // v1: one line, read byte by byte so nothing after CRLF is consumed.
        loop {
            let mut b = [0u8; 1];
            r.read_exact(&mut b).await.map_err(io)?;
            buf.push(b[0]);
            if buf.ends_with(b"\r\n") {
                break;
            }
            if buf.len() >= V1_MAX {
                return Err(ProxyError::TooLong);
            }
        }
        let h =
            ppp::v1::Header::try_from(&buf[..]).map_err(|e| ProxyError::Invalid(e.to_string()))?;
        return Ok(match h.addresses {
            ppp::v1::Addresses::Tcp4(a) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            ppp::v1::Addresses::Tcp6(a) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            ppp::v1::Addresses::Unknown => None,
        });
    }
    if buf[..] != V2_SIG[..5] {
        return Err(ProxyError::Missing);
    }
    buf.resize(16, 0);
    r.read_exact(&mut buf[5..]).await.map_err(io)?;
    if buf[..12] != V2_SIG[..] {
        return Err(ProxyError::Missing);
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyError::TooLong);
    }
    buf.resize(16 + len, 0);
    r.read_exact(&mut buf[16..]).await.map_err(io)?;
    let h = ppp::v2::Header::try_from(&buf[..]).map_err(|e| ProxyError::Invalid(e.to_string()))?;
    if h.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match h.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyError>, Vec<u8>) {
        let mut r = bytes;
        let res = read_header(&mut r).await;
        (res, r.to_vec())
    }

    fn v2(cmd: u8, fam: u8, addr: &[u8]) -> Vec<u8> {
        let mut v = V2_SIG.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&(addr.len() as u16).to_be_bytes());
        v.extend_from_slice(addr);
        v
    }

    #[tokio::test]
    async fn v1_names_the_client_and_leaves_the_rest_unread() {
        let (res, rest) = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 587\r\nEHLO x\r\n").await;
        assert_eq!(res, Ok(Some("203.0.113.7:51234".parse().unwrap())));
        assert_eq!(rest, b"EHLO x\r\n");
        let (res, rest) =
            parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 143\r\n\x16\x03\x01").await;
        assert_eq!(res, Ok(Some("[2001:db8::1]:4000".parse().unwrap())));
        assert_eq!(
            rest, b"\x16\x03\x01",
            "a TLS ClientHello after the header is untouched"
        );
        let (res, rest) = parse(b"PROXY UNKNOWN\r\nA").await;
        assert_eq!((res, rest), (Ok(None), b"A".to_vec()));
    }

    #[tokio::test]
    async fn v2_names_the_client_and_local_is_a_health_check() {
        let mut addr = vec![198, 51, 100, 9, 10, 0, 0, 1];
        addr.extend_from_slice(&40000u16.to_be_bytes());
        addr.extend_from_slice(&993u16.to_be_bytes());
        let mut bytes = v2(1, 0x11, &addr);
        bytes.extend_from_slice(b"a001 CAPABILITY\r\n");
        let (res, rest) = parse(&bytes).await;
        assert_eq!(res, Ok(Some("198.51.100.9:40000".parse().unwrap())));
        assert_eq!(rest, b"a001 CAPABILITY\r\n");
        let (res, _) = parse(&v2(0, 0x00, &[])).await;
        assert_eq!(res, Ok(None));
    }

    #[tokio::test]
    async fn garbage_missing_and_oversized_headers_are_refused() {
        assert_eq!(parse(b"EHLO client\r\n").await.0, Err(ProxyError::Missing));
        assert_eq!(parse(b"").await.0, Err(ProxyError::Empty));
        assert_eq!(parse(b"P").await.0, Err(ProxyError::Closed));
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4").await.0,
            Err(ProxyError::Closed)
        );
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert_eq!(parse(long.as_bytes()).await.0, Err(ProxyError::TooLong));
        assert!(matches!(
            parse(b"PROXY TCP4 999.2.3.4 1.2.3.4 1 2\r\n").await.0,
            Err(ProxyError::Invalid(_))
        ));
        let mut big = V2_SIG.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&big).await.0, Err(ProxyError::TooLong));
        assert_eq!(
            parse(b"\r\n\r\n\0\r\nQUIX\n\x21\x11\0\0").await.0,
            Err(ProxyError::Missing)
        );
    }
}
