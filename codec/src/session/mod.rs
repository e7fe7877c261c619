//! Protocol state machines of the client family, one per side of a connection.
//!
//! Both take bytes and `now` in (`handle_*`) and hand back events, bytes to send and the next
//! deadline (`poll_*`, `output`). They never read a clock or touch a socket, so tests drive
//! them with a fake clock and any chunking of the input, and every transport (TCP, TLS, a QUIC
//! stream) and runtime shares them.

mod client;
mod server;

pub use client::{ClientConfig, ClientEvent, ClientSession, ClientState, SendError};
pub use server::{ServerConfig, ServerEvent, ServerSession, ServerState};
