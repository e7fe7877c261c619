/** The sans-IO Session driven by hand: bytes and `now` in, frames, events and deadlines out. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeFrame, encodeFrame, type Frame } from "../src/codec.js";
import { Platform } from "../src/gen/client_pb.js";
import { Reason } from "../src/reasons.js";
import { Session, type SessionEvent } from "../src/session.js";
import { gw } from "./fakes.js";

const credentials = { token: "t1", userId: "alice", deviceId: "phone", platform: Platform.IOS };

function drain(s: Session): { frames: Frame[]; events: SessionEvent[] } {
  const frames: Frame[] = [];
  const events: SessionEvent[] = [];
  for (let b = s.pollTransmit(); b !== undefined; b = s.pollTransmit()) {
    const r = decodeFrame(b);
    assert.ok(r.type === "frame");
    frames.push(r.frame);
  }
  for (let e = s.pollEvent(); e !== undefined; e = s.pollEvent()) events.push(e);
  return { frames, events };
}

test("Auth first, then the auth deadline; AuthOk moves the deadline to the heartbeat", () => {
  const s = new Session({ credentials, authTimeoutMs: 5_000 }, 0);
  const first = drain(s);
  assert.deepEqual(first.frames.map((f) => f.type), ["auth"]);
  assert.equal(s.pollTimeout(), 5_000);
  s.handleBytes(encodeFrame(gw.authOk({ heartbeatIntervalMs: 1_000 })), 100);
  assert.deepEqual(drain(s).events.map((e) => e.type), ["authOk"]);
  assert.equal(s.pollTimeout(), 1_000); // Ping due one interval after the Auth was written
  s.handleTimeout(1_000);
  assert.deepEqual(drain(s).frames.map((f) => f.type), ["ping"]);
  assert.equal(s.pollTimeout(), 2_000);
});

test("no AuthOk by the deadline: Close auth_timeout", () => {
  const s = new Session({ credentials, authTimeoutMs: 5_000 }, 0);
  drain(s);
  s.handleTimeout(4_999);
  assert.equal(drain(s).frames.length, 0);
  s.handleTimeout(5_000);
  const out = drain(s);
  assert.ok(out.frames[0]?.type === "close" && out.frames[0].body.reason === Reason.auth_timeout);
  assert.deepEqual(out.events, [{ type: "closed", code: Reason.auth_timeout, message: "no AuthOk in time", by: "local" }]);
  assert.equal(s.pollTimeout(), undefined);
});

test("frames before AuthOk other than AuthOk/AuthFail/Close/Kick/heartbeats are unexpected_frame", () => {
  const s = new Session({ credentials }, 0);
  drain(s);
  s.handleBytes(encodeFrame(gw.push(1, "x")), 1);
  const out = drain(s);
  assert.ok(out.frames[0]?.type === "close" && out.frames[0].body.reason === Reason.unexpected_frame);
  assert.equal(s.isClosed, true);
  s.handleBytes(encodeFrame(gw.authOk()), 2); // ignored once closed
  assert.deepEqual(drain(s), { frames: [], events: [] });
});

test("GoAway: canSend turns false; the last Ack brings Close normal", () => {
  const s = new Session({ credentials }, 0);
  s.handleBytes(encodeFrame(gw.authOk({ maxInFlight: 2 })), 0);
  s.send(1, new Uint8Array(), new Uint8Array([1]), 0);
  assert.equal(s.canSend(), true);
  s.send(2, new Uint8Array(), new Uint8Array([2]), 0);
  assert.equal(s.canSend(), false, "max_in_flight reached");
  drain(s);
  s.handleBytes(encodeFrame(gw.goAway({ reason: 42, reconnectAfterMs: 10 })), 1);
  s.handleBytes(encodeFrame(gw.ack(1)), 1);
  assert.equal(s.canSend(), false, "no new Sends after GoAway");
  assert.throws(() => s.send(3, new Uint8Array(), new Uint8Array(), 1));
  assert.equal(drain(s).frames.length, 0);
  s.handleBytes(encodeFrame(gw.ack(2)), 2);
  const out = drain(s);
  assert.deepEqual(out.frames.map((f) => f.type), ["close"]);
  assert.deepEqual(out.events.map((e) => e.type), ["ack", "closed"]);
});
