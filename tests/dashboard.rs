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
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A headless Chromium of our own, killed (with its whole process group) when dropped, so a
/// failing test leaves no browser behind.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    /// `ws://127.0.0.1:PORT/devtools/browser/ID`
    ws_url: String,
}

impl Browser {
    fn launch() -> Browser {
        let bin = std::env::var("FULCRUM_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = tempfile::tempdir().unwrap();
        use std::os::unix::process::CommandExt;
        let child = Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{bin}` ({e}): the dashboard test needs Chromium. Run \
                     `scripts/test` (it installs it) or `apt-get install -y chromium`, or set \
                     FULCRUM_CHROMIUM to a Chromium binary"
                )
            });
        let mut browser = Browser {
            child,
            _profile: profile,
            ws_url: String::new(),
        };
        // Chromium writes the port it chose and the browser's websocket path here.
        let port_file = browser._profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    browser.ws_url = format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
                    return browser;
                }
            }
            if let Ok(Some(status)) = browser.child.try_wait() {
                panic!("`{bin}` exited at start-up with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "`{bin}` did not open its DevTools port within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The browser leads its own process group (renderers, zygote, GPU process): kill
        // that group by its id, then reap the browser.
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DevTools connection attached to one page (flat session).
struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: Option<String>,
    /// Uncaught exceptions and console errors of the page, for failure messages.
    page_errors: Vec<String>,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Cdp {
            ws,
            next_id: 0,
            session: None,
            page_errors: Vec::new(),
        }
    }

    /// Sends one command and returns its result; panics on a protocol error.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        let wait = async {
            loop {
                let m = self
                    .ws
                    .next()
                    .await
                    .expect("DevTools connection closed")
                    .unwrap();
                let Message::Text(text) = m else { continue };
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["id"] == json!(id) {
                    if let Some(e) = v.get("error") {
                        panic!("{method} failed: {e}");
                    }
                    return v["result"].clone();
                }
                match v["method"].as_str() {
                    Some("Runtime.exceptionThrown") => self
                        .page_errors
                        .push(v["params"]["exceptionDetails"].to_string()),
                    Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                        self.page_errors.push(v["params"]["args"].to_string())
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer from Chromium within 30 s"))
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value.
    async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("page script `{js}` threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `js` until it is true; panics with `what` (and the page's errors) otherwise.
    async fn wait_for(&mut self, what: &str, within: Duration, js: &str) -> Duration {
        let start = Instant::now();
        loop {
            if self.eval(js).await == json!(true) {
                return start.elapsed();
            }
            if start.elapsed() > within {
                let body = self.eval("document.body.innerText").await;
                panic!(
                    "timed out after {within:?} waiting for {what}\npage text:\n{}\npage errors: {:?}",
                    body.as_str().unwrap_or_default(),
                    self.page_errors
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A real mouse click in the middle of the element `selector` (which must be visible).
    async fn click(&mut self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
             e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
             return r.width > 0 && r.height > 0 ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()",
            sel = json!(selector)
        );
        let at = self.eval(&js).await;
        let (x, y) = match (at[0].as_f64(), at[1].as_f64()) {
            (Some(x), Some(y)) => (x, y),
            _ => panic!("`{selector}` is not on the page or not visible"),
        };
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Types `text` into the focused element, as a keyboard or IME would.
    async fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    async fn text_of(&mut self, selector: &str) -> String {
        let js = format!(
            "(() => {{ const e = document.querySelector({}); return e ? e.innerText : null; }})()",
            json!(selector)
        );
        self.eval(&js)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn screenshot(&mut self) -> Vec<u8> {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap()
    }
}

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
