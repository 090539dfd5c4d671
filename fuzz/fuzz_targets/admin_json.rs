//! The admin API's JSON bodies: every input is sent, in process, as the body of
//! `POST /api/v1/backends/b/servers/s1/maintenance` and of `PUT .../weight` to the admin
//! router fulcrum serves (`fulcrum::admin::router`, Host check, body limit and token in
//! front). No input may panic, and every answer must be one the API documents for a bad or
//! good body: 200, 400, 413, 415 or 422, never another 4xx or a 5xx (the one documented 500,
//! a maintenance change that cannot be saved, cannot happen: the state dir is a writable
//! temporary folder of this process). An answer's body is JSON: `{"ok": true, ...}` for 200,
//! `{"error": "..."}` with a message otherwise.

#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use fulcrum::admin::{self, Limits};
use fulcrum::app::App;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const TOKEN: &str = "fuzz-token";
const SERVER: &str = "/api/v1/backends/b/servers/s1";

/// What every input runs against, built once per process.
struct Fixture {
    rt: tokio::runtime::Runtime,
    router: Router,
    /// Kept so the instance lives as long as the process.
    _app: Arc<App>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let state_dir = state_dir();
        // One backend `b` with two servers, so a server taken out leaves one in; IP literals
        // only (App::build resolves nothing else), and nothing is bound: the router is
        // called directly.
        let text = format!(
            r#"
[global]
state_dir = "{}"

[admin]
bind = "127.0.0.1:9900"
max_maintenance = "24h"

[[frontends]]
name = "www"
bind = "127.0.0.1:8080"
backend = "b"

[backends.b]

[[backends.b.servers]]
name = "s1"
address = "127.0.0.1:9001"

[[backends.b.servers]]
name = "s2"
address = "127.0.0.1:9002"
"#,
            state_dir.display()
        );
        let config = fulcrum::config::parse_str(&text, &state_dir.join("fuzz.toml"))
            .unwrap_or_else(|e| panic!("the fixture's configuration is invalid:\n{e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        let app = rt
            .block_on(App::build(config))
            .expect("the fixture's App builds");
        let router = admin::router(Arc::clone(&app), TOKEN, Limits::default());
        Fixture {
            rt,
            router,
            _app: app,
        }
    })
}

/// A writable folder of this process for the maintenance state file (so the documented 500,
/// "cannot save state", is never a right answer here).
fn state_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fulcrum-fuzz-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary state dir");
    dir
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    f.rt.block_on(async {
        for (method, path) in [
            (Method::POST, format!("{SERVER}/maintenance")),
            (Method::PUT, format!("{SERVER}/weight")),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(&path)
                .header(header::HOST, "127.0.0.1")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(data.to_vec()))
                .expect("a valid request");
            let resp = f
                .router
                .clone()
                .oneshot(req)
                .await
                .unwrap_or_else(|e| match e {});
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .expect("the answer's body is readable")
                .to_bytes();
            let shown = String::from_utf8_lossy(&body);
            assert!(
                [
                    StatusCode::OK,
                    StatusCode::BAD_REQUEST,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    StatusCode::UNPROCESSABLE_ENTITY,
                ]
                .contains(&status),
                "{path}: {status} for body {:?}: {shown}",
                String::from_utf8_lossy(data)
            );
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!("{path}: {status} with a body that is not JSON ({e}): {shown}")
            });
            if status == StatusCode::OK {
                assert_eq!(json["ok"], true, "{path}: 200 without ok: {shown}");
            } else {
                let msg = json["error"].as_str().unwrap_or_default();
                assert!(
                    !msg.trim().is_empty(),
                    "{path}: {status} without an error message: {shown}"
                );
            }
        }
    });
});
