//! Bodies of the WebSocket fuzz targets in `fuzz/` (`ws_frames`, `ws_handshake`), here so
//! that `cargo test` replays the committed corpus through exactly the code the fuzzer runs.
//! Each panics only on a broken invariant.
// Panicking is how a fuzz target reports a broken invariant.
#![allow(clippy::panic)]

use bytes::BytesMut;

use super::frames::{Part, Reader, Violation};
use super::handshake::{self, Rules};

/// What a reader made of some input: payload and message ends, replies, and how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    data: Vec<(Vec<u8>, Part)>,
    replies: Vec<u8>,
    end: Result<Option<Option<u16>>, Violation>,
}

fn read_all(mut reader: Reader, data: &[u8], chunk: usize) -> Outcome {
    let mut parts: Vec<(Vec<u8>, Part)> = Vec::new();
    let mut replies = BytesMut::new();
    for piece in data.chunks(chunk.max(1)) {
        let mut piece = piece.to_vec();
        let result = reader.feed(
            &mut piece,
            &mut |bytes, part| match (parts.last_mut(), part) {
                // Binary payload may arrive in any pieces: join them, so splits compare equal.
                (Some((last, Part::Binary)), Part::Binary) => last.extend_from_slice(bytes),
                _ => parts.push((bytes.to_vec(), part)),
            },
            &mut replies,
        );
        match result {
            Ok(fed) if fed.close.is_some() => {
                assert!(fed.consumed <= piece.len(), "took more than it was given");
                return Outcome { data: parts, replies: replies.to_vec(), end: Ok(fed.close) };
            }
            Ok(fed) => assert_eq!(fed.consumed, piece.len(), "without a Close every byte is taken"),
            Err(v) => return Outcome { data: parts, replies: replies.to_vec(), end: Err(v) },
        }
    }
    parts.retain(|(bytes, part)| !(bytes.is_empty() && *part == Part::Binary));
    Outcome { data: parts, replies: replies.to_vec(), end: Ok(None) }
}

/// Client frames read whole and in pieces (sized by the first byte) give the same payload,
/// replies and outcome, for the gateway's reader and the harness's text-accepting one; a
/// message never exceeds the bound, and nothing panics.
pub fn ws_frames(data: &[u8]) {
    const MAX: u64 = 1024;
    let chunk = usize::from(data.first().copied().unwrap_or(1) % 11) + 1;
    for make in [Reader::new as fn(u64) -> Reader, Reader::with_text] {
        let whole = read_all(make(MAX), data, data.len());
        let pieces = read_all(make(MAX), data, chunk);
        assert_eq!(whole, pieces, "splitting the input changed the result");
        let mut message = 0u64;
        for (bytes, part) in &whole.data {
            match part {
                Part::Binary => message += bytes.len() as u64,
                Part::End => message = 0,
                Part::Text => {
                    assert!(std::str::from_utf8(bytes).is_ok(), "text passed on is UTF-8");
                    assert!(bytes.len() as u64 <= MAX, "text message over the bound");
                }
            }
            assert!(message <= MAX, "binary message over the bound");
        }
    }
}

/// The upgrade parser on any request head: no panic; an accepted upgrade took no more than
/// the input and answers 101; a refusal answers with a 4xx; and a prefix of an accepted
/// head is never accepted with a different length.
pub fn ws_handshake(data: &[u8]) {
    let rules = Rules { path: "/ws".into(), allowed_origins: vec!["https://app.example".into()] };
    match handshake::parse(data, &rules, &[]) {
        Ok(Some(upgrade)) => {
            assert!(upgrade.consumed <= data.len());
            assert!(upgrade.response.starts_with(b"HTTP/1.1 101 "), "an upgrade answers 101");
            let again = handshake::parse(data.get(..upgrade.consumed).unwrap_or_default(), &rules, &[]);
            assert_eq!(again.ok().flatten().map(|u| u.consumed), Some(upgrade.consumed), "the head alone upgrades");
        }
        Ok(None) => assert!(data.len() <= handshake::MAX_REQUEST, "a head over the bound stays pending"),
        Err(refusal) => {
            let response = refusal.response();
            assert!(response.starts_with(b"HTTP/1.1 4") || response.starts_with(b"HTTP/1.1 5"), "{refusal:?}");
        }
    }
}
