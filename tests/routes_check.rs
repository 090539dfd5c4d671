//! Routes as `fulcrum check` sees them: each bad route or header rule is an error naming
//! the file, line, column and key; the summary prints every route; and the README's
//! recipe (`examples/sites.toml`) both passes the check and works as it says.
#[path = "common/check.rs"]
mod check;
mod common;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

const GOOD: &str = r#"[[frontends]]
name = "www"
bind = "127.0.0.1:8080"
backend = "shop"

[[frontends.routes]]
name = "api"
host = ["api.example.com", "*.example.org"]
path_prefix = "/v1/"
methods = ["GET"]
backend = "api"
strip_prefix = true

[[frontends.routes]]
path = "/old"
redirect = "https://{host}/new"
redirect_status = 301

[backends.shop]
[[backends.shop.servers]]
name = "web-01"
address = "127.0.0.1:9001"

[backends.api]
[[backends.api.servers]]
name = "api-01"
address = "127.0.0.1:9002"
"#;

/// Expects exit 1 and an error `FILE:LINE:COL: key `KEY`: ...` containing `words`.
fn expect_error(text: &str, line: usize, key: &str, words: &str) {
    let dir = tempfile::tempdir().unwrap();
    check::expect_error(dir.path(), text, line, key, words);
}

#[test]
fn the_summary_prints_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("good.toml");
    std::fs::write(&p, GOOD).unwrap();
    let (code, stdout, stderr) = check::check_file(&p);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("frontend www http on 127.0.0.1:8080:"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "route api host api.example.com,*.example.org path_prefix /v1/ methods GET -> backend api (prefix stripped)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("route www#2 path /old -> redirect 301 https://{host}/new"),
        "{stdout}"
    );
    assert!(stdout.contains("otherwise -> backend shop"), "{stdout}");
}

#[test]
fn an_unknown_backend() {
    expect_error(
        &GOOD.replace("backend = \"api\"", "backend = \"apii\""),
        11,
        "frontends[0].routes[0].backend",
        "no backend named `apii`",
    );
}

#[test]
fn both_backend_and_redirect_or_neither() {
    expect_error(
        &GOOD.replace(
            "redirect_status = 301",
            "redirect_status = 301\nbackend = \"shop\"",
        ),
        16,
        "frontends[0].routes[1].redirect",
        "not both",
    );
    expect_error(
        &GOOD.replace("redirect = \"https://{host}/new\"\n", ""),
        14,
        "frontends[0].routes[1]",
        "needs a `backend` or a `redirect`",
    );
}

#[test]
fn bad_hosts_statuses_and_placeholders() {
    expect_error(
        &GOOD.replace("\"*.example.org\"", "\"a.*.org\""),
        8,
        "frontends[0].routes[0].host[1]",
        "only `*.` at the start",
    );
    expect_error(
        &GOOD.replace("redirect_status = 301", "redirect_status = 200"),
        17,
        "frontends[0].routes[1].redirect_status",
        "not a redirect status",
    );
    expect_error(
        &GOOD.replace("{host}/new", "{hots}/new"),
        16,
        "frontends[0].routes[1].redirect",
        "`{hots}` is not a placeholder",
    );
}

#[test]
fn strip_prefix_needs_a_prefix() {
    expect_error(
        &GOOD.replace("path_prefix = \"/v1/\"\n", ""),
        11,
        "frontends[0].routes[0].strip_prefix",
        "needs a `path_prefix`",
    );
}

#[test]
fn header_names_must_be_tokens() {
    let text = GOOD.replace(
        "strip_prefix = true",
        "strip_prefix = true\nrequest_headers = { set = { \"bad name\" = \"x\" } }",
    );
    expect_error(
        &text,
        13,
        "frontends[0].routes[0].request_headers.set.bad name",
        "is not a header name",
    );
    let text = GOOD.replace(
        "backend = \"shop\"\n\n[[frontends.routes]]",
        "backend = \"shop\"\nresponse_headers = { remove = [\"content-length\"] }\n\n[[frontends.routes]]",
    );
    expect_error(
        &text,
        5,
        "frontends[0].response_headers.remove[0]",
        "written by fulcrum itself",
    );
}

#[test]
fn a_frontend_needs_a_backend_or_routes() {
    let text = GOOD.replace(
        "backend = \"shop\"\n\n[[frontends.routes]]",
        "\n[[frontends.routes]]",
    );
    // With routes, the default backend is optional.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.toml");
    std::fs::write(&p, &text).unwrap();
    let (code, stdout, stderr) = check::check_file(&p);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("otherwise -> 404 no_route"), "{stdout}");
    let bare = "[[frontends]]\nname = \"www\"\nbind = \"127.0.0.1:8080\"\n\n[backends.shop]\n\
                [[backends.shop.servers]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";
    expect_error(bare, 1, "frontends[0]", "needs a `backend`");
}

// ---------------------------------------------------------------------------------------
// The recipe.

fn example_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sites.toml");
    std::fs::read_to_string(path).unwrap()
}

/// The recipe's two certificates, each for its site.
type Keys = Vec<rcgen::CertifiedKey<rcgen::KeyPair>>;

/// A directory holding the recipe's certificates, one per site.
fn recipe_dir() -> (tempfile::TempDir, Keys) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let mut keys = Vec::new();
    for (file, names) in [
        ("www", vec!["www.example.com", "example.com"]),
        ("shop", vec!["shop.example.com"]),
    ] {
        let names = names.into_iter().map(String::from).collect::<Vec<_>>();
        let key = rcgen::generate_simple_self_signed(names).unwrap();
        std::fs::write(dir.path().join(format!("certs/{file}.pem")), key.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join(format!("certs/{file}.key")),
            key.signing_key.serialize_pem(),
        )
        .unwrap();
        keys.push(key);
    }
    (dir, keys)
}

#[test]
fn the_recipe_passes_the_check() {
    let (dir, _key) = recipe_dir();
    let p = dir.path().join("sites.toml");
    std::fs::write(&p, example_text()).unwrap();
    let (code, stdout, stderr) = check::check_file(&p);
    assert_eq!(code, 0, "{stderr}");
    for route in ["route api", "route www", "route shop", "route to-https"] {
        assert!(stdout.contains(route), "{route} missing:\n{stdout}");
    }
}

#[tokio::test]
async fn the_recipe_works_as_it_says() {
    let (dir, keys) = recipe_dir();
    let (www, shop, api) = (
        TestServer::start("www").await,
        TestServer::start("shop").await,
        TestServer::start("api").await,
    );
    let mut text = example_text()
        .replace("0.0.0.0:443", "127.0.0.1:0")
        .replace("0.0.0.0:80", "127.0.0.2:0")
        .replace("127.0.0.1:9900", "127.0.0.1:0")
        .replace(
            "state_dir = \".fulcrum\"",
            &format!("state_dir = \"{}\"", dir.path().display()),
        );
    for (port, server) in [
        ("9001", &www),
        ("9002", &www),
        ("9011", &shop),
        ("9012", &shop),
        ("9021", &api),
        ("9022", &api),
    ] {
        text = text.replace(&format!("127.0.0.1:{port}"), &server.addr.to_string());
    }
    let p = dir.path().join("sites.toml");
    std::fs::write(&p, &text).unwrap();
    let cfg = fulcrum::config::load_file(&p).unwrap_or_else(|e| panic!("{e}"));
    let f = fulcrum::runtime::start(cfg)
        .await
        .expect("the recipe starts");

    // HTTP is redirected to HTTPS, path and query kept.
    let r = raw_exchange(
        f.frontend("http"),
        b"GET /books?page=2 HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("https://www.example.com/books?page=2")
    );

    // HTTPS: the site, the API under its prefix, the shop; HSTS on each.
    let https = f.frontend("https");
    for (host, path, body) in [
        ("www.example.com", "/", "www"),
        ("www.example.com", "/api/books", "api"),
        ("shop.example.com", "/cart", "shop"),
    ] {
        let (status, headers, got) = https_get(&keys, https, host, path).await;
        assert_eq!((status, got.as_str()), (200, body), "{host}{path}");
        assert_eq!(
            headers.get("strict-transport-security").unwrap(),
            "max-age=31536000; includeSubDomains"
        );
    }
    assert!(api.last_headers().get("x-client-ip").is_some());
    let (status, headers, _) = https_get(&keys, https, "nowhere.example.com", "/").await;
    assert_eq!(status, 404);
    assert_eq!(headers.get("x-fulcrum-error").unwrap(), "no_route");
    f.shutdown().await;
}

async fn https_get(
    keys: &Keys,
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> (u16, http::HeaderMap, String) {
    let mut roots = RootCertStore::empty();
    for key in keys {
        roots.add(key.cert.der().clone()).unwrap();
    }
    let cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // An unknown name gets the default certificate (www's), and 404.
    let sni = if host == "nowhere.example.com" {
        "www.example.com"
    } else {
        host
    };
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}
