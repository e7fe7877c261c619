import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { test } from "node:test";
import { PACKAGE_ROOT } from "./vectors.js";

const GEN = join(PACKAGE_ROOT, "src", "gen");

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

test("src/gen is what buf + protoc-gen-es generate from codec/proto/client.proto", () => {
  const out = mkdtempSync(join(tmpdir(), "ringgate-gen-"));
  try {
    const bin = join(PACKAGE_ROOT, "node_modules", ".bin");
    // The same command as `npm run gen`, into a temporary output directory.
    execFileSync(
      join(bin, "buf"),
      ["generate", "../../codec/proto", "--path", "../../codec/proto/client.proto", "--template", "buf.gen.yaml", "--output", out],
      { cwd: PACKAGE_ROOT, env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` }, stdio: "pipe" },
    );
    const fresh = join(out, "src", "gen");
    assert.deepEqual(files(fresh), files(GEN), "generated file set differs: run `npm run gen`");
    for (const f of files(GEN)) {
      assert.equal(readFileSync(join(fresh, f), "utf8"), readFileSync(join(GEN, f), "utf8"), `${f} is stale: run \`npm run gen\``);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
