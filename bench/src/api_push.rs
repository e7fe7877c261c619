//! `ringgate-bench push --via api`: the pushes come from a service calling a node's server API
//! (docs/api.md) over HTTP/1.1 keep-alive connections, instead of from a backend link.
//!
//! With `--spawn same|cross` the run starts its own deployment: a redis-server and two nodes
//! (`a` serves the API; the receivers connect to `a` for same-node pushes, to `c` for
//! cross-node ones), so the figures include the trip through Redis and the CPU Redis spends.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::{BufMut, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::conn::{PushMode, unix_us};
use crate::control;
use crate::gateway::GatewayChild;
use crate::registry::RedisChild;

/// Where the API is and how to call it.
#[derive(Debug, Clone)]
pub struct ApiTarget {
    pub addr: SocketAddr,
    pub key: String,
    /// Keep-alive connections, each with one request in flight.
    pub conns: usize,
    /// Pushes per request: 1 is `POST /v1/push`, more is `POST /v1/push/batch`.
    pub batch: usize,
}

/// What the driver saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct ApiDriven {
    pub sent: u64,
    /// Answered 200.
    pub answered: u64,
    /// Connections the answers said were reached.
    pub delivered: u64,
    /// Answered 200 with `offline`.
    pub offline: u64,
    /// Failed requests or other statuses.
    pub errors: u64,
}

/// Pushes at `rate` per second in total (0: as fast as the connections go) for `seconds`,
/// to user `u{k}` (or room `room{k}`, or everyone), each payload starting with its send time.
pub fn drive(
    api: &ApiTarget,
    mode: PushMode,
    receivers: usize,
    rooms: usize,
    rate: u64,
    seconds: u64,
    payload: usize,
) -> ApiDriven {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return ApiDriven { errors: 1, ..ApiDriven::default() };
    };
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..api.conns.max(1) {
            let (api, next) = (api.clone(), next.clone());
            tasks.spawn(async move {
                let mut seen = ApiDriven::default();
                let Some(mut sender) = connect(api.addr).await else {
                    seen.errors += 1;
                    return seen;
                };
                let mut body = bytes::BytesMut::with_capacity(payload.max(8));
                let batch = api.batch.max(1) as u64;
                while Instant::now() < end && !control::stopping() {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if rate > 0 {
                        // Wait until the batch's last push is due.
                        let due = started + Duration::from_secs_f64((first + batch - 1) as f64 / rate as f64);
                        if due >= end {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let pushes: Vec<String> = (first..first + batch)
                        .map(|k| {
                            body.clear();
                            body.put_u64(unix_us());
                            body.resize(payload.max(8), 0);
                            let payload = base64::engine::general_purpose::STANDARD.encode(&body);
                            match mode {
                                PushMode::User => {
                                    let user = (k as usize * 7919) % receivers.max(1);
                                    format!(r#"{{"user":"u{user}","payload":"{payload}"}}"#)
                                }
                                PushMode::Room => {
                                    format!(r#"{{"room":"room{}","payload":"{payload}"}}"#, k as usize % rooms.max(1))
                                }
                                PushMode::Broadcast => format!(r#"{{"broadcast":true,"payload":"{payload}"}}"#),
                            }
                        })
                        .collect();
                    let (path, json) = if batch == 1 {
                        ("/v1/push", pushes.concat())
                    } else {
                        ("/v1/push/batch", format!(r#"{{"pushes":[{}]}}"#, pushes.join(",")))
                    };
                    seen.sent += batch;
                    let Some((status, answer)) = request(&mut sender, &api, "POST", path, json).await else {
                        seen.errors += batch;
                        break;
                    };
                    if status != 200 {
                        seen.errors += batch;
                        continue;
                    }
                    let outcomes = match answer.get("results").and_then(|r| r.as_array()) {
                        Some(results) => results.clone(),
                        None => vec![answer],
                    };
                    for outcome in outcomes {
                        if outcome.get("error").is_some() {
                            seen.errors += 1;
                            continue;
                        }
                        seen.answered += 1;
                        seen.delivered += outcome["delivered"].as_u64().unwrap_or(0);
                        seen.offline += u64::from(outcome["offline"] == true);
                    }
                }
                seen
            });
        }
        let mut total = ApiDriven::default();
        while let Some(Ok(seen)) = tasks.join_next().await {
            total.sent += seen.sent;
            total.answered += seen.answered;
            total.delivered += seen.delivered;
            total.offline += seen.offline;
            total.errors += seen.errors;
        }
        total
    })
}

async fn connect(addr: SocketAddr) -> Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

/// One request on a keep-alive connection: the status and the JSON answer.
async fn request(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    api: &ApiTarget,
    method: &str,
    path: &str,
    body: String,
) -> Option<(u16, serde_json::Value)> {
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, api.addr.to_string())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {}", api.key))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    let answer = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, serde_json::from_slice(&answer).unwrap_or_default()))
}

/// Waits up to `timeout` until presence shows `user` online (the registry is written
/// asynchronously after a login).
pub fn wait_online(api: &ApiTarget, user: &str, timeout: Duration) -> bool {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return false };
    runtime.block_on(async {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(mut sender) = connect(api.addr).await {
                let path = format!("/v1/presence/{user}");
                if let Some((200, answer)) = request(&mut sender, api, "GET", &path, String::new()).await
                    && answer["online"] == true
                {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    })
}

/// Same-node or cross-node: where the receivers connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Spawn {
    /// The receivers are on the node that serves the API.
    Same,
    /// The receivers are on another node; every push goes through Redis.
    Cross,
}

/// A deployment started for the run: Redis and nodes `a` (API) and `c`.
#[derive(Debug)]
pub struct Deployment {
    pub redis: RedisChild,
    pub a: GatewayChild,
    pub c: GatewayChild,
    pub api: SocketAddr,
}

pub const SPAWN_KEY: &str = "bench-api-key-0123456789";

impl Deployment {
    pub fn start(binary: &Path, workers: usize) -> std::io::Result<Deployment> {
        let (redis, url) = crate::registry::start_redis()?;
        let port = crate::compare::free_port()?;
        let api: SocketAddr = ([127, 0, 0, 1], port).into();
        let node = |id: &str, listen: &str| {
            let text = crate::gateway::bench_config(
                "io_uring",
                workers,
                &[],
                listen,
                &format!(
                    "[node]\nid = \"{id}\"\n[redis]\nurl = \"{url}\"\nlease_ttl = \"5s\"\n[api]\nkeys = [\"{SPAWN_KEY}\"]\ntimeout = \"2s\"\n"
                ),
            );
            GatewayChild::start(binary, &format!("api-{id}"), &text)
        };
        let a = node("a", &format!("api = \"{api}\"\n"))?;
        let c = node("c", "")?;
        Ok(Deployment { redis, a, c, api })
    }

    /// CPU milliseconds used so far by Redis, node a and node c.
    pub fn cpu_ms(&self) -> [u64; 3] {
        let cpu = |pid| crate::procinfo::cpu_ms(pid).unwrap_or(0);
        [cpu(self.redis.pid()), cpu(self.a.pid()), cpu(self.c.pid())]
    }
}
