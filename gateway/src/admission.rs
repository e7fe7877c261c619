//! Admission control, on by default: what one source address may take of a node.
//!
//! Per address (an IPv4 address, or an IPv6 prefix, /64 by default, since one host owns a
//! whole /64): a cap on connections, a cap on connections not yet authenticated, a token
//! bucket on new connections, and a flapping ban (an address whose logins keep failing is
//! refused for a cool-off that doubles on repeat). The table is node-wide (SO_REUSEPORT
//! spreads one address's connections over every worker), sharded so workers rarely meet on
//! a lock, and holds an entry only while it says something: an address with no connection,
//! a full bucket and no failures is forgotten.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::config::AdmissionLimits;

/// An address as the limits count it: a keyed hash (random per process, so nobody can aim a
/// collision at another address) of the IPv4 address in its IPv6-mapped form, or of the IPv6
/// address masked to the prefix; never 0. 32 bits, because it sits in every connection
/// (which must stay in its 256-byte allocation): with 100,000 addresses at once about one pair
/// shares its limits, which then hold for the two together.
pub type AddrKey = u32;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address holds `max_connections_per_address` connections.
    Connections,
    /// The address holds `max_unauthenticated_per_address` connections that have not logged in.
    Unauthenticated,
    /// The address opened connections faster than `new_connections_per_address` per second.
    Rate,
    /// The address is cooling off after too many failed logins.
    Banned,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [Refusal::Connections, Refusal::Unauthenticated, Refusal::Rate, Refusal::Banned];

    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Connections => "per_address",
            Refusal::Unauthenticated => "unauthenticated_per_address",
            Refusal::Rate => "rate",
            Refusal::Banned => "flapping",
        }
    }

    /// The reason the client is told.
    pub fn reason(self) -> ringgate_codec::ReasonCode {
        match self {
            Refusal::Connections | Refusal::Unauthenticated => ringgate_codec::ReasonCode::TOO_MANY_CONNECTIONS,
            Refusal::Rate | Refusal::Banned => ringgate_codec::ReasonCode::RATE_LIMITED,
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    table: FxHashMap<AddrKey, Entry>,
}

#[derive(Debug)]
struct Entry {
    conns: u32,
    unauthenticated: u32,
    tokens: f64,
    refilled: Instant,
    /// Failed logins in the current window, and when it started.
    failures: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
    /// Bans so far (the cool-off doubles with each, up to 64 times the base).
    bans: u32,
}

const SHARDS: usize = 16;
/// Every this many admits one shard, in turn, drops what it no longer needs to remember.
const SWEEP_EVERY: u32 = 1024;

/// The node's admission table.
#[derive(Debug)]
pub struct Admission {
    /// Replaced on a reload.
    limits: std::sync::RwLock<AdmissionLimits>,
    shards: [Mutex<Shard>; SHARDS],
    admits: std::sync::atomic::AtomicU32,
    hasher: std::collections::hash_map::RandomState,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Admission {
        Admission {
            limits: std::sync::RwLock::new(limits),
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            admits: std::sync::atomic::AtomicU32::new(1),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Takes reloaded limits (for connections from now on).
    pub fn set_limits(&self, limits: AdmissionLimits) {
        if let Ok(mut current) = self.limits.write() {
            *current = limits;
        }
    }

    /// The limits in force (read-locked, not copied: this is on every accept).
    fn limits(&self) -> std::sync::RwLockReadGuard<'_, AdmissionLimits> {
        self.limits.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key of `ip` under the configured IPv6 prefix.
    pub fn key(&self, ip: IpAddr) -> AddrKey {
        use std::hash::BuildHasher;
        let masked: u128 = match ip {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => u128::from(v4.to_ipv6_mapped()),
                None => {
                    let bits = u32::from(self.limits().ipv6_prefix.min(128));
                    let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
                    u128::from(v6) & mask
                }
            },
        };
        let hash = self.hasher.hash_one(masked);
        ((hash >> 32) as u32 ^ hash as u32) | 1
    }

    fn with<R>(&self, key: AddrKey, f: impl FnOnce(&mut FxHashMap<AddrKey, Entry>) -> R) -> R {
        let shard = (key >> 27) as usize % SHARDS;
        let mut shard = self.shards[shard].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut shard.table)
    }

    /// Drops, in `key`'s shard, every address with no connection, a full bucket, no ban
    /// running and nothing within the flapping window: what it would be if seen anew (an
    /// old ban's escalation is forgotten after a quiet window too).
    fn sweep(&self, now: Instant, limits: &AdmissionLimits) {
        let n = self.admits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !n.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        let refill = f64::from(limits.new_connections_burst) / f64::from(limits.new_connections_per_address.max(1));
        let quiet = Duration::from_secs_f64(refill).max(limits.flapping_window);
        let shard = (n / SWEEP_EVERY) as usize % SHARDS;
        let mut shard = self.shards[shard].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        shard.table.retain(|_, e| {
            let last = e.refilled.max(e.window_start).max(e.banned_until.unwrap_or(e.refilled));
            e.conns > 0 || now.saturating_duration_since(last) < quiet
        });
    }

    /// A new connection from `key`: counted (as not yet authenticated) when admitted.
    pub fn admit(&self, key: AddrKey, now: Instant) -> Result<(), Refusal> {
        let limits = &*self.limits();
        self.sweep(now, limits);
        self.with(key, |table| {
            let burst = f64::from(limits.new_connections_burst.max(1));
            let entry = table.entry(key).or_insert_with(|| Entry {
                conns: 0,
                unauthenticated: 0,
                tokens: burst,
                refilled: now,
                failures: 0,
                window_start: now,
                banned_until: None,
                bans: 0,
            });
            if let Some(until) = entry.banned_until {
                if now < until {
                    return Err(Refusal::Banned);
                }
                entry.banned_until = None;
            }
            let elapsed = now.saturating_duration_since(entry.refilled).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * f64::from(limits.new_connections_per_address)).min(burst);
            entry.refilled = now;
            if entry.conns >= limits.max_connections_per_address {
                return Err(Refusal::Connections);
            }
            if entry.unauthenticated >= limits.max_unauthenticated_per_address {
                return Err(Refusal::Unauthenticated);
            }
            if entry.tokens < 1.0 {
                return Err(Refusal::Rate);
            }
            entry.tokens -= 1.0;
            entry.conns += 1;
            entry.unauthenticated += 1;
            Ok(())
        })
    }

    /// What [`Admission::admit`] would refuse `key` for now, changing nothing: for a QUIC
    /// Initial whose address is not validated (it may be spoofed, so it must not count for
    /// that address), which is refused only when the address is already over a limit.
    pub fn would_refuse(&self, key: AddrKey, now: Instant) -> Option<Refusal> {
        let limits = &*self.limits();
        let shard = self.shards.get((key >> 27) as usize % SHARDS)?;
        let table = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = table.table.get(&key)?;
        if e.banned_until.is_some_and(|until| now < until) {
            return Some(Refusal::Banned);
        }
        if e.conns >= limits.max_connections_per_address {
            return Some(Refusal::Connections);
        }
        if e.unauthenticated >= limits.max_unauthenticated_per_address {
            return Some(Refusal::Unauthenticated);
        }
        let elapsed = now.saturating_duration_since(e.refilled).as_secs_f64();
        let burst = f64::from(limits.new_connections_burst.max(1));
        let tokens = (e.tokens + elapsed * f64::from(limits.new_connections_per_address)).min(burst);
        (tokens < 1.0).then_some(Refusal::Rate)
    }

    /// A connection from `key` logged in.
    pub fn authenticated(&self, key: AddrKey) {
        self.with(key, |table| {
            if let Some(e) = table.get_mut(&key) {
                e.unauthenticated = e.unauthenticated.saturating_sub(1);
            }
        });
    }

    /// A login from `key` failed; enough of them within the window ban the address.
    pub fn login_failed(&self, key: AddrKey, now: Instant) {
        let limits = &*self.limits();
        if limits.flapping_failures == 0 {
            return;
        }
        self.with(key, |table| {
            let Some(e) = table.get_mut(&key) else { return };
            if now.saturating_duration_since(e.window_start) > limits.flapping_window {
                e.window_start = now;
                e.failures = 0;
            }
            e.failures += 1;
            if e.failures >= limits.flapping_failures {
                let cool_off = limits.flapping_ban * 2u32.pow(e.bans.min(6));
                e.banned_until = Some(now + cool_off);
                e.bans += 1;
                e.failures = 0;
                e.window_start = now;
            }
        });
    }

    /// A connection from `key` ended (`authenticated`: whether it had logged in).
    pub fn closed(&self, key: AddrKey, authenticated: bool, now: Instant) {
        let limits = &*self.limits();
        self.with(key, |table| {
            let Some(e) = table.get_mut(&key) else { return };
            e.conns = e.conns.saturating_sub(1);
            if !authenticated {
                e.unauthenticated = e.unauthenticated.saturating_sub(1);
            }
            // Forget an address that has nothing left to remember (its bucket refills in
            // burst / rate seconds, a ban or failures keep it).
            let refill = f64::from(limits.new_connections_burst) / f64::from(limits.new_connections_per_address.max(1));
            let idle_for = now.saturating_duration_since(e.refilled).as_secs_f64();
            if e.conns == 0 && e.failures == 0 && e.banned_until.is_none() && e.bans == 0 && idle_for >= refill {
                table.remove(&key);
            }
        });
    }

    /// Addresses the table holds now.
    pub fn addresses(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |s| s.table.len())).sum()
    }
}

/// What the node may hold given its open-file limit: the limit minus the files open at start
/// and a reserve (for Redis, links, the admin and API connections, and the accept that
/// refuses). `None` when the limit is unlimited or unreadable.
pub fn file_capacity(open_at_start: usize) -> Option<usize> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    let limit = limit.rlim_cur as usize;
    let reserve = 64 + limit / 100;
    Some(limit.saturating_sub(open_at_start + reserve))
}

/// Files this process has open now.
pub fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Refusals of this kind are logged at most once per this long (with the count since).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_connections_per_address: 3,
            max_unauthenticated_per_address: 2,
            new_connections_per_address: 10,
            new_connections_burst: 5,
            ipv6_prefix: 64,
            flapping_failures: 2,
            flapping_window: Duration::from_secs(60),
            flapping_ban: Duration::from_secs(1),
            max_unauthenticated: 1000,
            max_tls_handshakes: 100,
        }
    }

    #[test]
    fn caps_rate_and_bans_per_address() {
        let a = Admission::new(limits());
        let now = Instant::now();
        let (one, two) = (a.key("10.0.0.1".parse().unwrap()), a.key("10.0.0.2".parse().unwrap()));
        assert_eq!(a.admit(one, now), Ok(()));
        assert_eq!(a.admit(one, now), Ok(()));
        assert_eq!(a.admit(one, now), Err(Refusal::Unauthenticated), "two not logged in yet");
        a.authenticated(one);
        assert_eq!(a.admit(one, now), Ok(()));
        a.authenticated(one);
        assert_eq!(a.admit(one, now), Err(Refusal::Connections), "three held");
        assert_eq!(a.admit(two, now), Ok(()), "another address is not affected");
        // Rate: a burst of 5, then 10 per second.
        let b = Admission::new(AdmissionLimits {
            max_connections_per_address: 100,
            max_unauthenticated_per_address: 100,
            ..limits()
        });
        let k = b.key("10.0.0.3".parse().unwrap());
        for _ in 0..5 {
            assert_eq!(b.admit(k, now), Ok(()));
        }
        assert_eq!(b.admit(k, now), Err(Refusal::Rate));
        assert_eq!(b.admit(k, now + Duration::from_millis(110)), Ok(()), "a token back after 100 ms");
        // Flapping: two failures ban for 1 s, then 2 s.
        b.login_failed(k, now);
        b.login_failed(k, now);
        assert_eq!(b.admit(k, now + Duration::from_millis(500)), Err(Refusal::Banned));
        let later = now + Duration::from_millis(2100);
        assert_eq!(b.admit(k, later), Ok(()));
        b.login_failed(k, later);
        b.login_failed(k, later);
        assert_eq!(b.admit(k, later + Duration::from_millis(1500)), Err(Refusal::Banned), "the second ban is longer");
    }

    #[test]
    fn addresses_with_nothing_to_remember_are_swept() {
        let a = Admission::new(limits());
        let now = Instant::now();
        // Short-lived connections and failed logins from many addresses...
        for i in 0..5000u32 {
            let k = a.key(std::net::Ipv4Addr::from(0x0a00_0000 + i).into());
            a.admit(k, now).unwrap();
            a.login_failed(k, now);
            a.closed(k, false, now);
        }
        assert!(a.addresses() > 4000, "remembered while recent");
        // ...are forgotten once a quiet flapping window has passed.
        let later = now + Duration::from_secs(61);
        for i in 0..SWEEP_EVERY * SHARDS as u32 + 1 {
            let k = a.key(std::net::Ipv4Addr::from(0x0b00_0000 + i % 64).into());
            if a.admit(k, later).is_ok() {
                a.authenticated(k);
                a.closed(k, true, later);
            }
        }
        assert!(a.addresses() < 200, "{} left", a.addresses());
    }

    #[test]
    fn ipv6_is_counted_per_prefix_and_entries_are_forgotten() {
        let a = Admission::new(limits());
        let k1 = a.key("2001:db8:1:2::1".parse().unwrap());
        let k2 = a.key("2001:db8:1:2:ffff::9".parse().unwrap());
        let k3 = a.key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(k1, k2, "same /64");
        assert_ne!(k1, k3);
        assert_eq!(a.key("::ffff:10.0.0.1".parse().unwrap()), a.key("10.0.0.1".parse().unwrap()));
        let now = Instant::now();
        a.admit(k1, now).unwrap();
        a.closed(k1, false, now + Duration::from_secs(1));
        assert_eq!(a.addresses(), 0, "nothing left to remember");
    }
}
