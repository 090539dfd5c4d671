//! Unit tests of ejection, its guard and slow start on a real `Backend`, with tokio's paused
//! clock so that 30-second ejections and ramps take no time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::Receiver;

use super::{Backend, Health, Server, ServerState, outlier};
use crate::config;
use crate::events::{Bus, Event, EventKind};

fn backend(servers: usize, extra: &str) -> (Arc<Backend>, Receiver<Event>) {
    let mut text = format!("{extra}\n");
    for i in 0..servers {
        text += &format!(
            "[[servers]]\nname = \"s{i}\"\naddress = \"127.0.0.1:{}\"\n",
            10000 + i
        );
    }
    let cfg: config::Backend = toml::from_str(&text).expect("test backend parses");
    let built: Vec<Arc<Server>> = cfg
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Arc::new(Server::new(
                "b",
                s,
                ([127, 0, 0, 1], 10000 + i as u16).into(),
            ))
        })
        .collect();
    let bus = Bus::new();
    let rx = bus.subscribe();
    let b = Backend::new("b", cfg, built, bus, crate::tasks::Tasks::new());
    for s in b.snapshot().servers.iter() {
        s.set_health(Health::Up);
    }
    b.rebuild();
    (b, rx)
}

fn fail(b: &Backend, name: &str, times: u32) {
    let s = b.server(name).expect("server exists");
    for _ in 0..times {
        outlier::record(b, &s, outlier::Outcome::Status(500));
    }
}

fn drain(rx: &mut Receiver<Event>) -> Vec<Event> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

fn state(b: &Backend, name: &str) -> ServerState {
    b.server(name).map(|s| s.state()).expect("server exists")
}

#[tokio::test(start_paused = true)]
async fn ejected_after_consecutive_failures_and_back_after_base_ejection() {
    let (b, mut rx) = backend(3, "");
    fail(&b, "s0", 4);
    assert_eq!(state(&b, "s0"), ServerState::Up, "4 of 5 failures");
    outlier::record(&b, &b.server("s0").expect("s0"), outlier::Outcome::Success);
    fail(&b, "s0", 4);
    assert_eq!(
        state(&b, "s0"),
        ServerState::Up,
        "a success resets the streak"
    );
    fail(&b, "s0", 1);
    assert_eq!(state(&b, "s0"), ServerState::Ejected);
    assert_eq!(b.snapshot().candidates.len(), 2, "out of rotation");
    let ev = drain(&mut rx);
    let ejected = ev.iter().find(|e| e.event == EventKind::ServerEjected);
    assert!(ejected.is_some_and(|e| e.detail.contains("30s")), "{ev:?}");

    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(state(&b, "s0"), ServerState::Ejected);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state(&b, "s0"), ServerState::Starting, "back, ramping up");
    assert_eq!(b.snapshot().candidates.len(), 3);
    let ev = drain(&mut rx);
    assert!(
        ev.iter()
            .any(|e| e.event == EventKind::ServerUp && e.detail.contains("ejection")),
        "{ev:?}"
    );

    // The second ejection lasts twice as long.
    fail(&b, "s0", 5);
    assert_eq!(state(&b, "s0"), ServerState::Ejected);
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert_eq!(state(&b, "s0"), ServerState::Ejected, "60s this time");
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_ne!(state(&b, "s0"), ServerState::Ejected);
}

#[tokio::test(start_paused = true)]
async fn never_more_than_max_ejection_percent() {
    let (b, mut rx) = backend(2, "");
    fail(&b, "s0", 5);
    fail(&b, "s1", 5);
    assert_eq!(state(&b, "s0"), ServerState::Ejected);
    assert_eq!(state(&b, "s1"), ServerState::Up, "50% of 2 is one server");
    let ejections = drain(&mut rx)
        .into_iter()
        .filter(|e| e.event == EventKind::ServerEjected)
        .count();
    assert_eq!(ejections, 1);
}

#[tokio::test(start_paused = true)]
async fn never_the_last_server_that_can_serve() {
    let (b, _rx) = backend(2, "[outlier]\nmax_ejection_percent = 100");
    fail(&b, "s0", 5);
    fail(&b, "s1", 5);
    assert_eq!(state(&b, "s0"), ServerState::Ejected);
    assert_eq!(
        state(&b, "s1"),
        ServerState::Up,
        "fail open: the last one stays"
    );

    let (one, _rx) = backend(1, "[outlier]\nmax_ejection_percent = 100");
    fail(&one, "s0", 50);
    assert_eq!(state(&one, "s0"), ServerState::Up);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_zero_turns_ejection_off() {
    let (b, _rx) = backend(2, "[outlier]\nconsecutive_failures = 0");
    fail(&b, "s0", 100);
    assert_eq!(state(&b, "s0"), ServerState::Up);
}

/// The share of picks that go to `name` over `n` acquisitions.
fn share(b: &Backend, name: &str, n: usize) -> f64 {
    let req = crate::balance::Request::connection([127, 0, 0, 1].into());
    let hits = (0..n)
        .filter(|_| {
            b.acquire(&req, &[])
                .map(|slot| &*slot.server().name == name)
                .unwrap_or(false)
        })
        .count();
    hits as f64 / n as f64
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_the_share_linearly() {
    let (b, _rx) = backend(2, "slow_start = \"10s\"");
    assert!(
        (share(&b, "s1", 1000) - 0.5).abs() < 0.01,
        "even at start-up"
    );
    let s1 = b.server("s1").expect("s1");
    s1.start_ramp(Duration::from_secs(10));
    b.rebuild();
    assert_eq!(s1.state(), ServerState::Starting);
    let early = share(&b, "s1", 1100);
    assert!(
        (early - 2.0 / 22.0).abs() < 0.02,
        "starts at 10% weight: {early}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    b.rebuild();
    let mid = share(&b, "s1", 1000);
    // factor 0.55 -> weight 11 of 20: 11/31
    assert!((mid - 11.0 / 31.0).abs() < 0.03, "half way: {mid}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    // The ticker has rebuilt by now without being asked.
    assert_eq!(s1.state(), ServerState::Up);
    let full = share(&b, "s1", 1000);
    assert!((full - 0.5).abs() < 0.01, "full share: {full}");
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_max_connections() {
    let (b, _rx) = backend(1, "slow_start = \"10s\"");
    let s0 = b.server("s0").expect("s0");
    s0.set_max_connections(100);
    s0.start_ramp(Duration::from_secs(10));
    assert_eq!(s0.effective_max_connections(), 10);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(s0.effective_max_connections(), 55);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(s0.effective_max_connections(), 100);
}

#[tokio::test(start_paused = true)]
async fn capacity_low_names_the_missing_and_restored_follows() {
    let (b, mut rx) = backend(3, "min_healthy = 3");
    drain(&mut rx);
    let s1 = b.server("s1").expect("s1");
    s1.set_health(Health::Down);
    b.rebuild();
    let ev = drain(&mut rx);
    let low = ev.iter().find(|e| e.event == EventKind::CapacityLow);
    assert!(
        low.is_some_and(|e| e.detail.contains("only 2 of 3") && e.detail.contains("s1 down")),
        "{ev:?}"
    );
    fail(&b, "s2", 5);
    let ev = drain(&mut rx);
    let low = ev.iter().find(|e| e.event == EventKind::CapacityLow);
    assert!(
        low.is_some_and(|e| e.detail.contains("s2 ejected")),
        "a further drop is announced: {ev:?}"
    );
    assert_eq!(
        b.snapshot().candidates.len(),
        1,
        "still serving with what is left"
    );
    s1.set_health(Health::Up);
    b.rebuild();
    tokio::time::sleep(Duration::from_secs(31)).await;
    let ev = drain(&mut rx);
    assert!(
        ev.iter().any(|e| e.event == EventKind::CapacityRestored),
        "{ev:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_ejection_multiplier_starts_again_after_a_quiet_spell() {
    let (b, mut rx) = backend(3, "");
    let ejected_for = |rx: &mut Receiver<Event>| {
        drain(rx)
            .into_iter()
            .find(|e| e.event == EventKind::ServerEjected)
            .map(|e| e.detail)
            .expect("an ejection")
    };
    fail(&b, "s0", 5);
    assert!(ejected_for(&mut rx).contains("ejected for 30s"));
    tokio::time::sleep(Duration::from_secs(31)).await;
    fail(&b, "s0", 5);
    assert!(
        ejected_for(&mut rx).contains("ejected for 1m"),
        "second in a row: 60s"
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    // In service longer than the longest ejection (10 × 30s): the streak starts again.
    tokio::time::sleep(Duration::from_secs(301)).await;
    fail(&b, "s0", 5);
    assert!(
        ejected_for(&mut rx).contains("ejected for 30s"),
        "back to base"
    );
}
