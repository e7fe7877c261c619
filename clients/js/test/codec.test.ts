import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import {
  DecodeError,
  EncodeError,
  FrameDecoder,
  decodeFrame,
  encodeFrame,
  type DecodeResult,
  type Frame,
} from "../src/codec.js";
import { AuthOkSchema, GoAwaySchema, Platform } from "../src/gen/client_pb.js";
import { vectors } from "./vectors.js";

const text = (b: Uint8Array): string => new TextDecoder().decode(b);
const hex = (b: Uint8Array): string => [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ");
const bytes = (...xs: number[]): Uint8Array => Uint8Array.from(xs);

/** Frame type a vector's name announces: client/send_no_key -> send, client/go_away -> goAway. */
const TYPE_OF: Record<string, Frame["type"]> = {
  ping: "ping", pong: "pong", auth: "auth", auth_ok: "authOk", auth_fail: "authFail", send: "send",
  ack: "ack", push: "push", kick: "kick", go_away: "goAway", close: "close",
};
function expectedType(name: string): Frame["type"] {
  const base = name.replace(/^client\//, "");
  const key = Object.keys(TYPE_OF)
    .filter((k) => base === k || base.startsWith(`${k}_`))
    .sort((a, b) => b.length - a.length)[0];
  const type = key === undefined ? undefined : TYPE_OF[key];
  if (type === undefined) throw new Error(`vector ${name} names no frame type`);
  return type;
}

function frameOf(r: DecodeResult): Frame {
  if (r.type !== "frame") assert.fail(`expected a frame, got ${JSON.stringify(r.type === "error" ? r.error.detail : r)}`);
  return r.frame;
}

function errorOf(r: DecodeResult): DecodeError {
  if (r.type !== "error") assert.fail(`expected an error, got ${r.type}`);
  return r.error;
}

const all = vectors("client");

test("protocol.md has a client vector for every op", () => {
  assert.ok(all.length >= 12, `found ${all.length} client vectors`);
  const covered = new Set(all.map((v) => expectedType(v.name)));
  assert.deepEqual([...covered].sort(), Object.values(TYPE_OF).sort());
});

for (const v of all) {
  test(`vector ${v.name}: decodes whole and re-encodes byte for byte`, () => {
    const r = decodeFrame(v.bytes);
    const frame = frameOf(r);
    assert.equal(r.type === "frame" && r.size, v.bytes.length);
    assert.equal(frame.type, expectedType(v.name));
    assert.equal(hex(encodeFrame(frame)), hex(v.bytes));
  });

  test(`vector ${v.name}: decodes fed one byte at a time`, () => {
    const d = new FrameDecoder();
    for (let i = 0; i < v.bytes.length; i++) {
      assert.equal(d.next().type, "need", `frame before byte ${i}`);
      d.push(v.bytes.subarray(i, i + 1));
    }
    const frame = frameOf(d.next());
    assert.equal(d.next().type, "need");
    assert.equal(d.buffered, 0);
    assert.equal(hex(encodeFrame(frame)), hex(v.bytes));
  });
}

test("vector contents match their comments", () => {
  const by = new Map(all.map((v) => [v.name.replace("client/", ""), frameOf(decodeFrame(v.bytes))]));
  const send = by.get("send");
  assert.ok(send?.type === "send");
  assert.equal(send.seq, 1);
  assert.equal(text(send.routeKey), "room:42");
  assert.equal(text(send.payload), "hi");
  const noKey = by.get("send_no_key");
  assert.ok(noKey?.type === "send");
  assert.deepEqual([noKey.seq, noKey.routeKey.length, text(noKey.payload)], [300, 0, "abc"]);
  const busy = by.get("ack_busy");
  assert.ok(busy?.type === "ack");
  assert.deepEqual([busy.seq, busy.code], [300, 51]);
  const push = by.get("push");
  assert.ok(push?.type === "push");
  assert.deepEqual([push.seq, text(push.payload)], [7, "hello"]);
  const auth = by.get("auth");
  assert.ok(auth?.type === "auth");
  assert.deepEqual(
    [auth.body.protocolVersion, auth.body.token, auth.body.userId, auth.body.deviceId, auth.body.platform],
    [1, "t1", "alice", "phone", Platform.IOS],
  );
  const ok = by.get("auth_ok");
  assert.ok(ok?.type === "authOk");
  assert.deepEqual(
    [ok.body.connectionId, ok.body.nodeId, ok.body.heartbeatIntervalMs, ok.body.serverTimeMs, ok.body.maxFrameLen, ok.body.maxInFlight],
    [258n, "gw-1", 30000, 1700000000000n, 65536, 64],
  );
  const fail = by.get("auth_fail");
  assert.ok(fail?.type === "authFail");
  assert.deepEqual([fail.body.reason, fail.body.message, [...fail.body.supportedVersions]], [22, "expired", [1]]);
  const ga = by.get("go_away");
  assert.ok(ga?.type === "goAway");
  assert.deepEqual([ga.body.reason, ga.body.alternatives, ga.body.reconnectAfterMs, ga.body.reconnectJitterMs], [42, ["10.0.0.2:7000"], 1000, 5000]);
  const kick = by.get("kick");
  assert.ok(kick?.type === "kick");
  assert.deepEqual([kick.body.reason, kick.body.message], [41, "replaced"]);
});

test("all vectors concatenated decode in order from any chunking", () => {
  const stream = new Uint8Array(all.reduce((n, v) => n + v.bytes.length, 0));
  let at = 0;
  for (const v of all) {
    stream.set(v.bytes, at);
    at += v.bytes.length;
  }
  for (const chunk of [1, 2, 3, 5, 7, 64, stream.length]) {
    const d = new FrameDecoder();
    const got: string[] = [];
    for (let i = 0; i < stream.length; i += chunk) {
      d.push(stream.subarray(i, i + chunk));
      for (let r = d.next(); r.type !== "need"; r = d.next()) got.push(hex(encodeFrame(frameOf(r))));
    }
    assert.deepEqual(got, all.map((v) => hex(v.bytes)), `chunk size ${chunk}`);
  }
});

test("need-more-bytes counts: 1 while the header is incomplete, then the exact remainder", () => {
  assert.deepEqual(decodeFrame(bytes()), { type: "need", need: 1 });
  assert.deepEqual(decodeFrame(bytes(0x22)), { type: "need", need: 1 });
  assert.deepEqual(decodeFrame(bytes(0x22, 0x86)), { type: "need", need: 1 });
  assert.deepEqual(decodeFrame(bytes(0x22, 0x06, 0x07)), { type: "need", need: 5 });
});

test("an unknown op is an error on its first byte", () => {
  const e = errorOf(decodeFrame(bytes(0x03)));
  assert.deepEqual(e.detail, { kind: "unknown_op", op: 3 });
  assert.equal(e.code, 12);
  // Link-family ops are unknown here too.
  assert.equal(errorOf(decodeFrame(bytes(0x40))).code, 12);
});

test("a length above the maximum is frame_too_large once the varint is complete, before the body", () => {
  // 65,537 = 0x81 0x80 0x04; no body byte present.
  const e = errorOf(decodeFrame(bytes(0x22, 0x81, 0x80, 0x04)));
  assert.deepEqual(e.detail, { kind: "frame_too_large", len: 65537, max: 65536 });
  assert.equal(e.code, 11);
  assert.equal(decodeFrame(bytes(0x22, 0x80, 0x80, 0x04)).type, "need"); // exactly the maximum is fine
  assert.equal(errorOf(decodeFrame(bytes(0x22, 0x0b), 10)).code, 11);
  // The streaming decoder is sticky after an error.
  const d = new FrameDecoder(100);
  d.push(bytes(0x22, 0xff, 0x7f));
  assert.equal(d.next().type, "error");
  d.push(bytes(0x01, 0x00));
  assert.equal(d.next().type, "error");
});

test("protocol errors: fifth length byte, bodies that break section 2.3 and 2.4", () => {
  const cases: Array<[string, Uint8Array]> = [
    ["five-byte length", bytes(0x22, 0x80, 0x80, 0x80, 0x80, 0x00)],
    ["ping with body", bytes(0x01, 0x01, 0x00)],
    ["pong with body", bytes(0x02, 0x01, 0x00)],
    ["ack with trailing byte", bytes(0x21, 0x03, 0x01, 0x00, 0x00)],
    ["ack truncated", bytes(0x21, 0x01, 0x01)],
    ["ack code above u32", bytes(0x21, 0x06, 0x01, 0x80, 0x80, 0x80, 0x80, 0x10)],
    ["send key past end", bytes(0x20, 0x03, 0x01, 0x05, 0x61)],
    ["send key length 256", bytes(0x20, 0x03, 0x01, 0x80, 0x02)],
    ["push without seq", bytes(0x22, 0x00)],
    ["push seq unterminated", bytes(0x22, 0x01, 0x80)],
    ["bad protobuf", bytes(0x32, 0x02, 0x08, 0x80)],
    ["auth_ok heartbeat 0", bytes(0x11, 0x02, 0x08, 0x01)],
  ];
  for (const [what, b] of cases) {
    const e = errorOf(decodeFrame(b));
    assert.equal(e.detail.kind, "protocol_error", what);
    assert.equal(e.code, 10, what);
  }
});

test("encoder refuses fields over their limits", () => {
  const key = new Uint8Array(256);
  assert.throws(() => encodeFrame({ type: "send", seq: 1, routeKey: key, payload: bytes() }), EncodeError);
  assert.throws(() => encodeFrame({ type: "ack", seq: 1, code: 2 ** 32 }), EncodeError);
  assert.throws(() => encodeFrame({ type: "push", seq: -1, payload: bytes() }), EncodeError);
  // 255 bytes is the limit, and fits: key_len takes two bytes.
  const ok = encodeFrame({ type: "send", seq: 1, routeKey: new Uint8Array(255), payload: bytes(1) });
  assert.equal(frameOf(decodeFrame(ok)).type, "send");
});

test("round trips of frames built here", () => {
  const frames: Frame[] = [
    { type: "send", seq: 2 ** 40, routeKey: bytes(1, 2), payload: new Uint8Array(20_000).fill(7) },
    { type: "push", seq: Number.MAX_SAFE_INTEGER, payload: bytes() },
    { type: "authOk", body: create(AuthOkSchema, { heartbeatIntervalMs: 1, connectionId: 2n ** 64n - 1n }) },
    { type: "goAway", body: create(GoAwaySchema, { alternatives: ["a:1", "b:2"] }) },
  ];
  for (const f of frames) {
    const enc = encodeFrame(f);
    assert.equal(hex(encodeFrame(frameOf(decodeFrame(enc)))), hex(enc));
  }
});
