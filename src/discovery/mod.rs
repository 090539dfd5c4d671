//! DNS discovery: the lookups behind `[backends.NAME.discovery]`, through `hickory-resolver`
//! (asynchronous: no runtime thread ever waits on a socket, and every lookup is bounded).
//!
//! A [`Discoverer`] asks one name: SRV records (each a target, port and weight; the target
//! is then resolved to its address) or every A/AAAA record of `name:port`. What it found is
//! an [`Answer`]; turning answers into server changes is `app`'s (it applies them through
//! the reload machinery). Rules that protect a running backend from a bad answer:
//! - a lookup that fails, and an answer with zero records, keep the last set (the caller
//!   warns and changes nothing);
//! - an SRV target without an address is skipped with a WARN; one whose lookup *failed*
//!   keeps the address it had, if it had one.

mod answer;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::future::join_all;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

pub use answer::{Answer, Found, describe, merge};

use crate::config::{self, DnsQuery};

/// How long one whole round (the SRV query and every target's address) may take. A DNS
/// server that does not answer costs a round this long, never a stalled task.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one query to the DNS server may take before it counts as failed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a discoverer could not be made (the system resolver's configuration is unreadable).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("`{dns}`: {why}")]
    Query { dns: String, why: String },
    #[error("cannot read the system resolver configuration: {0}")]
    System(#[source] NetError),
    #[error("the resolver could not be built: {0}")]
    Build(#[source] NetError),
    /// The blocking-pool thread that reads `/etc/resolv.conf` did not come back.
    #[error("reading the resolver configuration was interrupted: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
}

/// One backend's DNS name and the resolver that asks it.
pub struct Discoverer {
    query: DnsQuery,
    resolver: TokioResolver,
}

impl std::fmt::Debug for Discoverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discoverer")
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl Discoverer {
    /// A discoverer for `cfg` (validated). The system resolver's files are read on the
    /// blocking pool.
    pub async fn new(cfg: &config::Discovery) -> Result<Discoverer, DiscoveryError> {
        let query = DnsQuery::parse(&cfg.dns).map_err(|why| DiscoveryError::Query {
            dns: cfg.dns.clone(),
            why,
        })?;
        let nameserver = cfg.nameserver_addr().map_err(|why| DiscoveryError::Query {
            dns: cfg.dns.clone(),
            why,
        })?;
        let resolver = tokio::task::spawn_blocking(move || build(nameserver)).await??;
        Ok(Discoverer { query, resolver })
    }

    /// What the name gives now, within [`ROUND_TIMEOUT`]. `previous` (the servers the last
    /// round found) supplies the address of an SRV target whose own lookup failed.
    pub async fn lookup(&self, previous: &[config::Server]) -> Answer {
        // Every round asks the DNS server again, whatever TTL the last answer had.
        self.resolver.clear_cache();
        let round = async {
            match &self.query {
                DnsQuery::Host { name, port } => self.hosts(name, *port).await,
                DnsQuery::Srv(name) => self.srv(name, previous).await,
            }
        };
        match tokio::time::timeout(ROUND_TIMEOUT, round).await {
            Ok(answer) => answer,
            Err(_) => Answer::Failed(format!("no answer within {ROUND_TIMEOUT:?}")),
        }
    }

    async fn hosts(&self, name: &str, port: u16) -> Answer {
        match self.resolver.lookup_ip(name).await {
            Ok(ips) => Answer::of(
                ips.iter()
                    .map(|ip| Found::address(SocketAddr::new(ip, port)))
                    .collect(),
            ),
            Err(e) if e.is_no_records_found() => Answer::Empty,
            Err(e) => Answer::Failed(e.to_string()),
        }
    }

    async fn srv(&self, dns: &str, previous: &[config::Server]) -> Answer {
        let records = match self.resolver.srv_lookup(dns).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() => return Answer::Empty,
            Err(e) => return Answer::Failed(e.to_string()),
        };
        let srvs: Vec<_> = records
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv.clone()),
                _ => None,
            })
            .collect();
        let targets = srvs.iter().map(|srv| async move {
            let target = srv.target.to_ascii();
            let server = format!("{}:{}", target.trim_end_matches('.'), srv.port);
            let ip = match self.first_ip(&target).await {
                Ok(Some(ip)) => Some(ip),
                Ok(None) => {
                    tracing::warn!(dns, "SRV target {target} has no address; skipped");
                    None
                }
                Err(e) => {
                    let kept = previous
                        .iter()
                        .find(|s| s.name == server)
                        .and_then(|s| s.address.parse::<SocketAddr>().ok());
                    match kept {
                        Some(addr) => tracing::warn!(
                            dns,
                            "SRV target {target} did not resolve ({e}); keeping its last address {addr}"
                        ),
                        None => {
                            tracing::warn!(dns, "SRV target {target} did not resolve ({e}); skipped")
                        }
                    }
                    kept.map(|a| a.ip())
                }
            };
            ip.map(|ip| Found::srv(&target, srv.port, srv.weight, ip))
        });
        Answer::of(join_all(targets).await.into_iter().flatten().collect())
    }

    /// The first address of an SRV target: `Ok(None)` when it has none.
    async fn first_ip(&self, target: &str) -> Result<Option<IpAddr>, NetError> {
        match self.resolver.lookup_ip(target).await {
            Ok(ips) => Ok(ips.iter().next()),
            Err(e) if e.is_no_records_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A resolver asking `nameserver` (UDP, then TCP for long answers) or, without one, the
/// servers of `/etc/resolv.conf` (and `/etc/hosts`). Blocking: reads those files.
fn build(nameserver: Option<SocketAddr>) -> Result<TokioResolver, DiscoveryError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match nameserver {
        Some(ns) => {
            let mut server = NameServerConfig::udp_and_tcp(ns.ip());
            for c in &mut server.connections {
                c.port = ns.port();
            }
            let mut b = Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![server]),
                provider,
            );
            b.options_mut().use_hosts_file = ResolveHosts::Never;
            b
        }
        None => Resolver::builder(provider).map_err(DiscoveryError::System)?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = 1;
    // "Every A/AAAA record": both families, IPv4 first.
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder.build().map_err(DiscoveryError::Build)
}
