//! Webhooks over https:// (Slack's URLs): fulcrum speaks TLS and verifies the receiver's
//! certificate against the public roots; a self-signed receiver is refused, never sent
//! the alert in clear.
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;

#[tokio::test]
async fn https_calls_verify_the_certificate() {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&pem, key.signing_key.serialize_pem()).unwrap();
    let acceptor = fulcrum::proxy::tls::acceptor(&cert, &pem).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        // The client must open with a TLS handshake (and then abort it).
        acceptor.accept(stream).await.is_err()
    });
    let uri = format!("https://localhost:{}/hook", addr.port())
        .parse()
        .unwrap();
    let result = fulcrum::http_client::call(
        http::Method::POST,
        &uri,
        &[("content-type", "application/json")],
        Bytes::from_static(b"{}"),
        Duration::from_secs(5),
    )
    .await;
    let err = result
        .expect_err("a self-signed receiver must be refused")
        .to_string();
    assert!(
        err.contains("TLS") && err.to_lowercase().contains("cert"),
        "{err}"
    );
    assert!(
        handshakes.await.unwrap(),
        "the receiver saw a TLS handshake that failed"
    );
}

#[test]
fn https_webhook_urls_are_valid_configuration() {
    let toml = Setup::new()
        .server_at("s", "127.0.0.1:1".parse().unwrap(), |s| s)
        .alerts(|a| a.webhook("https://hooks.slack.com/services/T0/B0/XXXX", |w| w))
        .toml();
    fulcrum::config::parse_str(&toml, std::path::Path::new("t.toml")).unwrap();
    let bad = toml.replace("https://", "ftp://");
    let err = fulcrum::config::parse_str(&bad, std::path::Path::new("t.toml")).unwrap_err();
    assert!(err.to_string().contains("alerts.webhooks[0].url"), "{err}");
}
