//! Alerts about shared state wait in etcd until the leader has sent them.
//!
//! Why: "send, then mark sent" is the only order in which a leader dying midway loses
//! nothing: an alert is written in the same transaction as the change it announces (or,
//! for membership changes, by every instance that saw it, under one id so only the first
//! write counts); the leader posts it, then deletes it and leaves a `sent/` mark in the
//! same transaction. A new leader finds whatever the old one had not marked and sends it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use etcd_client::{Client, GetOptions, PutOptions, Txn, TxnOp};

use super::keys::{Keys, OutboxEntry};
use super::{Host, absent, timed};
use crate::events::Event;

/// How long a `sent/` mark is kept: far longer than any two instances can disagree about
/// having seen the same membership change, short enough that marks never pile up.
const MARK_TTL_SECS: i64 = 3600;

/// An id no other instance writes: time, instance, counter.
pub fn unique_id(instance: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:013}-{instance}-{n}", super::keys::millis(super::now()))
}

/// The transaction step that queues `event` under `id`.
pub fn put_op(keys: &Keys, id: &str, event: &Event) -> TxnOp {
    TxnOp::put(keys.outbox(id), OutboxEntry::of(event).encode(), None)
}

/// Queues `event` under `id` unless it is queued or was sent already: for changes several
/// instances see at once (a member's lease ending).
pub async fn put_once(
    client: &mut Client,
    keys: &Keys,
    id: &str,
    event: &Event,
) -> Result<(), String> {
    let txn = Txn::new()
        .when([absent(keys.outbox(id)), absent(keys.sent(id))])
        .and_then([put_op(keys, id, event)]);
    timed(client.txn(txn)).await.map(|_| ())
}

/// The leader's sender: the lease of its `sent/` marks and the keys it warned about.
#[derive(Default)]
pub struct Sender {
    mark_lease: i64,
    warned: HashSet<String>,
}

impl Sender {
    /// Sends every queued alert, oldest first, marking each sent after it was posted.
    pub async fn drain(
        &mut self,
        client: &mut Client,
        keys: &Keys,
        host: &dyn Host,
    ) -> Result<(), String> {
        let opts = GetOptions::new().with_prefix();
        let mut resp = timed(client.get(keys.outboxes(), Some(opts))).await?;
        let mut kvs = resp.take_kvs();
        if kvs.is_empty() {
            return Ok(());
        }
        kvs.sort_by_key(|kv| kv.create_revision());
        if self.mark_lease == 0 {
            let lease = timed(client.lease_grant(MARK_TTL_SECS, None)).await?;
            self.mark_lease = lease.id();
        }
        for kv in kvs {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some(id) = key.strip_prefix(&keys.outboxes()).map(str::to_string) else {
                continue;
            };
            let event = match OutboxEntry::decode(kv.value()) {
                Ok(e) => e,
                Err(why) => {
                    if self.warned.insert(key.clone()) {
                        tracing::warn!(key = %key, "ignoring a malformed alert in etcd: {why}");
                    }
                    continue;
                }
            };
            host.send(event).await;
            let mark = TxnOp::put(
                keys.sent(&id),
                "",
                Some(PutOptions::new().with_lease(self.mark_lease)),
            );
            let done = Txn::new().and_then([TxnOp::delete(key.as_bytes().to_vec(), None), mark]);
            if let Err(e) = timed(client.txn(done)).await {
                // The mark lease may have ended with a long outage: a new one next time.
                self.mark_lease = 0;
                return Err(e);
            }
        }
        Ok(())
    }
}
