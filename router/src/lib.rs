//! ringgate-router: where upstream frames go.
//!
//! - [`ring`]: rendezvous hashing of routing keys onto backend addresses;
//! - [`dns`]: turning DNS answers for the backend name into a stable address set (TTL,
//!   hold-down, last good set on failure);
//! - [`hash`]: the fixed hash both use.
//!
//! Pure logic: no sockets, no clock (time is passed in), no runtime.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod dns;
pub mod hash;
pub mod ring;

pub use dns::{AddressSet, DnsConfig, Resolution};
pub use ring::Ring;
