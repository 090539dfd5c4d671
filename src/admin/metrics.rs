//! The scrape-time collector: every family of the metrics reference, read from live atomics when
//! `/metrics` is asked for, so gauges cost nothing on the request path.
//!
//! `fulcrum_requests_total` uses `server="-"` for answers fulcrum made itself (503 with no
//! server, 502 after every retry, ...), like the access log.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::app::App;
use crate::pool::{Backend, Server, ServerState};

/// Reads a running fulcrum at scrape time.
pub struct FulcrumCollector {
    pub app: Arc<App>,
}

impl fmt::Debug for FulcrumCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FulcrumCollector")
    }
}

type Pair = (Arc<Backend>, Arc<Server>);

impl Collector for FulcrumCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let backends: Vec<Arc<Backend>> = self.app.backends().values().cloned().collect();
        let servers: Vec<Pair> = self.app.servers();
        requests(&mut enc, &backends, &servers)?;
        durations(&mut enc, &servers)?;
        server_gauges(&mut enc, &servers)?;
        backend_gauges(&mut enc, &backends)?;
        health_checks(&mut enc, &servers)?;
        {
            let mut m = enc.encode_descriptor(
                "fulcrum_client_connections",
                "Client connections open now, by frontend",
                None,
                MetricType::Gauge,
            )?;
            for (fe, n) in self.app.client_counts() {
                m.encode_family(&[("frontend", fe.as_str())])?
                    .encode_gauge(&n)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "fulcrum_route_requests",
                "Requests by frontend, route (\"-\": none matched) and status code",
                None,
                MetricType::Counter,
            )?;
            for (fe, routes) in self.app.route_counts() {
                for (route, tally) in routes {
                    for table in tally.tables().iter() {
                        for (code, n) in table.nonzero() {
                            let code = code.to_string();
                            let labels = [
                                ("frontend", fe.as_str()),
                                ("route", &*route),
                                ("code", code.as_str()),
                            ];
                            m.encode_family(&labels)?
                                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                        }
                    }
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "fulcrum_events",
                "Events published, by name",
                None,
                MetricType::Counter,
            )?;
            for (kind, n) in self.app.events().counts() {
                m.encode_family(&[("event", kind.name())])?
                    .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
            }
        }
        {
            let rss = self.app.overload().resident_bytes() as i64;
            enc.encode_descriptor(
                "fulcrum_process_resident_memory_bytes",
                "fulcrum's resident memory, as its max_memory monitor last measured it",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&rss)?;
        }
        if let Some(c) = self.app.cluster() {
            // `[cluster]` only: the members whose leased record this instance last saw.
            let n = u64::try_from(c.view().instances.len()).unwrap_or(u64::MAX);
            enc.encode_descriptor(
                "fulcrum_cluster_instances",
                "Cluster members with a live record, as this instance last saw them",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&n)?;
        }
        certificates(&mut enc, &self.app)?;
        alerts(&mut enc, &self.app)
    }
}

/// `fulcrum_certificate_expiry_seconds`: each served certificate's `not_after` (Unix time).
fn certificates(enc: &mut DescriptorEncoder<'_>, app: &App) -> fmt::Result {
    let mut m = enc.encode_descriptor(
        "fulcrum_certificate_expiry_seconds",
        "Unix time at which each served certificate expires (its not_after), by frontend and names",
        None,
        MetricType::Gauge,
    )?;
    for fe in app.served().iter() {
        for c in fe.certificates.iter() {
            let at = i64::try_from(c.not_after_unix()).unwrap_or(i64::MAX);
            m.encode_family(&[("frontend", fe.name.as_str()), ("names", &c.joined_names())])?
                .encode_gauge(&at)?;
        }
    }
    Ok(())
}

fn requests(
    enc: &mut DescriptorEncoder<'_>,
    backends: &[Arc<Backend>],
    servers: &[Pair],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(
        "fulcrum_requests",
        "HTTP requests answered, by status code; server=\"-\" when fulcrum answered itself",
        None,
        MetricType::Counter,
    )?;
    let mut emit = |fe: &str, b: &str, s: &str, code: u16, n: u64| -> fmt::Result {
        let code = code.to_string();
        let labels = [
            ("frontend", fe),
            ("backend", b),
            ("server", s),
            ("code", code.as_str()),
        ];
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, u64, u64>(&n, None)
    };
    for (b, s) in servers {
        for t in s.stats.requests.tables().iter() {
            for (code, n) in t.nonzero() {
                emit(&t.frontend, &b.name, &s.name, code, n)?;
            }
        }
    }
    for b in backends {
        for t in b.refusals.tables().iter() {
            for (code, n) in t.nonzero() {
                emit(&t.frontend, &b.name, "-", code, n)?;
            }
        }
    }
    Ok(())
}

fn durations(enc: &mut DescriptorEncoder<'_>, servers: &[Pair]) -> fmt::Result {
    let mut m = enc.encode_descriptor(
        "fulcrum_request_duration_seconds",
        "Time from a request's arrival to the end of its response, by server",
        None,
        MetricType::Histogram,
    )?;
    for (b, s) in servers {
        let (sum, count, buckets) = s.stats.duration.read();
        m.encode_family(&[("backend", &*b.name), ("server", &*s.name)])?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

fn server_gauges(enc: &mut DescriptorEncoder<'_>, servers: &[Pair]) -> fmt::Result {
    type Read = fn(&Server) -> i64;
    let families: [(&str, &str, Read); 4] = [
        (
            "fulcrum_server_up",
            "1 when the server takes new requests (healthy, not in maintenance or ejected)",
            |s| i64::from(s.state() == ServerState::Up),
        ),
        (
            "fulcrum_server_active_requests",
            "Requests in flight to the server now",
            |s| i64::from(s.active()),
        ),
        (
            "fulcrum_server_weight",
            "The server's weight now (configured or set at run time)",
            |s| i64::from(s.weight()),
        ),
        (
            "fulcrum_server_maintenance",
            "1 while the server is out of rotation by hand",
            |s| i64::from(s.maintenance.is_on()),
        ),
    ];
    for (name, help, read) in families {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (b, s) in servers {
            m.encode_family(&[("backend", &*b.name), ("server", &*s.name)])?
                .encode_gauge(&read(s))?;
        }
    }
    Ok(())
}

fn backend_gauges(enc: &mut DescriptorEncoder<'_>, backends: &[Arc<Backend>]) -> fmt::Result {
    {
        let mut m = enc.encode_descriptor(
            "fulcrum_backend_queue_length",
            "Requests waiting for a free server slot",
            None,
            MetricType::Gauge,
        )?;
        for b in backends {
            m.encode_family(&[("backend", &*b.name)])?
                .encode_gauge(&(b.queue_len() as i64))?;
        }
    }
    let mut m = enc.encode_descriptor(
        "fulcrum_backend_healthy_primaries",
        "Primaries that take new requests now (compare with min_healthy)",
        None,
        MetricType::Gauge,
    )?;
    for b in backends {
        let n = b.snapshot().healthy_primaries() as i64;
        m.encode_family(&[("backend", &*b.name)])?
            .encode_gauge(&n)?;
    }
    Ok(())
}

fn health_checks(enc: &mut DescriptorEncoder<'_>, servers: &[Pair]) -> fmt::Result {
    let mut m = enc.encode_descriptor(
        "fulcrum_health_checks",
        "Active health checks finished, by result (ok, failed, or unknown: not run because fulcrum was out of file descriptors)",
        None,
        MetricType::Counter,
    )?;
    for (b, s) in servers {
        let (ok, failed) = s.check_counts();
        let unknown = s.unknown_checks();
        for (result, n) in [("ok", ok), ("failed", failed), ("unknown", unknown)] {
            m.encode_family(&[
                ("backend", &*b.name),
                ("server", &*s.name),
                ("result", result),
            ])?
            .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
        }
    }
    Ok(())
}

fn alerts(enc: &mut DescriptorEncoder<'_>, app: &App) -> fmt::Result {
    let hooks = app.webhook_stats();
    type Read = fn(&crate::alerts::WebhookStats) -> u64;
    let families: [(&str, &str, Read); 3] = [
        ("fulcrum_alerts_sent", "Alerts a webhook accepted", |w| {
            w.sent.load(Ordering::Relaxed)
        }),
        (
            "fulcrum_alerts_failed",
            "Alerts given up on after every retry failed",
            |w| w.failed.load(Ordering::Relaxed),
        ),
        (
            "fulcrum_alerts_dropped",
            "Alerts dropped because the webhook's queue was full (slow or dead receiver)",
            |w| w.dropped.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in families {
        let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for w in &hooks {
            m.encode_family(&[("webhook", w.url.as_str())])?
                .encode_counter::<NoLabelSet, u64, u64>(&read(w), None)?;
        }
    }
    Ok(())
}
