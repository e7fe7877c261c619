// Prints the size of the browser bundle, minified and minified+gzipped (zlib level 9).
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const file = new URL("../dist/ringgate-client.min.js", import.meta.url);
const min = readFileSync(file);
const gz = gzipSync(min, { level: 9 });
const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
console.log(`dist/ringgate-client.min.js: ${min.length} bytes (${kb(min.length)}) minified, ${gz.length} bytes (${kb(gz.length)}) gzipped`);
