//! Replays the committed WebSocket fuzz corpus (fuzz/corpus/ws_*) through the fuzz targets'
//! code, then a bounded, seeded run of mutations of it (byte flips, cuts, splices), so that
//! `cargo test` explores a little beyond the corpus on every run.

use std::path::Path;

use ringgate::transport::ws::fuzzing;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    entries.sort();
    assert!(entries.len() >= 10, "{target}: only {} corpus entries in {}", entries.len(), dir.display());
    entries
}

/// xorshift64: a fixed sequence, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = a.to_vec();
    match rng.below(4) {
        0 if !out.is_empty() => {
            let i = rng.below(out.len());
            out[i] ^= 1 << rng.below(8);
        }
        1 => out.truncate(rng.below(out.len() + 1)),
        2 => out.extend_from_slice(&b[rng.below(b.len() + 1)..]),
        _ if !out.is_empty() => {
            let i = rng.below(out.len());
            out[i] = rng.next() as u8;
        }
        _ => {}
    }
    out
}

fn replay(target: &str, run: fn(&[u8]), mutations: usize) {
    let entries = corpus(target);
    for (path, data) in &entries {
        let result = std::panic::catch_unwind(|| run(data));
        assert!(result.is_ok(), "{path} fails {target}");
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..mutations {
        let a = &entries[rng.below(entries.len())].1;
        let b = &entries[rng.below(entries.len())].1;
        let mut data = mutate(&mut rng, a, b);
        for _ in 0..rng.below(4) {
            data = mutate(&mut rng, &data, b);
        }
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "{target}: mutation {i} fails: {data:?}");
    }
}

#[test]
fn ws_frames_corpus() {
    replay("ws_frames", fuzzing::ws_frames, 3000);
}

#[test]
fn ws_handshake_corpus() {
    replay("ws_handshake", fuzzing::ws_handshake, 3000);
}
