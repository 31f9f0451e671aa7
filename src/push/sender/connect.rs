//! Opening a connection to a push service, safely: the name is resolved here and only public
//! addresses are used (unless the operator added the host), so an endpoint whose name points at
//! this machine or the internal network cannot reach it; this is checked on the addresses
//! actually connected to, which also defeats DNS rebinding. TLS verifies the certificate against
//! the public roots (and `push_ca_file`), and ALPN picks HTTP/2 where the push service offers it.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::{self, pki_types::CertificateDer};

use crate::{net::is_public, push::subscription::Allowlist};

pub(super) type Body = Full<Bytes>;

/// Where a push-service origin (`scheme://host[:port]`) lives.
pub(super) struct Place {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `host[:port]`, the HTTP/1.1 `Host` header.
    pub authority: HeaderValue,
}

impl Place {
    pub fn parse(origin: &str) -> Option<Place> {
        let uri: http::Uri = origin.parse().ok()?;
        let tls = match uri.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let authority = uri.authority()?;
        Some(Place {
            tls,
            host: authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: HeaderValue::from_str(authority.as_str()).ok()?,
        })
    }
}

/// A live connection: what sends requests on it, and the future that drives its I/O (polled by
/// the worker that owns the connection, in its own task).
pub(super) struct Conn {
    /// Unique in the process: tells a connection from its successor.
    pub id: u64,
    pub send: SendRequest,
    pub driver: Pin<Box<dyn Future<Output = ()> + Send>>,
}

pub(super) enum SendRequest {
    H1(http1::SendRequest<Body>),
    /// HTTP/2 through the `h2` crate itself rather than hyper's wrapper, which spawns a task
    /// per request to carry its answer back; here a stream's answer is polled in the worker.
    H2(h2::client::SendRequest<Bytes>),
}

/// Most bytes of answer headers we accept on HTTP/2 (the push services send a few hundred).
const MAX_H2_HEADER_BYTES: u32 = 16 * 1024;
/// The largest HTTP/2 DATA frame we send (a push body goes in one frame or a few).
///
/// h2 copies frames under 1 KiB into its 16 KiB write buffer (256 bytes over a transport with
/// vectored writes, which [`CopyWrites`] hides), and writes every larger one to the socket
/// by itself, flushing first: with bodies of about 1.1 KiB that is one write, through TLS and
/// the kernel, per push. Under the threshold, a dozen pushes share one write.
pub(super) const H2_DATA_FRAME: usize = 1000;

/// A transport that does not offer vectored writes, so that h2 copies small frames into its
/// write buffer rather than chaining each to the socket (see [`H2_DATA_FRAME`]).
struct CopyWrites<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for CopyWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CopyWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

pub(super) struct Connector {
    tls: tokio_rustls::TlsConnector,
    allow: Allowlist,
    timeout: Duration,
}

impl Connector {
    pub fn new(
        allow: Allowlist,
        extra_roots: &[CertificateDer<'static>],
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for root in extra_roots {
            roots.add(root.clone())?;
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self { tls: tokio_rustls::TlsConnector::from(Arc::new(config)), allow, timeout })
    }

    /// Resolves, connects, negotiates TLS and HTTP, within the connect timeout. The error
    /// names the host, never the endpoint.
    pub async fn connect(&self, place: &Place) -> Result<Conn, String> {
        match tokio::time::timeout(self.timeout, self.open(place)).await {
            Ok(r) => r,
            Err(_) => Err(format!("connect timeout talking to {}", place.host)),
        }
    }

    async fn open(&self, place: &Place) -> Result<Conn, String> {
        let host = &place.host;
        let addrs = resolve(host, place.port, self.allow.may_be_private(host)).await?;
        let mut last = String::new();
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(tcp) => {
                    // Requests are small and answered at once: do not wait to coalesce them.
                    let _ = tcp.set_nodelay(true);
                    if !place.tls {
                        return handshake(tcp, false).await.map_err(|e| format!("{e} talking to {host}"));
                    }
                    let name = rustls::pki_types::ServerName::try_from(host.clone())
                        .map_err(|_| format!("{host} is not a valid TLS server name"))?;
                    let tls = self
                        .tls
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("connect error talking to {host}: TLS: {e}"))?;
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    return handshake(tls, h2).await.map_err(|e| format!("{e} talking to {host}"));
                }
                Err(e) => last = e.kind().to_string(),
            }
        }
        Err(format!("connect error talking to {host}: {last}"))
    }
}

async fn handshake<T>(io: T, h2: bool) -> Result<Conn, &'static str>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    if h2 {
        let io = CopyWrites(io);
        let (send, conn) = h2::client::Builder::new()
            .enable_push(false)
            .max_header_list_size(MAX_H2_HEADER_BYTES)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|_| "HTTP/2 handshake error")?;
        Ok(Conn {
            id: next_id(),
            send: SendRequest::H2(send),
            driver: Box::pin(async move {
                let _ = conn.await;
            }),
        })
    } else {
        let (send, conn) =
            http1::handshake(TokioIo::new(io)).await.map_err(|_| "HTTP/1.1 handshake error")?;
        Ok(Conn {
            id: next_id(),
            send: SendRequest::H1(send),
            driver: Box::pin(async move {
                let _ = conn.await;
            }),
        })
    }
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The addresses of `host` that may be connected to: public ones only, unless the operator
/// added the host (a self-hosted push service on the internal network).
pub(super) async fn resolve(host: &str, port: u16, trusted: bool) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| format!("connect error talking to {host}: cannot resolve the name"))?
        .filter(|a| trusted || is_public(a.ip()))
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "connect error talking to {host}: it resolves to no public address; refusing to connect"
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_that_point_inside_are_refused_unless_the_operator_added_them() {
        let err = resolve("localhost", 443, false).await.expect_err("refused");
        assert!(err.contains("no public address") && err.contains("localhost"), "{err}");
        assert!(!resolve("localhost", 443, true).await.unwrap().is_empty());
    }

    #[test]
    fn an_origin_gives_host_port_and_authority() {
        let p = Place::parse("https://fcm.googleapis.com").unwrap();
        assert_eq!((p.tls, p.host.as_str(), p.port), (true, "fcm.googleapis.com", 443));
        let p = Place::parse("http://127.0.0.1:8291").unwrap();
        assert_eq!((p.tls, p.port, p.authority.to_str().unwrap()), (false, 8291, "127.0.0.1:8291"));
        assert!(Place::parse("ftp://x.example").is_none());
    }
}
