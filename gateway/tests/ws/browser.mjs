// The TypeScript SDK (clients/js, its browser bundle) in headless Chromium against a real
// gateway, for gateway/tests/websocket.rs. Two tabs per URL: each connects with its token,
// joins a room, echoes, and tab A's room message reaches tab B.
// Usage: node browser.mjs HTTP_PORT URL...; tokens come as JSON in RINGGATE_TOKENS (keys
// "user/device"). The page is served from http://127.0.0.1:HTTP_PORT (the gateway's allowed
// Origin). puppeteer-core is resolved from clients/js; Chromium is /usr/bin/chromium (or
// CHROMIUM). Prints one "ok ..." line per step; exits 1 on failure.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const js = path.join(here, "../../../clients/js");
const require = createRequire(path.join(js, "package.json"));
const puppeteer = require("puppeteer-core");

const tokens = JSON.parse(process.env.RINGGATE_TOKENS ?? "{}");
const [httpPort, ...urls] = process.argv.slice(2);
const bundle = readFileSync(path.join(js, "dist/ringgate-client.min.js"));

const server = http.createServer((req, res) => {
  if (req.url === "/ringgate-client.min.js") {
    res.writeHead(200, { "content-type": "text/javascript" }).end(bundle);
  } else {
    res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>ringgate</title>");
  }
});
await new Promise((resolve) => server.listen(Number(httpPort), "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${httpPort}`;

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  // The gateway's wss certificate is self-signed for the test.
  args: ["--no-sandbox", "--ignore-certificate-errors", "--disable-gpu"],
});

// Runs in the page: opens a Client, waits for AuthOk, joins `room`, echoes; resolves with
// what happened. `window.rg` keeps the client for later steps.
async function open(url, user, device, token, room) {
  const { Client } = await import("/ringgate-client.min.js");
  const client = new Client({ urls: url, token, userId: user, deviceId: device });
  const pushes = [];
  client.on("push", (p) => pushes.push(new TextDecoder().decode(p.payload)));
  const connected = new Promise((resolve, reject) => {
    client.on("connected", (c) => resolve(String(c.connectionId)));
    setTimeout(() => reject(new Error(`${user}: no AuthOk from ${url} within 10 s`)), 10_000);
  });
  client.connect();
  const id = await connected.finally(() => client.state === "connected" || client.disconnect());
  const joined = await client.send("", { routeKey: `join:${room}` });
  const echoed = await client.send(`echo from ${user}`);
  window.rg = { client, pushes };
  return { id, joined: joined.code, echoed: echoed.code, transport: typeof WebSocket };
}

async function waitFor(page, text) {
  await page.waitForFunction((t) => window.rg.pushes.includes(t), { timeout: 10_000 }, text);
}

let failed = false;
try {
  for (const url of urls) {
    const scheme = url.split(":")[0];
    const room = `browser-${scheme}`;
    const a = await browser.newPage();
    const b = await browser.newPage();
    await a.goto(origin);
    await b.goto(origin);
    const ra = await a.evaluate(open, url, "tab-a", "web", tokens["tab-a/web"], room);
    const rb = await b.evaluate(open, url, "tab-b", "web", tokens["tab-b/web"], room);
    if (ra.joined !== 0 || rb.joined !== 0 || ra.echoed !== 0 || rb.echoed !== 0) {
      throw new Error(`${scheme}: acks ${JSON.stringify([ra, rb])}`);
    }
    console.log(`ok ${scheme} two tabs authenticated (connections ${ra.id}, ${rb.id})`);
    await waitFor(a, "echo from tab-a");
    await waitFor(b, "echo from tab-b");
    console.log(`ok ${scheme} echo in each tab`);
    const ack = await a.evaluate((r) => window.rg.client.send(`hello ${r}`, { routeKey: `room:${r}` }).then((x) => x.code), room);
    if (ack !== 0) throw new Error(`${scheme}: room send acked ${ack}`);
    await waitFor(b, `hello ${room}`);
    console.log(`ok ${scheme} tab A's room message reached tab B`);
    await a.evaluate(() => window.rg.client.disconnect());
    await b.evaluate(() => window.rg.client.disconnect());
    await a.close();
    await b.close();
  }
} catch (e) {
  failed = true;
  console.log(`failed: ${e.stack ?? e}`);
} finally {
  await browser.close();
  server.close();
}
process.exit(failed ? 1 : 0);
