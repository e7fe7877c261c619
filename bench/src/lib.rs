//! ringgate-bench: the load generator (and, with the backend-pool work, the reference
//! backend binary). The binary is `ringgate-bench`; see `bench/README.md`.

pub mod conn;
pub mod drivers;
pub mod gateway;
pub mod procinfo;
pub mod registry;
pub mod ring;
pub mod run;
pub mod stats;
