//! ringgate-bench: the load generator and benchmark suite. The binary is `ringgate-bench`;
//! see `bench/README.md` for the method and the latest figures.

pub mod abuse;
pub mod api_push;
pub mod cluster;
pub mod compare;
pub mod conn;
pub mod control;
pub mod echo_server;
pub mod fleet;
pub mod gateway;
pub mod held;
pub mod procinfo;
pub mod registry;
pub mod ring;
pub mod run;
pub mod scenarios;
pub mod soak;
pub mod stats;
pub mod transport;
pub mod ws;
