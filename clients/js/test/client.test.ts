import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";
import { backoffDelay } from "../src/backoff.js";
import { Client, type ClientOptions, type ClientState, type DisconnectedEvent } from "../src/client.js";
import { RinggateError } from "../src/errors.js";
import { Platform } from "../src/gen/client_pb.js";
import { Reason } from "../src/reasons.js";
import { FakeClock, FakeWebSocket, flush, gw } from "./fakes.js";

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

interface Harness {
  client: Client;
  clock: FakeClock;
  states: ClientState[];
  disconnects: DisconnectedEvent[];
}

function setup(options: Partial<ClientOptions> = {}): Harness {
  FakeWebSocket.reset();
  const clock = new FakeClock();
  const client = new Client({
    urls: ["ws://gw-a:7001/ws", "ws://gw-b:7001/ws"],
    token: "tok",
    userId: "alice",
    deviceId: "phone",
    platform: Platform.WEB,
    WebSocket: FakeWebSocket,
    clock,
    random: () => 0.5,
    ...options,
  });
  const states: ClientState[] = [];
  const disconnects: DisconnectedEvent[] = [];
  client.on("state", (e) => states.push(e.state));
  client.on("disconnected", (e) => disconnects.push(e));
  return { client, clock, states, disconnects };
}

/** connect(), open the socket, answer AuthOk; returns the socket. */
async function connected(h: Harness, authOk = gw.authOk()): Promise<FakeWebSocket> {
  h.client.connect();
  await flush();
  const ws = FakeWebSocket.last();
  ws.open();
  ws.receive(authOk);
  assert.equal(h.client.state, "connected");
  return ws;
}

beforeEach(() => FakeWebSocket.reset());

test("connect offers ringgate.v1, sends Auth first, and reports AuthOk", async () => {
  const h = setup();
  const seen: unknown[] = [];
  h.client.on("connected", (e) => seen.push([e.connectionId, e.nodeId, e.heartbeatIntervalMs, e.maxInFlight, e.url]));
  h.client.connect();
  const ws = FakeWebSocket.last();
  assert.equal(ws.url, "ws://gw-a:7001/ws");
  assert.deepEqual(ws.protocols, ["ringgate.v1"]);
  assert.equal(ws.binaryType, "arraybuffer");
  assert.equal(ws.sent.length, 0, "nothing is written before the socket opens");
  ws.open();
  const [auth, ...rest] = ws.frames();
  assert.equal(rest.length, 0);
  assert.ok(auth?.type === "auth");
  assert.deepEqual(
    [auth.body.protocolVersion, auth.body.token, auth.body.userId, auth.body.deviceId, auth.body.platform],
    [1, "tok", "alice", "phone", Platform.WEB],
  );
  assert.equal(h.client.state, "connecting");
  ws.receive(gw.authOk());
  assert.deepEqual(h.states, ["connecting", "connected"]);
  assert.deepEqual(seen, [[7n, "gw-1", 30_000, 64, "ws://gw-a:7001/ws"]]);
});

test("pushes arrive from any split of the byte stream, with their seq", async () => {
  const h = setup();
  const pushes: Array<[number, string]> = [];
  h.client.on("push", (p) => pushes.push([p.seq, text(p.payload)]));
  h.client.connect();
  const ws = FakeWebSocket.last();
  ws.open();
  // AuthOk and the first Push in one message, the second Push split over three.
  ws.receive(gw.authOk(), gw.push(1, "hello"));
  const p2 = Uint8Array.from([0x22, 0x06, 0x02, ...new TextEncoder().encode("world")]);
  ws.receiveBytes(p2.subarray(0, 1));
  ws.receiveBytes(p2.subarray(1, 4));
  assert.equal(pushes.length, 1);
  ws.receiveBytes(p2.subarray(4));
  assert.deepEqual(pushes, [[1, "hello"], [2, "world"]]);
});

test("send resolves with the Ack, rejects with a typed RinggateError on a non-ok code", async () => {
  const h = setup();
  const ws = await connected(h);
  const a = h.client.send("hi", { routeKey: "room:42" });
  const b = h.client.send(new Uint8Array([1, 2]));
  const sends = ws.framesOf("send");
  assert.deepEqual(sends.map((s) => [s.seq, text(s.routeKey), s.payload.length]), [[1, "room:42", 2], [2, "", 2]]);
  ws.receive(gw.ack(1), gw.ack(2, Reason.backend_busy));
  assert.deepEqual(await a, { seq: 1, code: 0 });
  const err = await b.then(() => assert.fail("resolved"), (e: unknown) => e);
  assert.ok(err instanceof RinggateError);
  assert.deepEqual([err.code, err.reason, err.retry], [51, "backend_busy", "backoff"]);
});

test("at most max_in_flight Sends are outstanding; the rest queue and go out as Acks arrive", async () => {
  const h = setup();
  const ws = await connected(h, gw.authOk({ maxInFlight: 2 }));
  const results = [1, 2, 3, 4, 5].map((i) => h.client.send(`m${i}`));
  assert.deepEqual(ws.framesOf("send").map((s) => text(s.payload)), ["m1", "m2"]);
  ws.receive(gw.ack(2));
  assert.deepEqual(ws.framesOf("send").map((s) => text(s.payload)), ["m1", "m2", "m3"]);
  ws.receive(gw.ack(1), gw.ack(3));
  assert.deepEqual(ws.framesOf("send").map((s) => [s.seq, text(s.payload)]), [[1, "m1"], [2, "m2"], [3, "m3"], [4, "m4"], [5, "m5"]]);
  ws.receive(gw.ack(4), gw.ack(5));
  assert.deepEqual((await Promise.all(results)).map((a) => a.seq), [1, 2, 3, 4, 5]);
});

test("a Send over the gateway's max_frame_len or a route key over 255 bytes is refused locally", async () => {
  const h = setup();
  const ws = await connected(h, gw.authOk({ maxFrameLen: 100 }));
  await assert.rejects(h.client.send(new Uint8Array(99)), (e: unknown) => e instanceof RinggateError && e.reason === "frame_too_large");
  await assert.rejects(h.client.send("x", { routeKey: "k".repeat(256) }), (e: unknown) => e instanceof RinggateError && e.reason === "protocol_error");
  assert.equal(ws.framesOf("send").length, 0);
  const ok = h.client.send(new Uint8Array(97)); // 1 (seq) + 1 (key_len) + 97 = 99
  ws.receive(gw.ack(2));
  assert.equal((await ok).seq, 2);
});

test("heartbeat: Ping after one interval of client silence; any frame counts; server Pings get Pongs", async () => {
  const h = setup();
  const ws = await connected(h, gw.authOk({ heartbeatIntervalMs: 1_000 }));
  h.clock.advance(999);
  assert.equal(ws.framesOf("ping").length, 0);
  h.clock.advance(1);
  assert.equal(ws.framesOf("ping").length, 1);
  ws.receive(gw.ping()); // the gateway is alive; the client answers Pong (which counts as sent)
  assert.equal(ws.framesOf("pong").length, 1);
  h.clock.advance(500);
  void h.client.send("x"); // a Send also counts
  h.clock.advance(999);
  assert.equal(ws.framesOf("ping").length, 1);
  h.clock.advance(1);
  assert.equal(ws.framesOf("ping").length, 2);
});

test("a gateway silent for idle_multiple intervals is dead: Close idle_timeout and reconnect", async () => {
  const h = setup({ idleMultiple: 3 });
  const ws = await connected(h, gw.authOk({ heartbeatIntervalMs: 1_000 }));
  h.clock.advance(2_999);
  assert.equal(ws.closed, undefined);
  h.clock.advance(1);
  assert.deepEqual(ws.frames().at(-1), ws.framesOf("close")[0]);
  assert.equal(ws.framesOf("close")[0]?.body.reason, Reason.idle_timeout);
  assert.deepEqual(ws.closed, { code: 4030, reason: "idle_timeout" });
  assert.equal(h.client.state, "disconnected");
  assert.equal(h.disconnects[0]?.reason, "idle_timeout");
  assert.equal(h.disconnects[0]?.willReconnect, true);
});

test("backoff: full jitter between 500 ms and 20 s, doubling", () => {
  const opts = {};
  for (let attempt = 0; attempt < 50; attempt++) {
    for (const r of [0, 0.25, 0.5, 0.999999]) {
      const d = backoffDelay(attempt, opts, () => r);
      assert.ok(d >= 500 && d <= 20_000, `attempt ${attempt} random ${r}: ${d}`);
    }
  }
  const top = (n: number) => backoffDelay(n, opts, () => 0.999999);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map(top), [999, 1499, 2499, 4499, 8499, 16499, 20000]);
  assert.equal(backoffDelay(3, opts, () => 0), 500);
  assert.equal(backoffDelay(2, { minDelayMs: 100, maxDelayMs: 300 }, () => 0.999999), 300);
});

test("failed attempts reconnect with growing jittered delays, round the urls, and reset after AuthOk", async () => {
  const h = setup({ random: () => 0.999999, backoff: { minDelayMs: 100, maxDelayMs: 1_000 } });
  h.client.connect();
  const urls: string[] = [];
  for (let i = 0; i < 6; i++) {
    const ws = FakeWebSocket.last();
    urls.push(ws.url);
    ws.drop(1006); // refused before opening
    const d = h.disconnects.at(-1);
    assert.ok(d !== undefined && d.willReconnect && d.code === null && d.reason === "transport_closed");
    assert.equal(h.client.state, "disconnected");
    h.clock.advance(d.delayMs ?? 0);
    assert.equal(h.client.state, "connecting");
  }
  assert.deepEqual(h.disconnects.map((d) => d.delayMs), [199, 299, 499, 899, 1000, 1000]);
  assert.deepEqual(urls, ["ws://gw-a:7001/ws", "ws://gw-b:7001/ws", "ws://gw-a:7001/ws", "ws://gw-b:7001/ws", "ws://gw-a:7001/ws", "ws://gw-b:7001/ws"]);
  const ws = FakeWebSocket.last();
  ws.open();
  ws.receive(gw.authOk());
  ws.drop(4000 + Reason.slow_consumer, "slow_consumer");
  assert.deepEqual([h.disconnects.at(-1)?.reason, h.disconnects.at(-1)?.delayMs], ["slow_consumer", 199]);
});

test("a WebSocket that never opens times out and is retried", async () => {
  const h = setup({ connectTimeoutMs: 5_000 });
  h.client.connect();
  const ws = FakeWebSocket.last();
  h.clock.advance(5_000);
  assert.ok(ws.closed !== undefined);
  assert.equal(h.disconnects[0]?.reason, "auth_timeout");
  assert.equal(h.disconnects[0]?.willReconnect, true);
});

test("GoAway: no new Sends, Close normal after the last Ack, reconnect to an alternative after the hint", async () => {
  const h = setup();
  const goaways: unknown[] = [];
  h.client.on("goaway", (g) => goaways.push(g));
  const ws = await connected(h, gw.authOk({ maxInFlight: 2 }));
  const results = ["a", "b", "c"].map((p) => h.client.send(p));
  assert.equal(ws.framesOf("send").length, 2);
  ws.receive(gw.goAway({ reason: Reason.server_draining, alternatives: ["10.0.0.2:7000"], reconnectAfterMs: 1_000, reconnectJitterMs: 5_000 }));
  assert.equal(goaways.length, 1);
  ws.receive(gw.ack(1));
  const late = h.client.send("d");
  assert.equal(ws.framesOf("send").length, 2, "no Send starts after GoAway");
  assert.equal(ws.closed, undefined, "still waiting for an Ack");
  ws.receive(gw.ack(2));
  assert.equal(ws.frames().at(-1)?.type, "close");
  assert.equal(ws.framesOf("close")[0]?.body.reason, Reason.normal);
  assert.deepEqual(ws.closed, { code: 1000, reason: undefined });
  assert.equal((await results[0])?.seq, 1);
  assert.equal((await results[1])?.seq, 2);
  // reconnect_after + uniform(0, jitter) with random 0.5: 1000 + 2500.
  assert.equal(h.disconnects[0]?.delayMs, 3_500);
  assert.equal(h.disconnects[0]?.willReconnect, true);
  h.clock.advance(3_499);
  assert.equal(FakeWebSocket.instances.length, 1);
  h.clock.advance(1);
  const next = FakeWebSocket.last();
  assert.equal(next.url, "ws://10.0.0.2:7000/ws");
  next.open();
  next.receive(gw.authOk());
  assert.deepEqual(next.framesOf("send").map((s) => [s.seq, text(s.payload)]), [[1, "c"], [2, "d"]]);
  next.receive(gw.ack(1), gw.ack(2));
  assert.equal((await late).seq, 2);
});

test("GoAway with nothing in flight closes at once; empty alternatives keep the usual urls", async () => {
  const h = setup({ random: () => 0 });
  const ws = await connected(h);
  ws.receive(gw.goAway({ reason: Reason.server_draining, reconnectAfterMs: 200 }));
  assert.equal(ws.framesOf("close")[0]?.body.reason, Reason.normal);
  h.clock.advance(200);
  assert.equal(FakeWebSocket.last().url, "ws://gw-b:7001/ws");
});

test("Kick replaced is terminal: closed, no reconnect, pending Sends rejected", async () => {
  const h = setup();
  const kicks: unknown[] = [];
  h.client.on("kicked", (k) => kicks.push([k.code, k.reason]));
  const ws = await connected(h, gw.authOk({ maxInFlight: 1 }));
  const inFlight = h.client.send("a");
  const queued = h.client.send("b");
  ws.receive(gw.kick(Reason.replaced, "replaced"), gw.close(Reason.replaced, "replaced"));
  assert.deepEqual(kicks, [[41, "replaced"]]);
  assert.equal(h.client.state, "closed");
  assert.deepEqual(h.disconnects.map((d) => [d.reason, d.willReconnect]), [["replaced", false]]);
  for (const p of [inFlight, queued]) {
    await assert.rejects(p, (e: unknown) => e instanceof RinggateError && e.code === 41 && e.reason === "replaced");
  }
  h.clock.advance(10 * 60_000);
  assert.equal(FakeWebSocket.instances.length, 1);
  await assert.rejects(h.client.send("c"), (e: unknown) => e instanceof RinggateError && e.reason === "not_connected");
});

test("a replaced kick seen only as the WebSocket close code (4041) is terminal too", async () => {
  const h = setup();
  const ws = await connected(h);
  ws.drop(4041, "replaced");
  assert.equal(h.client.state, "closed");
  assert.equal(h.disconnects[0]?.reason, "replaced");
});

test("server_shutdown reconnects at once (within the minimum backoff), not after a long backoff", async () => {
  const h = setup({ random: () => 0.999999 });
  const ws = await connected(h);
  ws.receive(gw.close(Reason.server_shutdown));
  assert.deepEqual(ws.closed, { code: 4043, reason: "server_shutdown" });
  const d = h.disconnects[0];
  assert.ok(d !== undefined && d.willReconnect && (d.delayMs ?? 1e9) < 500);
});

test("token function: called again after auth_expired, and after auth_unknown_key", async () => {
  let calls = 0;
  const h = setup({ token: async () => `t${++calls}` });
  h.client.connect();
  await flush();
  let ws = FakeWebSocket.last();
  ws.open();
  assert.equal(ws.framesOf("auth")[0]?.body.token, "t1");
  ws.receive(gw.authFail(Reason.auth_expired, "expired"), gw.close(Reason.auth_expired));
  assert.deepEqual([h.disconnects[0]?.reason, h.disconnects[0]?.willReconnect], ["auth_expired", true]);
  h.clock.advance(h.disconnects[0]?.delayMs ?? 0);
  await flush();
  ws = FakeWebSocket.last();
  ws.open();
  assert.equal(ws.framesOf("auth")[0]?.body.token, "t2");
  ws.receive(gw.authOk());
  // A plain reconnect reuses the token; unknown_key refreshes it.
  ws.drop(1006);
  h.clock.advance(h.disconnects[1]?.delayMs ?? 0);
  await flush();
  ws = FakeWebSocket.last();
  ws.open();
  assert.equal(ws.framesOf("auth")[0]?.body.token, "t2");
  ws.receive(gw.authFail(Reason.auth_unknown_key), gw.close(Reason.auth_unknown_key));
  h.clock.advance(h.disconnects[2]?.delayMs ?? 0);
  await flush();
  ws = FakeWebSocket.last();
  ws.open();
  assert.equal(ws.framesOf("auth")[0]?.body.token, "t3");
  assert.equal(calls, 3);
});

test("token function: one fresh token after auth_invalid (a rotated-out key), then terminal", async () => {
  let calls = 0;
  const h = setup({ token: () => `t${++calls}` });
  h.client.connect();
  await flush();
  let ws = FakeWebSocket.last();
  ws.open();
  ws.receive(gw.authFail(Reason.auth_invalid), gw.close(Reason.auth_invalid));
  assert.equal(h.disconnects[0]?.willReconnect, true);
  h.clock.advance(h.disconnects[0]?.delayMs ?? 0);
  await flush();
  ws = FakeWebSocket.last();
  ws.open();
  assert.equal(ws.framesOf("auth")[0]?.body.token, "t2");
  ws.receive(gw.authFail(Reason.auth_invalid), gw.close(Reason.auth_invalid));
  assert.equal(h.disconnects[1]?.willReconnect, false, "a fresh token refused again ends it");
  assert.equal(h.client.state, "closed");
  assert.equal(calls, 2);
  // A later connect() does not send the refused token again.
  h.client.connect();
  await flush();
  ws = FakeWebSocket.last();
  ws.open();
  assert.equal(ws.framesOf("auth")[0]?.body.token, "t3");
});

test("a static token refused as expired, or auth_invalid, is terminal", async () => {
  for (const reason of [Reason.auth_expired, Reason.auth_invalid]) {
    const h = setup();
    h.client.connect();
    const ws = FakeWebSocket.last();
    ws.open();
    ws.receive(gw.authFail(reason), gw.close(reason));
    assert.equal(h.client.state, "closed");
    assert.equal(h.disconnects[0]?.willReconnect, false);
  }
});

test("a token function that throws is retried with backoff and reported as an error", async () => {
  let calls = 0;
  const h = setup({
    token: () => {
      if (++calls === 1) throw new Error("auth server down");
      return "ok";
    },
  });
  const errors: string[] = [];
  h.client.on("error", (e) => errors.push(e.error.message));
  h.client.connect();
  await flush();
  assert.deepEqual(errors, ["auth server down"]);
  assert.equal(FakeWebSocket.instances.length, 0);
  h.clock.advance(h.disconnects[0]?.delayMs ?? 0);
  await flush();
  FakeWebSocket.last().open();
  assert.equal(FakeWebSocket.last().framesOf("auth")[0]?.body.token, "ok");
});

test("a malformed frame from the gateway: Close protocol_error, then reconnect", async () => {
  const h = setup();
  const ws = await connected(h);
  ws.receiveBytes(Uint8Array.from([0x7f]));
  assert.equal(ws.framesOf("close")[0]?.body.reason, Reason.unknown_op);
  assert.deepEqual(ws.closed, { code: 4012, reason: "unknown_op" });
  assert.equal(h.disconnects[0]?.willReconnect, true);
});

test("in-flight Sends are rejected when the connection drops; queued ones survive to the next", async () => {
  const h = setup();
  const ws = await connected(h, gw.authOk({ maxInFlight: 1 }));
  const a = h.client.send("a");
  const b = h.client.send("b");
  ws.drop(1006);
  await assert.rejects(a, (e: unknown) => e instanceof RinggateError && e.code === null && e.reason === "transport_closed");
  h.clock.advance(h.disconnects[0]?.delayMs ?? 0);
  const next = FakeWebSocket.last();
  next.open();
  next.receive(gw.authOk());
  assert.equal(text(next.framesOf("send")[0]?.payload ?? new Uint8Array()), "b");
  next.receive(gw.ack(1));
  assert.equal((await b).seq, 1);
});

test("disconnect(): Close normal, state closed, no reconnect; connect() starts again", async () => {
  const h = setup();
  const ws = await connected(h);
  const pending = h.client.send("x");
  h.client.disconnect();
  assert.equal(ws.framesOf("close")[0]?.body.reason, Reason.normal);
  assert.deepEqual(ws.closed, { code: 1000, reason: undefined });
  assert.deepEqual(h.states, ["connecting", "connected", "closed"]);
  assert.deepEqual(h.disconnects.map((d) => [d.reason, d.willReconnect]), [["normal", false]]);
  await assert.rejects(pending, RinggateError);
  ws.drop(1000); // the late close event of the old socket changes nothing
  h.clock.advance(60_000);
  assert.equal(FakeWebSocket.instances.length, 1);
  h.client.connect();
  assert.equal(FakeWebSocket.instances.length, 2);
  assert.equal(h.client.state, "connecting");
});

test("disconnect() while waiting to reconnect cancels the reconnect", async () => {
  const h = setup();
  h.client.connect();
  FakeWebSocket.last().drop();
  assert.equal(h.client.state, "disconnected");
  h.client.disconnect();
  assert.equal(h.client.state, "closed");
  h.clock.advance(60_000);
  assert.equal(FakeWebSocket.instances.length, 1);
});
