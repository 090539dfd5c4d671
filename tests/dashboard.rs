//! The dashboard in a real headless Chromium, driven through the Chrome DevTools protocol
//! (a websocket to the browser; clicks and typing are real input events): load the page,
//! enter the token (a wrong one first), see every server, put one in maintenance with the
//! button and its form, and see the change on the page within 2 s; then set a weight and
//! end the maintenance with the page's buttons.
//!
//! Chromium must be installed (`scripts/test` installs it); without it this test fails with
//! a message saying so, it never skips. `FULCRUM_CHROMIUM` names another binary.
//! The screenshot goes to `$CARGO_TARGET_TMPDIR/dashboard.png` on every run and also to
//! `docs/dashboard.png` when that file is missing or `FULCRUM_SCREENSHOT=1` is set (so an
//! ordinary `cargo test` leaves the work tree clean).
#[path = "common/admin.rs"]
mod admin_common;
#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use browser::{Browser, Cdp};
use common::*;
use serde_json::json;

/// Steady traffic through `url` until the returned handle is aborted, so the page has
/// rates, latencies and chart points to show.
fn load(url: String, parallel: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..parallel)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                loop {
                    let _ = c.get(&url).send().await.map(|r| r.bytes());
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium_puts_a_server_in_maintenance() {
    let web1 = TestServer::start("web-01").await;
    let web2 = TestServer::start("web-02").await;
    let web3 = TestServer::start("web-03").await;
    let api1 = TestServer::start("api-01").await;
    let api2 = TestServer::start("api-02").await;
    web1.set_delay(Duration::from_millis(12));
    web2.set_delay(Duration::from_millis(25));
    api1.set_delay(Duration::from_millis(3));
    api2.set_delay(Duration::from_millis(4));
    // Two frontends on two addresses, each feeding a backend of its own.
    let f = Setup::new()
        .global("grace_period", "2s")
        .frontend(|f| f.backend("web"))
        .frontend_named("api", |f| f.bind("127.0.0.2:0"))
        .backend("web", |b| {
            b.algorithm("least_connections")
                .min_healthy(2)
                .servers(&[&web1, &web2])
                .server(&web3, |s| s.backup())
        })
        .backend("api", |b| {
            b.algorithm("round_robin")
                .min_healthy(1)
                .server(&api1, |s| s.weight(2))
                .server(&api2, |s| s)
        })
        .start()
        .await;
    let api = admin_common::Api::new(&f);
    let base = format!("http://{}", f.admin);
    let mut traffic = load(format!("http://{}/", f.frontend("www")), 4);
    traffic.extend(load(format!("http://{}/", f.frontend("api")), 3));

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
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1280, "height": 860, "deviceScaleFactor": 1, "mobile": false }),
    )
    .await;
    cdp.call("Page.navigate", json!({ "url": format!("{base}/") }))
        .await;

    // The page asks for the token; a wrong one is refused and asked for again.
    let visible = |sel: &str| {
        format!(
            "(() => {{ const e = document.querySelector({}); return !!e && e.offsetParent !== null; }})()",
            json!(sel)
        )
    };
    cdp.wait_for(
        "the token form",
        Duration::from_secs(10),
        &visible("#token-input"),
    )
    .await;
    cdp.click("#token-input").await;
    cdp.type_text("not-the-token").await;
    cdp.click("#token-form button[type=submit]").await;
    cdp.wait_for(
        "the page to refuse a wrong token",
        Duration::from_secs(5),
        "document.querySelector('#login-error').innerText.includes('refused')",
    )
    .await;
    cdp.click("#token-input").await;
    cdp.type_text(&api.token).await;
    cdp.click("#token-form button[type=submit]").await;

    // Every server of every backend is listed, with its state.
    cdp.wait_for(
        "all five servers, up",
        Duration::from_secs(10),
        "document.querySelectorAll('tr[data-server] .state').length === 5 && \
         ['web/web-01','web/web-02','api/api-01','api/api-02'].every(k => \
           document.querySelector(`tr[data-server=\"${k}\"] .state`).innerText.toLowerCase() === 'up')",
    )
    .await;
    // Each frontend and where it sends requests.
    cdp.wait_for(
        "the frontends and their backends",
        Duration::from_secs(10),
        "(() => { const w = document.querySelector('tr[data-route=\"www/-\"]'); \
           const a = document.querySelector('tr[data-route=\"api/-\"]'); \
           return !!w && !!a && w.innerText.includes('backend web') && a.innerText.includes('backend api'); })()",
    )
    .await;
    assert_eq!(
        cdp.eval("sessionStorage.getItem('fulcrum.admin.token')")
            .await,
        json!(api.token),
        "the token is kept for the browser session"
    );
    assert_eq!(
        cdp.text_of("tr[data-server=\"api/api-01\"] td:nth-child(3)")
            .await,
        "2",
        "weight shown"
    );
    // Rates and latencies come from the status counters; give the charts a few seconds.
    cdp.wait_for(
        "requests/s and p99 for web-01",
        Duration::from_secs(10),
        "(() => { const r = document.querySelector('tr[data-server=\"web/web-01\"]'); \
           return r.children[4].innerText !== '–' && Number(r.children[4].innerText) > 0 \
              && r.children[7].innerText.endsWith('ms'); })()",
    )
    .await;

    // Maintenance through the button and its form.
    let row = "tr[data-server=\"web/web-01\"]";
    let form = "tr[data-form-for=\"web/web-01\"] form.maint-form";
    cdp.click(&format!("{row} button[data-act=maintenance]"))
        .await;
    cdp.wait_for(
        "the maintenance form",
        Duration::from_secs(2),
        &visible(form),
    )
    .await;
    // The duration field opens focused with its default selected: typing replaces it.
    cdp.type_text("45m").await;
    cdp.click(&format!("{form} input[name=reason]")).await;
    cdp.type_text("kernel upgrade (OPS-1234)").await;
    assert_eq!(
        cdp.eval(&format!(
            "document.querySelector('{form} input[name=for]').value"
        ))
        .await,
        json!("45m")
    );
    cdp.click(&format!("{form} button[type=submit]")).await;
    let took = cdp
        .wait_for(
            "web-01 shown in maintenance",
            Duration::from_secs(2),
            &format!(
                "(() => {{ const r = document.querySelector('{row}'); \
                 const s = r.querySelector('.state').innerText.toLowerCase(); \
                 return (s === 'maintenance' || s === 'draining') \
                   && r.querySelector('td.maint').innerText.includes('kernel upgrade (OPS-1234)') \
                   && /4[45]m \\d\\ds left/.test(r.querySelector('td.maint').innerText); }})()"
            ),
        )
        .await;
    assert!(took < Duration::from_secs(2), "{took:?}");
    // fulcrum agrees.
    let s = api.server("web", "web-01").await;
    assert!(
        s["state"] == "maintenance" || s["state"] == "draining",
        "{s}"
    );
    assert_eq!(s["maintenance_reason"], "kernel upgrade (OPS-1234)");
    // The counters the page computes its rates from.
    let st = api.status().await;
    assert_eq!(st["duration_buckets"].as_array().unwrap().len(), 14);
    assert!(st["now"].is_string(), "{st}");
    let counts = s["duration_counts"].as_array().unwrap();
    assert_eq!(counts.len(), 15, "{s}");
    let answered = s["responses_total"].as_u64().unwrap();
    assert!(answered > 0, "{s}");
    // Every answered request is in one duration bucket (the two are read a moment apart,
    // and a request still draining may land between the readings).
    let bucketed: u64 = counts.iter().map(|n| n.as_u64().unwrap()).sum();
    assert!(
        bucketed.abs_diff(answered) <= 4,
        "{bucketed} vs {answered}: {s}"
    );
    assert_eq!(s["errors_total"], 0, "{s}");
    // The backend is now below min_healthy: the page says so, and the event arrived.
    cdp.wait_for(
        "the capacity banner and the maintenance_started event",
        Duration::from_secs(2),
        "!!document.querySelector('section[data-backend=\"web\"] [data-banner=capacity_low]') \
         && document.querySelector('#events').innerText.includes('maintenance_started')",
    )
    .await;
    // The Enable button replaced the Maintenance button.
    assert_eq!(
        cdp.eval(&visible(&format!("{row} button[data-act=enable]")))
            .await,
        json!(true)
    );

    // A little more history for the charts, then the screenshot.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let png = cdp.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    save_screenshot(&png);
    assert!(
        cdp.page_errors.is_empty(),
        "page errors: {:?}",
        cdp.page_errors
    );

    // Weight: the button opens a form whose field is focused and selected.
    let api2 = "tr[data-server=\"api/api-02\"]";
    cdp.click(&format!("{api2} button[data-act=weight]")).await;
    let wform = "tr[data-form-for=\"api/api-02\"] form.weight-form";
    cdp.wait_for("the weight form", Duration::from_secs(2), &visible(wform))
        .await;
    cdp.type_text("3").await;
    cdp.click(&format!("{wform} button[type=submit]")).await;
    cdp.wait_for(
        "api-02 shown with weight 3",
        Duration::from_secs(2),
        &format!("document.querySelector('{api2} td:nth-child(3)').innerText === '3'"),
    )
    .await;
    assert_eq!(api.server("api", "api-02").await["weight"], 3);

    // Enable ends the maintenance.
    cdp.click(&format!("{row} button[data-act=enable]")).await;
    cdp.wait_for(
        "web-01 out of maintenance",
        Duration::from_secs(2),
        &format!(
            "(() => {{ const s = document.querySelector('{row} .state').innerText.toLowerCase(); \
             return s !== 'maintenance' && s !== 'draining'; }})()"
        ),
    )
    .await;
    assert!(api.server("web", "web-01").await["maintenance_until"].is_null());

    for t in traffic {
        t.abort();
    }
    drop(cdp);
    drop(browser);
    f.shutdown().await;
}

fn save_screenshot(png: &[u8]) {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&tmp, png).unwrap();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    if !docs.exists() || std::env::var_os("FULCRUM_SCREENSHOT").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::write(&docs, png).unwrap();
    }
    eprintln!("dashboard screenshot: {}", tmp.display());
}
