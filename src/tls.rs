//! TLS for `--tls-cert`/`--tls-key`: loading the certificate and key, and
//! answering plain HTTP that arrives on the TLS port.
//!
//! Someone who types `http://board:4000` at a board served over TLS would
//! otherwise get an empty reply (the TLS layer sees no handshake and hangs
//! up), which looks like a board that is down. Every connection's first
//! byte is peeked: a TLS handshake record (0x16) goes on to TLS and the
//! board; anything else is read as an HTTP request and answered with a
//! short redirect to the same address over `https://`.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_service::{Service, Transform};
use actix_web::rt::net::TcpStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::StartError;

/// The first byte of every TLS connection: a handshake record (RFC 8446 §5.1).
const HANDSHAKE_RECORD: u8 = 0x16;
/// How long a plain HTTP request may take to arrive: the same as the board's
/// own request timeout.
const PLAIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of a plain HTTP request head read before it is answered.
const MAX_PLAIN_HEAD: usize = 8 * 1024;

/// Loads a PEM certificate chain and private key for rustls.
pub fn config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ServerConfig, StartError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let named = |path: &std::path::Path, e: &dyn std::fmt::Display| {
        StartError::Tls(format!("{}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| named(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(cert, &e))?;
    if chain.is_empty() {
        return Err(named(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| named(key, &e))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            StartError::Tls(format!(
                "{} and {} do not match: {e}",
                cert.display(),
                key.display()
            ))
        })
}

/// Wraps the TLS listener's service: plain HTTP is redirected to
/// `https://` instead of reaching the TLS layer.
pub struct RedirectPlainHttp;

impl<S> Transform<S, TcpStream> for RedirectPlainHttp
where
    S: Service<TcpStream, Response = ()> + 'static,
{
    type Response = ();
    type Error = S::Error;
    type Transform = PlainHttpRedirector<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(PlainHttpRedirector {
            tls: Rc::new(service),
        }))
    }
}

/// One worker's TLS service, behind the first-byte check.
pub struct PlainHttpRedirector<S> {
    tls: Rc<S>,
}

impl<S> Service<TcpStream> for PlainHttpRedirector<S>
where
    S: Service<TcpStream, Response = ()> + 'static,
{
    type Response = ();
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<(), S::Error>>>>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tls.poll_ready(cx)
    }

    fn call(&self, stream: TcpStream) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let mut first = [0u8; 1];
            let peeked = tokio::time::timeout(PLAIN_REQUEST_TIMEOUT, stream.peek(&mut first)).await;
            match peeked {
                Ok(Ok(1)) if first[0] != HANDSHAKE_RECORD => {
                    redirect(stream).await;
                    Ok(())
                }
                // A handshake (or a client that sent nothing, or went
                // away): the TLS layer answers it as it always has.
                Ok(_) => tls.call(stream).await,
                Err(_) => Ok(()),
            }
        })
    }
}

/// Reads a plain HTTP request head and answers it with a redirect to the
/// same host and path over `https://`.
async fn redirect(mut stream: TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(PLAIN_REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_PLAIN_HEAD {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n.min(MAX_PLAIN_HEAD - head.len())]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let answer = answer(&String::from_utf8_lossy(&head));
    // The client may be gone already; there is nobody left to tell.
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
    // Read what the client still sends (a body) for a moment, so closing
    // does not reset the connection before the answer is read.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The whole answer to a plain HTTP request head: 307 to `https://` when
/// the request names its host, else 400 saying what to type instead.
fn answer(head: &str) -> String {
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .filter(|target| target.starts_with('/') && target.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("/");
    let host = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("host"))
        .map(|(_, value)| value.trim())
        .filter(|host| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    let mut headers = String::new();
    for (name, value) in crate::http::SECURITY_HEADERS {
        headers.push_str(&format!("{name}: {value}\r\n"));
    }
    // 307, not a permanent redirect: a browser would remember a permanent
    // one for good, and the same address may serve plain HTTP again after
    // the board is restarted without TLS.
    match host {
        Some(host) => {
            let location = format!("https://{host}{target}");
            let body = format!("This board is served over HTTPS: {location}\n");
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\n\
                 content-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
                 connection: close\r\n{headers}\r\n{body}",
                body.len()
            )
        }
        None => {
            let body = "This board is served over HTTPS: use https:// and the same address.\n";
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
                 content-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
                body.len()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_request_is_sent_to_the_same_host_and_path_over_https() {
        let reply = answer("GET /wall?x=1 HTTP/1.1\r\nHost: 192.168.1.20:4000\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 307 "), "{reply}");
        assert!(reply.contains("\r\nlocation: https://192.168.1.20:4000/wall?x=1\r\n"));
    }

    #[test]
    fn a_host_or_path_that_could_split_the_answer_is_never_echoed() {
        let reply = answer("GET /a HTTP/1.1\r\nHost: evil\"<x>\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
        let reply = answer("GET http://other/ HTTP/1.1\r\nHost: board:4000\r\n\r\n");
        assert!(
            reply.contains("location: https://board:4000/\r\n"),
            "{reply}"
        );
    }
}
