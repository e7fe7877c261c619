//! The server API (docs/api.md): push to a user, a connection, a room or everyone, kick,
//! server-side room membership, presence and room counts, from any service that can make an
//! HTTP request. Served by [`crate::http`] on the control plane; every call goes
//! through the [`Relay`], which reaches whichever nodes hold the target.
//!
//! Bodies are JSON (payloads in base64) or, with `Content-Type: application/x-protobuf`,
//! the messages of codec/proto/api.proto; answers come in the same form as the request.

pub mod body;
pub mod client;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::config::ApiSettings;
use crate::http::{Request, Response, respond};
use crate::relay::{Outcome, Relay, Unavailable};
use body::{Call, Format, Problem};

/// The API's state: the relay, the keys, the limits.
#[derive(Debug)]
pub struct Api {
    relay: Relay,
    /// SHA-256 of each accepted key: a request's key is hashed and compared to these, so the
    /// comparison time says nothing about the keys.
    keys: crate::http::BearerKeys,
    limits: body::Limits,
    metrics: ApiMetrics,
}

/// The API's listener: backends keep pools of keep-alive connections, so room for many.
pub const LIMITS: crate::http::Limits = crate::http::Limits {
    name: "api",
    max_connections: 1024,
    header_timeout: std::time::Duration::from_secs(10),
    max_age: std::time::Duration::from_secs(600),
};

/// How long a request body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Endpoints, as the metrics label them.
const ENDPOINTS: [&str; 9] =
    ["push", "push_batch", "kick", "join", "leave", "presence", "room", "unknown", "unauthorized"];
const STATUSES: [u16; 7] = [200, 400, 401, 404, 405, 413, 503];

#[derive(Debug)]
struct ApiMetrics {
    seconds: Vec<metrics::Histogram>,
}

impl ApiMetrics {
    fn new() -> ApiMetrics {
        // Every (endpoint, status) series exists from the start, at 0.
        for endpoint in ENDPOINTS {
            for status in STATUSES {
                let _ = metrics::counter!("ringgate_api_requests_total", "endpoint" => endpoint, "status" => status.to_string());
            }
        }
        let seconds =
            ENDPOINTS.iter().map(|e| metrics::histogram!("ringgate_api_request_seconds", "endpoint" => *e)).collect();
        ApiMetrics { seconds }
    }

    fn record(&self, endpoint: &'static str, status: u16, started: Instant) {
        metrics::counter!("ringgate_api_requests_total", "endpoint" => endpoint, "status" => status.to_string())
            .increment(1);
        if let Some(i) = ENDPOINTS.iter().position(|e| *e == endpoint) {
            self.seconds[i].record(started.elapsed().as_secs_f64());
        }
    }
}

impl Api {
    /// The API of this node: `max_frame_len` bounds push payloads (a client would refuse a
    /// larger frame).
    pub fn new(relay: Relay, settings: &ApiSettings, max_frame_len: usize) -> Api {
        let keys = crate::http::BearerKeys::new(&settings.keys);
        Api { relay, keys, limits: body::Limits::for_frame_len(max_frame_len), metrics: ApiMetrics::new() }
    }

    /// Serves one request.
    pub async fn handle(self: Arc<Self>, request: Request) -> Response {
        let started = Instant::now();
        let format = Format::of(request.headers());
        let (endpoint, response) = match self.keys.admit(request.headers()) {
            false => ("unauthorized", problem(format, &Problem::Unauthorized)),
            true => {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let route = body::route(&method, &path);
                match route {
                    Err(problem_) => ("unknown", problem(format, &problem_)),
                    Ok(route) => {
                        let endpoint = route.endpoint();
                        let response = match self.read(request).await {
                            Err(p) => problem(format, &p),
                            Ok(bytes) => match body::parse(route, format, &bytes, &self.limits) {
                                Err(p) => problem(format, &p),
                                Ok(call) => self.call(call, format).await,
                            },
                        };
                        (endpoint, response)
                    }
                }
            }
        };
        self.metrics.record(endpoint, response.status().as_u16(), started);
        response
    }

    async fn read(&self, request: Request) -> Result<Bytes, Problem> {
        let limited = http_body_util::Limited::new(request.into_body(), self.limits.body);
        // A body sent a byte at a time must not hold a connection slot for long.
        let Ok(read) = tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await else {
            return Err(Problem::Bad(format!("request body not complete within {} s", BODY_TIMEOUT.as_secs())));
        };
        match read {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                Err(Problem::TooLarge(format!("request body over the limit of {} bytes", self.limits.body)))
            }
            Err(e) => Err(Problem::Bad(format!("request body could not be read: {e}"))),
        }
    }

    async fn call(&self, call: Call, format: Format) -> Response {
        if let Call::Batch(calls) = call {
            // All at once: a batch costs one request, its pushes one Redis round trip each
            // (pipelined on one connection) and one stream entry per node.
            let mut running = tokio::task::JoinSet::new();
            let count = calls.len();
            for (i, call) in calls.into_iter().enumerate() {
                let relay = self.relay.clone();
                running.spawn(async move { (i, push(&relay, call).await) });
            }
            let mut results: Vec<Option<Result<Outcome, Unavailable>>> = Vec::new();
            results.resize_with(count, || None);
            while let Some(joined) = running.join_next().await {
                // A push whose task failed is answered as an internal error below; the
                // others still finish.
                let Ok((i, result)) = joined else { continue };
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(result);
                }
            }
            let results: Vec<_> = results
                .into_iter()
                .map(|r| {
                    r.unwrap_or_else(|| Err(Unavailable { error: "internal error".into(), here: Outcome::default() }))
                })
                .collect();
            return body::batch_outcomes(format, &results);
        }
        let relay = &self.relay;
        let timeout = |ms| call_timeout(relay, ms);
        let done = |result: Result<Outcome, Unavailable>| match result {
            Ok(outcome) => body::outcome(format, &outcome),
            Err(unavailable) => problem(format, &Problem::Unavailable(unavailable)),
        };
        match call {
            call @ (Call::PushUser { .. } | Call::PushConn { .. } | Call::PushRoom { .. } | Call::Broadcast { .. }) => {
                done(push(relay, call).await)
            }
            Call::Kick { user, device, reason, message } => {
                done(relay.kick(&user, device.as_deref(), reason, &message, timeout(None)).await)
            }
            Call::Membership { user, room, join } => done(relay.membership(&user, &room, join, timeout(None)).await),
            Call::Presence { user } => match relay.presence(&user, timeout(None)).await {
                Ok(sessions) => body::presence(format, &user, &sessions),
                Err(unavailable) => problem(format, &Problem::Unavailable(unavailable)),
            },
            Call::Room { room } => match relay.room_size(&room, timeout(None)).await {
                Ok(outcome) => body::room(format, &room, &outcome),
                Err(unavailable) => problem(format, &Problem::Unavailable(unavailable)),
            },
            Call::Batch(_) => unreachable!("handled above"),
        }
    }
}

/// How long a call waits for answers: what it asked, else `[api] timeout`; at most 60 s.
fn call_timeout(relay: &Relay, ms: Option<u64>) -> Duration {
    ms.map_or(relay.timeout(), Duration::from_millis).min(Duration::from_secs(60))
}

/// One push of a batch.
async fn push(relay: &Relay, call: Call) -> Result<Outcome, Unavailable> {
    let timeout = |ms| call_timeout(relay, ms);
    match call {
        Call::PushUser { user, devices, platforms, payload, timeout_ms } => {
            relay.push_user(&user, &devices, &platforms, payload, timeout(timeout_ms)).await
        }
        Call::PushConn { node, conn, payload, timeout_ms } => {
            relay.push_conn(node.as_deref(), conn, payload, timeout(timeout_ms)).await
        }
        Call::PushRoom { room, exclude, payload, timeout_ms } => {
            relay.push_room(&room, exclude, payload, timeout(timeout_ms)).await
        }
        Call::Broadcast { payload, timeout_ms } => relay.broadcast(payload, timeout(timeout_ms)).await,
        _ => Err(Unavailable { error: "not a push".into(), here: Outcome::default() }),
    }
}

fn problem(format: Format, problem: &Problem) -> Response {
    let _ = format; // errors are JSON for every caller: the status says what happened
    let (status, text) = body::problem_json(problem);
    let mut response = respond(status, "application/json", text);
    if matches!(problem, Problem::Unauthorized) {
        response
            .headers_mut()
            .insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
    }
    response
}
