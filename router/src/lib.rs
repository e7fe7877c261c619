//! ringgate-router: where upstream frames go.
//!
//! Filled in by the backend-pool work (issue "Backend pool"); for now it only fixes the
//! crate's place in the workspace.
#![forbid(unsafe_code)]
