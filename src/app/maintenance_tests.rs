//! The maintenance service on tokio's paused clock: expiry, reminders, ending by hand and
//! restoring saved windows, without sleeping.

use super::*;
use crate::events::EventKind;
use crate::pool::Health;
use tokio::sync::broadcast;

async fn app(dir: &std::path::Path) -> Arc<App> {
    let text = format!(
        "[global]\nstate_dir = \"{}\"\n[alerts]\nremind_every = \"10m\"\n\
         [[frontends]]\nname = \"f\"\nbind = \"127.0.0.1:0\"\nbackend = \"b\"\n\
         [[backends.b.servers]]\nname = \"s1\"\naddress = \"127.0.0.1:1\"\n\
         [[backends.b.servers]]\nname = \"s2\"\naddress = \"127.0.0.1:2\"\n",
        dir.display()
    );
    let cfg = crate::config::parse_str(&text, &dir.join("f.toml")).unwrap();
    let app = App::build(cfg).await.unwrap();
    let b = app.backend("b").unwrap();
    for s in b.snapshot().servers.iter() {
        s.set_health(Health::Up);
    }
    b.rebuild();
    app
}

fn in_rotation(b: &Backend, name: &str) -> bool {
    b.snapshot()
        .candidates
        .iter()
        .any(|c| &*c.server.name == name)
}

/// The next event and how long after `t0` it came (the clock is paused: exact).
/// Capacity alarms (issue 3's panic guard) accompany maintenance; these tests are about
/// the maintenance events themselves, so they skip them.
async fn next(rx: &mut broadcast::Receiver<Event>, t0: Instant) -> (EventKind, Duration) {
    loop {
        let e = rx.recv().await.unwrap();
        if !matches!(
            e.event,
            EventKind::CapacityLow | EventKind::CapacityRestored
        ) {
            return (e.event, t0.elapsed());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn expires_on_time_with_reminders_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let (b, s) = app.find_server("b/s1").unwrap();
    let mut rx = app.events.subscribe();
    tokio::spawn(run(Arc::clone(&app)));
    let t0 = Instant::now();
    app.start_maintenance(&b, &s, Duration::from_secs(25 * 60), "disk".into())
        .await
        .unwrap();
    assert!(!in_rotation(&b, "s1") && in_rotation(&b, "s2"));
    let min = |m: u64| Duration::from_secs(m * 60);
    assert_eq!(
        next(&mut rx, t0).await,
        (EventKind::MaintenanceStarted, min(0))
    );
    assert_eq!(
        next(&mut rx, t0).await,
        (EventKind::MaintenanceReminder, min(10))
    );
    assert_eq!(
        next(&mut rx, t0).await,
        (EventKind::MaintenanceReminder, min(20))
    );
    assert_eq!(
        next(&mut rx, t0).await,
        (EventKind::MaintenanceExpired, min(25))
    );
    assert!(in_rotation(&b, "s1"));
    assert!(s.maintenance.window().is_none());
    // Nothing is out by hand any more: no further reminder.
    let quiet = tokio::time::timeout(min(60), next(&mut rx, t0)).await;
    assert!(quiet.is_err(), "unexpected event {quiet:?}");
    assert_eq!(state_file::load(dir.path()).unwrap(), Vec::new());
}

#[tokio::test(start_paused = true)]
async fn ended_by_hand_never_expires_later() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let (b, s) = app.find_server("s1").unwrap();
    let mut rx = app.events.subscribe();
    tokio::spawn(run(Arc::clone(&app)));
    let t0 = Instant::now();
    app.start_maintenance(&b, &s, Duration::from_secs(60), String::new())
        .await
        .unwrap();
    assert_eq!(state_file::load(dir.path()).unwrap().len(), 1);
    assert!(
        app.end_maintenance(&b, &s, End::Ended)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        app.end_maintenance(&b, &s, End::Ended)
            .await
            .unwrap()
            .is_none(),
        "ends once"
    );
    assert_eq!(next(&mut rx, t0).await.0, EventKind::MaintenanceStarted);
    assert_eq!(next(&mut rx, t0).await.0, EventKind::MaintenanceEnded);
    assert!(in_rotation(&b, "s1"));
    let quiet = tokio::time::timeout(Duration::from_secs(3600), next(&mut rx, t0)).await;
    assert!(quiet.is_err(), "unexpected event {quiet:?}");
}

#[tokio::test(start_paused = true)]
async fn restore_keeps_running_windows_and_ends_expired_ones() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let entry = |server: &str, until| Entry {
        backend: "b".into(),
        server: server.into(),
        since: now - Duration::from_secs(7200),
        until,
        reason: format!("{server} work"),
    };
    state_file::save(
        dir.path(),
        &[
            entry("s1", now - Duration::from_secs(60)),
            entry("s2", now + Duration::from_secs(3600)),
            entry("gone", now + Duration::from_secs(3600)),
        ],
    )
    .unwrap();
    let app = app(dir.path()).await;
    let mut rx = app.events.subscribe();
    app.restore_maintenance().await;
    let e = rx.try_recv().unwrap();
    assert_eq!(
        (e.event, e.server.as_deref()),
        (EventKind::MaintenanceExpired, Some("s1"))
    );
    let b = app.backend("b").unwrap();
    assert!(in_rotation(&b, "s1") && !in_rotation(&b, "s2"));
    let w = b.server("s2").unwrap().maintenance.window().unwrap();
    assert_eq!(w.reason, "s2 work");
    let saved = state_file::load(dir.path()).unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].server, "s2");
}

/// A state directory that cannot be made (a regular file stands where it should be).
fn unsaveable(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    file.join("state")
}

#[tokio::test(start_paused = true)]
async fn a_change_that_cannot_be_saved_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&unsaveable(dir.path())).await;
    let (b, s) = app.find_server("b/s1").unwrap();
    let mut rx = app.events.subscribe();
    let e = app
        .start_maintenance(&b, &s, Duration::from_secs(60), "disk".into())
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("cannot save state: "), "{e}");
    assert!(in_rotation(&b, "s1") && s.maintenance.window().is_none());
    assert!(rx.try_recv().is_err(), "no event for a change not made");
}

#[tokio::test(start_paused = true)]
async fn ending_by_hand_unsaved_keeps_the_window_but_expiry_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let (b, s) = app.find_server("b/s1").unwrap();
    app.start_maintenance(&b, &s, Duration::from_secs(60), String::new())
        .await
        .unwrap();
    // The state directory becomes unwritable: a regular file takes its place.
    std::fs::remove_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path(), "").unwrap();
    let mut rx = app.events.subscribe();
    assert!(app.end_maintenance(&b, &s, End::Ended).await.is_err());
    assert!(!in_rotation(&b, "s1") && s.maintenance.window().is_some());
    assert!(rx.try_recv().is_err(), "no event for a change not made");
    let t0 = Instant::now();
    tokio::spawn(run(Arc::clone(&app)));
    assert_eq!(
        next(&mut rx, t0).await,
        (EventKind::MaintenanceExpired, Duration::from_secs(60))
    );
    assert!(in_rotation(&b, "s1"));
    std::fs::remove_file(dir.path()).unwrap();
}
