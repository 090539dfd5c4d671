//! Hot reload: re-read the configuration file, decide what changed ([`plan`], pure), then
//! apply only that (`apply`).
//!
//! Applying runs in two phases. The first does everything that can fail (read, parse and
//! validate the whole file off the runtime, resolve new server addresses, bind new frontend
//! addresses, load TLS files) without touching what serves; any failure leaves the old
//! configuration serving and publishes `config_rejected`. The second phase only uses what
//! the first acquired, so it has no error to report: it swaps backends, servers and
//! frontends in place and publishes `config_reloaded`.
//!
//! What happens to in-flight work: a removed server leaves rotation at once, requests in
//! flight on it finish and its checker stops; a removed backend lives on only as long as
//! connections still hold it; keep-alive connections stay open and serve with the current
//! backend; a removed frontend stops accepting and its open connections finish on their
//! own. `max_maintenance` applies at once.

mod apply;
mod plan;

use std::sync::Arc;

pub use plan::{BackendPlan, Changes, Delta, FrontendAction, FrontendPlan, Plan, ServerPlan, plan};

use super::App;
use super::frontends::{BindError, FrontendTlsError};
use crate::config::{self, ConfigErrors};
use crate::events::{Event, EventKind};
use crate::pool::resolve::ResolveError;

/// Why a reload was refused; the previous configuration keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or is invalid (every problem, located).
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A new server's address does not resolve.
    #[error("server `{server}`: {source}")]
    Resolve {
        server: String,
        #[source]
        source: ResolveError,
    },
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Tls(#[from] FrontendTlsError),
    /// A worker thread that reads files, or the reload's own task, did not come back (it
    /// panicked or the runtime is shutting down).
    #[error("the reload was interrupted: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
    /// fulcrum is shutting down: nothing is reloaded.
    #[error("fulcrum is shutting down; the configuration is not reloaded")]
    ShuttingDown,
}

impl App {
    /// Re-reads the file the process was started with and applies it. Answers SIGHUP, the
    /// admin API's `POST /api/v1/reload` and `fulcrum ctl reload`. `Ok` carries a short
    /// summary of what changed; `Err` the located error (the old configuration serves on).
    ///
    /// The reload runs as a task of its own: a caller that stops waiting (an admin client
    /// hanging up) never leaves a reload half applied.
    pub async fn reload(self: &Arc<Self>) -> Result<String, ReloadError> {
        let app = Arc::clone(self);
        self.tasks
            .spawn(async move { app.reload_now().await })
            .await?
    }

    async fn reload_now(self: &Arc<Self>) -> Result<String, ReloadError> {
        let mut frontends = self.frontends.lock().await;
        if self.tasks.stopping().is_cancelled() {
            return Err(ReloadError::ShuttingDown);
        }
        let source = self.config().source.clone();
        let path = source.clone();
        // Reading the file and resolving its names (validation) block: off the runtime.
        let loaded = tokio::task::spawn_blocking(move || config::load_file(&path)).await;
        let result = match loaded {
            Ok(Ok(new)) => self.apply(&mut frontends, new).await,
            Ok(Err(errors)) => Err(ReloadError::Config(errors)),
            Err(e) => Err(ReloadError::Interrupted(e)),
        };
        match &result {
            Ok(summary) => {
                tracing::info!(
                    "configuration reloaded from {}: {summary}",
                    source.display()
                );
                self.events.publish(Event::new(
                    EventKind::ConfigReloaded,
                    None,
                    None,
                    summary.clone(),
                ));
                self.served.set(frontends.served());
                self.check_certificates();
            }
            Err(why) => {
                tracing::warn!(
                    "configuration in {} rejected; the previous one keeps serving: {why}",
                    source.display()
                );
                self.events.publish(Event::new(
                    EventKind::ConfigRejected,
                    None,
                    None,
                    why.to_string(),
                ));
            }
        }
        result
    }

    /// The address each frontend listens on now, by name (it changes when a reload rebinds).
    pub async fn frontend_addrs(&self) -> std::collections::BTreeMap<String, std::net::SocketAddr> {
        self.frontends.lock().await.addrs()
    }
}
