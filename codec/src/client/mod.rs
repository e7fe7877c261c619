//! The client <-> gateway frame family (docs/protocol.md, section 2).

mod codec;
mod frame;

pub use codec::{ClientDecoder, encode_ack, encode_ping, encode_pong, encode_push, encode_send};
pub use frame::{
    AckFrame, Auth, AuthFail, AuthOk, ClientFrame, Close, GoAway, Kick, PROTOCOL_VERSION, Platform, PushFrame,
    SendFrame, op,
};
