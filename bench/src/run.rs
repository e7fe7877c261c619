//! Spreads connections over threads, each with its own runtime, and merges what they saw.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringgate_codec::session::ClientConfig;

use crate::conn::{self, Workload};
use crate::stats::RunStats;

/// A load run's shape.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub connections: usize,
    pub threads: usize,
    /// Connections opened per second, over all threads (0 = as fast as possible).
    pub rate: u64,
    /// Builds connection `i`'s identity.
    pub identity: fn(usize) -> ClientConfig,
    /// Spread connections over this many 127.x.y.z source addresses (0 = let the OS pick).
    pub sources: usize,
}

/// The source address of connection `i` when spreading over `sources` loopback addresses:
/// 127.1.0.1, 127.1.0.2, ... (every 127/8 address is loopback on Linux).
pub fn source_ip(i: usize, sources: usize) -> Option<std::net::IpAddr> {
    if sources == 0 {
        return None;
    }
    let n = (i % sources) as u32 + 1;
    Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x7f01_0000 + n)))
}

/// Runs `plan`, calling `workload(i)` for each connection once it is its turn to connect.
pub fn run(plan: &Plan, workload: impl Fn() -> Workload + Send + Sync + Clone + 'static) -> RunStats {
    let threads = plan.threads.max(1);
    let per_thread_rate = plan.rate.div_ceil(threads as u64);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let plan = plan.clone();
            let workload = workload.clone();
            std::thread::spawn(move || {
                let runtime = compio::runtime::Runtime::new().expect("runtime");
                runtime.block_on(async move {
                    let stats = Rc::new(RefCell::new(RunStats::default()));
                    let mut tasks = Vec::new();
                    let pause = conn::pacing(per_thread_rate);
                    for i in (t..plan.connections).step_by(threads) {
                        let task = conn::run(
                            plan.addr,
                            source_ip(i, plan.sources),
                            (plan.identity)(i),
                            workload(),
                            stats.clone(),
                        );
                        tasks.push(compio::runtime::spawn(task));
                        if !pause.is_zero() {
                            compio::time::sleep(pause).await;
                        } else if tasks.len() % 256 == 0 {
                            // Let the connects progress instead of queueing thousands at once.
                            compio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    for task in tasks {
                        let _ = task.await;
                    }
                    Rc::try_unwrap(stats).map(RefCell::into_inner).unwrap_or_default()
                })
            })
        })
        .collect();
    let mut total = RunStats::default();
    for h in handles {
        if let Ok(stats) = h.join() {
            total.merge(&stats);
        }
    }
    total
}

/// Waits until `cond` holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_cycle_over_loopback() {
        assert_eq!(source_ip(0, 0), None);
        assert_eq!(source_ip(0, 3), Some("127.1.0.1".parse().unwrap()));
        assert_eq!(source_ip(4, 3), Some("127.1.0.2".parse().unwrap()));
        assert_eq!(source_ip(299, 300), Some("127.1.1.44".parse().unwrap()));
    }
}
