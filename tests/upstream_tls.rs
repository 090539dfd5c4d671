//! TLS to servers (`[backends.NAME.tls]`): verification against a CA file, names, `verify =
//! false`, mutual TLS, session resumption, TCP mode and health checks over TLS, and the
//! checks `fulcrum check` makes of the keys. The servers are real TLS servers (tokio-rustls
//! with hyper) on 127.0.0.1.
mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, HandshakeKind, RootCertStore, ServerConfig};

/// A CA, and files it signed, in a temporary folder.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fulcrum test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Pki {
            dir,
            ca: rcgen::Issuer::new(params, key),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A certificate for `names` signed by the CA, as `{stem}.pem` and `{stem}.key`.
    fn issue(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (
            self.path(&format!("{stem}.pem")),
            self.path(&format!("{stem}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a TLS test server saw.
#[derive(Default)]
struct Seen {
    handshakes: AtomicU64,
    resumed: AtomicU64,
    with_client_cert: AtomicU64,
    requests: AtomicU64,
}

/// An HTTP/1.1 server over TLS answering every request with `name`; `close` makes it end
/// each connection after one answer (so fulcrum must reconnect); `client_ca` requires a
/// client certificate signed by that CA.
struct TlsServer {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

async fn tls_server(
    name: &'static str,
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    close: bool,
) -> TlsServer {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen) = (acceptor.clone(), Arc::clone(&s));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                {
                    let conn = tls.get_ref().1;
                    seen.handshakes.fetch_add(1, Ordering::SeqCst);
                    if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
                        seen.resumed.fetch_add(1, Ordering::SeqCst);
                    }
                    if conn.peer_certificates().is_some() {
                        seen.with_client_cert.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let seen2 = Arc::clone(&seen);
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    if req.uri().path() != "/healthz" {
                        seen2.requests.fetch_add(1, Ordering::SeqCst);
                    }
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(!close)
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    TlsServer { addr, seen }
}

fn tls_table(entries: &[(&str, toml::Value)]) -> toml::Table {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn path_value(p: &Path) -> toml::Value {
    p.to_str().unwrap().into()
}

/// `GET /` through fulcrum's frontend on a fresh connection: status and body, and the
/// error code fulcrum answered with, if any.
async fn get_once(f: &Fulcrum) -> (u16, String, Option<String>) {
    let mut c = RawConn::connect(f.frontend("www")).await;
    c.send(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await;
    let r = c.read_response().await.expect("an answer");
    let code = r.header("x-fulcrum-error").map(str::to_string);
    (r.status, r.text(), code)
}

#[tokio::test]
async fn verifies_against_the_ca_file_by_ip_and_resumes_sessions() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["127.0.0.1"]);
    let server = tls_server("secure", &cert, &key, None, true).await;
    let f = Setup::new()
        .backend("b", |b| {
            b.set(
                "tls",
                tls_table(&[("ca_file", path_value(&pki.path("ca.pem")))]),
            )
            .server_at("s", server.addr, |s| s)
        })
        .start()
        .await;
    for _ in 0..4 {
        let (status, body, _) = get_once(&f).await;
        assert_eq!((status, body.as_str()), (200, "secure"));
    }
    // The server closes after every answer: each request took a new TLS connection, and
    // the backend's one client config resumed the sessions of the earlier ones.
    eventually("a resumed TLS session", Duration::from_secs(5), || {
        server.seen.resumed.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(server.seen.requests.load(Ordering::SeqCst) >= 4);
    f.shutdown().await;
}

#[tokio::test]
async fn a_certificate_for_another_name_is_connect_failed_and_retried_elsewhere() {
    let pki = Pki::new();
    let (good_cert, good_key) = pki.issue("good", &["api.internal"]);
    let (bad_cert, bad_key) = pki.issue("bad", &["other.internal"]);
    let good = tls_server("good", &good_cert, &good_key, None, false).await;
    let bad = tls_server("bad", &bad_cert, &bad_key, None, false).await;
    // Both servers' checks go to the good server's port (health `port`), so both stay up
    // and only the data path meets the bad certificate.
    let port = i64::from(good.addr.port());
    let tls = tls_table(&[
        ("ca_file", path_value(&pki.path("ca.pem"))),
        ("server_name", "api.internal".into()),
    ]);
    let f = Setup::new()
        .backend("b", |b| {
            b.set("tls", tls.clone())
                .retries(1)
                .health(|h| h.set("port", port))
                .outlier("consecutive_failures", 2)
                .server_at("good", good.addr, |s| s)
                .server_at("bad", bad.addr, |s| s)
        })
        .start()
        .await;
    for _ in 0..6 {
        let (status, body, _) = get_once(&f).await;
        assert_eq!((status, body.as_str()), (200, "good"));
    }
    assert_eq!(bad.seen.requests.load(Ordering::SeqCst), 0);
    // Passive health counted the failed handshakes as connect failures.
    assert_eq!(
        live_server(&f, "bad").state(),
        fulcrum::pool::ServerState::Ejected
    );
    f.shutdown().await;

    // Alone, the bad server answers nothing: 502 connect_failed.
    let f = Setup::new()
        .backend("b", |b| {
            b.set("tls", tls)
                .health(|h| h.set("port", port))
                .server_at("bad", bad.addr, |s| s)
        })
        .start()
        .await;
    let (status, _, code) = get_once(&f).await;
    assert_eq!((status, code.as_deref()), (502, Some("connect_failed")));
    f.shutdown().await;
}

#[tokio::test]
async fn verify_false_accepts_any_certificate() {
    let key = rcgen::generate_simple_self_signed(vec!["nobody.example".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, pem) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&pem, key.signing_key.serialize_pem()).unwrap();
    let server = tls_server("unverified", &cert, &pem, None, false).await;
    let f = Setup::new()
        .backend("b", |b| {
            b.set("tls", tls_table(&[("verify", false.into())]))
                .server_at("s", server.addr, |s| s)
        })
        .start()
        .await;
    let (status, body, _) = get_once(&f).await;
    assert_eq!((status, body.as_str()), (200, "unverified"));
    f.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_is_accepted_with_the_client_certificate_and_refused_without() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["127.0.0.1"]);
    let (client_cert, client_key) = pki.issue("client", &["fulcrum.client"]);
    let server = tls_server("mtls", &cert, &key, Some(&pki.path("ca.pem")), false).await;
    let ca = ("ca_file", path_value(&pki.path("ca.pem")));
    let f = Setup::new()
        .backend("b", |b| {
            b.set(
                "tls",
                tls_table(&[
                    ca.clone(),
                    ("client_cert", path_value(&client_cert)),
                    ("client_key", path_value(&client_key)),
                ]),
            )
            .server_at("s", server.addr, |s| s)
        })
        .start()
        .await;
    let (status, body, _) = get_once(&f).await;
    assert_eq!((status, body.as_str()), (200, "mtls"));
    assert!(server.seen.with_client_cert.load(Ordering::SeqCst) >= 1);
    f.shutdown().await;

    let f = Setup::new()
        .backend("b", |b| {
            b.set("tls", tls_table(&[ca]))
                .server_at("s", server.addr, |s| s)
        })
        .start()
        .await;
    let (status, _, _) = get_once(&f).await;
    assert!(
        status == 502 || status == 503,
        "the server refuses fulcrum without a client certificate: {status}"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn tcp_mode_and_health_checks_go_over_tls() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["localhost"]);
    let server = tls_server("relayed", &cert, &key, None, false).await;
    let f = Setup::new()
        .frontend(|f| f.mode_tcp())
        .backend("b", |b| {
            b.set(
                "tls",
                tls_table(&[
                    ("ca_file", path_value(&pki.path("ca.pem"))),
                    ("server_name", "localhost".into()),
                ]),
            )
            .server_at("s", server.addr, |s| s)
        })
        .start()
        .await;
    // The HTTP check passed over TLS (the server is up, and it saw handshakes).
    eventually("the server up", Duration::from_secs(5), || {
        live_server(&f, "s").state() == fulcrum::pool::ServerState::Up
    })
    .await;
    let before = server.seen.handshakes.load(Ordering::SeqCst);
    assert!(before >= 1);
    // A plain TCP client; fulcrum relays its bytes over TLS.
    let mut c = tokio::net::TcpStream::connect(f.frontend("www"))
        .await
        .unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("relayed"), "{text}");
    assert_eq!(server.seen.requests.load(Ordering::SeqCst), 1);
    f.shutdown().await;
}

/// `fulcrum check`'s errors for `toml`: (key, line, message) each.
fn problems(text: &str) -> Vec<(String, usize, String)> {
    match fulcrum::config::parse_str(text, Path::new("t.toml")) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .0
            .into_iter()
            .map(|e| (e.key, e.line, e.message))
            .collect(),
    }
}

#[test]
fn bad_tls_settings_are_located_errors() {
    let pki = Pki::new();
    let (cert, _) = pki.issue("a", &["a.internal"]);
    let (_, other_key) = pki.issue("b", &["b.internal"]);
    let base = |tls: &str| {
        format!(
            "[[frontends]]\nname = \"www\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\n\n\
             [backends.b]\n[[backends.b.servers]]\nname = \"s\"\naddress = \"127.0.0.1:9\"\n\n\
             [backends.b.tls]\n{tls}\n"
        )
    };
    let p = problems(&base("ca_file = \"/nonexistent/ca.pem\""));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "backends.b.tls.ca_file");
    assert_eq!(p[0].1, 12);
    assert!(p[0].2.contains("/nonexistent/ca.pem"), "{p:?}");

    let p = problems(&base(&format!(
        "client_cert = {:?}",
        cert.to_str().unwrap()
    )));
    assert_eq!(p[0].0, "backends.b.tls.client_cert");
    assert!(p[0].2.contains("client_key"), "{p:?}");

    let p = problems(&base(&format!(
        "client_cert = {:?}\nclient_key = {:?}",
        cert.to_str().unwrap(),
        other_key.to_str().unwrap()
    )));
    assert_eq!(p[0].0, "backends.b.tls.client_cert");
    assert!(p[0].2.contains("unusable with client_key"), "{p:?}");

    let p = problems(&base("server_name = \"not a name\""));
    assert_eq!(p[0].0, "backends.b.tls.server_name");

    let text = base("").replace(
        "[backends.b]\n",
        "[backends.b]\nsend_proxy_protocol = \"v3\"\n",
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0].0.as_str(), p[0].1),
        ("backends.b.send_proxy_protocol", 7)
    );
    assert!(p[0].2.contains("v3"), "{p:?}");
}

#[tokio::test]
async fn a_reload_that_adds_tls_applies_it() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["127.0.0.1"]);
    let server = tls_server("after-reload", &cert, &key, None, false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fulcrum.toml");
    let plain = Setup::new().backend("b", |b| b.server_at("s", server.addr, |s| s));
    let f = plain.start_from(&file).await;
    // Plain HTTP to a TLS server: its checks fail, nothing serves.
    let (status, _, _) = get_once(&f).await;
    assert_eq!(status, 503);
    // The same file with `[backends.b.tls]`; the CA file is relative to the file's folder.
    std::fs::copy(pki.path("ca.pem"), dir.path().join("ca.pem")).unwrap();
    let tls = Setup::new().backend("b", |b| {
        b.set("tls", tls_table(&[("ca_file", "ca.pem".into())]))
            .server_at("s", server.addr, |s| s)
    });
    let text = tls.toml().replace(
        &tls.state_path().display().to_string(),
        &plain.state_path().display().to_string(),
    );
    std::fs::write(&file, text).unwrap();
    f.app.reload().await.expect("the reload is accepted");
    eventually_async("served over TLS", Duration::from_secs(5), || {
        let f = &f;
        async move { get_once(f).await.0 == 200 }
    })
    .await;
    f.shutdown().await;
}
