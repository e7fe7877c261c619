//! Exponential backoff with jitter, deterministic for a given seed (no clock, no OS random).
//!
//! Used by clients reconnecting after a close or GoAway and by gateways re-dialling backend
//! links. The delay for attempt `n` is drawn uniformly from `[d/2, d]` with
//! `d = min(max, base * 2^n)` ("equal jitter"): never zero, so a fleet that lost its
//! connections at the same instant spreads out instead of reconnecting in one burst.

use std::time::Duration;

/// A small deterministic generator (xorshift64*), good enough for jitter.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator from `seed`; any seed works, zero included.
    pub fn new(seed: u64) -> Self {
        Jitter(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// The next pseudo-random value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A duration drawn uniformly from `[0, max]` at millisecond resolution.
    pub fn up_to(&mut self, max: Duration) -> Duration {
        let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.next_u64() % max_ms.saturating_add(1))
    }
}

/// Exponential backoff state for one peer.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    jitter: Jitter,
}

impl Backoff {
    /// Backoff starting near `base` and never above `max`.
    pub fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Backoff { base, max: max.max(base), attempt: 0, jitter: Jitter::new(seed) }
    }

    /// The delay before the next attempt; each call doubles the ceiling up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.base.saturating_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX)).min(self.max);
        self.attempt = self.attempt.saturating_add(1).min(31);
        let half = ceiling / 2;
        half + self.jitter.up_to(ceiling - half)
    }

    /// Call after a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_bounds_and_reset() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        let mut b = Backoff::new(base, max, 7);
        let mut ceiling = base;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
            ceiling = (ceiling * 2).min(max);
        }
        b.reset();
        assert!(b.next_delay() <= base);
    }

    #[test]
    fn jitter_spreads_values() {
        let mut j = Jitter::new(0);
        let values: std::collections::HashSet<u64> =
            (0..1000).map(|_| j.up_to(Duration::from_secs(1)).as_millis() as u64).collect();
        assert!(values.len() > 400, "only {} distinct values", values.len());
        assert!(values.iter().all(|&v| v <= 1000));
    }
}
