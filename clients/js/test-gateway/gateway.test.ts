/**
 * The SDK against real `ringgate` processes (not a stand-in): the binary `cargo build` made
 * (RINGGATE_BIN, else target/release or target/debug under CARGO_TARGET_DIR or the repository),
 * a temp config on free loopback ports, the embedded backend, tokens minted by `ringgate token`.
 * Run by scripts/test.sh after the Rust tests (`npm run test:gateway`); `npm test` stays
 * self-contained.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { Client, type ClientOptions, type WebSocketConstructor } from "../src/client.js";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");
const WsCtor: WebSocketConstructor = WebSocket;

function binary(): string {
  const targets = [process.env.CARGO_TARGET_DIR, path.join(repo, "target")].filter((t): t is string => !!t);
  const candidates = [
    process.env.RINGGATE_BIN,
    ...targets.flatMap((t) => [path.join(t, "release/ringgate"), path.join(t, "debug/ringgate")]),
  ].filter((p): p is string => !!p);
  // The most recently built one: a stale release binary must not shadow a fresh debug build.
  const found = candidates.filter((p) => existsSync(p)).sort((x, y) => statSync(y).mtimeMs - statSync(x).mtimeMs)[0];
  assert.ok(found, `no ringgate binary (tried ${candidates.join(", ")}): cargo build -p ringgate first`);
  return found;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
}

interface Node {
  readonly id: string;
  readonly ws: number;
  readonly admin: number;
  readonly config: string;
  process: ChildProcess;
}

const dir = mkdtempSync(path.join(tmpdir(), "ringgate-sdk-"));

/** Writes a node's config and starts it; `alternatives` are where its drain sends clients. */
async function start(id: string, opts: { alternatives?: string[]; heartbeat?: string; ws?: number } = {}): Promise<Node> {
  const [tcp, ws, admin] = [await freePort(), opts.ws ?? (await freePort()), await freePort()];
  const config = path.join(dir, `${id}.toml`);
  writeFileSync(
    config,
    `[node]\nid = "${id}"\n[listen]\ntcp = "127.0.0.1:${tcp}"\nws = "127.0.0.1:${ws}"\nadmin = "127.0.0.1:${admin}"\n` +
      `[io]\nworkers = 1\n[session]\nheartbeat_interval = "${opts.heartbeat ?? "30s"}"\nidle_multiple = 3\n` +
      `[auth]\nmode = "token"\nmax_clock_skew = "0s"\n[auth.keys]\nk1 = "sdk-test-secret-0123456789"\n` +
      `[drain]\ndelay = "0s"\nrate = 1000\ndeadline = "5s"\nreconnect_after = "0s"\nreconnect_jitter = "100ms"\n` +
      `alternatives = [${(opts.alternatives ?? []).map((a) => `"${a}"`).join(", ")}]\n`,
  );
  const node: Node = { id, ws, admin, config, process: launch(config) };
  await until(`${id} listening`, () => listening(ws));
  return node;
}

function launch(config: string): ChildProcess {
  return spawn(binary(), ["run", "--config", config], { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, RINGGATE_LOG: "warn" } });
}

async function stop(node: Node, signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
  if (node.process.exitCode !== null) return;
  const exited = new Promise((resolve) => node.process.once("exit", resolve));
  node.process.kill(signal);
  await exited;
}

function token(node: Node, user: string, device: string, ttl = "1h"): string {
  return execFileSync(binary(), ["token", "--config", node.config, "--user", user, "--device", device, "--ttl", ttl])
    .toString()
    .trim();
}

function client(node: Node, user: string, device: string, extra: Partial<ClientOptions> = {}): Client {
  return new Client({
    urls: `ws://127.0.0.1:${node.ws}/ws`,
    token: token(node, user, device),
    userId: user,
    deviceId: device,
    WebSocket: WsCtor,
    backoff: { minDelayMs: 100, maxDelayMs: 500 },
    ...extra,
  });
}

function connected(c: Client): Promise<string> {
  return new Promise((resolve) => c.on("connected", (info) => resolve(info.nodeId)));
}

function pushes(c: Client): string[] {
  const got: string[] = [];
  c.on("push", (p) => got.push(new TextDecoder().decode(p.payload)));
  return got;
}

test("auth with a token, echo with Acks, and a room between two clients", { timeout: 30_000 }, async () => {
  const node = await start("sdk-basic");
  const a = client(node, "alice", "web");
  const b = client(node, "bob", "web");
  try {
    const [ga, gb] = [pushes(a), pushes(b)];
    const up = Promise.all([connected(a), connected(b)]);
    a.connect();
    b.connect();
    assert.deepEqual(await up, ["sdk-basic", "sdk-basic"]);
    const echo = await a.send("echo me");
    assert.equal(echo.code, 0);
    await until("the echo", () => ga.includes("echo me"));
    assert.equal((await a.send("", { routeKey: "join:r1" })).code, 0);
    assert.equal((await b.send("", { routeKey: "join:r1" })).code, 0);
    assert.equal((await a.send("to the room", { routeKey: "room:r1" })).code, 0);
    await until("the room message at bob", () => gb.includes("to the room"));
  } finally {
    a.disconnect();
    b.disconnect();
    await stop(node);
  }
});

test("an expired token is refreshed through the callback", { timeout: 30_000 }, async () => {
  const node = await start("sdk-token");
  const expired = token(node, "carol", "web", "1s");
  await new Promise((r) => setTimeout(r, 2100));
  const asked: string[] = [];
  const c = client(node, "carol", "web", {
    token: () => {
      const t = asked.length === 0 ? expired : token(node, "carol", "web");
      asked.push(t);
      return t;
    },
  });
  const reasons: string[] = [];
  c.on("disconnected", (d) => reasons.push(d.reason));
  try {
    const up = connected(c);
    c.connect();
    await up;
    assert.equal(asked.length, 2, "asked again after auth_expired");
    assert.deepEqual(reasons, ["auth_expired"]);
  } finally {
    c.disconnect();
    await stop(node);
  }
});

test("the same device logging in elsewhere kicks the first with replaced, for good", { timeout: 30_000 }, async () => {
  const node = await start("sdk-replaced");
  const first = client(node, "dave", "phone");
  const second = client(node, "dave", "phone");
  try {
    const up = connected(first);
    first.connect();
    await up;
    const kicked = new Promise<string>((resolve) => first.on("kicked", (k) => resolve(k.reason)));
    const up2 = connected(second);
    second.connect();
    await up2;
    assert.equal(await kicked, "replaced");
    await until("the first client closed", () => first.state === "closed");
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(first.state, "closed", "no reconnect loop after replaced");
    assert.equal(second.state, "connected");
  } finally {
    first.disconnect();
    second.disconnect();
    await stop(node);
  }
});

test("a drain's GoAway moves the client to the alternative node", { timeout: 30_000 }, async () => {
  const b = await start("sdk-b");
  const a = await start("sdk-a", { alternatives: [`127.0.0.1:${b.ws}`] });
  const c = client(a, "erin", "web");
  try {
    const nodes: string[] = [];
    c.on("connected", (info) => nodes.push(info.nodeId));
    const goaway = new Promise<void>((resolve) => c.on("goaway", () => resolve()));
    c.connect();
    await until("connected to A", () => nodes.length === 1);
    const res = await fetch(`http://127.0.0.1:${a.admin}/drain`, { method: "POST" });
    assert.ok(res.ok, `POST /drain: ${res.status}`);
    await goaway;
    await until("reconnected to B", () => nodes.length === 2);
    assert.deepEqual(nodes, ["sdk-a", "sdk-b"]);
    assert.equal((await c.send("on B")).code, 0);
  } finally {
    c.disconnect();
    await stop(a);
    await stop(b);
  }
});

test("a client reconnects after the gateway process is killed and restarted", { timeout: 30_000 }, async () => {
  const node = await start("sdk-restart");
  const c = client(node, "fay", "web");
  try {
    let ups = 0;
    c.on("connected", () => ups++);
    c.connect();
    await until("first connect", () => ups === 1);
    await stop(node, "SIGKILL");
    await until("noticed the loss", () => c.state !== "connected");
    node.process = launch(node.config);
    await until("reconnected", () => ups === 2, 15_000);
    assert.equal((await c.send("after the restart")).code, 0);
  } finally {
    c.disconnect();
    await stop(node);
  }
});

test("heartbeats (Ping and Pong) keep an idle client connected past both idle deadlines", { timeout: 30_000 }, async () => {
  // Heartbeat 1 s: without the SDK's Pings the gateway would close it after 3 s; without the
  // gateway's Pongs the SDK would give up after its own 3 intervals.
  const node = await start("sdk-heartbeat", { heartbeat: "1s" });
  const c = client(node, "hal", "web");
  const drops: string[] = [];
  c.on("disconnected", (d) => drops.push(d.reason));
  try {
    const up = connected(c);
    c.connect();
    await up;
    await new Promise((r) => setTimeout(r, 4500));
    assert.deepEqual(drops, []);
    assert.equal(c.state, "connected");
    assert.equal((await c.send("still here")).code, 0);
  } finally {
    c.disconnect();
    await stop(node);
  }
});

test("a client whose heartbeats stop is closed at the idle timeout", { timeout: 30_000 }, async () => {
  const node = await start("sdk-idle", { heartbeat: "1s" });
  // A raw socket that authenticates and then says nothing: the gateway closes it after three
  // intervals with idle_timeout (the SDK itself always heartbeats).
  const c = client(node, "gus", "web", { idleMultiple: 100 });
  try {
    const up = connected(c);
    c.connect();
    await up;
    const disconnected = new Promise<string>((resolve) => c.on("disconnected", (d) => resolve(d.reason)));
    // Suppress the SDK's heartbeats: its Pings stop reaching the gateway.
    const ws = (c as unknown as { conn: { ws: WebSocket } }).conn.ws;
    ws.send = () => undefined;
    assert.equal(await disconnected, "idle_timeout");
  } finally {
    c.disconnect();
    await stop(node);
  }
});
