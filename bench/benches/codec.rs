//! Codec micro-benchmarks: ns per decoded 64-byte Send and per encoded Push.
//!
//! `cargo bench -p ringgate-bench --bench codec`. Each iteration handles a batch of 1,000
//! frames so per-call overhead of the harness does not dominate; criterion reports time per
//! frame through `Throughput::Elements`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ringgate_codec::Decoded;
use ringgate_codec::client::{ClientDecoder, ClientFrame, encode_push, encode_send};
use ringgate_codec::link::{LinkDecoder, LinkFrame, Upstream};

const BATCH: usize = 1000;

fn sends(key: Option<&[u8]>, payload: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    for seq in 0..BATCH as u64 {
        encode_send(seq + 1_000, key, payload, &mut buf).expect("encodable");
    }
    buf
}

fn decode_send(c: &mut Criterion) {
    let decoder = ClientDecoder::default();
    let mut group = c.benchmark_group("client");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, key) in [("decode_send_64B", Some(&b"room:42"[..])), ("decode_send_64B_no_key", None)] {
        let input = sends(key, &[0xab; 64]);
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || input.clone(),
                |buf| {
                    while let Ok(Decoded::Frame(frame)) = decoder.decode(buf) {
                        if let ClientFrame::Send(send) = frame {
                            black_box(send.payload);
                        }
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    let payload = [0xcd_u8; 64];
    let mut out = BytesMut::with_capacity(BATCH * 80);
    group.bench_function("encode_push_64B", |b| {
        b.iter(|| {
            out.clear();
            for seq in 0..BATCH as u64 {
                encode_push(black_box(seq + 1_000), black_box(&payload), &mut out).expect("encodable");
            }
            black_box(&out);
        })
    });
    group.finish();
}

fn link_upstream(c: &mut Criterion) {
    let upstream = LinkFrame::Upstream(Upstream {
        request_id: 77,
        conn_id: 0x0001_0000_0000_1234,
        user_id: "user-123456".into(),
        device_id: "phone".into(),
        platform: ringgate_codec::client::Platform::Android,
        route_key: None,
        seq: 1234,
        payload: bytes::Bytes::from(vec![0xef; 64]),
    });
    let mut input = BytesMut::new();
    for _ in 0..BATCH {
        upstream.encode(&mut input).expect("encodable");
    }
    let decoder = LinkDecoder::default();
    let mut group = c.benchmark_group("link");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("decode_upstream_64B", |b| {
        b.iter_batched_ref(
            || input.clone(),
            |buf| {
                while let Ok(Decoded::Frame(frame)) = decoder.decode(buf) {
                    black_box(frame);
                }
            },
            BatchSize::SmallInput,
        )
    });
    let mut out = BytesMut::with_capacity(BATCH * 128);
    group.bench_function("encode_upstream_64B", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..BATCH {
                upstream.encode(&mut out).expect("encodable");
            }
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, decode_send, link_upstream);
criterion_main!(benches);
