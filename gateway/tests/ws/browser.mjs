// The chat demo (examples/chat/, on the TypeScript SDK's browser bundle) in headless Chromium
// against a real gateway, for gateway/tests/websocket.rs. Two tabs per URL log in as two users
// through the page's form, join a room, and a message typed in tab A shows in tab B's log.
// Usage: node browser.mjs HTTP_PORT SCREENSHOT URL...; tokens come as JSON in RINGGATE_TOKENS
// (keys "user/device"). The repository's examples/chat/ and clients/js/dist/ are served from
// http://127.0.0.1:HTTP_PORT (the gateway's allowed Origin). puppeteer-core is resolved from
// clients/js; Chromium is /usr/bin/chromium (or CHROMIUM). Prints one "ok ..." line per step;
// exits 1 on failure. Tab B is saved to SCREENSHOT after the last URL.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.join(here, "../../..");
const require = createRequire(path.join(repo, "clients/js/package.json"));
const puppeteer = require("puppeteer-core");

const tokens = JSON.parse(process.env.RINGGATE_TOKENS ?? "{}");
const [httpPort, screenshot, ...urls] = process.argv.slice(2);
const files = {
  "/examples/chat/index.html": "text/html",
  "/examples/chat/chat.js": "text/javascript",
  "/clients/js/dist/ringgate-client.min.js": "text/javascript",
};
const server = http.createServer((req, res) => {
  const type = files[req.url];
  if (!type) return res.writeHead(404).end();
  res.writeHead(200, { "content-type": type }).end(readFileSync(path.join(repo, req.url)));
});
await new Promise((resolve) => server.listen(Number(httpPort), "127.0.0.1", resolve));
const page = `http://127.0.0.1:${httpPort}/examples/chat/index.html`;

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  // The gateway's wss certificate is self-signed for the test.
  args: ["--no-sandbox", "--ignore-certificate-errors", "--disable-gpu"],
});

/** Opens the demo in a new tab and logs in through its form. */
async function login(url, user, room) {
  const tab = await browser.newPage();
  await tab.setViewport({ width: 760, height: 640 });
  await tab.goto(page);
  await tab.evaluate((fields) => {
    for (const [id, value] of Object.entries(fields)) document.getElementById(id).value = value;
  }, { url, user, device: "web", token: tokens[`${user}/web`], room });
  await tab.evaluate(() => document.getElementById("login").requestSubmit());
  await tab.waitForFunction(() => document.getElementById("state").dataset.state === "connected", {
    timeout: 10_000,
    polling: 50,
  });
  await shows(tab, "info", `joined ${room}`);
  return tab;
}

/** Types `text` into the tab's message box and submits it (as the Send button does). */
async function say(tab, text) {
  await tab.evaluate((t) => {
    document.getElementById("text").value = t;
    document.getElementById("compose").requestSubmit();
  }, text);
}

/** Waits until the tab's log has an entry of `kind` with `text`. */
async function shows(tab, kind, text) {
  await tab.waitForFunction(
    (k, t) => [...document.querySelectorAll(`#log li.${k}`)].some((li) => li.textContent.includes(t)),
    // Interval polling: a background tab gets no animation frames.
    { timeout: 10_000, polling: 50 },
    kind,
    text,
  );
}

let failed = false;
try {
  for (const [i, url] of urls.entries()) {
    const scheme = url.split(":")[0];
    const room = `demo-${scheme}`;
    const a = await login(url, "tab-a", room);
    const b = await login(url, "tab-b", room);
    console.log(`ok ${scheme} two tabs logged in and joined ${room}`);
    await say(a, `hello over ${scheme}`);
    await shows(a, "ack", "ok");
    console.log(`ok ${scheme} tab A's message was acked`);
    await shows(b, "message", `tab-a: hello over ${scheme}`);
    await shows(a, "message", `tab-a: hello over ${scheme}`);
    console.log(`ok ${scheme} tab A's message shows in both tabs`);
    await say(b, "hi back");
    await shows(a, "message", "tab-b: hi back");
    console.log(`ok ${scheme} tab B's answer shows in tab A`);
    if (i === urls.length - 1) {
      await b.bringToFront();
      await b.screenshot({ path: screenshot });
      console.log(`ok screenshot ${screenshot}`);
    }
    await a.evaluate(() => document.getElementById("disconnect").click());
    await b.evaluate(() => document.getElementById("disconnect").click());
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
