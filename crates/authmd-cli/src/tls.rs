//! TLS for a listener: a certificate chain and key from PEM files, read
//! again on SIGHUP (a renewed certificate is served to new connections
//! without a restart). rustls with aws-lc-rs, the provider reqwest and
//! lettre already use; it is named explicitly, so no process-wide default
//! has to be chosen.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, anyhow};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// A listener's certificate, replaceable while serving.
pub struct Tls {
    name: &'static str,
    cert_file: PathBuf,
    key_file: PathBuf,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("name", &self.name)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| Arc::clone(&k))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Tls {
    /// Reads the files (an error names them); `name` is the configuration
    /// section (`server`, `admin`), for messages.
    pub fn load(name: &'static str, cert_file: &Path, key_file: &Path) -> anyhow::Result<Tls> {
        let key = certified_key(cert_file, key_file)
            .with_context(|| format!("{name}.tls_cert_file / {name}.tls_key_file"))?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            name,
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Reads the files again; on any error the certificate in use stays.
    pub fn reload(&self) {
        match certified_key(&self.cert_file, &self.key_file) {
            Ok(key) => {
                if let Ok(mut current) = self.current.0.write() {
                    *current = Arc::new(key);
                }
                tracing::info!(
                    listener = self.name,
                    cert = %self.cert_file.display(),
                    "TLS certificate reloaded"
                );
            }
            Err(e) => tracing::error!(
                listener = self.name,
                cert = %self.cert_file.display(),
                error = format!("{e:#}"),
                "TLS certificate not reloaded; the previous one stays in use"
            ),
        }
    }
}

/// The chain (leaf first) and its private key, checked to belong together.
fn certified_key(cert_file: &Path, key_file: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow!("cannot read certificates from {}: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(anyhow!("{} holds no certificate", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| anyhow!("cannot read a private key from {}: {e}", key_file.display()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        anyhow!(
            "{} and {} do not make a usable certificate: {e}",
            cert_file.display(),
            key_file.display()
        )
    })
}

/// The listeners' TLS from the configuration (`None`: plain HTTP).
pub fn from_config(
    name: &'static str,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> anyhow::Result<Option<Arc<Tls>>> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some(Arc::new(Tls::load(name, c, k)?))),
        _ => Ok(None),
    }
}
