//! `[global] max_memory` on real sockets. fulcrum runs in this test's process, so its
//! resident memory is the test binary's (tens of MiB): a reload to `max_memory = "1MiB"`
//! puts it far above 98 % (shedding and pausing both), a reload to `"64GiB"` far below.
//!
//! - a request on a connection accepted before gets 503 `overloaded` with `Retry-After`;
//! - a new connection is not accepted meanwhile (its request waits in the backlog) and is
//!   served as soon as the ceiling is raised;
//! - each threshold crossed and left is an `overloaded` event; the status and the
//!   `fulcrum_process_resident_memory_bytes` metric show it.

#[path = "common/admin.rs"]
mod admin_common;
mod common;

use std::time::Duration;

use admin_common::Api;
use common::*;

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: www\r\n\r\n";

/// Rewrites the file's `max_memory` and reloads; the reload must be accepted.
async fn set_max_memory(f: &Fulcrum, path: &std::path::Path, text: &str, to: &str) {
    let new = text.replace("max_memory = \"\"", &format!("max_memory = \"{to}\""));
    assert_ne!(new, text, "the file names max_memory");
    std::fs::write(path, new).unwrap();
    f.app.reload().await.expect("the reload is accepted");
}

/// Requests on `conn` (kept alive) until one is answered `status`, within 5 s.
async fn until_status(conn: &mut RawConn, status: u16) -> RawResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        conn.send(GET).await;
        let r = conn
            .read_response_within(Duration::from_secs(5))
            .await
            .expect("an answer within 5s")
            .expect("an answer before the connection closed");
        if r.status == status {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {} after 5s: {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_max_memory_requests_get_503_overloaded_and_connections_wait() {
    let a = TestServer::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.toml");
    let setup = Setup::new().global("max_memory", "").server(&a, |s| s);
    let text = setup.toml();
    let f = setup.start_from(&path).await;
    let api = Api::new(&f);
    let mut events = f.app.events().subscribe();
    let addr = f.frontend("www");

    // Accepted before the ceiling drops: it stays open and keeps sending requests.
    let mut kept = RawConn::connect(addr).await;
    let ok = until_status(&mut kept, 200).await;
    assert_eq!(ok.text(), "a");

    set_max_memory(&f, &path, &text, "1MiB").await;
    let refused = until_status(&mut kept, 503).await;
    assert_eq!(refused.header("x-fulcrum-error"), Some("overloaded"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.text().contains("overloaded"), "{}", refused.text());
    let hits = a.hits();
    // Still refused, and no server is contacted for it.
    let again = until_status(&mut kept, 503).await;
    assert_eq!(again.header("x-fulcrum-error"), Some("overloaded"));
    assert_eq!(a.hits(), hits);

    let process = api.status().await["process"].clone();
    assert_eq!(process["memory_state"], "pausing", "{process}");
    assert_eq!(process["max_memory_bytes"], 1 << 20, "{process}");
    assert!(process["resident_memory_bytes"].as_u64().unwrap() > 1 << 20);
    let metrics = api.metrics().await;
    let rss = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fulcrum_process_resident_memory_bytes "))
        .expect("the resident memory metric");
    assert!(rss.trim().parse::<u64>().unwrap() > 1 << 20, "{rss}");

    // Above 98 % a new connection is not accepted: its request waits in the backlog.
    let mut waiting = RawConn::connect(addr).await;
    waiting.send(GET).await;
    assert!(
        waiting
            .read_response_within(Duration::from_millis(700))
            .await
            .is_err(),
        "a connection was accepted above 98 % of max_memory"
    );

    set_max_memory(&f, &path, &text, "64GiB").await;
    let served = waiting
        .read_response_within(Duration::from_secs(5))
        .await
        .expect("the waiting connection is accepted once memory is under the ceiling")
        .expect("an answer");
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(until_status(&mut kept, 200).await.text(), "a");
    common::eventually_async("status back to normal", Duration::from_secs(5), || async {
        api.status().await["process"]["memory_state"] == "normal"
    })
    .await;

    // Every threshold crossed and left, once each, in order.
    let mut details = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while details.len() < 4 && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), events.recv()).await {
            Ok(Ok(e)) if e.event == fulcrum::events::EventKind::Overloaded => {
                assert!(e.backend.is_none() && e.server.is_none());
                details.push(e.detail);
            }
            _ => {}
        }
    }
    assert_eq!(details.len(), 4, "{details:?}");
    assert!(
        details[0].contains("above 95 % of max_memory 1MiB"),
        "{details:?}"
    );
    assert!(details[1].contains("above 98 %"), "{details:?}");
    assert!(
        details[2].contains("below 97 % of max_memory 64GiB"),
        "{details:?}"
    );
    assert!(details[3].contains("served again"), "{details:?}");
    f.shutdown().await;
}

#[test]
fn check_rejects_a_max_memory_that_is_no_size_at_its_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = "[global]\nthreads = 1\nmax_memory = \"2 gigs\"\n\n[[frontends]]\nname = \"www\"\n\
                bind = \"127.0.0.1:0\"\nbackend = \"b\"\n\n[[backends.b.servers]]\nname = \"a\"\n\
                address = \"127.0.0.1:1\"\n";
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.toml:3:"), "{err}");
    assert!(err.contains("key `global.max_memory`"), "{err}");
    assert!(err.contains("`2 gigs` is not a size"), "{err}");

    std::fs::write(&path, text.replace("2 gigs", "512")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("at least 1MiB"), "{err}");

    std::fs::write(&path, text.replace("2 gigs", "2GiB")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{summary}");
    assert!(summary.contains("max_memory 2GiB"), "{summary}");
}
