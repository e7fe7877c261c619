// A ringgate WebSocket client on Node's `ws` package (npm), for gateway/tests/websocket.rs.
// Usage: node ws_client.mjs URL; tokens come as JSON in RINGGATE_TOKENS. `ws` is resolved from
// clients/js (scripts/test.sh runs `npm ci` there). Prints one line per step; exits 1 on failure.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../../../clients/js/package.json"));
const WebSocket = require("ws");

const tokens = JSON.parse(process.env.RINGGATE_TOKENS ?? "{}");
const url = process.argv[2];

function varint(n) {
  const out = [];
  while (n >= 0x80) { out.push((n & 0x7f) | 0x80); n = Math.floor(n / 128); }
  out.push(n);
  return Buffer.from(out);
}
function readVarint(buf, i) {
  let value = 0, mul = 1;
  for (;;) { const b = buf[i++]; value += (b & 0x7f) * mul; mul *= 128; if (b < 0x80) return [value, i]; }
}
const field = (tag, data) => typeof data === "number"
  ? Buffer.concat([varint(tag << 3), varint(data)])
  : Buffer.concat([varint((tag << 3) | 2), varint(data.length), data]);
const frame = (op, body) => Buffer.concat([Buffer.from([op]), varint(body.length), body]);

const ws = new WebSocket(url, ["ringgate.v1"]);
let buf = Buffer.alloc(0);
const waiting = [];
ws.on("message", (data) => { buf = Buffer.concat([buf, data]); drain(); });
function drain() {
  while (buf.length >= 2 && waiting.length) {
    const [len, start] = readVarint(buf, 1);
    if (buf.length < start + len) return;
    const f = { op: buf[0], body: buf.subarray(start, start + len) };
    buf = buf.subarray(start + len);
    waiting.shift()(f);
  }
}
const next = () => new Promise((resolve) => { waiting.push(resolve); drain(); });
const ok = (step) => console.log(`ok ${step}`);
const fail = (why) => { console.log(`FAIL ${why}`); process.exit(1); };
setTimeout(() => fail("timed out"), 20000).unref();

ws.on("open", async () => {
  if (ws.protocol !== "ringgate.v1") fail(`subprotocol ${ws.protocol}`);
  const user = "nina", device = "node";
  ws.send(frame(0x10, Buffer.concat([field(1, 1), field(2, Buffer.from(tokens[`${user}/${device}`])),
    field(3, Buffer.from(user)), field(4, Buffer.from(device))])));
  const authOk = await next();
  if (authOk.op !== 0x11) fail(`AuthOk expected, got ${authOk.op}`);
  ok("auth");
  await new Promise((resolve) => { ws.once("pong", resolve); ws.ping(Buffer.from("hi")); });
  ok("websocket ping/pong");
  const payload = Buffer.alloc(40 * 1024, 7);
  const whole = frame(0x20, Buffer.concat([varint(1), varint(0), payload]));
  for (let i = 0; i < whole.length; i += 8192) {
    ws.send(whole.subarray(i, i + 8192), { binary: true, fin: i + 8192 >= whole.length });
  }
  let gotPush = false, gotAck = false;
  while (!(gotPush && gotAck)) {
    const f = await next();
    if (f.op === 0x22) { const [, i] = readVarint(f.body, 0); gotPush = Buffer.compare(f.body.subarray(i), payload) === 0; }
    if (f.op === 0x21) gotAck = f.body.equals(Buffer.concat([varint(1), varint(0)]));
  }
  ok("40 KB echo over fragments");
  ws.on("close", (code) => {
    if (code !== 1000) fail(`close code ${code}`);
    ok("clean close 1000 echoed");
    process.exit(0);
  });
  ws.close(1000, "bye");
});
ws.on("error", (e) => fail(e.message));
