import assert from "node:assert/strict";
import { test } from "node:test";
import { REASONS, Reason, reasonInfo, reasonName } from "../src/reasons.js";
import { reasonTable } from "./vectors.js";

test("the reason table equals the table of docs/protocol.md section 4", () => {
  const doc = reasonTable();
  assert.ok(doc.length >= 26, `parsed only ${doc.length} rows`);
  const expected = doc.map((r) => ({ code: r.code, name: r.name, retry: r.retry === "-" ? "none" : r.retry }));
  assert.deepEqual(REASONS.map((r) => ({ ...r })), expected);
});

test("codes and names are unique, and Reason maps names to codes", () => {
  assert.equal(new Set(REASONS.map((r) => r.code)).size, REASONS.length);
  assert.equal(new Set(REASONS.map((r) => r.name)).size, REASONS.length);
  for (const r of REASONS) assert.equal(Reason[r.name], r.code);
  assert.equal(Reason.replaced, 41);
});

test("unknown codes are accepted and treated by range", () => {
  assert.deepEqual(reasonInfo(15), { code: 15, name: "unknown_15", retry: "no" });
  assert.equal(reasonInfo(25).retry, "backoff");
  assert.equal(reasonInfo(47).retry, "backoff");
  assert.equal(reasonInfo(69).retry, "backoff");
  assert.equal(reasonName(22), "auth_expired");
  assert.equal(reasonName(1000), "unknown_1000");
});
