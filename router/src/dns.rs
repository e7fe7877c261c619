//! What to do with DNS answers for the backend name: a sans-IO state machine.
//!
//! The control-plane thread resolves the name when [`AddressSet::poll_timeout`] says so and
//! hands the outcome to [`AddressSet::handle_resolution`], which returns the new address set
//! when (and only when) the set to publish changed. Rules:
//! - an answer with addresses refreshes them; the next resolution is due after the answer's
//!   TTL clamped to `[min_ttl, max_ttl]`;
//! - an address missing from answers is kept until it has been missing for `hold_down`, so
//!   one short or truncated answer does not reshuffle every user;
//! - an error, a timeout or an empty answer changes nothing (the last good set stays) and is
//!   retried after `retry`; the failure is counted.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Timers of DNS-based discovery.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub hold_down: Duration,
    pub retry: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(300),
            hold_down: Duration::from_secs(30),
            retry: Duration::from_secs(5),
        }
    }
}

/// The outcome of one resolution of the backend name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Answer {
        addrs: Vec<IpAddr>,
        ttl: Duration,
    },
    /// NOERROR with no A/AAAA records (or NXDOMAIN).
    Empty,
    /// SERVFAIL, refused, a timeout, an unreachable server.
    Failed(String),
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    pub resolutions: u64,
    pub failures: u64,
    pub empty: u64,
}

/// The backend addresses behind one name, as published to workers.
#[derive(Debug, Clone)]
pub struct AddressSet {
    config: DnsConfig,
    port: u16,
    /// address -> when an answer last contained it
    seen: BTreeMap<SocketAddr, Instant>,
    next_resolve: Instant,
    last_good: Option<Instant>,
    stats: DnsStats,
}

impl AddressSet {
    /// A set with no addresses yet; the first resolution is due at `now`.
    pub fn new(config: DnsConfig, port: u16, now: Instant) -> AddressSet {
        AddressSet {
            config,
            port,
            seen: BTreeMap::new(),
            next_resolve: now,
            last_good: None,
            stats: DnsStats::default(),
        }
    }

    /// The addresses published now, sorted.
    pub fn current(&self) -> Vec<SocketAddr> {
        self.seen.keys().copied().collect()
    }

    /// When the next resolution is due (also when held-down addresses may expire).
    pub fn poll_timeout(&self) -> Instant {
        self.next_resolve
    }

    pub fn stats(&self) -> DnsStats {
        self.stats
    }

    /// When an answer last carried addresses, if one did.
    pub fn last_good(&self) -> Option<Instant> {
        self.last_good
    }

    /// Applies one resolution; returns the new set if the published set changed.
    pub fn handle_resolution(&mut self, resolution: Resolution, now: Instant) -> Option<Vec<SocketAddr>> {
        self.stats.resolutions += 1;
        let before = self.current();
        match resolution {
            Resolution::Answer { addrs, ttl } if !addrs.is_empty() => {
                for ip in addrs {
                    self.seen.insert(SocketAddr::new(ip, self.port), now);
                }
                let hold_down = self.config.hold_down;
                self.seen.retain(|_, last| now.saturating_duration_since(*last) < hold_down);
                self.last_good = Some(now);
                self.next_resolve = now + ttl.clamp(self.config.min_ttl, self.config.max_ttl);
            }
            Resolution::Answer { .. } | Resolution::Empty => {
                self.stats.empty += 1;
                self.next_resolve = now + self.config.retry;
            }
            Resolution::Failed(_) => {
                self.stats.failures += 1;
                self.next_resolve = now + self.config.retry;
            }
        }
        let after = self.current();
        (after != before).then_some(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn answer(last: &[u8], ttl: u64) -> Resolution {
        Resolution::Answer { addrs: last.iter().map(|&l| ip(l)).collect(), ttl: Duration::from_secs(ttl) }
    }

    fn set(last: &[u8]) -> Vec<SocketAddr> {
        last.iter().map(|&l| SocketAddr::new(ip(l), 7100)).collect()
    }

    #[test]
    fn vips_appear_at_once_and_disappear_after_the_hold_down() {
        let t0 = Instant::now();
        let config = DnsConfig { hold_down: Duration::from_secs(30), ..Default::default() };
        let mut s = AddressSet::new(config, 7100, t0);
        assert_eq!(s.handle_resolution(answer(&[1, 2, 3], 10), t0), Some(set(&[1, 2, 3])));
        assert_eq!(s.poll_timeout(), t0 + Duration::from_secs(10));
        // A fourth VIP joins at once.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(s.handle_resolution(answer(&[1, 2, 3, 4], 10), t1), Some(set(&[1, 2, 3, 4])));
        // VIP 2 vanishes from answers: kept while missing for less than 30 s...
        for secs in [20, 30, 39] {
            assert_eq!(s.handle_resolution(answer(&[1, 3, 4], 10), t0 + Duration::from_secs(secs)), None);
        }
        // ...and removed once missing for 30 s (last seen at t0+10).
        assert_eq!(s.handle_resolution(answer(&[1, 3, 4], 10), t0 + Duration::from_secs(40)), Some(set(&[1, 3, 4])));
    }

    #[test]
    fn failures_and_empty_answers_keep_the_last_good_set() {
        let t0 = Instant::now();
        let mut s = AddressSet::new(DnsConfig::default(), 7100, t0);
        s.handle_resolution(answer(&[1, 2], 60), t0);
        for (i, r) in
            [Resolution::Failed("SERVFAIL".into()), Resolution::Empty, answer(&[], 60)].into_iter().enumerate()
        {
            let now = t0 + Duration::from_secs(600 + i as u64);
            assert_eq!(s.handle_resolution(r, now), None);
            assert_eq!(s.current(), set(&[1, 2]));
            assert_eq!(s.poll_timeout(), now + DnsConfig::default().retry);
        }
        assert_eq!(s.stats(), DnsStats { resolutions: 4, failures: 1, empty: 2 });
        assert_eq!(s.last_good(), Some(t0), "failures do not move the last good answer");
    }

    #[test]
    fn ttl_is_clamped() {
        let t0 = Instant::now();
        let config =
            DnsConfig { min_ttl: Duration::from_secs(5), max_ttl: Duration::from_secs(60), ..Default::default() };
        let mut s = AddressSet::new(config, 7100, t0);
        s.handle_resolution(answer(&[1], 0), t0);
        assert_eq!(s.poll_timeout(), t0 + Duration::from_secs(5));
        s.handle_resolution(answer(&[1], 86_400), t0);
        assert_eq!(s.poll_timeout(), t0 + Duration::from_secs(60));
    }
}
