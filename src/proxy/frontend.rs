//! A frontend as the data path sees it, whatever its mode: its settings and its backend,
//! each swapped whole by a reload so that the next request (HTTP) or connection (TCP) uses
//! the new ones while those in flight finish with what they started with.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::config;
use crate::overload::Overload;
use crate::pool::Backend;

/// One frontend; shared by its accept loop and every connection it accepted.
pub struct Frontend {
    pub name: Arc<str>,
    settings: ArcSwap<config::Frontend>,
    backend: ArcSwap<Backend>,
    /// fulcrum's memory pressure: `handle` refuses new requests while it sheds.
    pub overload: Arc<Overload>,
}

impl Frontend {
    /// A frontend serving `backend` with `settings`, refusing requests while `overload` sheds.
    pub fn new(
        settings: config::Frontend,
        backend: Arc<Backend>,
        overload: Arc<Overload>,
    ) -> Arc<Self> {
        Arc::new(Frontend {
            name: settings.name.as_str().into(),
            settings: ArcSwap::from_pointee(settings),
            backend: ArcSwap::new(backend),
            overload,
        })
    }

    /// The current settings: one atomic load.
    pub fn settings(&self) -> Guard<Arc<config::Frontend>> {
        self.settings.load()
    }

    /// The current settings, held past the next await.
    pub fn settings_full(&self) -> Arc<config::Frontend> {
        self.settings.load_full()
    }

    /// The backend requests go to now.
    pub fn backend(&self) -> Arc<Backend> {
        self.backend.load_full()
    }

    /// Points the frontend at new settings and backend (a reload).
    pub fn swap(&self, settings: config::Frontend, backend: Arc<Backend>) {
        self.settings.store(Arc::new(settings));
        self.backend.store(backend);
    }
}

impl fmt::Debug for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = self.settings();
        f.debug_struct("Frontend")
            .field("name", &self.name)
            .field("bind", &settings.bind)
            .field("mode", &settings.mode)
            .field("backend", &self.backend.load().name)
            .finish()
    }
}
