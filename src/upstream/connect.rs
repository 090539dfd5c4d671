//! Opening a connection to a server the way its backend says: TCP, then the PROXY header
//! (`send_proxy_protocol`), then TLS (`[backends.NAME.tls]`), all within `connect_timeout`.
//! A failure at any step is a failed connect: the request goes to another server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use super::ConnectError;
use super::proxy_header::{self, ClientAddrs};
use super::stream::UpStream;
use crate::config::{self, SendProxy, TlsSettingsError};

/// How one backend connects to its servers. Built once per start or reload and shared by
/// its servers: the one rustls `ClientConfig` (inside the `TlsConnector`) keeps the TLS
/// session cache, so a reconnection resumes its session instead of a full handshake.
#[derive(Debug)]
pub struct Connector {
    tls: Option<Tls>,
    pub proxy: SendProxy,
    /// What it was built from: a reload that changes neither keeps the idle connections.
    settings: (Option<config::UpstreamTls>, SendProxy),
}

#[derive(Debug)]
struct Tls {
    /// One per backend: its session cache is shared by every connection.
    config: Arc<ClientConfig>,
    settings: config::UpstreamTls,
}

impl Default for Connector {
    fn default() -> Self {
        Connector {
            tls: None,
            proxy: SendProxy::Off,
            settings: (None, SendProxy::Off),
        }
    }
}

impl Connector {
    /// The connector of backend `b`, its TLS files read (relative paths through `resolve`).
    pub fn build(
        b: &config::Backend,
        resolve: impl Fn(&std::path::Path) -> std::path::PathBuf,
    ) -> Result<Self, TlsSettingsError> {
        let tls = match &b.tls {
            None => None,
            Some(t) => {
                let mut config = t.client_config(resolve)?;
                // An h2 backend is asked for h2 only: a server that cannot speak it fails
                // the handshake's ALPN check below rather than answering HTTP/1.1.
                if b.protocol == config::UpstreamProtocol::H2 {
                    config.alpn_protocols = vec![b"h2".to_vec()];
                }
                Some(Tls {
                    config: Arc::new(config),
                    settings: t.clone(),
                })
            }
        };
        Ok(Connector {
            tls,
            proxy: b.send_proxy_protocol,
            settings: (b.tls.clone(), b.send_proxy_protocol),
        })
    }

    /// Whether connections made by `other` are interchangeable with this one's.
    pub fn same_settings(&self, other: &Connector) -> bool {
        self.settings == other.settings
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether `verify = false` (start and reload warn about it).
    pub fn unverified(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| !t.settings.verify)
    }

    /// The SNI name for a server written as `address`.
    pub fn name_for(&self, address: &str) -> Option<ServerName<'static>> {
        self.tls.as_ref().and_then(|t| t.settings.name_for(address))
    }
}

/// One server's way to connect: its backend's connector and the name it verifies.
#[derive(Debug, Default)]
pub struct Target {
    pub connector: Arc<Connector>,
    /// The TLS name for this server (`None` without TLS, or when no valid name exists).
    pub name: Option<ServerName<'static>>,
}

impl Target {
    /// The target of the server written as `address` under `connector`.
    pub fn new(connector: Arc<Connector>, address: &str) -> Self {
        let name = connector.name_for(address);
        Target { connector, name }
    }
}

/// Opens a stream to `addr` as `target` says, within `timeout`: for `client` (the PROXY
/// header's addresses), or for no client (a health check).
pub async fn open(
    addr: SocketAddr,
    target: &Target,
    client: Option<ClientAddrs>,
    timeout: Duration,
) -> Result<UpStream, ConnectError> {
    match tokio::time::timeout(timeout, open_inner(addr, target, client)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::TimedOut),
    }
}

async fn open_inner(
    addr: SocketAddr,
    target: &Target,
    client: Option<ClientAddrs>,
) -> Result<UpStream, ConnectError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(ConnectError::Failed)?;
    let _ = stream.set_nodelay(true);
    let c = &target.connector;
    if c.proxy != SendProxy::Off {
        let header = proxy_header::header(c.proxy, client);
        stream
            .write_all(&header)
            .await
            .map_err(ConnectError::Proxy)?;
    }
    let Some(tls) = &c.tls else {
        return Ok(UpStream::Plain(stream));
    };
    let Some(name) = target.name.clone() else {
        return Err(ConnectError::Tls(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no valid TLS server name for this server: set tls.server_name",
        )));
    };
    let wants_h2 = tls.config.alpn_protocols == [b"h2".to_vec()];
    let tls = TlsConnector::from(Arc::clone(&tls.config))
        .connect(name, stream)
        .await
        .map_err(ConnectError::Tls)?;
    if wants_h2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(ConnectError::Tls(std::io::Error::other(
            "the server did not agree to HTTP/2 (ALPN h2) though protocol = \"h2\"",
        )));
    }
    Ok(UpStream::Tls(Box::new(tls)))
}
