//! The network checks, run from the agent's own runtime: no process per
//! check. Each opens a fresh connection to 127.0.0.1 (as Mesos's checks do),
//! and the caller bounds it with the check's timeout.

use std::sync::Arc;

use agora_proto::health::{HttpProbe, Scheme};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::verdict::CheckResult;

/// What HTTPS checks connect with: any certificate is accepted (as
/// Marathon's HTTPS checks do: a health check asks whether the task
/// answers, not who it is).
#[derive(Clone)]
pub(crate) struct Tls(tokio_rustls::TlsConnector);

impl Tls {
    pub fn new() -> Tls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Tls(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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

/// A TCP connection to 127.0.0.1:`port` opens.
pub(crate) async fn tcp(port: u16) -> CheckResult {
    match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(_) => CheckResult::Passed("the port accepted a connection".into()),
        Err(e) => CheckResult::Failed(format!("cannot connect: {e}")),
    }
}

/// A GET whose answer has one of the accepted statuses.
pub(crate) async fn http(probe: &HttpProbe, tls: &Tls) -> CheckResult {
    let stream = match TcpStream::connect(("127.0.0.1", probe.port)).await {
        Ok(s) => s,
        Err(e) => return CheckResult::Failed(format!("cannot connect: {e}")),
    };
    let _ = stream.set_nodelay(true);
    let status = match probe.scheme {
        Scheme::Http => get(stream, probe).await,
        Scheme::Https => {
            let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
            match tls.0.connect(name, stream).await {
                Ok(tls) => get(tls, probe).await,
                Err(e) => Err(format!("TLS handshake failed: {e}")),
            }
        }
    };
    match status {
        Ok(code) if probe.statuses.accepts(code.as_u16()) => {
            CheckResult::Passed(format!("answered {code}"))
        }
        Ok(code) => CheckResult::Failed(format!("answered {code}")),
        Err(e) => CheckResult::Failed(e),
    }
}

/// Sends the GET on `io` and returns the answer's status (the body is not
/// read).
async fn get<T>(io: T, probe: &HttpProbe) -> Result<http::StatusCode, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let request = http::Request::get(probe.path.as_str())
        .header(http::header::HOST, format!("127.0.0.1:{}", probe.port))
        .header(
            http::header::USER_AGENT,
            concat!("agora-health-check/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let mut conn = std::pin::pin!(conn);
    let mut answer = std::pin::pin!(sender.send_request(request));
    // The connection must be driven for the answer to arrive; once the
    // answer's head is in, neither is needed any more (the body is not read).
    let answer = tokio::select! {
        answer = &mut answer => answer,
        // The connection ended (with `Connection: close`, possibly right
        // after handing over the answer): the answer, or its error, is ready.
        _ = &mut conn => answer.await,
    };
    answer
        .map(|r| r.status())
        .map_err(|e| format!("no answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::health::Statuses;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that answers every request with `answer`, and records the
    /// requests.
    async fn server(answer: &'static str) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        (port, rx)
    }

    fn probe(port: u16, statuses: Statuses) -> HttpProbe {
        HttpProbe {
            scheme: Scheme::Http,
            port,
            path: "/health?x=1".into(),
            statuses,
        }
    }

    #[tokio::test]
    async fn http_checks_read_the_status() {
        let tls = Tls::new();
        let (port, mut requests) =
            server("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").await;
        let r = http(&probe(port, Statuses::Success), &tls).await;
        assert_eq!(r, CheckResult::Passed("answered 204 No Content".into()));
        let req = requests.recv().await.unwrap();
        assert!(req.starts_with("GET /health?x=1 HTTP/1.1\r\n"), "{req}");
        assert!(
            req.to_ascii_lowercase()
                .contains("user-agent: agora-health-check/"),
            "{req}"
        );
        let r = http(&probe(port, Statuses::Listed(vec![200])), &tls).await;
        assert_eq!(r, CheckResult::Failed("answered 204 No Content".into()));

        let (port, _) = server("HTTP/1.0 503 Service Unavailable\r\n\r\n").await;
        let r = http(&probe(port, Statuses::Success), &tls).await;
        assert_eq!(
            r,
            CheckResult::Failed("answered 503 Service Unavailable".into())
        );

        let (port, _) = server("not http at all").await;
        let CheckResult::Failed(e) = http(&probe(port, Statuses::Success), &tls).await else {
            panic!("garbage is no answer")
        };
        assert!(e.starts_with("no answer"), "{e}");

        // Nothing listens: the connection is refused.
        let port = free_port().await;
        let CheckResult::Failed(e) = http(&probe(port, Statuses::Success), &tls).await else {
            panic!()
        };
        assert!(e.starts_with("cannot connect"), "{e}");
        let CheckResult::Failed(e) = tcp(port).await else {
            panic!()
        };
        assert!(e.starts_with("cannot connect"), "{e}");
        let (port, _) = server("").await;
        assert!(matches!(tcp(port).await, CheckResult::Passed(_)));
    }

    async fn free_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn https_checks_accept_any_certificate() {
        let cert = rcgen::generate_simple_self_signed(vec!["example.invalid".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        let mut p = probe(port, Statuses::Success);
        p.scheme = Scheme::Https;
        assert_eq!(
            http(&p, &Tls::new()).await,
            CheckResult::Passed("answered 200 OK".into())
        );
        // Plain HTTP against a TLS server is no answer.
        p.scheme = Scheme::Http;
        assert!(matches!(
            http(&p, &Tls::new()).await,
            CheckResult::Failed(_)
        ));
    }
}
