/**
 * The client over a real WebSocket (the `ws` package, as Node 20 users pass it) against a
 * stand-in gateway on 127.0.0.1 port 0 that speaks the frames by hand.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import WebSocket, { WebSocketServer } from "ws";
import { Client, type WebSocketConstructor } from "../src/client.js";
import { FrameDecoder, encodeFrame, type Frame } from "../src/codec.js";
import { gw } from "./fakes.js";

// Compile-time check: `ws`'s constructor fits the option's type without a cast.
const WsCtor: WebSocketConstructor = WebSocket;

test("over ws: subprotocol, Auth, AuthOk and a Push in one message, Send/Ack, gateway close", async () => {
  const server = new WebSocketServer({
    host: "127.0.0.1",
    port: 0,
    path: "/ws",
    handleProtocols: (protocols) => (protocols.has("ringgate.v1") ? "ringgate.v1" : false),
  });
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  const received: Frame[] = [];
  const protocols: string[] = [];
  server.on("connection", (sock) => {
    protocols.push(sock.protocol);
    const dec = new FrameDecoder();
    sock.on("message", (data: Buffer) => {
      dec.push(new Uint8Array(data));
      for (let r = dec.next(); r.type === "frame"; r = dec.next()) {
        received.push(r.frame);
        if (r.frame.type === "auth") {
          const a = encodeFrame(gw.authOk({ heartbeatIntervalMs: 10_000 }));
          const p = encodeFrame(gw.push(1, "welcome"));
          sock.send(Buffer.concat([a, p])); // two frames in one message
        } else if (r.frame.type === "send") {
          const ack = encodeFrame(gw.ack(r.frame.seq));
          sock.send(ack.subarray(0, 1)); // one frame over two messages
          sock.send(ack.subarray(1));
        }
      }
    });
  });
  const client = new Client({
    urls: `ws://127.0.0.1:${port}/ws`,
    token: "t1",
    userId: "alice",
    deviceId: "phone",
    WebSocket: WsCtor,
  });
  try {
    const pushed = new Promise<string>((resolve) => client.on("push", (p) => resolve(new TextDecoder().decode(p.payload))));
    const connected = new Promise<bigint>((resolve) => client.on("connected", (c) => resolve(c.connectionId)));
    client.connect();
    assert.equal(await connected, 7n);
    assert.equal(await pushed, "welcome");
    const ack = await client.send("hi", { routeKey: "room:42" });
    assert.deepEqual(ack, { seq: 1, code: 0 });
    assert.deepEqual(protocols, ["ringgate.v1"]);
    assert.deepEqual(received.map((f) => f.type), ["auth", "send"]);

    // The gateway kicks: Kick + Close frames, then a WebSocket close 4041 "replaced".
    const gone = new Promise<[string, boolean]>((resolve) => client.on("disconnected", (d) => resolve([d.reason, d.willReconnect])));
    for (const sock of server.clients) {
      sock.send(Buffer.concat([encodeFrame(gw.kick(41, "replaced")), encodeFrame(gw.close(41, "replaced"))]));
      sock.close(4041, "replaced");
    }
    assert.deepEqual(await gone, ["replaced", false]);
    assert.equal(client.state, "closed");
  } finally {
    client.disconnect();
    for (const sock of server.clients) sock.terminate();
    server.close();
  }
});
