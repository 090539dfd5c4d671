//! Active health checks through the real data path: a server leaves after `fall` failed
//! checks and comes back after `rise` passed ones; backups take over and hand back.
mod common;

use std::time::{Duration, Instant};

use common::*;

use fulcrum::pool::Health;

/// These tests are about the health thresholds: a server that comes back takes its full
/// share at once instead of ramping up (slow start has its own tests in protect.rs).
fn no_slow_start(b: Backend) -> Backend {
    b.slow_start("0s")
}

/// Sends `n` requests and returns the bodies (server names).
async fn answers(c: &reqwest::Client, url: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (status, body, _) = get(c, url).await;
        assert_eq!(status, 200, "body: {body}");
        out.push(body);
    }
    out
}

#[tokio::test]
async fn server_goes_down_after_fall_and_up_after_rise() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    // interval 100ms, rise 2, fall 2.
    let f = Setup::new()
        .backend("b", no_slow_start)
        .servers(&[&a, &b])
        .start()
        .await;
    let url = format!("http://{}/", f.frontend("www"));
    let c = client();
    let live = live_server(&f, "a");
    assert_eq!(live.health(), Health::Up);
    let seen = answers(&c, &url, 4).await;
    assert!(seen.contains(&"a".to_string()), "{seen:?}");

    // Down: only after 2 consecutive failed checks, i.e. at least one interval after the
    // flag flips; well within a couple of seconds.
    let (_, failed_before) = live.check_counts();
    a.set_healthy(false);
    let t0 = Instant::now();
    eventually("a is marked down", Duration::from_secs(5), || {
        let (_, failed) = live.check_counts();
        let down = live.health() == Health::Down;
        // Never down before `fall` failed checks (the count is written before the state).
        assert!(
            !down || failed - failed_before >= 2,
            "down after {} failed check(s)",
            failed - failed_before
        );
        down
    })
    .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(95),
        "down after {took:?}: sooner than two checks 100ms apart"
    );
    assert!(took < Duration::from_secs(3), "down only after {took:?}");
    let hits = a.hits();
    let seen = answers(&c, &url, 6).await;
    assert!(seen.iter().all(|s| s == "b"), "{seen:?}");
    assert_eq!(a.hits(), hits, "a down must get no traffic");

    // Up again: after 2 consecutive passed checks.
    let (ok_before, _) = live.check_counts();
    a.set_healthy(true);
    let t0 = Instant::now();
    eventually("a is marked up", Duration::from_secs(5), || {
        let (ok, _) = live.check_counts();
        let up = live.health() == Health::Up;
        assert!(
            !up || ok - ok_before >= 2,
            "up after {} passed check(s)",
            ok - ok_before
        );
        up
    })
    .await;
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(95), "up after {took:?}");
    assert!(took < Duration::from_secs(3), "up only after {took:?}");
    let seen = answers(&c, &url, 6).await;
    assert_eq!(seen.iter().filter(|s| *s == "a").count(), 3, "{seen:?}");
    f.shutdown().await;
}

/// A server whose process is gone (connection refused) fails its checks like a sick one.
#[tokio::test]
async fn stopped_server_is_taken_out() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let f = Setup::new().servers(&[&a, &b]).start().await;
    let url = format!("http://{}/", f.frontend("www"));
    let c = client();
    a.stop();
    let live = live_server(&f, "a");
    eventually("a is marked down", Duration::from_secs(5), || {
        live.health() == Health::Down
    })
    .await;
    let seen = answers(&c, &url, 6).await;
    assert!(seen.iter().all(|s| s == "b"), "{seen:?}");
    // Back on the same address: it rejoins.
    let a2 = TestServer::restart("a", a.addr).await;
    eventually_async("a serves again", Duration::from_secs(5), || async {
        get(&c, &url).await.1 == "a"
    })
    .await;
    assert!(a2.hits() >= 1);
    f.shutdown().await;
}

/// A server that fails its very first check never receives a request.
#[tokio::test]
async fn first_check_decides_at_start() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    a.set_healthy(false);
    let f = Setup::new().servers(&[&a, &b]).start().await;
    assert_eq!(live_server(&f, "a").health(), Health::Down);
    assert_eq!(live_server(&f, "b").health(), Health::Up);
    let url = format!("http://{}/", f.frontend("www"));
    let seen = answers(&client(), &url, 4).await;
    assert!(seen.iter().all(|s| s == "b"), "{seen:?}");
    assert_eq!(a.hits(), 0);
    f.shutdown().await;
}

/// Primaries all down: the (first) backup serves; one primary back: the backup stops
/// getting traffic.
#[tokio::test]
async fn backup_takes_over_and_hands_back() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let c1 = TestServer::start("c").await;
    let d = TestServer::start("d").await;
    let f = Setup::new()
        .servers(&[&a, &b])
        .server(&c1, |s| s.backup())
        .server(&d, |s| s.backup())
        .start()
        .await;
    let url = format!("http://{}/", f.frontend("www"));
    let c = client();
    let seen = answers(&c, &url, 4).await;
    assert!(seen.iter().all(|s| s == "a" || s == "b"), "{seen:?}");
    assert_eq!(
        c1.hits() + d.hits(),
        0,
        "backups idle while primaries are up"
    );

    a.set_healthy(false);
    b.set_healthy(false);
    eventually_async("the backup serves", Duration::from_secs(5), || async {
        get(&c, &url).await.1 == "c"
    })
    .await;
    let seen = answers(&c, &url, 6).await;
    assert!(
        seen.iter().all(|s| s == "c"),
        "only the first backup serves without all_backups: {seen:?}"
    );
    assert_eq!(d.hits(), 0);

    a.set_healthy(true);
    eventually_async("a primary serves again", Duration::from_secs(5), || async {
        get(&c, &url).await.1 == "a"
    })
    .await;
    let backup_hits = c1.hits();
    let seen = answers(&c, &url, 6).await;
    assert!(seen.iter().all(|s| s == "a"), "{seen:?}");
    assert_eq!(c1.hits(), backup_hits, "the backup handed back");
    f.shutdown().await;
}

/// `all_backups = true` balances over every healthy backup.
#[tokio::test]
async fn all_backups_balances_over_backups() {
    let a = TestServer::start("a").await;
    let c1 = TestServer::start("c").await;
    let d = TestServer::start("d").await;
    a.set_healthy(false);
    let f = Setup::new()
        .backend("b", |b| b.all_backups(true))
        .servers(&[&a])
        .server(&c1, |s| s.backup())
        .server(&d, |s| s.backup())
        .start()
        .await;
    let url = format!("http://{}/", f.frontend("www"));
    let seen = answers(&client(), &url, 6).await;
    assert_eq!(seen.iter().filter(|s| *s == "c").count(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| *s == "d").count(), 3, "{seen:?}");
    assert_eq!(a.hits(), 0);
    f.shutdown().await;
}

/// Without `all_backups` a sick first backup passes the role to the next one.
#[tokio::test]
async fn next_backup_when_first_backup_is_down() {
    let a = TestServer::start("a").await;
    let c1 = TestServer::start("c").await;
    let d = TestServer::start("d").await;
    a.set_healthy(false);
    c1.set_healthy(false);
    let f = Setup::new()
        .servers(&[&a])
        .server(&c1, |s| s.backup())
        .server(&d, |s| s.backup())
        .start()
        .await;
    let url = format!("http://{}/", f.frontend("www"));
    let seen = answers(&client(), &url, 4).await;
    assert!(seen.iter().all(|s| s == "d"), "{seen:?}");
    f.shutdown().await;
}
