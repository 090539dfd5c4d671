//! Instances see each other: each writes its record under its lease every [`REFRESH`] and
//! reads everyone's.
//!
//! A record that disappears (its lease ended: the instance died, or left) is
//! `instance_down`; a new one is `instance_up`. Every instance compares what it reads with
//! what it read before and queues the alert in the outbox under an id made of the name and
//! the record's creation revision, so however many instances notice, it is sent once (and
//! by the leader, even when the instance that went down was the leader). The first read of
//! a process is the baseline and announces nothing; the baseline survives lost sessions,
//! so members that went while etcd was unreachable are announced once it is back.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};

use super::keys::Record;
use super::outbox;
use super::{Cluster, Host, now, timed};
use crate::events::{Event, EventKind};

/// How often the record is rewritten (`last_seen`, healthy primaries) and the others read.
pub const REFRESH: Duration = Duration::from_millis(500);

/// Members by name: their record and its creation revision.
pub type Seen = BTreeMap<String, (Record, i64)>;

/// Writes this instance's record and reads the others' until an etcd call fails. `seen`
/// lives across sessions (the baseline).
pub async fn run(
    c: &Arc<Cluster>,
    client: &mut Client,
    lease: i64,
    host: &Arc<dyn Host>,
    seen: &tokio::sync::Mutex<Option<Seen>>,
) -> Result<(), String> {
    let mut warned = HashSet::new();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if c.leaving.load(Ordering::Acquire) {
            return Ok(());
        }
        publish(c, client, lease, host.as_ref()).await?;
        let now_seen = read(c, client, &mut warned).await?;
        let mut prev = seen.lock().await;
        if let Some(before) = prev.as_ref() {
            for (id, event) in changes(before, &now_seen) {
                c.events.publish(event.clone());
                outbox::put_once(client, &c.keys, &id, &event).await?;
            }
        }
        c.set_instances(now_seen.values().map(|(r, _)| r.clone()).collect());
        *prev = Some(now_seen);
    }
}

/// Writes this instance's record under its lease.
pub async fn publish(
    c: &Cluster,
    client: &mut Client,
    lease: i64,
    host: &dyn Host,
) -> Result<(), String> {
    let mut r = host.record();
    r.name = c.name().to_string();
    r.version = env!("CARGO_PKG_VERSION").to_string();
    r.last_seen = humantime::format_rfc3339_seconds(now()).to_string();
    let opts = PutOptions::new().with_lease(lease);
    timed(client.put(c.keys.instance(c.name()), r.encode(), Some(opts)))
        .await
        .map(|_| ())
}

async fn read(
    c: &Cluster,
    client: &mut Client,
    warned: &mut HashSet<String>,
) -> Result<Seen, String> {
    let mut resp =
        timed(client.get(c.keys.instances(), Some(GetOptions::new().with_prefix()))).await?;
    let mut out = Seen::new();
    for kv in resp.take_kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        match Record::decode(kv.value()) {
            Ok(r) => {
                out.insert(r.name.clone(), (r, kv.create_revision()));
            }
            Err(why) => {
                if warned.insert(key.clone()) {
                    tracing::warn!(key = %key, "ignoring a malformed instance record in etcd: {why}");
                }
            }
        }
    }
    Ok(out)
}

/// The membership changes from `before` to `after`, each with its outbox id.
pub fn changes(before: &Seen, after: &Seen) -> Vec<(String, Event)> {
    let mut out = Vec::new();
    for (name, (r, rev)) in before {
        if after.get(name).is_none_or(|(_, r2)| r2 != rev) {
            let event = Event::new(
                EventKind::InstanceDown,
                None,
                None,
                format!(
                    "instance {name} (admin {}) left the cluster: its lease ended",
                    r.admin
                ),
            );
            out.push((format!("instance_down-{name}-{rev}"), event));
        }
    }
    for (name, (r, rev)) in after {
        if before.get(name).is_none_or(|(_, r0)| r0 != rev) {
            let event = Event::new(
                EventKind::InstanceUp,
                None,
                None,
                format!(
                    "instance {name} (admin {}, version {}) joined the cluster",
                    r.admin, r.version
                ),
            );
            out.push((format!("instance_up-{name}-{rev}"), event));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(members: &[(&str, i64)]) -> Seen {
        members
            .iter()
            .map(|(n, rev)| {
                let r = Record {
                    name: n.to_string(),
                    ..Record::default()
                };
                (n.to_string(), (r, *rev))
            })
            .collect()
    }

    #[test]
    fn a_record_gone_is_down_a_new_one_up_and_a_recreated_one_both() {
        let before = seen(&[("a", 1), ("b", 2)]);
        let after = seen(&[("b", 2), ("c", 5)]);
        let ids: Vec<String> = changes(&before, &after)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec!["instance_down-a-1", "instance_up-c-5"]);
        let restarted = seen(&[("a", 9), ("b", 2)]);
        let ids: Vec<String> = changes(&before, &restarted)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec!["instance_down-a-1", "instance_up-a-9"]);
        assert!(changes(&before, &before).is_empty());
    }
}
