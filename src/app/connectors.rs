//! Each backend's [`Connector`] (TLS to servers, PROXY header), built from the file at
//! start and at every reload, with its files read off the runtime. A new rustls
//! `ClientConfig` per reload: certificates and CA files changed on disk take effect.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{self, TlsSettingsError};
use crate::upstream::Connector;

/// The connectors of `backends` (name, settings) of a file read from `source`. Each
/// `verify = false` is logged as a WARN here, so at every start and reload.
pub(super) async fn build(
    source: PathBuf,
    backends: Vec<(String, config::Backend)>,
) -> Result<BTreeMap<String, Arc<Connector>>, (String, TlsSettingsError)> {
    let built = tokio::task::spawn_blocking(move || {
        let mut out = BTreeMap::new();
        for (name, b) in backends {
            let c = Connector::build(&b, |p| config::resolve_path_from(&source, p))
                .map_err(|e| (name.clone(), e))?;
            if c.unverified() {
                tracing::warn!(
                    backend = %name,
                    "tls.verify = false: the servers' certificates are not checked; anyone on the path can impersonate them (for testing only)"
                );
            }
            out.insert(name, Arc::new(c));
        }
        Ok(out)
    })
    .await;
    match built {
        Ok(r) => r,
        Err(e) => Err((
            String::new(),
            TlsSettingsError {
                key: "tls",
                message: format!("reading the TLS files was interrupted: {e}"),
            },
        )),
    }
}
