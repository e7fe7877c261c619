//! `ringgate-bench ring`: how the backend ring behaves, measured on synthetic keys.

use std::net::SocketAddr;

use ringgate_router::Ring;

fn addrs(n: usize) -> Vec<SocketAddr> {
    (0..n).map(|i| SocketAddr::from(([10, 0, 0, i as u8 + 1], 7100))).collect()
}

fn owners(ring: &Ring, keys: usize) -> Vec<Option<SocketAddr>> {
    (0..keys).map(|i| ring.owner(format!("user-{i}").as_bytes())).collect()
}

fn moved(a: &[Option<SocketAddr>], b: &[Option<SocketAddr>]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len().max(1) as f64
}

/// Prints, for N = 3..=16 backends: keys moved when one is added (vs the ideal 1/(N+1)),
/// keys moved when one is removed (vs its share 1/N), and the most loaded and least loaded
/// backend relative to an even share.
pub fn report(keys: usize) {
    println!("{keys} keys; moved = fraction of keys whose backend changed");
    println!("| N | add one: moved (ideal) | remove one: moved (ideal) | load min..max vs even |");
    println!("|---|---|---|---|");
    for n in 3..=16 {
        let base = Ring::new(addrs(n));
        let before = owners(&base, keys);
        let add = moved(&before, &owners(&Ring::new(addrs(n + 1)), keys));
        let removed = addrs(n)[n / 2];
        let remove = moved(&before, &owners(&Ring::new(addrs(n).into_iter().filter(|a| *a != removed)), keys));
        let mut counts = std::collections::BTreeMap::new();
        for owner in before.iter().flatten() {
            *counts.entry(*owner).or_insert(0usize) += 1;
        }
        let even = keys as f64 / n as f64;
        let min = counts.values().min().copied().unwrap_or(0) as f64 / even - 1.0;
        let max = counts.values().max().copied().unwrap_or(0) as f64 / even - 1.0;
        println!(
            "| {n} | {:.2}% ({:.2}%) | {:.2}% ({:.2}%) | {:+.1}%..{:+.1}% |",
            add * 100.0,
            100.0 / (n + 1) as f64,
            remove * 100.0,
            100.0 / n as f64,
            min * 100.0,
            max * 100.0
        );
    }
}
