//! The dashboard's Certificates card in a real headless Chromium: each TLS frontend with
//! where it listens and its mode, each certificate with its names and expiry, the one within
//! 14 days marked; a frontend without TLS is not listed there. Chromium must be installed (`scripts/test` installs it); see tests/dashboard.rs.
#[path = "common/admin.rs"]
mod admin_common;
#[path = "common/browser.rs"]
mod browser;
mod common;

use std::time::{Duration, SystemTime};

use browser::{Browser, Cdp};
use common::*;
use serde_json::json;

fn cert(dir: &std::path::Path, file: &str, names: &[&str], days: u64) -> toml::Value {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_after = (SystemTime::now() + Duration::from_secs(days * 86_400)).into();
    let c = params.self_signed(&key).unwrap();
    let (cp, kp) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}.key")),
    );
    std::fs::write(&cp, c.pem()).unwrap();
    std::fs::write(&kp, key.serialize_pem()).unwrap();
    let mut t = toml::Table::new();
    t.insert("cert".into(), cp.to_str().unwrap().into());
    t.insert("key".into(), kp.to_str().unwrap().into());
    toml::Value::Table(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificates_card_shows_names_and_expiry_and_marks_the_expiring_one() {
    let dir = tempfile::tempdir().unwrap();
    let fine = cert(dir.path(), "fine", &["shop.test", "*.shop.test"], 200);
    let soon = cert(dir.path(), "soon", &["old.test"], 5);
    let mut tls = toml::Table::new();
    tls.insert("certs".into(), toml::Value::Array(vec![fine, soon]));
    let s = TestServer::start("s").await;
    let f = Setup::new()
        .frontend(|f| f.set("tls", tls))
        .frontend_named("plain", |f| f.bind("127.0.0.2:0").backend("b"))
        .servers(&[&s])
        .start()
        .await;
    let api = admin_common::Api::new(&f);

    let browser = Browser::launch();
    let mut cdp = Cdp::connect(&browser.ws_url).await;
    let target = cdp
        .call("Target.createTarget", json!({ "url": "about:blank" }))
        .await;
    let session = cdp
        .call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        )
        .await;
    cdp.session = Some(session["sessionId"].as_str().unwrap().to_string());
    cdp.call("Runtime.enable", json!({})).await;
    cdp.call("Page.enable", json!({})).await;
    cdp.call(
        "Page.navigate",
        json!({ "url": format!("http://{}/", f.admin) }),
    )
    .await;
    cdp.wait_for(
        "the token prompt",
        Duration::from_secs(10),
        "(() => { const e = document.querySelector('#token-input'); return !!e && e.offsetParent !== null; })()",
    )
    .await;
    cdp.click("#token-input").await;
    cdp.type_text(&api.token).await;
    cdp.click("#token-form button[type=submit]").await;

    cdp.wait_for(
        "the certificates card with two rows",
        Duration::from_secs(10),
        "(() => { const c = document.querySelector('#certificates'); return !!c && c.offsetParent !== null \
           && document.querySelectorAll('#certificate-rows tr').length === 2; })()",
    )
    .await;
    let rows = cdp
        .eval("[...document.querySelectorAll('#certificate-rows tr')].map(r => [r.dataset.frontend, r.innerText])")
        .await;
    let rows: Vec<(String, String)> = serde_json::from_value(rows).unwrap();
    let www: Vec<&String> = rows
        .iter()
        .filter(|(n, _)| n == "www")
        .map(|(_, t)| t)
        .collect();
    assert_eq!(www.len(), 2, "{rows:?}");
    assert!(
        www[0].contains(&f.frontend("www").to_string()) && www[0].contains("(http)"),
        "{rows:?}"
    );
    assert!(
        www[0].contains("shop.test, *.shop.test") && !www[0].contains("soon"),
        "{rows:?}"
    );
    assert!(
        www[1].contains("old.test") && www[1].contains("(soon)"),
        "{rows:?}"
    );
    assert!(!rows.iter().any(|(n, _)| n == "plain"), "{rows:?}");
    assert_eq!(
        cdp.eval("document.querySelectorAll('#certificate-rows td.err').length")
            .await,
        json!(1),
        "only the expiring certificate is marked"
    );
    drop(cdp);
    drop(browser);
    f.shutdown().await;
}
