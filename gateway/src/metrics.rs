//! Prometheus metrics. Handles are created once per worker ([`WorkerMetrics`]) and only
//! incremented on the hot path: no lookups per frame, no label by user, connection or IP.
//! The admin endpoint renders them ([`render`]) together with gauges read at scrape time.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ringgate_codec::ReasonCode;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once); later calls reuse it.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let recorder = PrometheusBuilder::new().set_buckets(&buckets).ok()?.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            // Histogram samples wait in buckets until upkeep folds them in; without it they
            // would pile up between scrapes (or forever, on a node nobody scrapes).
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new().name("ringgate-metrics".into()).spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    upkeep.run_upkeep();
                    collect_garbage();
                }
            });
            gauge!("ringgate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            for status in ADMIN_REFUSALS {
                let _ = counter!("ringgate_admin_refused_total", "status" => status.to_string());
            }
            Some(handle)
        })
        .as_ref()
}

/// Frees the sample blocks upkeep drained. metrics-util's histogram buckets hand them to
/// crossbeam-epoch as deferred garbage, one bag per bucket drained, and the collector frees
/// a few bags per collection, which runs only every so many pins: measured with heaptrack
/// over a soak, the bags outpaced it and piled up (225 KiB in 211 s, about 60 KiB a minute,
/// for as long as the node ran). Each flush here is one more collection.
fn collect_garbage() {
    for _ in 0..GARBAGE_ROUNDS {
        crossbeam_epoch::pin().flush();
    }
}

/// Collections per upkeep: each frees up to 8 bags once the epoch has moved on (it moves one
/// step per collection when no thread is pinned in an older one), and a node drains a bag
/// per histogram with samples each second.
const GARBAGE_ROUNDS: usize = 32;

/// Statuses of admin requests refused before they are served: a Host that is not text (400),
/// no or a wrong key on a POST (401), a Host not allowed or a cross-origin request (403).
const ADMIN_REFUSALS: [u16; 3] = [400, 401, 403];

/// An admin request refused with `status`.
pub fn admin_refused(status: u16) {
    counter!("ringgate_admin_refused_total", "status" => status.to_string()).increment(1);
}

/// The current metrics in Prometheus text format.
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}

/// Reason codes are below this (the table's ranges end at 69).
const CODES: usize = 70;

/// Client frames the worker counts when it queues them (pushes have their own handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOut {
    Pong,
    Ack,
    AuthOk,
    AuthFail,
    Kick,
    GoAway,
    Close,
}

impl FrameOut {
    const ALL: [FrameOut; 7] = [
        FrameOut::Pong,
        FrameOut::Ack,
        FrameOut::AuthOk,
        FrameOut::AuthFail,
        FrameOut::Kick,
        FrameOut::GoAway,
        FrameOut::Close,
    ];

    fn name(self) -> &'static str {
        match self {
            FrameOut::Pong => "pong",
            FrameOut::Ack => "ack",
            FrameOut::AuthOk => "auth_ok",
            FrameOut::AuthFail => "auth_fail",
            FrameOut::Kick => "kick",
            FrameOut::GoAway => "go_away",
            FrameOut::Close => "close",
        }
    }
}

/// One worker's metric handles.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    /// By transport, indexed by [`crate::status::Transport`].
    pub accepted: [Counter; 5],
    pub active: [Gauge; 5],
    /// TLS handshakes or records that failed (wrong ALPN, plain text on the TLS port, ...).
    pub tls_failed: Counter,
    pub tls_handshake_timeouts: Counter,
    /// Pushes refused because they exceed the client's `max_frame_len`.
    pub push_too_large: Counter,
    /// Messages to another worker that waited for room in its inbox.
    pub peer_delayed: Counter,
    /// ...and those dropped, by kind ([`PEER_DROPS`]).
    peer_dropped: [Counter; PEER_DROPS.len()],
    /// PROXY headers: taken (a client, or the proxy's own), and refused by reason.
    proxy_headers: [Counter; PROXY_RESULTS.len()],
    /// WebSocket handshakes refused and protocol violations, by reason label.
    ws_failures: Vec<(&'static str, Counter)>,
    /// QUIC connection attempts refused (worker full, draining, too many handshakes).
    pub quic_refused: Counter,
    /// QUIC handshakes that failed or did not open their stream in time.
    pub quic_failed: Counter,
    /// QUIC Retries sent: new clients asked to prove their address while handshakes queue.
    pub quic_retried: Counter,
    pub auth_ok: Counter,
    /// Indexed by reason code value (codes are below [`CODES`]): O(1) on the hot path.
    closed: Vec<Option<Counter>>,
    auth_fail: Vec<Option<Counter>>,
    acks: Vec<Option<Counter>>,
    pub frames_out_push: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub sends: Counter,
    pub send_ack_seconds: Histogram,
    pub backend_links_up: Gauge,
    pub backend_link_rtt_seconds: Histogram,
    pub ring_size: Gauge,
    pub ring_keys_moved_ratio: Gauge,
    pub frames_in_auth: Counter,
    pub frames_in_send: Counter,
    pub frames_in_close: Counter,
    pub frames_in_ping: Counter,
    frames_out: [Counter; FrameOut::ALL.len()],
    pub registry_dropped: Counter,
    pub accept_errors: Counter,
    /// Connections refused at accept, by [`Refused`].
    refused: [Counter; Refused::ALL.len()],
}

/// `ringgate_peer_messages_dropped_total`'s `kind`: a push's copy for a full worker (its
/// PushResult counts only who got it), a worker's count for a node-wide push (its tally
/// expires), and must-deliver messages beyond the backlog bound.
const PEER_DROPS: [&str; 3] = ["push", "push_count", "backlog_full"];

/// `ringgate_proxy_headers_total`'s `result`: a client's address, the proxy's own
/// (LOCAL/UNKNOWN), or why the header was refused ([`crate::transport::proxy::ProxyError`]).
const PROXY_RESULTS: [&str; 5] = ["client", "local", "malformed", "timeout", "closed"];

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections` (per node) reached.
    NodeFull,
    /// The node is near its open-file limit.
    Files,
    /// The worker holds `limits.max_unauthenticated` connections not logged in.
    Unauthenticated,
    /// The worker holds `limits.max_tls_handshakes` TLS connections not logged in.
    TlsHandshakes,
    /// The node's RSS is at `limits.max_memory`.
    Memory,
    /// A per-address limit.
    Address(crate::admission::Refusal),
}

impl Refused {
    const ALL: [Refused; 9] = [
        Refused::NodeFull,
        Refused::Files,
        Refused::Memory,
        Refused::Unauthenticated,
        Refused::TlsHandshakes,
        Refused::Address(crate::admission::Refusal::ALL[0]),
        Refused::Address(crate::admission::Refusal::ALL[1]),
        Refused::Address(crate::admission::Refusal::ALL[2]),
        Refused::Address(crate::admission::Refusal::ALL[3]),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Refused::NodeFull => "node_full",
            Refused::Files => "files",
            Refused::Memory => "memory",
            Refused::Unauthenticated => "unauthenticated",
            Refused::TlsHandshakes => "tls_handshakes",
            Refused::Address(r) => r.name(),
        }
    }

    /// The reason the client is told (when its transport can be told anything).
    pub fn reason(self) -> ReasonCode {
        match self {
            Refused::Address(r) => r.reason(),
            _ => ReasonCode::SERVER_OVERLOADED,
        }
    }
}

impl WorkerMetrics {
    /// Creates every handle of worker `index` (label `worker`) up front.
    pub fn new(index: usize) -> WorkerMetrics {
        install();
        let w = index.to_string();
        let by_reason = |name: &'static str, label: &'static str| -> Vec<Option<Counter>> {
            let mut table = vec![None; CODES];
            for &code in ReasonCode::ALL {
                if let Some(slot) = table.get_mut(code.0 as usize) {
                    *slot = Some(counter!(name, "worker" => w.clone(), label => code.name().unwrap_or("other")));
                }
            }
            table
        };
        WorkerMetrics {
            accepted: crate::status::Transport::ALL.map(
                |t| counter!("ringgate_connections_accepted_total", "worker" => w.clone(), "transport" => t.name()),
            ),
            active: crate::status::Transport::ALL
                .map(|t| gauge!("ringgate_connections_active", "worker" => w.clone(), "transport" => t.name())),
            tls_failed: counter!("ringgate_tls_failures_total", "worker" => w.clone(), "reason" => "error"),
            proxy_headers: PROXY_RESULTS
                .map(|result| counter!("ringgate_proxy_headers_total", "worker" => w.clone(), "result" => result)),
            push_too_large: counter!("ringgate_pushes_too_large_total", "worker" => w.clone()),
            peer_delayed: counter!("ringgate_peer_messages_delayed_total", "worker" => w.clone()),
            peer_dropped: PEER_DROPS
                .map(|kind| counter!("ringgate_peer_messages_dropped_total", "worker" => w.clone(), "kind" => kind)),
            tls_handshake_timeouts: counter!(
                "ringgate_tls_failures_total", "worker" => w.clone(), "reason" => "handshake_timeout"
            ),
            ws_failures: crate::transport::ws::WsFailure::names()
                .map(|r| (r, counter!("ringgate_ws_failures_total", "worker" => w.clone(), "reason" => r)))
                .collect(),
            quic_refused: counter!("ringgate_quic_refused_total", "worker" => w.clone()),
            quic_failed: counter!("ringgate_quic_handshake_failures_total", "worker" => w.clone()),
            quic_retried: counter!("ringgate_quic_retries_total", "worker" => w.clone()),
            auth_ok: counter!("ringgate_auth_total", "worker" => w.clone(), "result" => "ok"),
            closed: by_reason("ringgate_connections_closed_total", "reason"),
            auth_fail: by_reason("ringgate_auth_total", "result"),
            acks: by_reason("ringgate_acks_total", "reason"),
            frames_out_push: counter!("ringgate_frames_out_total", "worker" => w.clone(), "op" => "push"),
            bytes_in: counter!("ringgate_bytes_in_total", "worker" => w.clone()),
            bytes_out: counter!("ringgate_bytes_out_total", "worker" => w.clone()),
            sends: counter!("ringgate_sends_total", "worker" => w.clone()),
            send_ack_seconds: histogram!("ringgate_send_ack_seconds", "worker" => w.clone()),
            backend_links_up: gauge!("ringgate_backend_links_up", "worker" => w.clone()),
            backend_link_rtt_seconds: histogram!("ringgate_backend_link_rtt_seconds", "worker" => w.clone()),
            ring_size: gauge!("ringgate_ring_size", "worker" => w.clone()),
            ring_keys_moved_ratio: gauge!("ringgate_ring_keys_moved_ratio", "worker" => w.clone()),
            frames_in_auth: counter!("ringgate_frames_in_total", "worker" => w.clone(), "op" => "auth"),
            frames_in_send: counter!("ringgate_frames_in_total", "worker" => w.clone(), "op" => "send"),
            frames_in_close: counter!("ringgate_frames_in_total", "worker" => w.clone(), "op" => "close"),
            frames_in_ping: counter!("ringgate_frames_in_total", "worker" => w.clone(), "op" => "ping"),
            frames_out: FrameOut::ALL
                .map(|op| counter!("ringgate_frames_out_total", "worker" => w.clone(), "op" => op.name())),
            registry_dropped: counter!("ringgate_registry_dropped_total", "worker" => w.clone()),
            accept_errors: counter!("ringgate_accept_errors_total", "worker" => w.clone()),
            refused: Refused::ALL
                .map(|r| counter!("ringgate_admission_refused_total", "worker" => w.clone(), "reason" => r.name())),
        }
    }

    /// A message to another worker dropped: `kind` is one of [`PEER_DROPS`].
    pub fn peer_dropped(&self, kind: &str) {
        if let Some(c) = PEER_DROPS.iter().position(|k| *k == kind).and_then(|i| self.peer_dropped.get(i)) {
            c.increment(1);
        }
    }

    /// A PROXY header read (or refused).
    pub fn proxy_header(&self, result: Result<crate::transport::proxy::Proxied, crate::transport::proxy::ProxyError>) {
        use crate::transport::proxy::Proxied;
        let name = match result {
            Ok(Proxied::Client(_)) => "client",
            Ok(Proxied::Local) => "local",
            Err(e) => e.name(),
        };
        if let Some(c) = PROXY_RESULTS.iter().position(|r| *r == name).and_then(|i| self.proxy_headers.get(i)) {
            c.increment(1);
        }
    }

    /// The counter of refusals for `why` (for the QUIC endpoint, which refuses by itself).
    pub fn refused_counter(&self, why: Refused) -> Counter {
        let i = Refused::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.refused[i].clone()
    }

    /// Counts a refusal at accept.
    pub fn refused(&self, why: Refused) {
        if let Some(i) = Refused::ALL.iter().position(|r| *r == why) {
            self.refused[i].increment(1);
        }
    }

    fn pick(table: &[Option<Counter>], code: ReasonCode) -> Option<&Counter> {
        table.get(code.0 as usize).and_then(Option::as_ref)
    }

    /// One frame of `op` queued for a client (push has its own handle).
    pub fn frame_out(&self, op: FrameOut) {
        if let Some(c) = self.frames_out.get(op as usize) {
            c.increment(1);
        }
    }

    /// A WebSocket refusal or violation, by its label.
    pub fn ws_failed(&self, reason: &str) {
        if let Some((_, c)) = self.ws_failures.iter().find(|(r, _)| *r == reason) {
            c.increment(1);
        }
    }

    pub fn closed(&self, reason: ReasonCode) {
        if let Some(c) = Self::pick(&self.closed, reason) {
            c.increment(1);
        }
    }

    pub fn auth_failed(&self, reason: ReasonCode) {
        if let Some(c) = Self::pick(&self.auth_fail, reason) {
            c.increment(1);
        }
    }

    /// An Ack sent to a client for a Send forwarded `elapsed` ago (None: answered at once).
    pub fn acked(&self, code: ReasonCode, elapsed: Option<Duration>) {
        if let Some(c) = Self::pick(&self.acks, code) {
            c.increment(1);
        }
        if let Some(e) = elapsed {
            self.send_ack_seconds.record(e.as_secs_f64());
        }
    }
}

/// Node-level gauges read at scrape time (the control plane's state).
pub fn set_node_gauges(node: &NodeGauges) {
    gauge!("ringgate_info", "driver" => node.driver, "node" => node.node_id.clone(), "backend" => node.backend)
        .set(1.0);
    gauge!("ringgate_connections_capacity").set(node.capacity as f64);
    gauge!("ringgate_ready").set(f64::from(u8::from(node.ready)));
    gauge!("ringgate_draining").set(f64::from(u8::from(node.draining)));
    if let Some(r) = &node.registry {
        gauge!("ringgate_registry_up").set(f64::from(u8::from(r.up)));
        gauge!("ringgate_registry_queue_depth").set(r.pending as f64);
        gauge!("ringgate_registry_records").set(r.records as f64);
        gauge!("ringgate_registry_overflow").set(r.overflow as f64);
        gauge!("ringgate_registry_batches").set(r.batches as f64);
        gauge!("ringgate_registry_failures").set(r.failures as f64);
        gauge!("ringgate_registry_swept").set(r.swept as f64);
    }
    if let Some(d) = &node.dns {
        gauge!("ringgate_dns_resolutions").set(d.stats.resolutions as f64);
        gauge!("ringgate_dns_failures").set(d.stats.failures as f64);
        gauge!("ringgate_dns_empty_answers").set(d.stats.empty as f64);
        gauge!("ringgate_dns_addresses").set(d.current.len() as f64);
        gauge!("ringgate_dns_last_lookup_ok").set(f64::from(u8::from(d.last_ok)));
        if let Some(t) = d.last_good {
            gauge!("ringgate_dns_last_good_age_seconds").set(t.elapsed().as_secs_f64());
        }
    }
}

/// What [`set_node_gauges`] reports.
#[derive(Debug, Clone)]
pub struct NodeGauges {
    pub driver: &'static str,
    /// `embedded` (the in-process backend) or `links` (backends over links).
    pub backend: &'static str,
    pub capacity: usize,
    pub node_id: String,
    pub ready: bool,
    pub draining: bool,
    pub registry: Option<crate::status::RegistryState>,
    pub dns: Option<crate::status::DiscoveryState>,
}
