//! A frontend as the data path sees it, whatever its mode: its settings and its routes
//! (the backends they lead to), each swapped whole by a reload so that the next request
//! (HTTP) or connection (TCP) uses the new ones while those in flight finish with what
//! they started with.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::config;
use crate::overload::Overload;
use crate::pool::Backend;
use crate::route::{Action, Routing};

/// One frontend; shared by its accept loop and every connection it accepted.
pub struct Frontend {
    pub name: Arc<str>,
    settings: ArcSwap<config::Frontend>,
    routing: ArcSwap<Routing>,
    /// fulcrum's memory pressure: `handle` refuses new requests while it sheds.
    pub overload: Arc<Overload>,
}

impl Frontend {
    /// A frontend routing by `routing` with `settings`, refusing requests while `overload`
    /// sheds.
    pub fn new(settings: config::Frontend, routing: Routing, overload: Arc<Overload>) -> Arc<Self> {
        Arc::new(Frontend {
            name: settings.name.as_str().into(),
            settings: ArcSwap::from_pointee(settings),
            routing: ArcSwap::from_pointee(routing),
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

    /// The routes requests are matched against now.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// The backend unrouted requests (and every TCP connection) go to, if any.
    pub fn backend(&self) -> Option<Arc<Backend>> {
        match &self.routing.load().fallback().action {
            Action::Forward { backend, .. } => Some(Arc::clone(backend)),
            _ => None,
        }
    }

    /// Points the frontend at new settings and routes (a reload).
    pub fn swap(&self, settings: config::Frontend, routing: Routing) {
        self.settings.store(Arc::new(settings));
        self.routing.store(Arc::new(routing));
    }
}

impl fmt::Debug for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = self.settings();
        f.debug_struct("Frontend")
            .field("name", &self.name)
            .field("bind", &settings.bind)
            .field("mode", &settings.mode)
            .field("backend", &settings.backend)
            .field("routes", &settings.routes.len())
            .finish()
    }
}
