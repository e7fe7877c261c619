//! Replays the committed fuzz corpus (fuzz/corpus/<target>/*) through the fuzz targets' code.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "{} fails {target}", path.display());
        count += 1;
    }
    assert!(count >= 10, "{target}: only {count} corpus entries in {}", dir.display());
}

#[test]
fn client_decoder_corpus() {
    replay("client_decoder", ringgate_codec::fuzzing::client_decoder);
}

#[test]
fn link_decoder_corpus() {
    replay("link_decoder", ringgate_codec::fuzzing::link_decoder);
}

#[test]
fn server_session_corpus() {
    replay("server_session", ringgate_codec::fuzzing::server_session);
}
