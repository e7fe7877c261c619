//! ringgate: the gateway. The only crate of the workspace that touches sockets, the runtime,
//! TLS, QUIC and Redis; protocol logic lives in `ringgate-codec`, routing in `ringgate-router`.

pub mod admission;
pub mod api;
pub mod auth;
pub mod backend;
pub mod config;
pub mod control;
pub mod doctor;
pub mod gateway;
pub mod http;
pub mod inbox;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod registry;
pub mod relay;
pub mod runtime;
pub mod status;
pub mod transport;
pub mod worker;

pub use config::Config;
pub use gateway::Gateway;
