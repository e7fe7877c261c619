//! The hex examples in docs/protocol.md are test vectors: each decodes to the named frame and
//! the frame encodes back to exactly those bytes. Every named frame must appear in the doc.
//!
//! `RINGGATE_PRINT_VECTORS=1 cargo test -p ringgate-codec --test vectors -- --nocapture`
//! prints the current encodings.

mod common;

use std::collections::BTreeMap;

use bytes::BytesMut;
use ringgate_codec::Decoded;
use ringgate_codec::client::ClientDecoder;
use ringgate_codec::link::LinkDecoder;

/// Vectors in the doc: a ```hex block whose first line is `# vector: NAME`; every other line
/// holds hex byte pairs, optionally followed by `#` and a comment.
fn doc_vectors() -> BTreeMap<String, Vec<u8>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md exists");
    let mut vectors = BTreeMap::new();
    let mut current: Option<(String, Vec<u8>)> = None;
    for line in doc.lines() {
        let line = line.trim();
        if let Some((name, bytes)) = current.as_mut() {
            if line == "```" {
                vectors.insert(std::mem::take(name), std::mem::take(bytes));
                current = None;
                continue;
            }
            let data = line.split('#').next().unwrap_or_default();
            for pair in data.split_whitespace() {
                bytes.push(u8::from_str_radix(pair, 16).unwrap_or_else(|_| panic!("bad hex {pair:?} in {name}")));
            }
        } else if let Some(name) = line.strip_prefix("# vector: ") {
            current = Some((name.trim().to_owned(), Vec::new()));
        }
    }
    vectors
}

/// Checks each named frame against the doc's bytes, both ways; collects names the doc lacks.
fn check<F: PartialEq + std::fmt::Debug>(
    vectors: Vec<(&'static str, F)>,
    encode: impl Fn(&F) -> Vec<u8>,
    decode: impl Fn(&mut BytesMut) -> Decoded<F>,
    doc: &BTreeMap<String, Vec<u8>>,
    missing: &mut Vec<&'static str>,
) {
    let print = std::env::var_os("RINGGATE_PRINT_VECTORS").is_some();
    for (name, frame) in vectors {
        let encoded = encode(&frame);
        if print {
            println!("# vector: {name}\n{}\n", common::hex(&encoded));
        }
        let Some(bytes) = doc.get(name) else {
            missing.push(name);
            continue;
        };
        assert_eq!(common::hex(&encoded), common::hex(bytes), "{name}: encoding differs from the doc");
        let mut input = BytesMut::from(&bytes[..]);
        assert_eq!(decode(&mut input), Decoded::Frame(frame), "{name}");
        assert!(input.is_empty(), "{name}: trailing bytes");
    }
}

#[test]
fn doc_hex_examples_are_golden_vectors() {
    let print = std::env::var_os("RINGGATE_PRINT_VECTORS").is_some();
    let doc = doc_vectors();
    let mut missing = Vec::new();
    let client = ClientDecoder::default();
    check(
        common::client_vectors(),
        |f| f.to_bytes().unwrap().to_vec(),
        |b| client.decode(b).unwrap(),
        &doc,
        &mut missing,
    );
    let link = LinkDecoder::default();
    check(common::link_vectors(), |f| f.to_bytes().unwrap().to_vec(), |b| link.decode(b).unwrap(), &doc, &mut missing);
    assert!(print || missing.is_empty(), "vectors missing from docs/protocol.md: {missing:?}");
    assert!(print || doc.len() >= 25, "the doc should hold every vector, found {}", doc.len());
}

#[test]
fn doc_reason_table_matches_the_code() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md")).unwrap();
    for code in ringgate_codec::ReasonCode::ALL {
        let row = format!("| {} | `{}` |", code.0, code.name().unwrap());
        assert!(doc.contains(&row), "docs/protocol.md lacks the reason row {row:?}");
    }
}
