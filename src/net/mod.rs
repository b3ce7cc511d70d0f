//! Networking shared by the protocol adapters: TLS configuration and the
//! limited accept loop.

pub mod listener;
pub mod proxy;
pub mod tls;
