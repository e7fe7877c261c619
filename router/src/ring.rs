//! Consistent hashing of routing keys onto backends: rendezvous (highest random weight).
//!
//! Each key scores every backend with a fixed hash of (key, backend address) and goes to the
//! highest-scoring backend that is up. Properties, all tested below:
//! - adding a backend to N moves only the keys it now wins, about 1/(N+1) of them;
//! - removing a backend moves only its own keys;
//! - a backend that is down sends each of its keys to that key's next choice, and the keys
//!   come back when it recovers; no other key moves;
//! - every node that sees the same address set routes every key the same way (the hash is
//!   fixed, see [`crate::hash`]).
//!
//! Rendezvous needs no virtual nodes and no tuning; its cost is one hash per backend per key,
//! which for the tens of backend VIPs a gateway has is tens of nanoseconds.

use std::net::SocketAddr;

use crate::hash::{fmix64, hash64};

const KEY_SEED: u64 = 0x7269_6e67_6761_7465; // "ringgate"

/// An immutable backend set, ready to route keys. Workers get a new one when the set changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ring {
    members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    addr: SocketAddr,
    id: u64,
}

impl Ring {
    /// A ring over `addrs` (duplicates removed, order irrelevant).
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Ring {
        let mut addrs: Vec<SocketAddr> = addrs.into_iter().collect();
        addrs.sort_unstable();
        addrs.dedup();
        let members =
            addrs.into_iter().map(|addr| Member { addr, id: hash64(0, addr.to_string().as_bytes()) }).collect();
        Ring { members }
    }

    /// The backends, in a stable (sorted) order; indexes below refer to this order.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.members.iter().map(|m| m.addr)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The index of the backend `key` goes to, skipping those for which `is_up` is false.
    pub fn pick(&self, key: &[u8], is_up: impl Fn(usize) -> bool) -> Option<usize> {
        let k = hash64(KEY_SEED, key);
        self.members
            .iter()
            .enumerate()
            .filter(|(i, _)| is_up(*i))
            .max_by_key(|(_, m)| (fmix64(k ^ m.id), m.id))
            .map(|(i, _)| i)
    }

    /// The address `key` goes to when every backend is up.
    pub fn owner(&self, key: &[u8]) -> Option<SocketAddr> {
        self.pick(key, |_| true).and_then(|i| self.members.get(i)).map(|m| m.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEYS: usize = 100_000;

    fn addrs(n: usize) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 7100))).collect()
    }

    fn key(i: usize) -> Vec<u8> {
        format!("user-{i}").into_bytes()
    }

    fn owners(ring: &Ring) -> Vec<Option<SocketAddr>> {
        (0..KEYS).map(|i| ring.owner(&key(i))).collect()
    }

    #[test]
    fn adding_one_backend_moves_about_one_share() {
        for n in [2, 3, 5, 8, 16] {
            let before = owners(&Ring::new(addrs(n)));
            let bigger = addrs(n + 1);
            let added = bigger[n];
            let after = owners(&Ring::new(bigger));
            let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
            // Every moved key moved to the new backend.
            assert!(before.iter().zip(&after).all(|(a, b)| a == b || *b == Some(added)));
            let share = moved as f64 / KEYS as f64;
            let ideal = 1.0 / (n + 1) as f64;
            assert!(share <= ideal + 0.02, "n={n}: moved {share:.4}, ideal {ideal:.4}");
            assert!(share >= ideal - 0.02, "n={n}: moved {share:.4}, ideal {ideal:.4}");
        }
    }

    #[test]
    fn removing_one_backend_moves_only_its_keys() {
        let all = addrs(8);
        let removed = all[3];
        let before = owners(&Ring::new(all.clone()));
        let after = owners(&Ring::new(all.into_iter().filter(|a| *a != removed)));
        for (a, b) in before.iter().zip(&after) {
            if *a != Some(removed) {
                assert_eq!(a, b, "a key not on the removed backend moved");
            }
        }
    }

    #[test]
    fn load_is_within_ten_percent_of_even() {
        for n in 3..=16 {
            let ring = Ring::new(addrs(n));
            let mut counts = vec![0usize; n];
            for i in 0..KEYS {
                counts[ring.pick(&key(i), |_| true).unwrap()] += 1;
            }
            let even = KEYS as f64 / n as f64;
            for (i, &c) in counts.iter().enumerate() {
                let dev = (c as f64 - even) / even;
                assert!(dev.abs() <= 0.10, "n={n} backend {i}: {c} keys, {:.1}% off even", dev * 100.0);
            }
        }
    }

    #[test]
    fn a_down_backend_sends_its_keys_to_their_next_choice_and_gets_them_back() {
        let ring = Ring::new(addrs(5));
        let down = 2;
        for i in 0..20_000 {
            let k = key(i);
            let normal = ring.pick(&k, |_| true).unwrap();
            let degraded = ring.pick(&k, |b| b != down).unwrap();
            if normal == down {
                assert_ne!(degraded, down);
                // The next choice is the best of the rest: the same as removing the backend.
                let without = Ring::new(addrs(5).into_iter().enumerate().filter(|(j, _)| *j != down).map(|(_, a)| a));
                assert_eq!(Some(ring.members[degraded].addr), without.owner(&k));
            } else {
                assert_eq!(degraded, normal, "keys of up backends never move");
            }
            assert_eq!(ring.pick(&k, |_| true), Some(normal), "recovery brings keys back");
        }
        assert_eq!(ring.pick(b"x", |_| false), None);
    }

    proptest! {
        #[test]
        fn order_and_duplicates_do_not_matter(mut list in proptest::collection::vec(0usize..40, 1..12), k in any::<Vec<u8>>()) {
            let a = Ring::new(list.iter().map(|&i| addrs(40)[i]));
            list.reverse();
            list.extend_from_within(..);
            let b = Ring::new(list.iter().map(|&i| addrs(40)[i]));
            prop_assert_eq!(a.owner(&k), b.owner(&k));
        }
    }
}
