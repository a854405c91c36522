//! TLS to PostgreSQL, on rustls with the aws-lc-rs provider (the one
//! provider of the whole process; no `ring`).
//!
//! The URL takes libpq's `sslmode` and `sslrootcert`; both are read here and
//! removed before tokio-postgres parses the rest (it knows neither
//! `verify-ca`, `verify-full` nor `sslrootcert`). The modes mean what they
//! mean to libpq:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (libpq's default) | if the server offers it | not checked |
//! | `require` | always | not checked, unless `sslrootcert` is given: then as `verify-ca` |
//! | `verify-ca` | always | chains to `sslrootcert` (required) |
//! | `verify-full` | always | as `verify-ca`, and names the host connected to |
//!
//! A refused certificate fails the connection with rustls's reason, which
//! `PostgresStore::connect` puts in its error with the mode: "cannot
//! connect (sslmode=verify-full): error performing TLS handshake: invalid
//! peer certificate: certificate not valid for name "127.0.0.1"; certificate
//! is only valid for DnsName("localhost")", "… invalid peer certificate:
//! UnknownIssuer".

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error as TlsError, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::store::StoreError;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A database URL split into what tokio-postgres reads and the TLS settings.
#[derive(Debug)]
pub struct TlsSettings {
    /// The URL without `sslmode` and `sslrootcert`, and with the mode
    /// tokio-postgres understands put back.
    pub url: String,
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// Reads `sslmode` and `sslrootcert` from a `postgres://` URL.
pub fn settings(url: &str) -> Result<TlsSettings, StoreError> {
    let bad = |m: String| StoreError::Url(format!("PostgreSQL URL: {m}"));
    let mut parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut rest = Vec::new();
    for (k, v) in parsed.query_pairs() {
        match k.as_ref() {
            "sslmode" => {
                mode = SslMode::parse(&v).ok_or_else(|| {
                    bad(format!(
                        "sslmode={v} is not one of disable, prefer, require, verify-ca, verify-full"
                    ))
                })?;
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(v.as_ref())),
            _ => rest.push((k.into_owned(), v.into_owned())),
        }
    }
    if root_cert.is_some() && mode == SslMode::Require {
        // libpq: a root certificate given with `require` is checked as `verify-ca`.
        mode = SslMode::VerifyCa;
    }
    let pg_mode = match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        _ => "require",
    };
    rest.push(("sslmode".into(), pg_mode.into()));
    parsed.query_pairs_mut().clear().extend_pairs(rest);
    Ok(TlsSettings {
        url: parsed.to_string(),
        mode,
        root_cert,
    })
}

impl TlsSettings {
    /// tokio-postgres's mode for this one.
    pub fn pg_mode(&self) -> PgSslMode {
        match self.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            _ => PgSslMode::Require,
        }
    }

    /// The connector for these settings.
    pub fn connector(&self) -> Result<MakeRustls, StoreError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                Arc::new(EncryptOnly(Arc::clone(&provider)))
            }
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let webpki = match &self.root_cert {
                    Some(path) => {
                        let mut roots = rustls::RootCertStore::empty();
                        let certs = CertificateDer::pem_file_iter(path)
                            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                            .map_err(|e| {
                                StoreError::Url(format!(
                                    "PostgreSQL sslrootcert {}: {e}",
                                    path.display()
                                ))
                            })?;
                        if certs.is_empty() {
                            return Err(StoreError::Url(format!(
                                "PostgreSQL sslrootcert {} holds no certificate",
                                path.display()
                            )));
                        }
                        for c in certs {
                            roots.add(c).map_err(|e| {
                                StoreError::Url(format!(
                                    "PostgreSQL sslrootcert {}: {e}",
                                    path.display()
                                ))
                            })?;
                        }
                        rustls::client::WebPkiServerVerifier::builder_with_provider(
                            Arc::new(roots),
                            Arc::clone(&provider),
                        )
                        .build()
                        .map_err(|e| StoreError::Url(format!("PostgreSQL TLS: {e}")))?
                    }
                    None => {
                        return Err(StoreError::Url(format!(
                            "sslmode={} needs sslrootcert=<CA file> in the PostgreSQL URL",
                            self.mode.as_str()
                        )));
                    }
                };
                if self.mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(AnyName(webpki))
                }
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Url(format!("PostgreSQL TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustls {
            config: Arc::new(config),
        })
    }
}

/// `prefer` and `require` without a root: encrypted, the certificate not
/// checked (libpq's meaning). Signatures are still verified, so the
/// handshake is with whoever holds the presented certificate's key.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the root; the name is not checked.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres's TLS factory over rustls.
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MakeRustls")
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnect {
            config: Arc::clone(&self.config),
            name,
        })
    }
}

/// One connection's TLS handshake.
#[derive(Debug)]
pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move { connector.connect(self.name, stream).await.map(RustlsStream) })
    }
}

/// A TLS connection to PostgreSQL.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> std::fmt::Debug for RustlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RustlsStream")
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM-SHA-256 without -PLUS: the password exchange is already
        // inside the verified TLS session.
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_modes_are_read_and_removed() {
        let s = settings(
            "postgres://u@db:5432/x?sslmode=verify-full&sslrootcert=/ca.pem&application_name=a",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert, Some(PathBuf::from("/ca.pem")));
        assert!(
            !s.url.contains("sslrootcert") && !s.url.contains("verify"),
            "{}",
            s.url
        );
        assert!(s.url.contains("application_name=a") && s.url.contains("sslmode=require"));

        let s = settings("postgres://u@db/x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.mode, SslMode::Prefer);
        let s = settings("postgres://u@db/x?sslmode=require&sslrootcert=/ca.pem")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.mode,
            SslMode::VerifyCa,
            "libpq: a root makes require verify"
        );
        assert!(settings("postgres://u@db/x?sslmode=allow-anything").is_err());
        let s = settings("postgres://u@db/x?sslmode=verify-full").unwrap_or_else(|e| panic!("{e}"));
        assert!(s.connector().is_err(), "verify-full needs a root");
    }
}
