// The chat demo: one ringgate Client per page. Joining a room is a Send with route key
// `join:ROOM`; a message is a Send with route key `room:ROOM`, which the gateway's embedded
// reference backend pushes to every member (docs: gateway/src/backend/reference.rs).
import { Client } from "../../clients/js/dist/ringgate-client.min.js";

const $ = (id) => document.getElementById(id);
let client = null;
let room = "";

function log(kind, text) {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  $("log").append(li);
  $("log").scrollTop = $("log").scrollHeight;
}

function setState(state) {
  $("state").textContent = state;
  $("state").dataset.state = state;
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  client?.disconnect();
  room = $("room").value.trim();
  const user = $("user").value.trim();
  client = new Client({ urls: $("url").value.trim(), token: $("token").value.trim(), userId: user, deviceId: $("device").value.trim() });
  client.on("state", ({ state }) => setState(state));
  client.on("connected", async (c) => {
    log("info", `connected as ${user} (connection ${c.connectionId} on ${c.nodeId})`);
    try {
      await client.send("", { routeKey: `join:${room}` });
      log("info", `joined ${room}`);
    } catch (e) {
      log("error", `join failed: ${e.message}`);
    }
  });
  client.on("push", (p) => log("message", new TextDecoder().decode(p.payload)));
  client.on("disconnected", (d) =>
    log("error", `disconnected: ${d.reason}${d.willReconnect ? `, reconnecting in ${d.delayMs} ms` : ""}`));
  client.on("kicked", (k) => log("error", `kicked: ${k.reason}`));
  client.on("goaway", () => log("info", "the node is draining; moving"));
  client.on("error", (e) => log("error", e.error.message));
  client.connect();
});

$("disconnect").addEventListener("click", () => client?.disconnect());

$("compose").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("text").value;
  if (!client || !text) return;
  $("text").value = "";
  try {
    const ack = await client.send(`${$("user").value.trim()}: ${text}`, { routeKey: `room:${room}` });
    log("ack", `ack ${ack.seq}: ok`);
  } catch (e) {
    log("error", `not sent (${e.reason ?? e.message})`);
  }
});
