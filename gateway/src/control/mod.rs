//! The control plane: work that must never run on a worker. DNS discovery has a thread of
//! its own ([`dns`]); the admin endpoint, the server API and the relay between nodes share
//! one more ([`plane`]). It talks to workers only through their inboxes.

pub mod admin;
pub mod dns;
pub mod page;
pub mod plane;
