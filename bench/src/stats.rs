//! Counters and latency histograms of a load run, mergeable across threads and processes.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

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
    /// Round trips of Sends acked before the workload's measurement began (a cluster's
    /// ramp, while logins share the machine), kept apart from `rtt_us`.
    pub rtt_early_us: Histogram<u64>,
    /// Push request (the backend-bound Send) -> client receipt, microseconds.
    pub push_us: Histogram<u64>,
    /// Connect start -> AuthOk, microseconds (handshakes included).
    pub login_us: Histogram<u64>,
    /// Storms: re-authenticated connections after the drop, and when (ms since the run's base).
    pub reconnected: u64,
    pub reauth_at_ms: Histogram<u64>,
    /// Unix ms of the first connection attempt and of the last AuthOk (0 = none).
    pub first_connect_ms: u64,
    pub last_auth_ms: u64,
}

fn histogram() -> Histogram<u64> {
    // 1 .. 1 hour at 3 significant digits: constant, valid bounds.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, value: u64) {
    // Within the bounds by the clamp.
    let _ = h.record(value.clamp(1, 3_600_000_000));
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A histogram as (value, count) pairs: how results cross process boundaries.
fn pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
}

fn from_pairs(p: &[(u64, u64)]) -> Histogram<u64> {
    let mut h = histogram();
    for &(value, count) in p {
        let _ = h.record_n(value.clamp(1, 3_600_000_000), count);
    }
    h
}

/// [`RunStats`] as JSON: what an agent process prints for its parent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireStats {
    pub connected: u64,
    pub authenticated: u64,
    pub acked_ok: u64,
    pub pushes: u64,
    pub errors: BTreeMap<String, u64>,
    pub rtt_us: Vec<(u64, u64)>,
    #[serde(default)]
    pub rtt_early_us: Vec<(u64, u64)>,
    pub push_us: Vec<(u64, u64)>,
    pub login_us: Vec<(u64, u64)>,
    pub reconnected: u64,
    pub reauth_at_ms: Vec<(u64, u64)>,
    pub first_connect_ms: u64,
    pub last_auth_ms: u64,
}

impl From<&RunStats> for WireStats {
    fn from(s: &RunStats) -> WireStats {
        WireStats {
            connected: s.connected,
            authenticated: s.authenticated,
            acked_ok: s.acked_ok,
            pushes: s.pushes,
            errors: s.errors.clone(),
            rtt_us: pairs(&s.rtt_us),
            rtt_early_us: pairs(&s.rtt_early_us),
            push_us: pairs(&s.push_us),
            login_us: pairs(&s.login_us),
            reconnected: s.reconnected,
            reauth_at_ms: pairs(&s.reauth_at_ms),
            first_connect_ms: s.first_connect_ms,
            last_auth_ms: s.last_auth_ms,
        }
    }
}

impl From<&WireStats> for RunStats {
    fn from(w: &WireStats) -> RunStats {
        RunStats {
            connected: w.connected,
            authenticated: w.authenticated,
            acked_ok: w.acked_ok,
            pushes: w.pushes,
            errors: w.errors.clone(),
            rtt_us: from_pairs(&w.rtt_us),
            rtt_early_us: from_pairs(&w.rtt_early_us),
            push_us: from_pairs(&w.push_us),
            login_us: from_pairs(&w.login_us),
            reconnected: w.reconnected,
            reauth_at_ms: from_pairs(&w.reauth_at_ms),
            first_connect_ms: w.first_connect_ms,
            last_auth_ms: w.last_auth_ms,
        }
    }
}

impl Default for RunStats {
    fn default() -> Self {
        RunStats {
            connected: 0,
            authenticated: 0,
            acked_ok: 0,
            pushes: 0,
            errors: BTreeMap::new(),
            rtt_us: histogram(),
            rtt_early_us: histogram(),
            push_us: histogram(),
            login_us: histogram(),
            reconnected: 0,
            reauth_at_ms: histogram(),
            first_connect_ms: 0,
            last_auth_ms: 0,
        }
    }
}

impl RunStats {
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    pub fn record_rtt(&mut self, rtt: Duration) {
        record(&mut self.rtt_us, micros(rtt));
    }

    pub fn record_early_rtt(&mut self, rtt: Duration) {
        record(&mut self.rtt_early_us, micros(rtt));
    }

    pub fn record_push(&mut self, latency: Duration) {
        record(&mut self.push_us, micros(latency));
    }

    pub fn record_login(&mut self, took: Duration, at_unix_ms: u64) {
        record(&mut self.login_us, micros(took));
        self.last_auth_ms = self.last_auth_ms.max(at_unix_ms);
    }

    pub fn connect_started(&mut self, at_unix_ms: u64) {
        if self.first_connect_ms == 0 || at_unix_ms < self.first_connect_ms {
            self.first_connect_ms = at_unix_ms;
        }
    }

    pub fn record_reauth(&mut self, ms_since_base: u64) {
        self.reconnected += 1;
        record(&mut self.reauth_at_ms, ms_since_base);
    }

    /// Logins per second from the first connection attempt to the last AuthOk.
    pub fn connect_rate(&self) -> f64 {
        let span = self.last_auth_ms.saturating_sub(self.first_connect_ms).max(1) as f64 / 1000.0;
        if self.authenticated == 0 { 0.0 } else { self.authenticated as f64 / span }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
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
        let _ = self.rtt_early_us.add(&other.rtt_early_us);
        let _ = self.push_us.add(&other.push_us);
        let _ = self.login_us.add(&other.login_us);
        self.reconnected += other.reconnected;
        let _ = self.reauth_at_ms.add(&other.reauth_at_ms);
        if other.first_connect_ms != 0 {
            self.connect_started(other.first_connect_ms);
        }
        self.last_auth_ms = self.last_auth_ms.max(other.last_auth_ms);
    }

    /// Send -> Ack latency percentiles in microseconds.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.rtt_us)
    }
}

impl Percentiles {
    /// p50, p90, p99, p99.9 and max of `h` (all 0 when empty).
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let q = |p: f64| if h.is_empty() { 0 } else { h.value_at_quantile(p) };
        Percentiles { p50_us: q(0.5), p90_us: q(0.9), p99_us: q(0.99), p999_us: q(0.999), max_us: h.max() }
    }
}

/// Percentiles of a histogram; named `_us` because most are microseconds (storm reports
/// milliseconds through the same type and says so).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
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
    fn wire_round_trip_keeps_everything() {
        let mut a = RunStats { connected: 5, authenticated: 4, acked_ok: 3, pushes: 2, ..Default::default() };
        a.error("auth: eof");
        for us in [1u64, 10, 100, 1000, 10_000, 100_000] {
            a.record_rtt(Duration::from_micros(us));
            a.record_push(Duration::from_micros(us * 2));
            a.record_login(Duration::from_micros(us * 3), 1_000 + us);
        }
        a.connect_started(900);
        a.record_reauth(1500);
        let json = serde_json::to_string(&WireStats::from(&a)).unwrap();
        let back = RunStats::from(&serde_json::from_str::<WireStats>(&json).unwrap());
        assert_eq!(WireStats::from(&back), WireStats::from(&a));
        assert_eq!(back.percentiles(), a.percentiles());
        assert_eq!(Percentiles::of(&back.push_us), Percentiles::of(&a.push_us));
        assert_eq!((back.first_connect_ms, back.last_auth_ms), (900, 101_000));
    }

    #[test]
    fn aggregating_processes_equals_one_big_run() {
        // Three "processes" each see a slice; merging their wire forms must give what one
        // process seeing everything would have.
        let mut whole = RunStats::default();
        let mut parts = vec![RunStats::default(), RunStats::default(), RunStats::default()];
        for i in 0..3000u64 {
            let rtt = Duration::from_micros(50 + (i * 7919) % 5000);
            whole.record_rtt(rtt);
            whole.acked_ok += 1;
            whole.connect_started(10_000 + i);
            whole.record_login(rtt, 20_000 + i);
            let part = &mut parts[(i % 3) as usize];
            part.record_rtt(rtt);
            part.acked_ok += 1;
            part.connect_started(10_000 + i);
            part.record_login(rtt, 20_000 + i);
            part.authenticated += 1;
            whole.authenticated += 1;
        }
        let mut merged = RunStats::default();
        for p in &parts {
            let wire: WireStats = serde_json::from_str(&serde_json::to_string(&WireStats::from(p)).unwrap()).unwrap();
            merged.merge(&RunStats::from(&wire));
        }
        assert_eq!(merged.acked_ok, 3000);
        assert_eq!(merged.percentiles(), whole.percentiles());
        assert_eq!((merged.first_connect_ms, merged.last_auth_ms), (10_000, 22_999));
        assert!((merged.connect_rate() - whole.connect_rate()).abs() < 1e-9);
        // 3000 logins over 12.999 s.
        assert!((merged.connect_rate() - 3000.0 / 12.999).abs() < 0.01, "{}", merged.connect_rate());
    }

    #[test]
    fn medians() {
        assert_eq!(median_min_max(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(median_min_max(&[]), (0.0, 0.0, 0.0));
        assert_eq!(median_min_max(&[4.0, 1.0, 3.0, 2.0]), (3.0, 1.0, 4.0));
    }
}
