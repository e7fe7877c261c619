//! Bodies of the fuzz targets in `fuzz/`, here so that `cargo test` replays the committed
//! corpus through exactly the code the fuzzer runs. Each panics only on a broken invariant.
// Panicking is how a fuzz target reports a broken invariant.
#![allow(clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::client::{AuthOk, ClientDecoder, ClientFrame};
use crate::header::Decoded;
use crate::link::{LinkDecoder, LinkFrame};
use crate::reason::ReasonCode;
use crate::session::{ServerConfig, ServerEvent, ServerSession};

/// Decodes `data` whole and in chunks; both must agree, and every frame must survive
/// re-encoding.
pub fn client_decoder(data: &[u8]) {
    let decoder = ClientDecoder::new(4096);
    decoder_invariants(data, |b| decoder.decode(b), |f: &ClientFrame| f.to_bytes());
}

/// The link decoder under the same invariants as [`client_decoder`].
pub fn link_decoder(data: &[u8]) {
    let decoder = LinkDecoder::new(4096);
    decoder_invariants(data, |b| decoder.decode(b), LinkFrame::to_bytes);
}

fn decoder_invariants<F: PartialEq + std::fmt::Debug>(
    data: &[u8],
    decode: impl Fn(&mut BytesMut) -> Result<Decoded<F>, crate::DecodeError>,
    encode: impl Fn(&F) -> Result<bytes::Bytes, crate::EncodeError>,
) {
    let chunk = usize::from(data.first().copied().unwrap_or(1) % 7) + 1;
    let whole = decode_all(data, data.len().max(1), &decode);
    let chunked = decode_all(data, chunk, &decode);
    assert_eq!(whole, chunked, "chunking changed the result");
    for frame in whole.0 {
        let bytes = encode(&frame).expect("a decoded frame re-encodes");
        let again = decode(&mut BytesMut::from(&bytes[..]));
        assert_eq!(again, Ok(Decoded::Frame(frame)), "re-encoded frame decodes to itself");
    }
}

/// Drives a server session with `data` as client input, accepting every Auth, acking every
/// Send and pushing after each; the output must always be well-formed frames.
pub fn server_session(data: &[u8]) {
    let config = ServerConfig { max_outbound: 2048, max_in_flight: 4, ..ServerConfig::default() };
    let t0 = Instant::now();
    let mut session = ServerSession::new(&config, t0);
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    for (i, piece) in data.chunks(5).enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * 10);
        input.extend_from_slice(piece);
        while let Some(event) = session.handle_input(&mut input, now) {
            match event {
                ServerEvent::Auth(_) => session.accept(&auth_ok(), now),
                ServerEvent::Send(send) => {
                    let _ = session.push(&send.payload);
                    let _ = session.ack(send.seq, ReasonCode::OK);
                }
                ServerEvent::Closed { .. } | ServerEvent::Pinged => {}
            }
        }
        let _ = session.handle_timeout(now);
        output.extend_from_slice(&session.output().split());
    }
    let decoder = ClientDecoder::new(usize::MAX);
    loop {
        match decoder.decode(&mut output) {
            Ok(Decoded::Frame(_)) => {}
            Ok(Decoded::NeedMore(_)) => break,
            Err(e) => panic!("server wrote a malformed frame: {e}"),
        }
    }
    assert!(output.is_empty(), "server output ends mid-frame");
}

fn auth_ok() -> AuthOk {
    AuthOk {
        connection_id: 1,
        node_id: "fuzz".into(),
        heartbeat_interval: Duration::from_secs(1),
        server_time_ms: 0,
        protocol_version: 1,
        max_frame_len: 4096,
        max_in_flight: 4,
        resume_token: None,
    }
}

type Outcome<F> = (Vec<F>, Option<crate::DecodeError>);

fn decode_all<F>(
    data: &[u8],
    chunk: usize,
    decode: impl Fn(&mut BytesMut) -> Result<Decoded<F>, crate::DecodeError>,
) -> Outcome<F> {
    let mut input = BytesMut::new();
    let mut frames = Vec::new();
    for piece in data.chunks(chunk) {
        input.extend_from_slice(piece);
        loop {
            match decode(&mut input) {
                Ok(Decoded::Frame(f)) => frames.push(f),
                Ok(Decoded::NeedMore(n)) => {
                    assert!(n >= 1, "NeedMore(0)");
                    break;
                }
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}
