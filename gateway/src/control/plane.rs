//! The control plane's HTTP thread: one tokio runtime serving the admin endpoint and the
//! server API, and running the relay (its Redis streams and the workers' link forwards).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::Api;
use crate::config::RedisTarget;
use crate::inbox::Forward;
use crate::relay::Relay;
use crate::relay::streams::{Outbox, Remote};

/// What the thread serves.
#[derive(Debug)]
pub struct PlaneSetup {
    pub admin: Option<(std::net::TcpListener, super::admin::AdminView)>,
    pub api: Option<(std::net::TcpListener, Api)>,
    pub relay: Relay,
    /// The relay's Redis side, with its outbox, when `[redis]` is set.
    pub remote: Option<(Remote, RedisTarget, Outbox)>,
    pub forwards: flume::Receiver<Forward>,
    /// `auth.jwks_url`, and where its keys go.
    pub jwks: Option<(crate::auth::token::JwksSource, crate::auth::token::JwksKeys)>,
    /// Sampled and trimmed here.
    pub memory: Arc<crate::memory::MemoryGuard>,
}

/// Binds a control-plane listener now, so a bad address fails the start with a clear error.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Runs everything in `setup` until `stop`'s sender is dropped; says on `started` once its
/// runtime exists (so a node's files are all open when its start returns).
pub fn run(setup: PlaneSetup, stop: flume::Receiver<()>, started: std::sync::mpsc::Sender<std::io::Result<()>>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let _ = started.send(Ok(()));
    let PlaneSetup { admin, api, relay, remote, forwards, jwks, memory } = setup;
    runtime.block_on(async move {
        if let Some((listener, view)) = admin {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    tokio::spawn(crate::http::serve(listener, super::admin::LIMITS, move |request| {
                        super::admin::handle(view.clone(), request)
                    }));
                }
                Err(e) => tracing::error!(error = %e, "admin listener unusable"),
            }
        }
        if let Some((listener, api)) = api {
            let api = Arc::new(api);
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    tokio::spawn(crate::http::serve(listener, crate::api::LIMITS, move |request| {
                        api.clone().handle(request)
                    }));
                }
                Err(e) => tracing::error!(error = %e, "api listener unusable"),
            }
        }
        if let Some((remote, target, outbox)) = remote {
            tokio::spawn(remote.serve(target, relay.clone(), outbox));
        }
        tokio::spawn(crate::relay::forward_loop(relay, forwards));
        if let Some((source, keys)) = jwks {
            tokio::spawn(crate::auth::jwks::refresh_loop(source, keys));
        }
        tokio::spawn(crate::memory::watch(memory));
        let _ = stop.recv_async().await;
    });
}
