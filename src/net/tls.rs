//! TLS with rustls (aws-lc-rs, the crypto the JWT code already uses): the gateway's listener
//! (`[listen.tls]`, ALPN h2 and http/1.1) and the load generator's connections (`https://`:
//! system roots or `--cacert`, `--insecure`, a client certificate for mTLS, SNI from the URL).
//! A client connection is a [`Stream`], plain or TLS, so the lean HTTP/1.1 client and hyper's
//! h2 run over either; the handshake is timed apart ([`ClientTls::handshakes`]) so that
//! connection setup is reported on its own.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The ALPN protocol ids.
pub const ALPN_H2: &[u8] = b"h2";
/// HTTP/1.1's ALPN id.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: no PEM private key ({e})", path.display()))
}

/// A listener's TLS: the certificate chain and key from PEM files, ALPN h2 then http/1.1;
/// with `client_ca`, every client must present a certificate that CA signed (mTLS).
pub fn server_config(
    cert: &Path,
    key_path: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs(cert)?, key(key_path)?)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key_path.display()))?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(cfg))
}

/// A throw-away PKI for a local run (`compare --tls`): a CA and a server certificate for
/// 127.0.0.1 and localhost that it signed, written to `dir` as `ca.pem`, `server.pem` and
/// `server.key`. Made at run time (rcgen), never checked in.
pub fn local_pki(dir: &Path) -> Result<(), String> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let fail = |e: rcgen::Error| format!("making a certificate: {e}");
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().map_err(fail)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(fail)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(fail)?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(fail)?
        .signed_by(&key, &issuer)
        .map_err(fail)?;
    for (name, text) in [
        ("ca.pem", ca_cert.pem()),
        ("server.pem", cert.pem()),
        ("server.key", key.serialize_pem()),
    ] {
        std::fs::write(dir.join(name), text)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))?;
    }
    Ok(())
}

/// How a client verifies and identifies itself.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Accept any server certificate (testing only).
    pub insecure: bool,
    /// Trust these CA certificates (PEM) instead of the system's.
    pub cacert: Option<std::path::PathBuf>,
    /// A client certificate and its key (PEM), for servers that require mTLS.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// A client's TLS for one server: config, the name it checks, and the handshakes it made.
#[derive(Debug)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    /// The host as given (an IP address's text for an IP name).
    host: String,
    /// Every handshake's duration, ns.
    handshakes: Mutex<hdrhistogram::Histogram<u64>>,
}

impl ClientTls {
    /// TLS to `host` (a DNS name or an IP address) offering `alpn`.
    pub fn new(host: &str, alpn: &[&[u8]], opts: &ClientOptions) -> Result<ClientTls, String> {
        let builder = rustls::ClientConfig::builder();
        let builder = if opts.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate::new()))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            let mut given = Vec::new();
            match &opts.cacert {
                Some(path) => {
                    for c in certs(path)? {
                        given.push(c.clone());
                        roots
                            .add(c)
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    for c in found.certs {
                        let _ = roots.add(c);
                    }
                    if roots.is_empty() {
                        return Err(
                            "no trusted CA certificates on this system: give --cacert FILE (or --insecure)"
                                .into(),
                        );
                    }
                }
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| format!("the trusted certificates: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(TrustedOrGiven { webpki, given }))
        };
        let mut config = match &opts.identity {
            Some((cert, key_path)) => builder
                .with_client_auth_cert(certs(cert)?, key(key_path)?)
                .map_err(|e| format!("{}: {e}", cert.display()))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host:?} is not a server name for TLS ({e})"))?;
        Ok(ClientTls {
            config: Arc::new(config),
            name,
            host: host.to_string(),
            handshakes: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3)
                    .expect("valid bounds"),
            ),
        })
    }

    /// One handshake with the server before a run, not counted: a certificate the client will
    /// not trust, an mTLS refusal or a server that does not speak TLS is one clear error
    /// (exit 2) instead of a run of `tls_error`s.
    pub async fn check(&self, dial: super::Dial) -> Result<(), String> {
        let timeout = Duration::from_secs(3);
        let tcp = super::dial(dial, Some(timeout))
            .await
            .map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        match tokio::time::timeout(timeout, connector.connect(self.name.clone(), tcp)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(
                match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(tls) => format!("TLS handshake refused: {tls}"),
                    None => format!("TLS handshake failed: {e}"),
                },
            ),
            Err(_) => Err(format!("no TLS handshake within {timeout:?}")),
        }
    }

    /// Runs the handshake over `tcp`, timing it.
    pub async fn handshake(&self, tcp: TcpStream) -> io::Result<Stream> {
        let started = Instant::now();
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let tls = connector.connect(self.name.clone(), tcp).await?;
        let took = started.elapsed().as_nanos().clamp(1, 60_000_000_000) as u64;
        if let Ok(mut h) = self.handshakes.lock() {
            let _ = h.record(took);
        }
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// The name checked against the server's certificate (and sent as SNI).
    pub fn server_name(&self) -> &str {
        match &self.name {
            ServerName::DnsName(d) => d.as_ref(),
            _ => self.host.as_str(),
        }
    }

    /// The handshakes so far (a copy).
    pub fn handshakes(&self) -> hdrhistogram::Histogram<u64> {
        self.handshakes
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

/// Opens a connection as `dial` says, then TLS when `tls` is given, within `timeout` (for the
/// TCP connect; the handshake is bounded by the same amount again).
pub async fn connect(
    dial: super::Dial,
    tls: Option<&ClientTls>,
    timeout: Option<Duration>,
) -> io::Result<Stream> {
    let tcp = super::dial(dial, timeout).await?;
    wrap(tcp, tls, timeout).await
}

/// TLS over an open `tcp` when `tls` is given (bounded by `timeout`); else the plain stream.
pub async fn wrap(
    tcp: TcpStream,
    tls: Option<&ClientTls>,
    timeout: Option<Duration>,
) -> io::Result<Stream> {
    match (tls, timeout) {
        (None, _) => Ok(Stream::Plain(tcp)),
        (Some(tls), None) => tls.handshake(tcp).await,
        (Some(tls), Some(t)) => tokio::time::timeout(t, tls.handshake(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?,
    }
}

/// A client connection, plain or TLS.
#[derive(Debug)]
pub enum Stream {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// The protocol the server chose by ALPN, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => t.get_ref().1.alpn_protocol(),
        }
    }

    /// Whether an idle connection has nothing to read and is not closed. Plain: a byte is read
    /// if there is one (the connection is then discarded). TLS: any bytes waiting under the
    /// TLS layer (a record, an alert) count as not clean, without reading them.
    pub fn idle_clean(&self) -> bool {
        match self {
            Stream::Plain(s) => {
                let mut probe = [0u8; 1];
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Stream::Tls(t) => {
                let mut probe = [0u8; 1];
                let mut buf = ReadBuf::new(&mut probe);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                matches!(t.get_ref().0.poll_peek(&mut cx, &mut buf), Poll::Pending)
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// `--cacert`'s (or the system's) trust, plus one case rustls's own verifier refuses: the
/// server presents exactly a self-signed certificate the user gave with `--cacert` (what
/// `openssl req -x509` makes: a CA certificate used as the server's). It is then trusted as
/// that certificate (pinned) and still checked for the server's name; its validity period is
/// not checked in this case.
#[derive(Debug)]
struct TrustedOrGiven {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    given: Vec<CertificateDer<'static>>,
}

impl rustls::client::danger::ServerCertVerifier for TrustedOrGiven {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let refused =
            match self
                .webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
        if !self.given.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return Err(refused);
        }
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("the given certificate: {e}")))?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
            })?;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `--insecure`: every server certificate is accepted (signatures are still checked, so the
/// handshake is the real one).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl AnyCertificate {
    fn new() -> Self {
        AnyCertificate(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
    }
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
