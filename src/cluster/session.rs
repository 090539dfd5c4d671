//! One connected session with etcd, from connecting to the first failure.
//!
//! In order: connect, take a lease, catch up (the whole shared state at the first session,
//! or the watch resumed from the last revision applied, falling back to the whole state if
//! etcd compacted that history away), then four loops at once until one fails: the watch
//! (changes applied as they come), the lease keep-alive, the member record, and the
//! campaign with the leader's duties.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions, WatchStream};

use super::keys::{Kind, SharedWindow, WeightValue};
use super::{CALL_TIMEOUT, Change, Cluster, Host, LEASE_TTL, OP_TIMEOUT, leader, members, timed};
use crate::config::MAX_WEIGHT;

/// Runs one session; returns why it ended.
pub async fn run(c: &Arc<Cluster>, host: &Arc<dyn Host>) -> String {
    match session(c, host).await {
        Ok(()) => "the session ended".into(),
        Err(e) => e,
    }
}

async fn session(c: &Arc<Cluster>, host: &Arc<dyn Host>) -> Result<(), String> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(OP_TIMEOUT)
        .with_timeout(CALL_TIMEOUT)
        // HTTP/2 pings find a silent etcd (a partition that drops packets) in 2 + 5 s; a
        // shorter timeout took a busy machine's late answer for an outage.
        .with_keep_alive(Duration::from_secs(2), CALL_TIMEOUT);
    let mut client = timed(Client::connect(&c.endpoints, Some(opts))).await?;
    let ttl = i64::try_from(LEASE_TTL.as_secs()).unwrap_or(3);
    let lease = timed(client.lease_grant(ttl, None)).await?.id();
    members::publish(c, &mut client, lease, host.as_ref()).await?;
    let watch = catch_up(c, &mut client, host.as_ref()).await?;
    c.connected(client.clone(), lease);
    let (mut k, mut m, mut l) = (client.clone(), client.clone(), client);
    tokio::try_join!(
        watching(c, watch, host.as_ref()),
        keep_alive(&mut k, lease),
        members::run(c, &mut m, lease, host, &c.seen),
        leader::run(c, &mut l, lease, host),
    )
    .map(|_| ())
}

/// Brings this instance up to date and returns a watch from the next revision.
async fn catch_up(
    c: &Cluster,
    client: &mut Client,
    host: &dyn Host,
) -> Result<WatchStream, String> {
    let last = c.revision.load(Ordering::Acquire);
    if last > 0 {
        let mut watch = start_watch(c, client, last + 1).await?;
        // A watch from a compacted revision is cancelled at once with the reason.
        match tokio::time::timeout(Duration::from_millis(300), watch.message()).await {
            Ok(Ok(Some(r))) if r.canceled() || r.compact_revision() > 0 => {
                tracing::warn!(
                    "etcd compacted the history after revision {last}; reading the whole shared state"
                );
            }
            Ok(Ok(Some(r))) => {
                apply_events(c, host, &r).await;
                return Ok(watch);
            }
            Ok(Ok(None)) => return Err("the watch ended at once".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Ok(watch),
        }
    }
    let revision = snapshot(c, client, host).await?;
    start_watch(c, client, revision + 1).await
}

async fn start_watch(c: &Cluster, client: &mut Client, from: i64) -> Result<WatchStream, String> {
    let opts = WatchOptions::new().with_prefix().with_start_revision(from);
    timed(client.watch(c.keys.all(), Some(opts))).await
}

/// Reads every window and weight at once and applies them; returns the revision read.
async fn snapshot(c: &Cluster, client: &mut Client, host: &dyn Host) -> Result<i64, String> {
    let mut resp = timed(client.get(c.keys.all(), Some(GetOptions::new().with_prefix()))).await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let (mut windows, mut weights) = (Vec::new(), Vec::new());
    let kvs = resp.take_kvs();
    let others = kvs.iter().any(|kv| {
        let key = String::from_utf8_lossy(kv.key());
        key.starts_with(&c.keys.instances()) && *key != c.keys.instance(c.name())
    });
    for kv in kvs {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        match c.keys.kind(&key) {
            Some(Kind::Window { backend, server }) => match SharedWindow::decode(kv.value()) {
                Ok(w) => windows.push((backend, server, w)),
                Err(why) => malformed(&key, &why),
            },
            Some(Kind::Weight { backend, server }) => {
                match WeightValue::decode(kv.value(), MAX_WEIGHT) {
                    Ok(w) => weights.push((backend, server, w)),
                    Err(why) => malformed(&key, &why),
                }
            }
            _ => {}
        }
    }
    // The first instance of a new cluster (etcd holds no window and no other member) brings
    // the windows it restored from its state file, rather than ending them: switching a
    // running fulcrum to [cluster] keeps its servers in maintenance.
    let mut revision = revision;
    if c.revision.load(Ordering::Acquire) == 0 && windows.is_empty() && !others {
        for (backend, server, w) in host.windows() {
            let key = c.keys.window(&backend, &server);
            let txn = etcd_client::Txn::new()
                .when([super::absent(key.clone())])
                .and_then([etcd_client::TxnOp::put(key, w.encode(), None)]);
            let done = timed(client.txn(txn)).await?;
            revision = revision.max(done.header().map_or(0, |h| h.revision()));
            tracing::info!(backend = %backend, server = %server, "maintenance window brought into the cluster from the state file");
            windows.push((backend, server, w));
        }
    }
    host.apply(Change::Snapshot { windows, weights }).await;
    c.revision.store(revision, Ordering::Release);
    Ok(revision)
}

fn malformed(key: &str, why: &str) {
    tracing::warn!(key = %key, "ignoring a malformed value in etcd: {why}");
}

/// Applies watched changes until the watch fails.
async fn watching(c: &Cluster, mut watch: WatchStream, host: &dyn Host) -> Result<(), String> {
    loop {
        match watch.message().await {
            Ok(Some(r)) if r.canceled() => {
                return Err(format!("etcd cancelled the watch: {}", r.cancel_reason()));
            }
            Ok(Some(r)) => apply_events(c, host, &r).await,
            Ok(None) => return Err("the watch ended".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn apply_events(c: &Cluster, host: &dyn Host, r: &etcd_client::WatchResponse) {
    for e in r.events() {
        let Some(kv) = e.kv() else { continue };
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let change = match (c.keys.kind(&key), e.event_type()) {
            (Some(Kind::Window { backend, server }), EventType::Put) => {
                match SharedWindow::decode(kv.value()) {
                    Ok(w) => Some(Change::Window {
                        backend,
                        server,
                        window: Some(w),
                    }),
                    Err(why) => {
                        malformed(&key, &why);
                        None
                    }
                }
            }
            (Some(Kind::Window { backend, server }), EventType::Delete) => Some(Change::Window {
                backend,
                server,
                window: None,
            }),
            (Some(Kind::Weight { backend, server }), EventType::Put) => {
                match WeightValue::decode(kv.value(), MAX_WEIGHT) {
                    Ok(weight) => Some(Change::Weight {
                        backend,
                        server,
                        weight,
                    }),
                    Err(why) => {
                        malformed(&key, &why);
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(change) = change {
            host.apply(change).await;
        }
        c.revision.fetch_max(kv.mod_revision(), Ordering::AcqRel);
    }
}

/// Keeps the lease alive (three times per TTL) until etcd stops answering or the lease is gone.
async fn keep_alive(client: &mut Client, lease: i64) -> Result<(), String> {
    let (mut keeper, mut stream) = timed(client.lease_keep_alive(lease)).await?;
    let mut tick = tokio::time::interval(LEASE_TTL / 3);
    loop {
        tick.tick().await;
        timed(keeper.keep_alive()).await?;
        match timed(stream.message()).await? {
            Some(r) if r.ttl() > 0 => {}
            Some(_) => return Err("this instance's lease expired".into()),
            None => return Err("the lease keep-alive stream ended".into()),
        }
    }
}
