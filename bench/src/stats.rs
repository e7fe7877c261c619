//! Counters and latency histograms of a load run, mergeable across threads and processes.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// What one thread (or process) of a run observed.
#[derive(Debug, Clone)]
pub struct RunStats {
    pub connected: u64,
    pub authenticated: u64,
    pub acked_ok: u64,
    pub pushes: u64,
    /// Failures by reason ("connect: ...", "auth: auth_expired", "ack: backend_busy", ...).
    pub errors: BTreeMap<String, u64>,
    /// Send -> Ack round trips, microseconds.
    pub rtt_us: Histogram<u64>,
}

impl Default for RunStats {
    fn default() -> Self {
        RunStats {
            connected: 0,
            authenticated: 0,
            acked_ok: 0,
            pushes: 0,
            errors: BTreeMap::new(),
            // 1 us .. 60 s at 3 significant digits: constant, valid bounds.
            #[allow(clippy::expect_used)]
            rtt_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        }
    }
}

impl RunStats {
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    pub fn record_rtt(&mut self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).clamp(1, 60_000_000);
        // Within the bounds by the clamp above.
        let _ = self.rtt_us.record(us);
    }

    /// Adds another run's observations to this one.
    pub fn merge(&mut self, other: &RunStats) {
        self.connected += other.connected;
        self.authenticated += other.authenticated;
        self.acked_ok += other.acked_ok;
        self.pushes += other.pushes;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        let _ = self.rtt_us.add(&other.rtt_us);
    }

    /// Latency percentiles in microseconds: p50, p90, p99, p99.9.
    pub fn percentiles(&self) -> Percentiles {
        let q = |p: f64| if self.rtt_us.is_empty() { 0 } else { self.rtt_us.value_at_quantile(p) };
        Percentiles { p50_us: q(0.5), p90_us: q(0.9), p99_us: q(0.99), p999_us: q(0.999), max_us: self.rtt_us.max() }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// The median of `values` (upper median for even counts), and min and max.
pub fn median_min_max(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = RunStats::default();
        let mut b = RunStats::default();
        for us in 1..=100 {
            a.record_rtt(Duration::from_micros(us));
            b.record_rtt(Duration::from_micros(us + 100));
        }
        a.acked_ok = 100;
        b.acked_ok = 100;
        a.error("ack: backend_busy");
        b.error("ack: backend_busy");
        b.error("connect: refused");
        a.merge(&b);
        assert_eq!(a.acked_ok, 200);
        assert_eq!(a.rtt_us.len(), 200);
        assert_eq!(a.errors["ack: backend_busy"], 2);
        assert_eq!(a.errors["connect: refused"], 1);
        let p = a.percentiles();
        assert!((99..=101).contains(&p.p50_us), "{p:?}");
        assert!(p.p99_us >= 197 && p.p99_us <= 200, "{p:?}");
    }

    #[test]
    fn medians() {
        assert_eq!(median_min_max(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(median_min_max(&[]), (0.0, 0.0, 0.0));
        assert_eq!(median_min_max(&[4.0, 1.0, 3.0, 2.0]), (3.0, 1.0, 4.0));
    }
}
