//! Per-worker state the node reads back: open connections, closes by reason and links up
//! (for `Gateway`, tests and readiness). Everything else is counted only in Prometheus
//! metrics (`crate::metrics`). Each worker owns its own, so counting never contends.

use std::sync::atomic::{AtomicU64, Ordering};

use ringgate_codec::ReasonCode;

/// Close reasons are counted by code; codes at or above this share the last bucket.
pub const REASON_BUCKETS: usize = 64;

#[derive(Debug)]
pub struct WorkerStats {
    pub active: AtomicU64,
    /// Backend links currently up on this worker.
    pub links_up: AtomicU64,
    pub closed: [AtomicU64; REASON_BUCKETS],
    /// Calls of the server API or of other nodes this worker carried out.
    pub node_ops: AtomicU64,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            active: AtomicU64::new(0),
            links_up: AtomicU64::new(0),
            node_ops: AtomicU64::new(0),
            closed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl WorkerStats {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed_with(&self, reason: ReasonCode) {
        let bucket = (reason.0 as usize).min(REASON_BUCKETS - 1);
        if let Some(c) = self.closed.get(bucket) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn closed_count(&self, reason: ReasonCode) -> u64 {
        self.closed.get((reason.0 as usize).min(REASON_BUCKETS - 1)).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}
