//! TLS for both legs, via rustls (ring provider, TLS 1.2 and 1.3 only):
//! the server certificate served to mail clients (swappable on SIGHUP) and
//! the client configuration that verifies upstreams against the system roots
//! or a configured CA file.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot read certificates: {source}", path.display())]
    Certs {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: no certificate in the file", path.display())]
    NoCerts { path: PathBuf },
    #[error("{}: cannot read the private key: {source}", path.display())]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("certificate {} and key {} do not form a usable server identity: {source}", cert.display(), key.display())]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("no usable trust anchors: {0}")]
    Roots(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certs {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The server side: certificate chain (leaf first) and key from PEM files.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Key {
        path: key_file.to_path_buf(),
        source,
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Identity {
            cert: cert_file.to_path_buf(),
            key: key_file.to_path_buf(),
            source,
        })?;
    Ok(Arc::new(config))
}

/// The client side for an upstream: verify against `ca_file` when given,
/// else the system's roots.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Roots(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // Skip the odd unparsable system certificate rather than fail.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::Roots(format!(
                    "no system root certificates found ({} errors); install ca-certificates or set ca_file",
                    found.errors.len()
                )));
            }
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server configuration in force; `reload` swaps in a new one (SIGHUP)
/// for connections accepted afterwards, open ones keep theirs.
#[derive(Debug)]
pub struct ServerTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<ServerTls, TlsError> {
        Ok(ServerTls {
            current: RwLock::new(server_config(cert_file, key_file)?),
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
        })
    }

    /// An acceptor with the configuration in force.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }

    /// Re-read the files; on error the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo(file: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/tls")
            .join(file)
    }

    #[test]
    fn the_demo_certificate_loads_and_a_missing_key_is_a_clear_error() {
        let tls = ServerTls::load(&demo("cert.pem"), &demo("key.pem")).expect("demo identity");
        tls.reload().expect("reload");
        let err = server_config(&demo("cert.pem"), Path::new("/nonexistent/key.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/key.pem"), "{err}");
        let err = server_config(&demo("key.pem"), &demo("key.pem")).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }

    #[test]
    fn a_ca_file_becomes_the_only_trust_anchor() {
        client_config(Some(&demo("cert.pem"))).expect("a self-signed cert as CA");
        assert!(client_config(Some(Path::new("/nonexistent.pem"))).is_err());
    }
}
