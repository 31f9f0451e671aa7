//! A TLS listener for `axum::serve`, offering HTTP/2 and HTTP/1.1 by ALPN as the real push
//! services do. Two push-service doubles use it: the benchmark's sink (`sondakika-bench push
//! sink`) and the integration tests' strict double (tests/api/support/push_double.rs, which compiles
//! this file into the tests with `#[path]`: the service does not depend on bench code, and the
//! tests need no bench crate). Only what both have (tokio, tokio-rustls, axum, anyhow) is used.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;

/// A TLS listener for axum::serve, offering HTTP/2 and HTTP/1.1 by ALPN: the handshake happens
/// in `accept` (push-service doubles see few connections; a failed handshake is dropped and the
/// next connection accepted).
pub struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: Arc<AtomicU64>,
}

impl TlsListener {
    pub async fn bind(addr: SocketAddr, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        use tokio_rustls::rustls::{
            self,
            pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading {}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        Ok(Self {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            handshakes: Arc::default(),
        })
    }

    /// Counts the TLS connections accepted (each a completed handshake).
    pub fn handshakes(&self) -> Arc<AtomicU64> {
        self.handshakes.clone()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    self.handshakes.fetch_add(1, Ordering::Relaxed);
                    return (tls, addr);
                }
                Ok(Err(e)) => eprintln!("TLS handshake with {addr} failed: {e}"),
                Err(_) => eprintln!("TLS handshake with {addr} timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
