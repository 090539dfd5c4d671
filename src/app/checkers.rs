//! The health-checker registry: one checker task per server, keyed by the server's id, so
//! a reload can tell a server it keeps (its checker runs on) from one it replaces or drops
//! (its checker stops), whatever the names and addresses say.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::Backends;
use crate::pool::ServerId;
use crate::pool::health::{self, Streak};
use crate::tasks::Tasks;

/// The running checkers. A std `Mutex`: it is never held across an await.
#[derive(Debug, Default)]
pub(super) struct Checkers {
    running: Mutex<HashMap<ServerId, CancellationToken>>,
}

impl Checkers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServerId, CancellationToken>> {
        // Plain data: valid even if a holder panicked.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the first check of every server in `backends` that has no checker yet (all at
    /// once, each bounded by its timeout), then starts their checker loops. Returns when
    /// every first check has finished, so a caller can hold back traffic until then.
    pub(super) async fn start_missing(&self, backends: &Backends, tasks: &Tasks) {
        let mut first = tokio::task::JoinSet::new();
        {
            let running = self.lock();
            for backend in backends.values() {
                for server in backend.snapshot().servers.iter() {
                    if running.contains_key(&server.id) {
                        continue;
                    }
                    let (backend, server) = (Arc::clone(backend), Arc::clone(server));
                    first.spawn(async move {
                        let mut streak = Streak::default();
                        health::check_once(&backend, &server, &mut streak).await;
                        (backend, server, streak)
                    });
                }
            }
        }
        while let Some(done) = first.join_next().await {
            let Ok((backend, server, streak)) = done else {
                continue;
            };
            let cancel = tasks.child_token();
            self.lock().insert(server.id, cancel.clone());
            tasks.spawn_background(health::run(backend, server, streak, cancel));
        }
    }

    /// Stops the checkers of every server not in `keep` (servers a reload removed or
    /// replaced); in-flight requests still hold those servers until they finish.
    pub(super) fn retain(&self, keep: &HashSet<ServerId>) {
        self.lock().retain(|id, cancel| {
            let stays = keep.contains(id);
            if !stays {
                cancel.cancel();
            }
            stays
        });
    }
}
