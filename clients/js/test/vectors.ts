/** Reads docs/protocol.md: the `# vector: client/...` hex blocks and the section 4 table. */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** clients/js, from dist/test/ where the compiled tests run. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const PROTOCOL_MD = resolve(PACKAGE_ROOT, "..", "..", "docs", "protocol.md");

export function protocolDoc(): string {
  return readFileSync(PROTOCOL_MD, "utf8");
}

export interface Vector {
  readonly name: string;
  readonly bytes: Uint8Array;
}

/** Every ```hex block whose first line is `# vector: <family>/NAME`, comments stripped. */
export function vectors(family: string): Vector[] {
  const out: Vector[] = [];
  const block = /```hex\n([\s\S]*?)```/g;
  for (const m of protocolDoc().matchAll(block)) {
    const text = m[1] ?? "";
    const head = /^# vector: (\S+)\s*\n/.exec(text);
    if (head === null || !(head[1] ?? "").startsWith(`${family}/`)) continue;
    const hex = text
      .slice(head[0].length)
      .split("\n")
      .map((line) => line.replace(/#.*$/, ""))
      .join(" ")
      .trim()
      .split(/\s+/)
      .filter((t) => t !== "");
    for (const t of hex) if (!/^[0-9a-f]{2}$/i.test(t)) throw new Error(`bad hex token ${t} in ${head[1]}`);
    out.push({ name: head[1] ?? "", bytes: Uint8Array.from(hex.map((t) => parseInt(t, 16))) });
  }
  return out;
}

export interface TableRow {
  readonly code: number;
  readonly name: string;
  readonly retry: string;
}

/** The rows of the table in section 4 ("Reason codes"). */
export function reasonTable(): TableRow[] {
  const doc = protocolDoc();
  const start = doc.indexOf("\n## 4. Reason codes");
  if (start < 0) throw new Error("no section 4 in protocol.md");
  const section = doc.slice(start + 1);
  const end = section.indexOf("\n## ", 1);
  const rows: TableRow[] = [];
  for (const line of (end < 0 ? section : section.slice(0, end)).split("\n")) {
    const cells = line.split("|").map((c) => c.trim());
    // | code | `name` | used in | meaning | retry |  ->  ["", code, name, used, meaning, retry, ""]
    if (cells.length !== 7 || !/^\d+$/.test(cells[1] ?? "")) continue;
    rows.push({ code: Number(cells[1]), name: (cells[2] ?? "").replace(/`/g, ""), retry: cells[5] ?? "" });
  }
  return rows;
}
