// The admin endpoint's status page in headless Chromium, for gateway/tests/monitoring.rs.
// Usage: node status_page.mjs URL SCREENSHOT. Opens URL (the node's `GET /`), waits for the
// page to have polled /status.json a few times, and prints one line "SHOWN {json}" with what
// the page displays (as text), every URL it requested and any console errors. Saves the page
// to SCREENSHOT. puppeteer-core is resolved from clients/js; Chromium is /usr/bin/chromium
// (or CHROMIUM). Exits 1 on failure.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../../../clients/js/package.json"));
const puppeteer = require("puppeteer-core");

const [url, screenshot] = process.argv.slice(2);
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const tab = await browser.newPage();
  const requests = [];
  const consoleErrors = [];
  tab.on("request", (r) => requests.push(r.url()));
  tab.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  tab.on("pageerror", (e) => consoleErrors.push(String(e)));
  await tab.setViewport({ width: 1180, height: 640 });
  await tab.goto(url, { waitUntil: "load" });
  // Three polls: the rates and the charts need samples a second apart.
  let first = null;
  await tab.waitForFunction(() => document.body.dataset.updated, { timeout: 15000 });
  first = Number(await tab.evaluate(() => document.body.dataset.updated));
  await tab.waitForFunction((t) => Number(document.body.dataset.updated) > t + 1800, { timeout: 15000 }, first);
  const shown = await tab.evaluate(() => {
    const t = (id) => document.getElementById(id).textContent;
    const transports = {};
    for (const row of document.querySelectorAll("#transports tr")) transports[row.dataset.transport] = row.cells[1].textContent;
    return {
      node: t("node"), ready: t("ready"), version: t("version"), driver: t("driver"), backend: t("backend"),
      connections: t("connections"), capacity: t("capacity"), transports,
      logins_rate: t("logins-rate"), logins_total: t("logins-total"), auth_failures: t("auth-failures"),
      sends_rate: t("sends-rate"), sends_total: t("sends-total"), pushes_total: t("pushes-total"),
      ack_errors: t("ack-errors"), acks_total: t("acks-total"), p99: t("p99"),
      links: t("links"), registry: t("registry"), dns: t("dns"), draining: t("draining"),
      chart_points: document.getElementById("chart-connections").getAttribute("points").split(" ").length,
    };
  });
  await tab.screenshot({ path: screenshot });
  console.log("SHOWN " + JSON.stringify({ ...shown, requests, console_errors: consoleErrors }));
} finally {
  await browser.close();
}
