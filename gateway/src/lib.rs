//! ringgate: the gateway binary's library. The data plane arrives with the data-plane issue.
