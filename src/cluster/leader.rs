//! One leader per cluster: the instance whose name the lease-bound `leader` key holds.
//!
//! Why a key created in a transaction rather than home-made consensus: etcd already is the
//! consensus; the key exists at most once, vanishes with its holder's lease, and the next
//! instance to try creates it. Every instance tries every [`TICK`], so a new leader is
//! chosen within the lease time plus one tick.
//!
//! The leader's duties, all driven by what etcd holds (so a new leader simply carries on):
//! windows that ran out are removed with their `maintenance_expired` alert in one
//! transaction (guarded by the window's revision, so it expires exactly once), reminders
//! are queued when `remind_every` has passed since the last one (a mark in etcd says
//! when), and the outbox is sent.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::keys::{self, SharedWindow};
use super::outbox::{self, Sender};
use super::{Cluster, Host, absent, now, timed};
use crate::events::{Event, EventKind};

/// How often leadership is checked and the leader's duties done: a window runs out and is
/// announced within this.
pub const TICK: Duration = Duration::from_millis(250);

/// Campaigns and, while leading, does the leader's duties, until an etcd call fails.
pub async fn run(
    c: &Arc<Cluster>,
    client: &mut Client,
    lease: i64,
    host: &Arc<dyn Host>,
) -> Result<(), String> {
    let mut sender = Sender::default();
    let mut warned = HashSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let leader = campaign(c, client, lease).await?;
        let me = leader.as_deref() == Some(c.name());
        c.set_leader(leader);
        if me {
            duties(c, client, host.as_ref(), &mut warned).await?;
            sender.drain(client, &c.keys, host.as_ref()).await?;
        }
    }
}

/// Creates the leader key if nobody holds it; returns who does.
async fn campaign(c: &Cluster, client: &mut Client, lease: i64) -> Result<Option<String>, String> {
    let key = c.keys.leader();
    let txn = Txn::new()
        .when([absent(key.clone())])
        .and_then([TxnOp::put(
            key.clone(),
            c.name(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key, None)]);
    let resp = timed(client.txn(txn)).await?;
    if resp.succeeded() {
        return Ok(Some(c.name().to_string()));
    }
    for op in resp.op_responses() {
        if let TxnOpResponse::Get(g) = op {
            return Ok(g
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()));
        }
    }
    Ok(None)
}

/// Expires due windows and queues due reminders.
async fn duties(
    c: &Cluster,
    client: &mut Client,
    host: &dyn Host,
    warned: &mut HashSet<String>,
) -> Result<(), String> {
    let k = &c.keys;
    let mut windows = timed(client.get(k.windows(), Some(GetOptions::new().with_prefix()))).await?;
    let mut marks = timed(client.get(k.reminders(), Some(GetOptions::new().with_prefix()))).await?;
    let marks: BTreeMap<(String, String), (std::time::SystemTime, i64)> = marks
        .take_kvs()
        .into_iter()
        .filter_map(|kv| {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let at = keys::from_millis(kv.value())?;
            Some((k.reminded_of(&key)?, (at, kv.mod_revision())))
        })
        .collect();
    let remind_every = host.remind_every();
    let t = now();
    for kv in windows.take_kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let Some(keys::Kind::Window { backend, server }) = k.kind(&key) else {
            continue;
        };
        let w = match SharedWindow::decode(kv.value()) {
            Ok(w) => w,
            Err(why) => {
                if warned.insert(key.clone()) {
                    tracing::warn!(key = %key, "ignoring a malformed maintenance window in etcd: {why}");
                }
                continue;
            }
        };
        if w.until <= t {
            let held = t.duration_since(w.since).unwrap_or_default();
            let event = Event::new(
                EventKind::MaintenanceExpired,
                Some(&backend),
                Some(&server),
                format!(
                    "maintenance window ran out after {}; back in rotation subject to health \
                     on every instance",
                    humantime::format_duration(secs(held))
                ),
            );
            let id = format!("expired-{backend}-{server}-{}", kv.mod_revision());
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([
                    TxnOp::delete(key, None),
                    TxnOp::delete(k.reminded(&backend, &server), None),
                    outbox::put_op(k, &id, &event),
                ]);
            timed(client.txn(txn)).await?;
            continue;
        }
        let (last, mark_rev) = marks
            .get(&(backend.clone(), server.clone()))
            .map_or((w.since, 0), |&(at, rev)| (at.max(w.since), rev));
        if t.duration_since(last).unwrap_or_default() < remind_every {
            continue;
        }
        let reason = if w.reason.is_empty() {
            "no reason given".to_string()
        } else {
            w.reason.clone()
        };
        let event = Event::new(
            EventKind::MaintenanceReminder,
            Some(&backend),
            Some(&server),
            format!(
                "still out of rotation by hand ({reason}): out for {}, back in {}",
                humantime::format_duration(secs(t.duration_since(w.since).unwrap_or_default())),
                humantime::format_duration(secs(w.until.duration_since(t).unwrap_or_default()))
            ),
        );
        let mark = k.reminded(&backend, &server);
        let id = format!("remind-{backend}-{server}-{}", keys::millis(t));
        let txn = Txn::new()
            .when([Compare::mod_revision(
                mark.clone(),
                CompareOp::Equal,
                mark_rev,
            )])
            .and_then([
                TxnOp::put(mark, keys::millis(t).to_string(), None),
                outbox::put_op(k, &id, &event),
            ]);
        timed(client.txn(txn)).await?;
    }
    Ok(())
}

fn secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}
