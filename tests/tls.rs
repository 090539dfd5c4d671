//! TLS termination: a frontend with `tls = { cert, key }` serves HTTPS, offers h2 and
//! http/1.1 by ALPN, and tells servers `X-Forwarded-Proto: https`.
mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

struct Pki {
    dir: tempfile::TempDir,
    cert: CertificateDer<'static>,
}

fn self_signed() -> Pki {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), key.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.signing_key.serialize_pem()).unwrap();
    Pki {
        dir,
        cert: key.cert.der().clone(),
    }
}

fn connector(pki: &Pki, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(pki.cert.clone()).unwrap();
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

/// A TLS connection to `addr` that trusts `pki` and offers `alpn`.
async fn tls_connect(
    pki: &Pki,
    addr: std::net::SocketAddr,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    connector(pki, alpn)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

async fn start(pki: &Pki, server: &TestServer) -> Fulcrum {
    let (cert, key) = (
        pki.dir.path().join("cert.pem"),
        pki.dir.path().join("key.pem"),
    );
    Setup::new()
        .frontend(|f| f.tls(cert, key))
        .servers(&[server])
        .start()
        .await
}

#[tokio::test]
async fn terminates_tls_for_http1() {
    let pki = self_signed();
    let a = TestServer::start("a").await;
    let f = start(&pki, &a).await;
    let tls = tls_connect(&pki, f.frontend("www"), &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "books.example")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "a");
    assert_eq!(a.last_headers()["x-forwarded-proto"], "https");
    f.shutdown().await;
}

#[tokio::test]
async fn offers_h2_by_alpn() {
    let pki = self_signed();
    let a = TestServer::start("a").await;
    let f = start(&pki, &a).await;
    let tls = tls_connect(&pki, f.frontend("www"), &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = http::Request::get("https://books.example/")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(a.last_headers()["host"], "books.example");
    assert_eq!(a.last_headers()["x-forwarded-host"], "books.example");
    f.shutdown().await;
}

#[tokio::test]
async fn check_rejects_missing_certificate_files() {
    let a = TestServer::start("a").await;
    let toml = Setup::new()
        .frontend(|f| f.tls("/nonexistent/cert.pem", "/nonexistent/key.pem"))
        .servers(&[&a])
        .toml();
    let err = fulcrum::config::parse_str(&toml, std::path::Path::new("t.toml")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("frontends[0].tls.cert"), "{text}");
}

/// Certificate renewals rewrite the same files; a reload must serve the new certificate.
#[tokio::test]
async fn reload_picks_up_a_renewed_certificate() {
    let old = self_signed();
    let a = TestServer::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(old.dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::copy(old.dir.path().join("key.pem"), &key).unwrap();
    // Relative paths: they start from the file's folder, at start and at reload alike.
    let f = Setup::new()
        .frontend(|f| f.tls("cert.pem", "key.pem"))
        .servers(&[&a])
        .start_from(&dir.path().join("fulcrum.toml"))
        .await;
    let www = f.frontend("www");
    assert!(tls_connect(&old, www, &[b"http/1.1"]).await.is_ok());
    let new = self_signed();
    std::fs::copy(new.dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::copy(new.dir.path().join("key.pem"), &key).unwrap();
    f.app.reload().await.unwrap();
    assert!(
        tls_connect(&new, www, &[b"http/1.1"]).await.is_ok(),
        "the renewed certificate is served"
    );
    assert!(
        tls_connect(&old, www, &[b"http/1.1"]).await.is_err(),
        "the old one is not"
    );
    f.shutdown().await;
}
