//! TLS for the build service (`--tls-cert`, `--tls-key`), so node tokens never cross the network
//! in clear: rustls with the ring provider, the certificate and key read again when either file
//! changes (cert-manager and similar rotate them in place), the last good pair kept when a new
//! one cannot be read.

use crate::text::Cause;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Where the service's certificate chain and private key are (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How often the files are looked at for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    File { path: String, source: Cause },
    #[error("the TLS key {path}: {source}")]
    Key { path: String, source: Cause },
    #[error("cannot set up TLS: {0}")]
    Setup(#[source] Cause),
}

/// The certificate and key as read from `files`.
fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let file_err = |path: &Path, message: String| TlsError::File {
        path: path.display().to_string(),
        source: Cause::from(message),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_err(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(&files.cert, "holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.display().to_string(),
        source: Cause::of(e),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Key {
        path: files.key.display().to_string(),
        source: Cause::from(format!("does not go with the certificate: {e}")),
    })?;
    Ok(Arc::new(certified))
}

/// When the certificate and the key files were last changed.
type Stamp = (SystemTime, SystemTime);

fn modified(files: &TlsFiles) -> Option<Stamp> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&files.cert)?, m(&files.key)?))
}

/// The current certificate, replaced by [`Reloading::reload_if_changed`].
#[derive(Debug)]
pub struct Reloading {
    files: TlsFiles,
    current: RwLock<(Arc<CertifiedKey>, Option<Stamp>)>,
}

impl Reloading {
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let stamp = modified(&files);
        let key = load(&files)?;
        Ok(Self {
            files,
            current: RwLock::new((key, stamp)),
        })
    }

    /// Reads the files again when either changed; a pair that cannot be used is reported and
    /// the last good one kept. Returns whether a new pair is in use.
    pub fn reload_if_changed(&self) -> bool {
        let stamp = modified(&self.files);
        let unchanged = self.current.read().map(|c| c.1 == stamp).unwrap_or(false);
        if unchanged || stamp.is_none() {
            return false;
        }
        match load(&self.files) {
            Ok(key) => {
                if let Ok(mut current) = self.current.write() {
                    *current = (key, stamp);
                }
                tracing::info!(
                    "TLS: serving the new certificate from {}",
                    self.files.cert.display()
                );
                true
            }
            Err(e) => {
                tracing::warn!("TLS: keeping the previous certificate: {e}");
                false
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}

/// An acceptor serving `files`, and the resolver behind it (to reload).
pub fn acceptor(files: &TlsFiles) -> Result<(tokio_rustls::TlsAcceptor, Arc<Reloading>), TlsError> {
    let resolver = Arc::new(Reloading::new(files.clone())?);
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Setup(Cause::of(e)))?
    .with_no_client_auth()
    .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), resolver))
}
