//! The admin endpoint's status page for one node: `GET /` serves `page.html` (self-contained:
//! no CDN, no external fetch, which its Content-Security-Policy enforces) and `GET
//! /status.json` the figures it draws, polled each second.
//!
//! The figures come from the node's own Prometheus text, parsed with `prometheus-parse`, so the
//! page shows what /metrics says and the hot path counts nothing extra for it. A sample is taken
//! when /status.json is asked for (at most one per [`MIN_GAP`]), so nothing runs while nobody
//! looks; rates and the p99 are over the samples of the last [`WINDOW`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};
use serde::Serialize;

/// The page itself.
pub const HTML: &str = include_str!("page.html");

/// What the page may load: itself, its inline script and style, and /status.json.
pub const CSP: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:";

/// Samples closer together than this reuse the newest one.
const MIN_GAP: Duration = Duration::from_millis(500);
/// Rates and the p99 are computed over this much history.
const WINDOW: Duration = Duration::from_secs(10);
/// Samples kept for the charts (about five minutes at one a second).
const HISTORY: usize = 300;

/// The counters of one moment, summed over workers.
#[derive(Debug, Clone, Default, PartialEq)]
struct Sample {
    unix_ms: u64,
    by_transport: BTreeMap<String, f64>,
    logins: f64,
    auth_failures: f64,
    sends: f64,
    acks: f64,
    ack_errors: f64,
    pushes: f64,
    /// Send->Ack histogram: (upper bound, cumulative count), ascending, +Inf last.
    send_ack: Vec<(f64, f64)>,
}

impl Sample {
    fn parse(text: &str, unix_ms: u64) -> Sample {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let Ok(scrape) = Scrape::parse(lines) else { return Sample { unix_ms, ..Sample::default() } };
        let mut s = Sample { unix_ms, ..Sample::default() };
        let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for sample in scrape.samples {
            let label = |name: &str| sample.labels.get(name).unwrap_or("");
            match (sample.metric.as_str(), &sample.value) {
                ("ringgate_connections_active", Value::Gauge(v)) => {
                    *s.by_transport.entry(label("transport").to_owned()).or_default() += v;
                }
                ("ringgate_auth_total", Value::Counter(v)) if label("result") == "ok" => s.logins += v,
                ("ringgate_auth_total", Value::Counter(v)) => s.auth_failures += v,
                ("ringgate_sends_total", Value::Counter(v)) => s.sends += v,
                ("ringgate_acks_total", Value::Counter(v)) => {
                    s.acks += v;
                    if label("reason") != "ok" {
                        s.ack_errors += v;
                    }
                }
                ("ringgate_frames_out_total", Value::Counter(v)) if label("op") == "push" => s.pushes += v,
                ("ringgate_send_ack_seconds", Value::Histogram(counts)) => {
                    for c in counts {
                        // Keyed by the bound's bits, which sort like the (non-negative) bounds
                        // with +Inf last; every worker has the same bounds.
                        let slot = buckets.entry(c.less_than.to_bits()).or_insert((c.less_than, 0.0));
                        slot.1 += c.count;
                    }
                }
                _ => {}
            }
        }
        s.send_ack = buckets.into_values().collect();
        s
    }

    fn connections(&self) -> f64 {
        self.by_transport.values().sum()
    }
}

/// The q-quantile of the observations between two cumulative histograms, interpolating
/// linearly inside the bucket it falls in: the rule of Prometheus's `histogram_quantile`, so
/// the page and a dashboard agree. `None` without observations.
fn quantile(q: f64, newer: &[(f64, f64)], older: &[(f64, f64)]) -> Option<f64> {
    let delta: Vec<(f64, f64)> = newer
        .iter()
        .map(|&(le, n)| {
            let before = older.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, c)| *c);
            (le, (n - before).max(0.0))
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in &delta {
        if count >= rank {
            if le.is_infinite() {
                // Above the highest finite bound: that bound is the best answer there is.
                return Some(lower);
            }
            let inside = count - below;
            return Some(if inside > 0.0 { lower + (le - lower) * (rank - below) / inside } else { le });
        }
        lower = le;
        below = count;
    }
    Some(lower)
}

/// What `/status.json` answers (docs/deploy.md, "Status page").
#[derive(Debug, Serialize)]
pub struct Status {
    pub node: String,
    pub version: &'static str,
    pub driver: &'static str,
    pub backend: &'static str,
    pub ready: bool,
    /// Why not, when not ready.
    pub not_ready: Option<String>,
    /// What a ready node cannot do now (Redis down with `redis.fail_open`).
    pub degraded: Option<String>,
    pub draining: bool,
    pub connections: Connections,
    pub links_up: u64,
    pub registry: Option<Registry>,
    pub dns: Option<Dns>,
    pub totals: Totals,
    /// Seconds the rates and the p99 cover (0 until a second sample exists).
    pub window_seconds: f64,
    pub rates: Rates,
    pub p99_send_ack_seconds: Option<f64>,
    /// One point per sample, oldest first, each with its rates since the sample before.
    pub history: Vec<Point>,
}

#[derive(Debug, Serialize)]
pub struct Connections {
    pub total: u64,
    pub capacity: u64,
    pub by_transport: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct Registry {
    pub up: bool,
    pub records: usize,
    pub queue_depth: usize,
    pub overflow: u64,
    pub failures: u64,
}

#[derive(Debug, Serialize)]
pub struct Dns {
    pub addresses: usize,
    pub failures: u64,
    pub last_good_age_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Totals {
    pub logins: u64,
    pub auth_failures: u64,
    pub sends: u64,
    pub acks: u64,
    pub ack_errors: u64,
    pub pushes: u64,
}

/// Per second.
#[derive(Debug, Default, Serialize)]
pub struct Rates {
    pub logins: f64,
    pub sends: f64,
    pub ack_errors: f64,
    pub pushes: f64,
}

#[derive(Debug, Serialize)]
pub struct Point {
    pub unix_ms: u64,
    pub connections: u64,
    pub logins: f64,
    pub sends: f64,
    pub ack_errors: f64,
    pub p99_send_ack_seconds: Option<f64>,
}

/// The node's facts the page shows beside its counters.
#[derive(Debug)]
pub struct NodeFacts {
    pub node: String,
    pub driver: &'static str,
    pub backend: &'static str,
    pub readiness: Result<(), String>,
    pub degraded: Option<&'static str>,
    pub draining: bool,
    pub capacity: usize,
    pub links_up: u64,
    pub registry: Option<crate::status::RegistryState>,
    pub dns: Option<crate::status::DiscoveryState>,
}

/// The samples taken so far, shared by the admin endpoint's connections.
#[derive(Debug, Default)]
pub struct StatusPage {
    samples: Mutex<VecDeque<(Instant, Sample)>>,
}

impl StatusPage {
    /// Samples `metrics` (the node's Prometheus text) unless the newest sample is recent,
    /// and answers with `facts` and the figures over the window.
    pub fn status(&self, facts: NodeFacts, metrics: impl FnOnce() -> String) -> Status {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if samples.back().is_none_or(|(at, _)| now.duration_since(*at) >= MIN_GAP) {
            samples.push_back((now, Sample::parse(&metrics(), crate::registry::unix_ms())));
            if samples.len() > HISTORY {
                samples.pop_front();
            }
        }
        let (newest_at, newest) = samples.back().cloned().unwrap_or((now, Sample::default()));
        // The oldest sample within the window; after a pause in polling longer than the
        // window, the one before the newest (rates over the pause rather than none).
        let last = samples.len().saturating_sub(1);
        let within = samples.iter().position(|(at, _)| newest_at.duration_since(*at) <= WINDOW).unwrap_or(last);
        let from = if within == last { last.saturating_sub(1) } else { within };
        let (oldest_at, oldest) = samples.get(from).cloned().unwrap_or((newest_at, newest.clone()));
        let window = newest_at.duration_since(oldest_at).as_secs_f64();
        let over_window = rates(&newest, &oldest, window);
        let mut history = Vec::with_capacity(samples.len());
        let mut previous: Option<&(Instant, Sample)> = None;
        for entry in samples.iter() {
            let (at, s) = entry;
            let (r, p99) = match previous {
                Some((p_at, p)) => {
                    (rates(s, p, at.duration_since(*p_at).as_secs_f64()), quantile(0.99, &s.send_ack, &p.send_ack))
                }
                None => (Rates::default(), None),
            };
            history.push(Point {
                unix_ms: s.unix_ms,
                connections: s.connections() as u64,
                logins: r.logins,
                sends: r.sends,
                ack_errors: r.ack_errors,
                p99_send_ack_seconds: p99,
            });
            previous = Some(entry);
        }
        Status {
            node: facts.node,
            version: env!("CARGO_PKG_VERSION"),
            driver: facts.driver,
            backend: facts.backend,
            ready: facts.readiness.is_ok(),
            not_ready: facts.readiness.err(),
            degraded: facts.degraded.map(str::to_owned),
            draining: facts.draining,
            connections: Connections {
                total: newest.connections() as u64,
                capacity: facts.capacity as u64,
                by_transport: newest.by_transport.iter().map(|(t, n)| (t.clone(), *n as u64)).collect(),
            },
            links_up: facts.links_up,
            registry: facts.registry.map(|r| Registry {
                up: r.up,
                records: r.records,
                queue_depth: r.pending,
                overflow: r.overflow,
                failures: r.failures,
            }),
            dns: facts.dns.map(|d| Dns {
                addresses: d.current.len(),
                failures: d.stats.failures,
                last_good_age_seconds: d.last_good.map(|t| t.elapsed().as_secs_f64()),
            }),
            totals: Totals {
                logins: newest.logins as u64,
                auth_failures: newest.auth_failures as u64,
                sends: newest.sends as u64,
                acks: newest.acks as u64,
                ack_errors: newest.ack_errors as u64,
                pushes: newest.pushes as u64,
            },
            window_seconds: window,
            rates: over_window,
            p99_send_ack_seconds: quantile(0.99, &newest.send_ack, &oldest.send_ack),
            history,
        }
    }
}

fn rates(newer: &Sample, older: &Sample, seconds: f64) -> Rates {
    if seconds <= 0.0 {
        return Rates::default();
    }
    let per_second = |a: f64, b: f64| ((a - b) / seconds).max(0.0);
    Rates {
        logins: per_second(newer.logins, older.logins),
        sends: per_second(newer.sends, older.sends),
        ack_errors: per_second(newer.ack_errors, older.ack_errors),
        pushes: per_second(newer.pushes, older.pushes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE ringgate_connections_active gauge
ringgate_connections_active{worker=\"0\",transport=\"tcp\"} 3
ringgate_connections_active{worker=\"1\",transport=\"tcp\"} 2
ringgate_connections_active{worker=\"1\",transport=\"wss\"} 1
# TYPE ringgate_auth_total counter
ringgate_auth_total{worker=\"0\",result=\"ok\"} 7
ringgate_auth_total{worker=\"0\",result=\"auth_expired\"} 2
# TYPE ringgate_acks_total counter
ringgate_acks_total{worker=\"0\",reason=\"ok\"} 90
ringgate_acks_total{worker=\"1\",reason=\"backend_busy\"} 10
# TYPE ringgate_send_ack_seconds histogram
ringgate_send_ack_seconds_bucket{worker=\"0\",le=\"0.001\"} 50
ringgate_send_ack_seconds_bucket{worker=\"0\",le=\"0.01\"} 90
ringgate_send_ack_seconds_bucket{worker=\"0\",le=\"+Inf\"} 100
ringgate_send_ack_seconds_sum{worker=\"0\"} 1
ringgate_send_ack_seconds_count{worker=\"0\"} 100
ringgate_send_ack_seconds_bucket{worker=\"1\",le=\"0.001\"} 50
ringgate_send_ack_seconds_bucket{worker=\"1\",le=\"0.01\"} 100
ringgate_send_ack_seconds_bucket{worker=\"1\",le=\"+Inf\"} 100
ringgate_send_ack_seconds_sum{worker=\"1\"} 1
ringgate_send_ack_seconds_count{worker=\"1\"} 100
";

    #[test]
    fn a_sample_sums_workers_and_splits_logins_from_failures_and_acks_from_errors() {
        let s = Sample::parse(TEXT, 1);
        assert_eq!(s.connections(), 6.0);
        assert_eq!(s.by_transport.get("wss"), Some(&1.0));
        assert_eq!((s.logins, s.auth_failures), (7.0, 2.0));
        assert_eq!((s.acks, s.ack_errors), (100.0, 10.0));
        assert_eq!(s.send_ack, vec![(0.001, 100.0), (0.01, 190.0), (f64::INFINITY, 200.0)]);
    }

    #[test]
    fn the_quantile_interpolates_inside_its_bucket_like_histogram_quantile() {
        let s = Sample::parse(TEXT, 1);
        // Rank 0.99 * 200 = 198 falls in the +Inf bucket: the highest finite bound.
        assert_eq!(quantile(0.99, &s.send_ack, &[]), Some(0.01));
        // Rank 0.5 * 200 = 100: the top of the first bucket.
        assert_eq!(quantile(0.5, &s.send_ack, &[]), Some(0.001));
        // Rank 0.75 * 200 = 150, 50 of the 90 inside (0.001, 0.01].
        let q = quantile(0.75, &s.send_ack, &[]).unwrap();
        assert!((q - (0.001 + 0.009 * 50.0 / 90.0)).abs() < 1e-12, "{q}");
        // Nothing new between two equal samples.
        assert_eq!(quantile(0.99, &s.send_ack, &s.send_ack), None);
    }

    #[test]
    fn rates_are_per_second_over_the_gap_and_never_negative() {
        let old = Sample { logins: 10.0, sends: 100.0, ..Sample::default() };
        let new = Sample { logins: 30.0, sends: 50.0, ..Sample::default() };
        let r = rates(&new, &old, 2.0);
        assert_eq!((r.logins, r.sends), (10.0, 0.0));
    }
}
