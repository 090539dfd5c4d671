//! Alerts: every event a webhook asked for is POSTed to it as JSON.
//!
//! One reader of the event bus hands each event to one bounded queue per webhook, without
//! waiting; one task per webhook drains its queue, with a timeout on each POST and a few
//! retries with backoff. A slow or dead webhook therefore only fills its own queue: new
//! alerts for it are then dropped, counted (`fulcrum_alerts_dropped_total`) and logged,
//! and neither the data path nor memory ever notices.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Uri};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::events::{Bus, Event};
use crate::http_client;
use crate::tasks::Tasks;

/// Alerts waiting per webhook. Enough to ride out a receiver restarting during an incident
/// (a burst of a few dozen events), small enough that a dead receiver costs little memory.
pub const QUEUE: usize = 256;
/// How long one POST may take, connection included.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries per alert, and the wait before the first retry (doubling each time): a receiver
/// that blips is retried, one that is down costs at most ~20 s per alert.
pub const ATTEMPTS: u32 = 3;
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// What happened to one webhook's alerts, for metrics.
#[derive(Debug)]
pub struct WebhookStats {
    pub url: String,
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

struct Target {
    stats: Arc<WebhookStats>,
    events: Vec<String>,
    queue: mpsc::Sender<Event>,
}

impl Target {
    fn wants(&self, e: &Event) -> bool {
        wants(&self.events, e)
    }

    fn drop_alerts(&self, n: u64, why: &str) {
        let total = self.stats.dropped.fetch_add(n, Ordering::Relaxed) + n;
        tracing::warn!(webhook = %self.stats.url, dropped_total = total, "{n} alert(s) dropped: {why}");
    }
}

/// Starts the webhook tasks for `cfg` as background tasks of `tasks` (until shutdown or
/// `stop`, which a reload that changes `[alerts]` cancels); returns their counters.
pub fn spawn(
    bus: &Bus,
    cfg: &config::Alerts,
    tasks: &Tasks,
    stop: &CancellationToken,
) -> Vec<Arc<WebhookStats>> {
    spawn_gated(bus, cfg, tasks, stop, Arc::new(|_: &Event| true))
}

/// Decides, per event read from the bus, whether this instance sends it. With `[cluster]`
/// only the leader speaks for the cluster, and shared-state alerts come from etcd instead
/// (see `cluster::outbox`), so the bus reader asks first.
pub type Gate = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

/// [`spawn`], sending only the bus events `gate` lets through.
pub fn spawn_gated(
    bus: &Bus,
    cfg: &config::Alerts,
    tasks: &Tasks,
    stop: &CancellationToken,
    gate: Gate,
) -> Vec<Arc<WebhookStats>> {
    let mut targets = Vec::new();
    for w in &cfg.webhooks {
        let uri: Uri = match w.url.parse() {
            Ok(u) => u,
            Err(e) => {
                // Validation accepts only http:// URLs, so this is a bug, not a user error.
                tracing::error!(url = %w.url, "webhook URL unusable: {e}");
                continue;
            }
        };
        let stats = Arc::new(WebhookStats {
            url: w.url.clone(),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        tasks.spawn_background(deliver(uri, Arc::clone(&stats), rx, stop.clone()));
        targets.push(Target {
            stats,
            events: w.events.clone(),
            queue: tx,
        });
    }
    let stats = targets.iter().map(|t| Arc::clone(&t.stats)).collect();
    if !targets.is_empty() {
        tasks.spawn_background(dispatch(bus.subscribe(), targets, gate, stop.clone()));
    }
    stats
}

/// Reads the bus and queues each event for the webhooks that want it, never waiting.
async fn dispatch(
    mut rx: broadcast::Receiver<Event>,
    targets: Vec<Target>,
    gate: Gate,
    stop: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv() => n,
        };
        match next {
            Ok(e) if !gate(&e) => {}
            Ok(e) => {
                for t in targets.iter().filter(|t| t.wants(&e)) {
                    if let Err(mpsc::error::TrySendError::Full(_)) = t.queue.try_send(e.clone()) {
                        t.drop_alerts(1, "the webhook is not keeping up (queue full)");
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                for t in &targets {
                    t.drop_alerts(n, "the alert reader fell behind the event bus");
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The JSON sent: the event fields of the README's "Alerts" reference plus `text`, one readable line that
/// Slack-compatible receivers (incoming webhooks) display as the message.
pub fn payload(e: &Event) -> Bytes {
    let mut v = serde_json::to_value(e).unwrap_or_else(|_| serde_json::json!({}));
    let place = match (&e.backend, &e.server) {
        (Some(b), Some(s)) => format!(" {b}/{s}"),
        (Some(b), None) => format!(" {b}"),
        _ => String::new(),
    };
    if let Some(map) = v.as_object_mut() {
        map.insert(
            "text".into(),
            format!("[fulcrum] {}{place}: {}", e.event.name(), e.detail).into(),
        );
    }
    Bytes::from(v.to_string())
}

/// Posts one webhook's alerts in order until `stop`.
async fn deliver(
    uri: Uri,
    stats: Arc<WebhookStats>,
    mut rx: mpsc::Receiver<Event>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        if !post(&uri, &stats, &event, &stop).await {
            return;
        }
    }
}

/// Posts `event` to the webhook at `url` now, with the usual timeout and retries, counting
/// the outcome in `stats`; returns once it was delivered or given up on. The cluster's
/// leader calls it for alerts kept in etcd, marking one sent only after this returns.
pub async fn post_now(url: &str, stats: &WebhookStats, event: &Event) {
    match url.parse::<Uri>() {
        Ok(uri) => {
            post(&uri, stats, event, &CancellationToken::new()).await;
        }
        Err(e) => tracing::error!(url = %url, "webhook URL unusable: {e}"),
    }
}

/// Whether webhook entry `events` asks for `e`.
pub fn wants(events: &[String], e: &Event) -> bool {
    events.iter().any(|n| n == "all" || n == e.event.name())
}

/// One alert to one webhook, with retries; false when `stop` came first.
async fn post(uri: &Uri, stats: &WebhookStats, event: &Event, stop: &CancellationToken) -> bool {
    let body = payload(event);
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let result = http_client::call(
            Method::POST,
            uri,
            &[("content-type", "application/json")],
            body.clone(),
            POST_TIMEOUT,
        )
        .await;
        let why = match result {
            Ok(a) if (200..300).contains(&a.status) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Ok(a) => format!("answered {}", a.status),
            Err(e) => e.to_string(),
        };
        if attempt == ATTEMPTS {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(webhook = %stats.url, event = %event.event, "alert not delivered after {ATTEMPTS} tries: {why}");
            return true;
        }
        tracing::debug!(webhook = %stats.url, attempt, "alert delivery failed: {why}; retrying");
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff *= 2;
    }
    true
}
