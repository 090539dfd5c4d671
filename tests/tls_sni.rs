//! Several certificates per frontend chosen by SNI (exact, wildcard, default for unknown or
//! missing SNI), TLS terminated in TCP mode, certificates re-read by a reload (a bad file
//! refuses it and the old ones keep serving), and expiry shown in status and metrics and
//! announced by `certificate_expiring` at start and at reload.
#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use admin_common::*;
use common::*;
use fulcrum::events::EventKind;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, SignatureScheme};

/// A self-signed certificate for `names`, valid until `not_after`, written to `dir` as
/// `NAME.pem` and `NAME.key`.
struct Cert {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

fn cert(dir: &Path, file: &str, names: &[&str], not_after: SystemTime) -> Cert {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = (SystemTime::now() - Duration::from_secs(86_400 * 30)).into();
    params.not_after = not_after.into();
    let c = params.self_signed(&key).unwrap();
    let (cert, keyf) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}.key")),
    );
    std::fs::write(&cert, c.pem()).unwrap();
    std::fs::write(&keyf, key.serialize_pem()).unwrap();
    Cert {
        cert,
        key: keyf,
        der: c.der().clone(),
    }
}

fn in_days(d: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(d * 86_400)
}

/// `tls = { certs = [...] }` for these certificates, the first the default.
fn certs_table(certs: &[&Cert]) -> toml::Value {
    let list: Vec<toml::Value> = certs
        .iter()
        .map(|c| {
            let mut t = toml::Table::new();
            t.insert("cert".into(), c.cert.to_str().unwrap().into());
            t.insert("key".into(), c.key.to_str().unwrap().into());
            toml::Value::Table(t)
        })
        .collect();
    let mut tls = toml::Table::new();
    tls.insert("certs".into(), toml::Value::Array(list));
    toml::Value::Table(tls)
}

/// Accepts whatever certificate the server shows: the tests look at which one it was.
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS connection to `addr` naming `sni` (`None`: an IP address, so no SNI is sent).
async fn connect(
    addr: SocketAddr,
    sni: Option<&str>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth();
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// The leaf certificate fulcrum shows for `sni`.
async fn served(addr: SocketAddr, sni: Option<&str>) -> CertificateDer<'static> {
    let tls = connect(addr, sni).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test]
async fn sni_chooses_exact_then_wildcard_else_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let a = cert(dir.path(), "a", &["a.test", "www.a.test"], in_days(90));
    let b = cert(dir.path(), "b", &["*.b.test"], in_days(90));
    let s = TestServer::start("s").await;
    let f = Setup::new()
        .frontend(|f| f.set("tls", certs_table(&[&a, &b])))
        .servers(&[&s])
        .start()
        .await;
    let addr = f.frontend("www");
    assert_eq!(served(addr, Some("a.test")).await, a.der);
    assert_eq!(served(addr, Some("WWW.A.test")).await, a.der);
    assert_eq!(served(addr, Some("x.b.test")).await, b.der);
    // A wildcard covers one label only.
    assert_eq!(served(addr, Some("y.x.b.test")).await, a.der);
    assert_eq!(served(addr, Some("unknown.test")).await, a.der);
    assert_eq!(served(addr, None).await, a.der);
    // And it serves HTTP over the chosen certificate.
    let mut tls = connect(addr, Some("x.b.test")).await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x.b.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(s.hits(), 1);
}

/// An echo server: what it reads it writes back.
async fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn tcp_mode_with_tls_terminates_and_forwards_the_plain_stream() {
    let dir = tempfile::tempdir().unwrap();
    let a = cert(dir.path(), "a", &["a.test"], in_days(90));
    let e = echo().await;
    let f = Setup::new()
        .frontend(|f| f.mode_tcp().tls(&a.cert, &a.key))
        .backend("b", |b| {
            b.health(|h| h.reset().tcp().interval("100ms").timeout("100ms"))
        })
        .server_at("e", e, |s| s)
        .start()
        .await;
    let mut tls = connect(f.frontend("www"), Some("a.test")).await;
    assert!(tls.get_ref().1.alpn_protocol().is_none());
    tls.write_all(b"ping over tls").await.unwrap();
    let mut buf = [0u8; 13];
    tls.read_exact(&mut buf).await.unwrap();
    // The echo server saw plain bytes (TLS bytes would have broken the session).
    assert_eq!(&buf, b"ping over tls");
}

#[tokio::test]
async fn reload_rereads_certificates_and_a_bad_file_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let first = cert(dir.path(), "a", &["a.test"], in_days(90));
    let b = cert(dir.path(), "b", &["b.test"], in_days(90));
    let s = TestServer::start("s").await;
    let setup = || {
        Setup::new()
            .frontend(|f| f.set("tls", certs_table(&[&first, &b])))
            .servers(&[&s])
    };
    let path = dir.path().join("fulcrum.toml");
    let f = setup().start_from(&path).await;
    let api = Api::new(&f);
    let addr = f.frontend("www");
    assert_eq!(served(addr, Some("a.test")).await, first.der);

    // A renewal rewrites the same files; a reload picks it up.
    let renewed = cert(dir.path(), "a", &["a.test", "new.a.test"], in_days(120));
    let text = setup().state_dir(f.state_dir()).toml();
    std::fs::write(&path, &text).unwrap();
    let (code, body) = api.send(Method::POST, "/api/v1/reload", None).await;
    assert_eq!(code, 200, "{body}");
    let addr = f.app.frontend_addrs().await["www"];
    assert_eq!(served(addr, Some("a.test")).await, renewed.der);
    assert_eq!(served(addr, Some("new.a.test")).await, renewed.der);

    // A broken file refuses the whole reload; the certificates in use keep serving.
    std::fs::write(&b.cert, "not a certificate").unwrap();
    let (code, body) = api.send(Method::POST, "/api/v1/reload", None).await;
    assert_ne!(code, 200, "{body}");
    assert!(body.to_string().contains("b.pem"), "{body}");
    assert_eq!(served(addr, Some("a.test")).await, renewed.der);
    assert_eq!(served(addr, Some("b.test")).await, b.der);
}

#[tokio::test]
async fn expiry_in_status_metrics_and_certificate_expiring_at_start_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let fine = cert(dir.path(), "fine", &["fine.test"], in_days(200));
    let soon = cert(
        dir.path(),
        "soon",
        &["soon.test", "*.soon.test"],
        in_days(3),
    );
    let gone = cert(
        dir.path(),
        "gone",
        &["gone.test"],
        in_days(0) - Duration::from_secs(3600),
    );
    let s = TestServer::start("s").await;
    let setup = || {
        Setup::new()
            .frontend(|f| f.set("tls", certs_table(&[&fine, &soon, &gone])))
            .servers(&[&s])
    };
    let path = dir.path().join("fulcrum.toml");
    let f = setup().start_from(&path).await;
    let api = Api::new(&f);

    // At start: one event each for the near and the expired certificate.
    let counted = |f: &Fulcrum| {
        f.app
            .events()
            .counts()
            .find(|(k, _)| *k == EventKind::CertificateExpiring)
            .map(|(_, n)| n)
    };
    assert_eq!(counted(&f), Some(2));

    let st = api.status().await;
    let fes = st["frontends"].as_array().unwrap();
    assert_eq!(fes.len(), 1);
    assert_eq!(fes[0]["name"], "www");
    assert_eq!(fes[0]["mode"], "http");
    assert_eq!(fes[0]["bind"], f.frontend("www").to_string());
    let certs = fes[0]["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 3);
    assert_eq!(
        certs[1]["names"],
        serde_json::json!(["soon.test", "*.soon.test"])
    );
    let not_after = certs[1]["not_after"].as_str().unwrap();
    let parsed = humantime::parse_rfc3339(not_after).unwrap();
    let want = in_days(3);
    let off = want.duration_since(parsed).unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(120), "{not_after}");

    let metrics = api.metrics().await;
    let unix = parsed
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let line = format!(
        "fulcrum_certificate_expiry_seconds{{frontend=\"www\",names=\"soon.test,*.soon.test\"}} {unix}"
    );
    assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    assert!(metrics.contains("names=\"fine.test\""), "{metrics}");

    // At reload: announced again, the detail naming the frontend, the names and the date.
    let mut events = f.app.events().subscribe();
    std::fs::write(&path, setup().state_dir(f.state_dir()).toml()).unwrap();
    let (code, body) = api.send(Method::POST, "/api/v1/reload", None).await;
    assert_eq!(code, 200, "{body}");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("certificate_expiring after the reload")
            .unwrap();
        if e.event == EventKind::CertificateExpiring {
            seen.push(e.detail);
        }
    }
    let near = seen.iter().find(|d| d.contains("soon.test")).unwrap();
    assert!(near.contains("`www`") && near.contains(not_after), "{near}");
    let past = seen.iter().find(|d| d.contains("gone.test")).unwrap();
    assert!(past.contains("expired"), "{past}");
    assert!(!seen.iter().any(|d| d.contains("fine.test")), "{seen:?}");
}

/// A webhook receiver: each request's body, on the returned channel.
async fn receiver() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    use http_body_util::BodyExt;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let tx = tx.clone();
                    async move {
                        let body: hyper::body::Incoming = req.into_body();
                        let bytes = body.collect().await.unwrap().to_bytes();
                        let _ = tx.send(serde_json::from_slice(&bytes).unwrap());
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from("ok")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_webhook_subscribed_to_certificate_expiring_gets_it_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let soon = cert(dir.path(), "soon", &["soon.test"], in_days(2));
    let s = TestServer::start("s").await;
    let (hook, mut rx) = receiver().await;
    let url = format!("http://{hook}/hook");
    let f = Setup::new()
        .alerts(|al| al.webhook(&url, |w| w.events(&["certificate_expiring"])))
        .frontend(|f| f.tls(&soon.cert, &soon.key))
        .servers(&[&s])
        .start()
        .await;
    let v = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a webhook call within 10 s")
        .unwrap();
    assert_eq!(v["event"], "certificate_expiring");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("`www`") && detail.contains("soon.test"),
        "{detail}"
    );
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .starts_with("[fulcrum] certificate_expiring"),
        "{v}"
    );
    f.shutdown().await;
}
