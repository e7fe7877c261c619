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
            gauge!("ringgate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .as_ref()
}

/// The current metrics in Prometheus text format.
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}

/// One worker's metric handles.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    pub accepted: Counter,
    pub active: Gauge,
    pub auth_ok: Counter,
    closed: Vec<(ReasonCode, Counter)>,
    auth_fail: Vec<(ReasonCode, Counter)>,
    acks: Vec<(ReasonCode, Counter)>,
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
    frames_out: Vec<(&'static str, Counter)>,
    pub registry_dropped: Counter,
}

impl WorkerMetrics {
    /// Creates every handle of worker `index` (label `worker`) up front.
    pub fn new(index: usize) -> WorkerMetrics {
        install();
        let w = index.to_string();
        let by_reason = |name: &'static str| -> Vec<(ReasonCode, Counter)> {
            ReasonCode::ALL
                .iter()
                .map(|&code| (code, counter!(name, "worker" => w.clone(), "reason" => code.name().unwrap_or("other"))))
                .collect()
        };
        WorkerMetrics {
            accepted: counter!("ringgate_connections_accepted_total", "worker" => w.clone(), "transport" => "tcp"),
            active: gauge!("ringgate_connections_active", "worker" => w.clone(), "transport" => "tcp"),
            auth_ok: counter!("ringgate_auth_total", "worker" => w.clone(), "result" => "ok"),
            closed: by_reason("ringgate_connections_closed_total"),
            auth_fail: ReasonCode::ALL
                .iter()
                .map(|&c| {
                    (c, counter!("ringgate_auth_total", "worker" => w.clone(), "result" => c.name().unwrap_or("other")))
                })
                .collect(),
            acks: by_reason("ringgate_acks_total"),
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
            frames_out: ["pong", "ack", "auth_ok", "auth_fail", "kick", "go_away", "close"]
                .into_iter()
                .map(|op| (op, counter!("ringgate_frames_out_total", "worker" => w.clone(), "op" => op)))
                .collect(),
            registry_dropped: counter!("ringgate_registry_dropped_total", "worker" => w),
        }
    }

    fn pick(list: &[(ReasonCode, Counter)], code: ReasonCode) -> Option<&Counter> {
        list.iter().find(|(c, _)| *c == code).map(|(_, counter)| counter)
    }

    /// One frame of `op` queued for a client (push has its own handle).
    pub fn frame_out(&self, op: &str) {
        if let Some((_, c)) = self.frames_out.iter().find(|(o, _)| *o == op) {
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
    gauge!("ringgate_info", "driver" => node.driver, "node" => node.node_id.clone()).set(1.0);
    gauge!("ringgate_ready").set(f64::from(u8::from(node.ready)));
    gauge!("ringgate_draining").set(f64::from(u8::from(node.draining)));
    if let Some(r) = &node.registry {
        gauge!("ringgate_registry_up").set(f64::from(u8::from(r.up)));
        gauge!("ringgate_registry_queue_depth").set(r.pending as f64);
        gauge!("ringgate_registry_records").set(r.records as f64);
        gauge!("ringgate_registry_overflow").set(r.overflow as f64);
        gauge!("ringgate_registry_batches").set(r.batches as f64);
        gauge!("ringgate_registry_failures").set(r.failures as f64);
    }
    if let Some(d) = &node.dns {
        gauge!("ringgate_dns_resolutions").set(d.stats.resolutions as f64);
        gauge!("ringgate_dns_failures").set(d.stats.failures as f64);
        gauge!("ringgate_dns_empty_answers").set(d.stats.empty as f64);
        gauge!("ringgate_dns_addresses").set(d.current.len() as f64);
        if let Some(t) = d.last_good {
            gauge!("ringgate_dns_last_good_age_seconds").set(t.elapsed().as_secs_f64());
        }
    }
}

/// What [`set_node_gauges`] reports.
#[derive(Debug, Clone)]
pub struct NodeGauges {
    pub driver: &'static str,
    pub node_id: String,
    pub ready: bool,
    pub draining: bool,
    pub registry: Option<crate::registry::redis::RegistryState>,
    pub dns: Option<crate::control::dns::DiscoveryState>,
}
