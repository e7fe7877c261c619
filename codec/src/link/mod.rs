//! The gateway <-> backend link frame family (docs/protocol.md, section 3).

mod codec;
mod frame;

pub use codec::LinkDecoder;
pub use frame::{
    Broadcast, ConnClosed, ConnOpened, Hello, HelloAck, KickTarget, LINK_VERSION, LinkClose, LinkFrame, LinkKick,
    PushResult, PushToConn, PushToRoom, PushToUser, RoomMembership, Upstream, UpstreamAck, op,
};
