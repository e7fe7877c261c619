//! The control plane's HTTP server, for the admin endpoint and the server API: hyper 1.x
//! (HTTP/1.1, keep-alive), one task per connection on the control plane's runtime.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};

pub type Request = hyper::Request<Incoming>;
pub type Response = hyper::Response<Full<Bytes>>;

/// A response with `status`, `content_type` and `body`.
pub fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
    let mut response = hyper::Response::new(Full::new(body.into()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Bearer keys a request may present (`Authorization: Bearer KEY`), kept as SHA-256 digests
/// and compared without an early exit.
#[derive(Debug, Clone, Default)]
pub struct BearerKeys(Vec<[u8; 32]>);

impl BearerKeys {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a String>) -> BearerKeys {
        BearerKeys(keys.into_iter().map(|k| Sha256::digest(k.as_bytes()).into()).collect())
    }

    /// True when `headers` carry one of the keys.
    pub fn admit(&self, headers: &hyper::HeaderMap) -> bool {
        let header = headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        // The scheme is case-insensitive (RFC 9110 section 11.1).
        let scheme_ok = |h: &str| h.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("bearer "));
        let Some(key) = header.filter(|h| scheme_ok(h)).and_then(|h| h.get(7..)) else { return false };
        let digest: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
        self.0.iter().fold(false, |found, k| found | (*k == digest))
    }
}

/// Bounds of one HTTP listener: a client cannot hold more than `max_connections` of the
/// node's files, nor one for longer than `header_timeout` without completing a request head
/// (hyper starts that clock when it waits for a head, so idle keep-alive connections are
/// closed by it too).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Label of `ringgate_http_refused_total{listener}` and of the log.
    pub name: &'static str,
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// A connection is asked to close (after its current response) at this age, so a client
    /// trickling requests or not reading its responses cannot keep a slot for good.
    pub max_age: Duration,
}

/// Accepts on `listener` and serves each connection with `handler` until the runtime stops.
pub async fn serve<H, F>(listener: tokio::net::TcpListener, limits: Limits, handler: H)
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let refused = metrics::counter!("ringgate_http_refused_total", "listener" => limits.name);
    let mut last_warned: Option<Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of files, usually: back off instead of spinning on the error.
                tracing::warn!(error = %e, listener = limits.name, "control-plane accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: close at once rather than queue, so the file is given back now.
            refused.increment(1);
            if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                last_warned = Some(Instant::now());
                tracing::warn!(
                    listener = limits.name,
                    max_connections = limits.max_connections,
                    "HTTP connection refused: the listener holds as many as it may (logged once per 10 s)"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = handler(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let served = match tokio::time::timeout(limits.max_age, connection.as_mut()).await {
                Ok(served) => served,
                Err(_) => {
                    // Finish the response being written, then close; a peer that does not
                    // read it loses the connection a few seconds later.
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(Duration::from_secs(5), connection).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "control-plane connection ended with an error");
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A client that keeps a connection busy (a request every 50 ms, each answered) still
    /// loses it at `max_age`.
    #[test]
    fn a_busy_keep_alive_connection_is_closed_at_its_max_age() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            name: "test",
            max_connections: 4,
            header_timeout: Duration::from_secs(5),
            max_age: Duration::from_millis(400),
        };
        let client = std::thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let started = Instant::now();
            let mut answered = 0;
            while started.elapsed() < Duration::from_secs(5) {
                if stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
                    break;
                }
                let mut got = Vec::new();
                let mut buf = [0u8; 512];
                while !got.ends_with(b"\r\n\r\nok") {
                    match stream.read(&mut buf) {
                        Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => return (started.elapsed(), answered),
                    }
                }
                answered += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (started.elapsed(), answered)
        });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::spawn(serve(listener, limits, |_| async { respond(200, "text/plain", "ok") }));
            while !client.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let (lasted, answered) = client.join().unwrap();
        assert!(answered >= 3, "{answered} requests answered");
        assert!(lasted >= Duration::from_millis(350) && lasted < Duration::from_secs(2), "closed after {lasted:?}");
    }
}
