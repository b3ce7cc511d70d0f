//! Networking shared by the protocol adapters: TLS configuration, the
//! limited accept loop, PROXY protocol, and the plain-or-TLS stream.

pub mod listener;
pub mod proxy;
pub mod stream;
pub mod tls;
