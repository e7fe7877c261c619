#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringgate::transport::ws::fuzzing::ws_handshake(data));
