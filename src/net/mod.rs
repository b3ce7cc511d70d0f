//! Networking shared by the protocol adapters: TLS configuration, the
//! limited accept loop, PROXY protocol, the plain-or-TLS stream, and
//! in-kernel forwarding between plain sockets.

pub mod listener;
pub mod proxy;
pub mod splice;
pub mod stream;
pub mod tls;
