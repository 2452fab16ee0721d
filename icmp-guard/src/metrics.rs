//! Prometheus metrics: the counters of [`crate::stats`] and the state of the guard as an
//! exposition in the Prometheus text format (0.0.4) or OpenMetrics 1.0, encoded by
//! `prometheus-client`, and a small HTTP server that serves it on `GET /metrics`.
//!
//! Every scrape reads the pinned maps afresh, so the exporter follows a detach and a new
//! attach and never caches a value. When nothing is attached a scrape still succeeds, with
//! `icmp_guard_up 0` and no other series.

use std::{fmt, future::Future, net::SocketAddr, time::Duration};

use prometheus_client::{
    collector::Collector,
    encoding::DescriptorEncoder,
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::{
    error::{Error, Result},
    loader::{self, GuardMaps, Tracked},
    pins::PinDir,
    policy,
    stats::{self, StatsReport},
};

/// The exposition formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Prometheus text format 0.0.4 (what `promtool check metrics` reads).
    #[default]
    Prometheus,
    /// OpenMetrics 1.0 text, ending in `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// OpenMetrics when the scraper's `Accept` header asks for it (as Prometheus does),
    /// the Prometheus text format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }
}

/// Everything one scrape reports.
#[derive(Clone, Debug)]
pub struct Sample {
    pub report: StatsReport,
    pub tracked: Tracked,
    /// The active policy generation (the double buffer's index, 0 or 1).
    pub generation: u32,
}

/// Reads a sample from the pinned maps; `None` when the guard is not attached.
pub fn gather(pins: &PinDir) -> Result<Option<Sample>> {
    let maps = match GuardMaps::open(pins) {
        Ok(maps) => maps,
        Err(Error::NotAttached) => return Ok(None),
        Err(err) => return Err(err),
    };
    Ok(Some(Sample {
        report: stats::report_of(&maps, pins)?,
        tracked: loader::tracked(pins)?,
        generation: policy::active_generation(&maps)?,
    }))
}

/// A sample (or its absence) as a `prometheus-client` collector, encoded in a fixed order.
#[derive(Debug)]
struct Exposition(Option<Sample>);

/// Encodes one series family from `(labels, value)` pairs; an empty family is left out.
fn family<L, M>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    series: &[(L, M)],
) -> fmt::Result
where
    L: prometheus_client::encoding::EncodeLabelSet,
    M: prometheus_client::encoding::EncodeMetric,
{
    if series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// Encodes one series without labels.
fn single<M: prometheus_client::encoding::EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: &M,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, value.metric_type())?;
    value.encode(metric)
}

type Labels = Vec<(&'static str, String)>;

fn type_labels(row: &stats::TypeReport) -> Labels {
    vec![
        ("family", row.family.to_owned()),
        ("type", row.icmp_type.to_string()),
        ("name", row.name.unwrap_or("unassigned").to_owned()),
    ]
}

fn with(mut labels: Labels, key: &'static str, value: &str) -> Labels {
    labels.push((key, value.to_owned()));
    labels
}

fn reasons(reasons: &stats::Reasons) -> [(&'static str, u64); 6] {
    [
        ("policy", reasons.policy),
        ("rate_limit", reasons.rate_limit),
        ("smurf", reasons.smurf),
        ("deny_list", reasons.deny_list),
        ("malformed", reasons.malformed),
        ("invalid", reasons.invalid),
    ]
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let up = i64::from(self.0.is_some());
        single(
            &mut encoder,
            "icmp_guard_up",
            "1 when the guard's pinned maps were read, 0 when it is not attached",
            &ConstGauge::new(up),
        )?;
        let Some(sample) = &self.0 else {
            return Ok(());
        };
        let report = &sample.report;
        let counter = MetricType::Counter;
        let gauge = MetricType::Gauge;

        let mut packets = Vec::new();
        let mut drops = Vec::new();
        let mut would_drops = Vec::new();
        let mut bytes = Vec::new();
        for row in &report.icmp {
            let labels = type_labels(row);
            for (verdict, value) in [
                ("passed", row.passed),
                ("dropped", row.dropped.total()),
                ("would_drop", row.would_drop.total()),
            ] {
                packets.push((
                    with(labels.clone(), "verdict", verdict),
                    ConstCounter::new(value),
                ));
            }
            for (reason, value) in reasons(&row.dropped) {
                drops.push((
                    with(labels.clone(), "reason", reason),
                    ConstCounter::new(value),
                ));
            }
            for (reason, value) in reasons(&row.would_drop) {
                would_drops.push((
                    with(labels.clone(), "reason", reason),
                    ConstCounter::new(value),
                ));
            }
            bytes.push((labels, ConstCounter::new(row.bytes)));
        }
        family(
            &mut encoder,
            "icmp_guard_packets",
            "ICMP packets by family, type and verdict (passed, dropped, would_drop in dry-run)",
            counter,
            &packets,
        )?;
        family(
            &mut encoder,
            "icmp_guard_drops",
            "ICMP packets dropped, by family, type and reason",
            counter,
            &drops,
        )?;
        family(
            &mut encoder,
            "icmp_guard_would_drops",
            "ICMP packets that dry-run mode let through but would have dropped, by reason",
            counter,
            &would_drops,
        )?;
        family(
            &mut encoder,
            "icmp_guard_bytes",
            "Frame bytes of ICMP packets as XDP sees them, by family and type",
            counter,
            &bytes,
        )?;
        let unclassified = &report.unclassified;
        family(
            &mut encoder,
            "icmp_guard_unclassified_drops",
            "Packets dropped before an ICMP type could be read, by reason",
            counter,
            &[
                (
                    vec![("reason", "invalid")],
                    ConstCounter::new(unclassified.dropped.invalid),
                ),
                (
                    vec![("reason", "malformed")],
                    ConstCounter::new(unclassified.dropped.malformed),
                ),
            ],
        )?;
        family(
            &mut encoder,
            "icmp_guard_unclassified_would_drops",
            "Packets dry-run mode let through that would have been dropped before an ICMP type could be read",
            counter,
            &[
                (
                    vec![("reason", "invalid")],
                    ConstCounter::new(unclassified.would_drop.invalid),
                ),
                (
                    vec![("reason", "malformed")],
                    ConstCounter::new(unclassified.would_drop.malformed),
                ),
            ],
        )?;
        single(
            &mut encoder,
            "icmp_guard_non_icmp_passed",
            "Packets that are not ICMP, passed untouched",
            &ConstCounter::new(report.totals.non_icmp_passed),
        )?;
        single(
            &mut encoder,
            "icmp_guard_icmp_fragments_passed",
            "Non-first ICMP fragments that passed every check and their budget",
            &ConstCounter::new(report.totals.icmp_fragments_passed),
        )?;
        for (name, help, reasons) in [
            (
                "icmp_guard_icmp_fragments_dropped",
                "Non-first ICMP fragments dropped, by reason",
                &report.fragments.dropped,
            ),
            (
                "icmp_guard_icmp_fragments_would_drop",
                "Non-first ICMP fragments dry-run mode let through that would have been dropped, by reason",
                &report.fragments.would_drop,
            ),
        ] {
            let series: Vec<_> = reasons
                .by_reason()
                .into_iter()
                .map(|(reason, count)| (vec![("reason", reason)], ConstCounter::new(count)))
                .collect();
            family(&mut encoder, name, help, counter, &series)?;
        }
        single(
            &mut encoder,
            "icmp_guard_events_emitted",
            "Sampled ICMP events written to the ring buffer for top and the drop log",
            &ConstCounter::new(report.events.emitted),
        )?;
        single(
            &mut encoder,
            "icmp_guard_events_lost",
            "Sampled events the budget allowed but the full ring buffer lost (no reader, or a slow one)",
            &ConstCounter::new(report.events.lost),
        )?;
        let tracked = &sample.tracked;
        for (name, help, value) in [
            (
                "icmp_guard_tracked_sources",
                "Sources with a rate-limit bucket now, estimated: buckets created, capped by the capacity",
                tracked.sources,
            ),
            (
                "icmp_guard_tracked_sources_capacity",
                "Rate-limit buckets for sources (LRU sizes of both families)",
                u64::from(tracked.sources_capacity),
            ),
            (
                "icmp_guard_tracked_prefixes",
                "Source prefixes with a rate-limit bucket now, estimated: buckets created, capped by the capacity",
                tracked.prefixes,
            ),
            (
                "icmp_guard_tracked_prefixes_capacity",
                "Rate-limit buckets for source prefixes (LRU sizes of both families)",
                u64::from(tracked.prefixes_capacity),
            ),
        ] {
            single(&mut encoder, name, help, &ConstGauge::new(value))?;
        }
        let interfaces: Vec<(Labels, ConstGauge)> = report
            .interfaces
            .iter()
            .map(|interface| {
                let name = interface
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("ifindex {}", interface.ifindex));
                let labels = vec![
                    ("interface", name),
                    ("mode", interface.mode.unwrap_or("none").to_owned()),
                ];
                (labels, ConstGauge::new(i64::from(interface.mode.is_some())))
            })
            .collect();
        let mut judged: Vec<(Labels, ConstCounter)> = Vec::new();
        for interface in &report.interfaces {
            let name = interface
                .name
                .clone()
                .unwrap_or_else(|| format!("ifindex {}", interface.ifindex));
            let counters = &interface.counters;
            for (verdict, value) in [
                ("passed", counters.passed),
                ("dropped", counters.dropped),
                ("would_drop", counters.would_drop),
            ] {
                let labels = vec![("interface", name.clone()), ("verdict", verdict.to_owned())];
                judged.push((labels, ConstCounter::new(value)));
            }
        }
        family(
            &mut encoder,
            "icmp_guard_interface_packets",
            "Packets the guard judged on each interface (ICMP, and packets dropped before a type could be read), by verdict",
            counter,
            &judged,
        )?;
        family(
            &mut encoder,
            "icmp_guard_interface_attached",
            "1 for each interface the guard is attached to and runs on (0: link pinned, program not running there)",
            gauge,
            &interfaces,
        )?;
        single(
            &mut encoder,
            "icmp_guard_policy_generation",
            "The active policy generation (0 or 1); it flips on every policy change",
            &ConstGauge::new(i64::from(sample.generation)),
        )?;
        single(
            &mut encoder,
            "icmp_guard_dry_run",
            "1 in dry-run mode (verdicts counted as would_drop, nothing dropped), 0 when enforcing",
            &ConstGauge::new(i64::from(report.mode == "dry-run")),
        )
    }
}

/// The exposition of `sample` in `format`.
pub fn encode(sample: Option<Sample>, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(sample)));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    out
}

/// Reads the pinned maps and encodes them.
pub fn exposition(pins: &PinDir, format: Format) -> Result<String> {
    Ok(encode(gather(pins)?, format))
}

/// The longest a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head accepted.
const MAX_REQUEST: usize = 16 * 1024;
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// The longest a connection may take from accept to the last byte of the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `address` (port 0 picks a free port; the listener says which).
pub async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|err| Error::io(format!("listening on {address}"), err))
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes. Each request reads the
/// pinned maps on a blocking thread; requests are answered one connection at a time per
/// task, `Connection: close`.
pub async fn serve(listener: TcpListener, pins: PinDir, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    // A scraper needs one connection at a time; a few more cover overlapping scrapes. Idle
    // or slow clients beyond that are turned away, so they can never use up the process's
    // descriptors, which `run` needs for its pins, maps and policy file.
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        log::debug!("metrics: {MAX_CONNECTIONS} connections open, refusing one");
                        drop(stream);
                        continue;
                    };
                    let pins = pins.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        match tokio::time::timeout(CONNECTION_TIMEOUT, handle(stream, pins)).await {
                            Ok(Err(err)) => log::debug!("metrics request: {err}"),
                            Err(_) => log::debug!("metrics request: timed out"),
                            Ok(Ok(())) => {}
                        }
                    });
                }
                Err(err) => {
                    log::warn!("accepting a metrics connection failed: {err}");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// A parsed request head: method, path (query string removed) and the `Accept` header.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub accept: Option<String>,
}

/// Parses a request head; `None` when it is not HTTP.
pub fn parse_request(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?;
    if !request_line.next()?.starts_with("HTTP/") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let accept = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("accept")
            .then(|| value.trim().to_owned())
    });
    Some(Request {
        method,
        path,
        accept,
    })
}

/// The status, content type and body answering `request`; reads the maps for `/metrics`.
pub async fn respond(request: &Request, pins: PinDir) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if request.method != "GET" && request.method != "HEAD" {
        return (405, TEXT, "only GET and HEAD are served\n".to_owned());
    }
    match request.path.as_str() {
        "/metrics" => {
            let format = Format::negotiate(request.accept.as_deref());
            match tokio::task::spawn_blocking(move || exposition(&pins, format)).await {
                Ok(Ok(body)) => (200, format.content_type(), body),
                Ok(Err(err)) => (500, TEXT, format!("{err}\n")),
                Err(err) => (500, TEXT, format!("reading the counters failed: {err}\n")),
            }
        }
        "/" => (
            200,
            TEXT,
            "icmp-guard exporter: the metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            404,
            TEXT,
            "not found: the metrics are at /metrics\n".to_owned(),
        ),
    }
}

async fn handle(mut stream: TcpStream, pins: PinDir) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];
    let read = async {
        loop {
            let n = stream.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            // Only the new bytes (and the three before them) can complete the blank line.
            let from = head.len().saturating_sub(3);
            head.extend_from_slice(&buffer[..n]);
            if head[from..].windows(4).any(|w| w == b"\r\n\r\n") || head.len() > MAX_REQUEST {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(REQUEST_TIMEOUT, read).await.is_err() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&head);
    let (status, content_type, body) = match parse_request(&text) {
        Some(request) => {
            let (status, content_type, body) = respond(&request, pins).await;
            let body = if request.method == "HEAD" {
                String::new()
            } else {
                body
            };
            (status, content_type, body)
        }
        None => (400, "text/plain; charset=utf-8", "bad request\n".to_owned()),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        if status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        },
    );
    stream.write_all(response.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use icmp_guard_common::{
        Counter, DropReason, FAMILY_V4, FAMILY_V6, SLOT_PASSED, config, drop_slot, global,
        would_drop_slot,
    };

    use super::*;
    use crate::stats::{Snapshot, TypeCounters};

    fn sample() -> Sample {
        let mut echo = TypeCounters {
            family: FAMILY_V4,
            icmp_type: 8,
            ..Default::default()
        };
        echo.slots[SLOT_PASSED as usize] = Counter {
            packets: 5,
            bytes: 490,
        };
        echo.slots[drop_slot(DropReason::RateLimit) as usize] = Counter {
            packets: 3,
            bytes: 294,
        };
        let mut unassigned = TypeCounters {
            family: FAMILY_V6,
            icmp_type: 250,
            ..Default::default()
        };
        unassigned.slots[would_drop_slot(DropReason::Policy) as usize] = Counter {
            packets: 2,
            bytes: 100,
        };
        let mut snapshot = Snapshot {
            mode: config::MODE_ENFORCE,
            icmp: vec![echo, unassigned],
            global: vec![Counter::default(); global::ENTRIES as usize],
            interfaces: Vec::new(),
        };
        snapshot.global[global::NON_ICMP_PASSED as usize].packets = 11;
        snapshot.global[global::MALFORMED_DROPPED as usize].packets = 1;
        let mut report = stats::report(&snapshot, &[]);
        // Built by hand: LinkStatus belongs to the loader and grows fields.
        report.interfaces.push(stats::InterfaceReport {
            name: Some("eth0".to_owned()),
            ifindex: 2,
            mode: Some("native"),
            counters: stats::InterfaceTotals::default(),
        });
        Sample {
            report,
            tracked: Tracked {
                estimated: true,
                sources: 4,
                sources_capacity: 65_536,
                prefixes: 1,
                prefixes_capacity: 16_384,
            },
            generation: 1,
        }
    }

    #[test]
    fn prometheus_text_has_every_series_with_matching_counts() {
        let text = encode(Some(sample()), Format::Prometheus);
        for line in [
            "# TYPE icmp_guard_packets_total counter",
            "icmp_guard_packets_total{family=\"v4\",type=\"8\",name=\"echo-request\",verdict=\"passed\"} 5",
            "icmp_guard_packets_total{family=\"v4\",type=\"8\",name=\"echo-request\",verdict=\"dropped\"} 3",
            "icmp_guard_packets_total{family=\"v4\",type=\"8\",name=\"echo-request\",verdict=\"would_drop\"} 0",
            "icmp_guard_drops_total{family=\"v4\",type=\"8\",name=\"echo-request\",reason=\"rate_limit\"} 3",
            "icmp_guard_would_drops_total{family=\"v6\",type=\"250\",name=\"unassigned\",reason=\"policy\"} 2",
            "icmp_guard_bytes_total{family=\"v4\",type=\"8\",name=\"echo-request\"} 784",
            "icmp_guard_unclassified_drops_total{reason=\"malformed\"} 1",
            "icmp_guard_non_icmp_passed_total 11",
            "icmp_guard_tracked_sources 4",
            "icmp_guard_tracked_prefixes 1",
            "icmp_guard_interface_attached{interface=\"eth0\",mode=\"native\"} 1",
            "icmp_guard_policy_generation 1",
            "icmp_guard_dry_run 0",
            "icmp_guard_up 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn openmetrics_ends_with_eof_and_names_families_without_total() {
        let text = encode(Some(sample()), Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE icmp_guard_packets counter\n"),
            "{text}"
        );
        assert!(text.contains("icmp_guard_packets_total{"), "{text}");
    }

    #[test]
    fn output_order_is_stable() {
        assert_eq!(
            encode(Some(sample()), Format::Prometheus),
            encode(Some(sample()), Format::Prometheus)
        );
    }

    #[test]
    fn not_attached_is_up_zero_and_nothing_else() {
        let text = encode(None, Format::Prometheus);
        assert_eq!(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            ["icmp_guard_up 0"]
        );
    }

    #[test]
    fn requests_are_parsed_and_formats_negotiated() {
        let request = parse_request(
            "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nACCEPT: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
        )
        .expect("HTTP");
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/metrics");
        assert_eq!(
            Format::negotiate(request.accept.as_deref()),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(parse_request("hello"), None);
        assert_eq!(parse_request("GET / SPDY\r\n\r\n"), None);
    }

    #[test]
    fn the_server_answers_over_tcp_and_stops_on_shutdown() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let listener = bind("127.0.0.1:0".parse().expect("address"))
                .await
                .expect("bind");
            let address = listener.local_addr().expect("address");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve(
                listener,
                PinDir::new("/nonexistent-icmp-guard-pins"),
                async {
                    let _ = stopped.await;
                },
            ));
            let get = |path: &'static str| async move {
                let mut stream = TcpStream::connect(address).await.expect("connect");
                stream
                    .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                    .await
                    .expect("write");
                let mut response = String::new();
                stream.read_to_string(&mut response).await.expect("read");
                response
            };
            let metrics = get("/metrics").await;
            assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
            assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
            assert!(metrics.ends_with("icmp_guard_up 0\n"), "{metrics}");
            assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(2), server)
                .await
                .expect("the server stops")
                .expect("no panic");
        });
    }
}
