//! One handle through which every task of a running fulcrum is spawned, so that shutdown can
//! both stop them and wait for them.
//!
//! Two kinds of task exist. *Background* tasks (health checkers, the maintenance scheduler,
//! webhook senders, ejection timers, slow-start tickers) have no natural end: they are raced
//! against the stop token and end as soon as shutdown begins. *Serving* tasks (accept loops,
//! client connections, the admin listener) watch the stop token themselves, because they
//! end gracefully: a connection finishes its request in flight before it closes. Both kinds
//! are tracked, and [`Tasks::shutdown`] waits for every one of them up to the grace period.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The task handle of one running fulcrum; cheap to clone (two reference counts).
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// A handle with nothing spawned yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns a task that ends when it finishes or when shutdown begins, whichever is first.
    /// Outside a tokio runtime (the offline simulator drives backends without one) nothing
    /// is spawned: there is nobody to run the task, and nothing that would wait for it.
    /// Returns whether the task was spawned.
    pub fn spawn_background<F>(&self, task: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let stop = self.stop.clone();
        self.tracker.spawn_on(
            async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = task => {}
                }
            },
            &runtime,
        );
        true
    }

    /// Spawns a serving task: it watches [`stopping`](Self::stopping) itself and ends
    /// gracefully; shutdown waits for it.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// [`spawn`](Self::spawn) on another runtime (a worker of `threads > 1`).
    pub fn spawn_on<F>(&self, task: F, runtime: &tokio::runtime::Handle) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn_on(task, runtime)
    }

    /// Cancelled when shutdown begins.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    /// A token cancelled at shutdown or earlier by its holder (one frontend's accept loop,
    /// one server's checker, one generation of webhooks).
    pub fn child_token(&self) -> CancellationToken {
        self.stop.child_token()
    }

    /// Begins shutdown: every background task ends, serving tasks finish what is in flight.
    pub fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
    }

    /// Waits for every task to end, up to `grace`; returns whether they all did. Only
    /// meaningful after [`stop`](Self::stop).
    pub async fn wait(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }

    /// [`stop`](Self::stop), then [`wait`](Self::wait).
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stop();
        self.wait(grace).await
    }

    /// Tasks running now (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether no task runs.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_background_tasks_and_waits_for_serving_ones() {
        let tasks = Tasks::new();
        tasks.spawn_background(std::future::pending());
        let stop = tasks.stopping().clone();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&served);
        tasks.spawn(async move {
            stop.cancelled().await;
            // Finishing the request in flight.
            tokio::time::sleep(Duration::from_secs(1)).await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        assert_eq!(tasks.len(), 2);
        assert!(tasks.shutdown(Duration::from_secs(5)).await);
        assert!(served.load(std::sync::atomic::Ordering::SeqCst));
        assert!(tasks.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_reports_a_task_that_outlives_the_grace_period() {
        let tasks = Tasks::new();
        tasks.spawn(std::future::pending::<()>());
        assert!(!tasks.shutdown(Duration::from_secs(1)).await);
    }

    #[test]
    fn outside_a_runtime_nothing_is_spawned() {
        let tasks = Tasks::new();
        assert!(!tasks.spawn_background(async {}));
        assert!(tasks.is_empty());
    }
}
