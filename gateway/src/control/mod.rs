//! The control plane: work that must never run on a worker (DNS today; the registry and
//! admin endpoints later). It talks to workers only through their inboxes.

pub mod admin;
pub mod dns;
