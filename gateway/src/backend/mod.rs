//! Backends: where client Sends go and pushes come from.

pub mod embedded;
pub mod reference;
pub mod server;
