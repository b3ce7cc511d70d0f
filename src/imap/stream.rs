//! The IMAP proxy's two legs: plain TCP or TLS, decided at run time (see
//! [`crate::net::stream::MaybeTls`]).

use tokio::net::TcpStream;

pub use crate::net::stream::MaybeTls;

/// The connection from a mail client.
pub type ClientStream = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;
/// The connection to the upstream IMAP server.
pub type UpstreamStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;
