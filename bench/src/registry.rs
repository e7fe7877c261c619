//! `ringgate-bench registry`: how fast the registry task writes logins to Redis (merged,
//! pipelined) and how long a lookup takes, against a redis-server started for the run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringgate::config::{DevicePolicy, RedisTarget};
use ringgate::registry::redis::{NodeInfo, RegistryIo};
use ringgate::registry::{Location, RegistryOp};
use ringgate::status::RegistryState;

use crate::stats::RunStats;

/// A redis-server on a unix socket in a temporary directory; killed (and the directory
/// removed) on drop.
#[derive(Debug)]
pub struct RedisChild(Child, PathBuf);

impl RedisChild {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// Starts a redis-server for a run; returns it and its URL.
pub fn start_redis() -> std::io::Result<(RedisChild, String)> {
    let dir = std::env::temp_dir().join(format!("ringgate-bench-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("redis.sock");
    let child = Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocket"])
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let url = format!("redis+unix://{}", socket.display());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if redis::Client::open(url.as_str()).and_then(|c| c.get_connection()).is_ok() {
            return Ok((RedisChild(child, dir), url));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(std::io::Error::other("redis-server did not start"))
}

/// Writes `logins` records through the registry task, then times `lookups` lookups.
pub fn run(logins: usize, lookups: usize) -> std::io::Result<()> {
    let (_redis, url) = start_redis()?;
    let target = RedisTarget {
        url: url.clone(),
        cluster: Vec::new(),
        prefix: "rg".into(),
        lease_ttl: Duration::from_secs(15),
        fail_open: true,
        queue: logins.max(1),
    };
    let node = NodeInfo { id: "bench".into(), epoch: 1, addr: "127.0.0.1:7000".into() };
    let (tx, ops) = flume::unbounded();
    let (stop_tx, stop) = flume::bounded::<()>(1);
    let state = Arc::new(Mutex::new(RegistryState::default()));
    let io = RegistryIo { ops, workers: Vec::new(), up: Arc::new(AtomicBool::new(false)), state, stop };
    let task = std::thread::spawn(move || ringgate::registry::redis::run(target, node, DevicePolicy::Many, io));

    let mut check =
        redis::Client::open(url.as_str()).and_then(|c| c.get_connection()).map_err(std::io::Error::other)?;
    // Wait for the lease so the timing covers only the logins.
    while !redis::cmd("EXISTS").arg("rg:n:bench").query::<bool>(&mut check).map_err(std::io::Error::other)? {
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    for i in 0..logins {
        let location = Location {
            node_id: "bench".into(),
            node_epoch: 1,
            conn_id: i as u64 + 1,
            since_ms: 1,
            platform: "android".into(),
        };
        let _ = tx.send(RegistryOp::Put { user: format!("user-{i}"), device: "phone".into(), location });
    }
    let expected = logins + 1; // every user key and the lease
    loop {
        let keys: usize = redis::cmd("DBSIZE").query(&mut check).map_err(std::io::Error::other)?;
        if keys >= expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    println!(
        "registry writes: {logins} logins in {:.3} s = {:.0} logins/s (one control-plane task, merged pipelines)",
        elapsed.as_secs_f64(),
        logins as f64 / elapsed.as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut stats = RunStats::default();
    rt.block_on(async {
        let client = redis::Client::open(url.as_str()).map_err(std::io::Error::other)?;
        let mut conn = client.get_multiplexed_async_connection().await.map_err(std::io::Error::other)?;
        for i in 0..lookups {
            let user = format!("user-{}", i % logins.max(1));
            let t = Instant::now();
            let found =
                ringgate::registry::redis::lookup(&mut conn, "rg", &user).await.map_err(std::io::Error::other)?;
            stats.record_rtt(t.elapsed());
            if found.len() != 1 {
                stats.error("lookup: not exactly one live record");
            }
        }
        Ok::<(), std::io::Error>(())
    })?;
    let p = stats.percentiles();
    println!(
        "lookup (HGETALL + lease check): p50 {} us, p99 {} us, p99.9 {} us over {lookups}; errors {:?}",
        p.p50_us, p.p99_us, p.p999_us, stats.errors
    );
    drop(stop_tx);
    let _ = task.join();
    Ok(())
}
