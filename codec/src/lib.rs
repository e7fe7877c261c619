//! ringgate-codec: the sans-IO wire protocol of ringgate.
//!
//! Two frame families share one header (an op byte and a varint body length, see [`header`]):
//! - [`client`]: client <-> gateway, over TCP, TLS or one QUIC stream;
//! - [`link`]: gateway <-> backend, many clients multiplexed over one TCP link.
//!
//! [`session`] holds the protocol state machines (a client and a server side) that take bytes
//! and `now` and hand back events, bytes to send and the next deadline. Nothing here touches a
//! socket, a clock or a runtime. The byte layout is specified in `docs/protocol.md`.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod backoff;
pub mod client;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
pub mod limits;
pub mod link;
pub mod pb;
pub mod reason;
pub mod session;
pub mod varint;

pub use error::{DecodeError, EncodeError};
pub use header::Decoded;
pub use reason::{ReasonCode, Retry};
