//! A small HTTP server for the exporter: `GET /metrics` answered with a fresh exposition of
//! [`super::collector`], and under `run` `GET /readyz` and `GET /healthz` from its
//! [`Service`]; one connection per task, `Connection: close`.
//!
//! It keeps answering scrapes while others abuse it: one peer address may hold at most
//! [`MAX_PER_PEER`] connections (more are closed at once), a request head must arrive
//! within [`HEADER_DEADLINE`] (a slow-loris client loses its connection), and at most
//! [`MAX_CONNECTIONS`] are open in all, so idle clients can never use up the descriptors
//! `run` needs for its pins, maps and policy file.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::{
    collector::{Format, exposition},
    service::Service,
};
use crate::{
    error::{Error, Result},
    guard::Guard,
};

/// The longest a client may take to send its whole request head.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(2);
/// The largest request head accepted.
const MAX_REQUEST: usize = 16 * 1024;
/// Connections open at once from all peers; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections open at once from one peer address; more are closed at once.
pub const MAX_PER_PEER: usize = 8;
/// The longest a connection may take from accept to the last byte of the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// What `metrics --listen` and `run --metrics` say when the address is not loopback.
pub fn exposure_warning(address: SocketAddr) -> String {
    format!(
        "serving metrics on {address}, beyond loopback: anyone who can reach it reads the guard's counters; listen on 127.0.0.1 (or firewall the port) unless a scraper elsewhere needs it"
    )
}

/// The connections open now, in all and per peer address.
#[derive(Default)]
struct Connections {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// One admitted connection; gives its place back when dropped.
struct Admitted {
    connections: Arc<Mutex<Connections>>,
    peer: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.total = connections.total.saturating_sub(1);
            if let Some(count) = connections.per_peer.get_mut(&self.peer) {
                *count -= 1;
                if *count == 0 {
                    connections.per_peer.remove(&self.peer);
                }
            }
        }
    }
}

/// Admits a connection from `peer` unless it (or everyone) has used up the places.
fn admit(connections: &Arc<Mutex<Connections>>, peer: IpAddr) -> Option<Admitted> {
    let mut open = connections.lock().ok()?;
    let from_peer = open.per_peer.get(&peer).copied().unwrap_or(0);
    if open.total >= MAX_CONNECTIONS || from_peer >= MAX_PER_PEER {
        return None;
    }
    open.total += 1;
    *open.per_peer.entry(peer).or_insert(0) += 1;
    Some(Admitted {
        connections: Arc::clone(connections),
        peer,
    })
}

/// Binds `address` (port 0 picks a free port; the listener says which).
pub async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|source| Error::Listen { address, source })
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes, and `/readyz` and
/// `/healthz` when `service` is given (`run`). Each request reads the pinned maps on a
/// blocking thread; connections are answered one request each, `Connection: close`.
pub async fn serve(
    listener: TcpListener,
    guard: Guard,
    service: Option<Arc<Service>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let connections = Arc::new(Mutex::new(Connections::default()));
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // IPv4 peers of a dual-stack socket count as themselves.
                    let address = match peer.ip() {
                        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                        v4 => v4,
                    };
                    let Some(admitted) = admit(&connections, address) else {
                        log::debug!("metrics: too many connections from {address} (or in all), refusing one");
                        drop(stream);
                        continue;
                    };
                    let guard = guard.clone();
                    let service = service.clone();
                    tokio::spawn(async move {
                        let _admitted = admitted;
                        match tokio::time::timeout(CONNECTION_TIMEOUT, handle(stream, guard, service)).await {
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

/// The status, content type and body answering `request`; reads the maps for `/metrics`,
/// asks `service` for `/readyz` and `/healthz`.
pub async fn respond(
    request: &Request,
    guard: Guard,
    service: Option<Arc<Service>>,
) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if request.method != "GET" && request.method != "HEAD" {
        return (405, TEXT, "only GET and HEAD are served\n".to_owned());
    }
    match request.path.as_str() {
        "/metrics" => {
            let format = Format::negotiate(request.accept.as_deref());
            let reload = service.as_ref().and_then(|service| service.reload());
            match tokio::task::spawn_blocking(move || exposition(&guard, reload, format)).await {
                Ok(Ok(body)) => (200, format.content_type(), body),
                Ok(Err(err)) => (500, TEXT, format!("{err}\n")),
                Err(err) => (500, TEXT, format!("reading the counters failed: {err}\n")),
            }
        }
        "/readyz" | "/healthz" => {
            let Some(service) = service else {
                return (
                    404,
                    TEXT,
                    "not found: /readyz and /healthz are served by `icmp-guard run`\n".to_owned(),
                );
            };
            let ready = request.path == "/readyz";
            let answer = tokio::task::spawn_blocking(move || {
                if ready {
                    service.ready()
                } else {
                    service.alive()
                }
            })
            .await
            .unwrap_or_else(|err| Err(format!("the check failed: {err}")));
            match answer {
                Ok(()) => (
                    200,
                    TEXT,
                    if ready { "ready\n" } else { "alive\n" }.to_owned(),
                ),
                Err(reason) => (503, TEXT, format!("{reason}\n")),
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

async fn handle(
    mut stream: TcpStream,
    guard: Guard,
    service: Option<Arc<Service>>,
) -> std::io::Result<()> {
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
    if tokio::time::timeout(HEADER_DEADLINE, read).await.is_err() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&head);
    let (status, content_type, body) = match parse_request(&text) {
        Some(request) => {
            let (status, content_type, body) = respond(&request, guard, service).await;
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
        503 => "Service Unavailable",
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
    use super::*;
    use crate::bpf::PinDir;

    #[test]
    fn one_peer_gets_a_few_places_and_gives_them_back() {
        let connections = Arc::new(Mutex::new(Connections::default()));
        let greedy: IpAddr = "192.0.2.2".parse().expect("address");
        let scraper: IpAddr = "192.0.2.3".parse().expect("address");
        let held: Vec<Admitted> = (0..MAX_PER_PEER)
            .map(|_| admit(&connections, greedy).expect("admitted"))
            .collect();
        assert!(
            admit(&connections, greedy).is_none(),
            "its places are used up"
        );
        assert!(
            admit(&connections, scraper).is_some(),
            "another peer still gets one"
        );
        drop(held);
        assert!(admit(&connections, greedy).is_some(), "given back on drop");
        let open = connections.lock().expect("lock");
        assert_eq!(open.total, 0);
        assert!(open.per_peer.is_empty());
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

    /// GETs `path` from `address`; the whole response.
    async fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
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
                Guard::new(PinDir::new("/nonexistent-icmp-guard-pins")),
                None,
                async {
                    let _ = stopped.await;
                },
            ));
            let metrics = get(address, "/metrics").await;
            assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
            assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
            assert!(metrics.contains("\nicmp_guard_up 0\n"), "{metrics}");
            assert!(metrics.contains("\nicmp_guard_build_info{"), "{metrics}");
            assert!(!metrics.contains("icmp_guard_policy_"), "{metrics}");
            assert!(get(address, "/nope").await.starts_with("HTTP/1.1 404"));
            let readyz = get(address, "/readyz").await;
            assert!(
                readyz.starts_with("HTTP/1.1 404"),
                "only run serves it: {readyz}"
            );
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(2), server)
                .await
                .expect("the server stops")
                .expect("no panic");
        });
    }

    #[test]
    fn readiness_liveness_and_reload_state_come_from_the_service() {
        use std::sync::atomic::{AtomicBool, Ordering};

        use crate::exporter::Reload;

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let listener = bind("127.0.0.1:0".parse().expect("address"))
                .await
                .expect("bind");
            let address = listener.local_addr().expect("address");
            let ready = Arc::new(AtomicBool::new(false));
            let asked = ready.clone();
            let reload = Arc::new(Mutex::new(None));
            let reload_asked = reload.clone();
            let service = Arc::new(Service::new(
                move || {
                    if asked.load(Ordering::Relaxed) {
                        Ok(())
                    } else {
                        Err("no interface matches --interfaces auto".to_owned())
                    }
                },
                move || reload_asked.lock().expect("lock").clone(),
            ));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve(
                listener,
                Guard::new(PinDir::new("/nonexistent-icmp-guard-pins")),
                Some(service.clone()),
                async {
                    let _ = stopped.await;
                },
            ));
            let readyz = get(address, "/readyz").await;
            assert!(
                readyz.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
                "{readyz}"
            );
            assert!(
                readyz.ends_with("\r\n\r\nno interface matches --interfaces auto\n"),
                "{readyz}"
            );
            ready.store(true, Ordering::Relaxed);
            let readyz = get(address, "/readyz").await;
            assert!(readyz.starts_with("HTTP/1.1 200 OK\r\n"), "{readyz}");
            let healthz = get(address, "/healthz").await;
            assert!(healthz.starts_with("HTTP/1.1 200 OK\r\n"), "{healthz}");
            let metrics = get(address, "/metrics").await;
            assert!(!metrics.contains("icmp_guard_policy_"), "{metrics}");
            *reload.lock().expect("lock") = Some(Reload {
                success: true,
                last_success: Some(1.0),
                sha256: Some("00".repeat(32)),
            });
            let metrics = get(address, "/metrics").await;
            assert!(
                metrics.contains("\nicmp_guard_policy_reload_success 1\n"),
                "{metrics}"
            );
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(2), server)
                .await
                .expect("the server stops")
                .expect("no panic");
        });
    }
}
