/**
 * The client frame family of docs/protocol.md (sections 1 and 2): every frame is
 * `op: u8 | len: varint (1..4 bytes) | body: len bytes`.
 *
 * Sans-IO: bytes in, frames out, no sockets and no clock. Ping/Pong and the data frames
 * (Send, Ack, Push) have the hand-laid bodies of section 2.3; the control frames carry one
 * protobuf message of `codec/proto/client.proto` (generated into `src/gen/`). Frames hold the
 * generated messages as wire structs; the client converts them into its own types.
 *
 * Layers: imports only the generated code and `@bufbuild/protobuf`.
 */
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import {
  AuthFailSchema,
  AuthOkSchema,
  AuthSchema,
  CloseSchema,
  GoAwaySchema,
  KickSchema,
  type Auth,
  type AuthFail,
  type AuthOk,
  type Close,
  type GoAway,
  type Kick,
} from "./gen/client_pb.js";

/** Op bytes of the client family, section 2.2. */
export const Op = {
  Ping: 0x01,
  Pong: 0x02,
  Auth: 0x10,
  AuthOk: 0x11,
  AuthFail: 0x12,
  Send: 0x20,
  Ack: 0x21,
  Push: 0x22,
  Kick: 0x30,
  GoAway: 0x31,
  Close: 0x32,
} as const;

/** Default maximum body length of a client frame (64 KiB), section 1. */
export const DEFAULT_MAX_FRAME_LEN = 65_536;
/** The largest length a 4-byte varint can carry: 2^28 - 1. */
export const MAX_LEN = 2 ** 28 - 1;
/** Byte limits of section 1: ids, tokens, route keys. Longer is `protocol_error`. */
export const LIMITS = { id: 256, token: 4_096, routeKey: 255 } as const;
/** Largest Ack code (`u32`). */
const MAX_CODE = 2 ** 32 - 1;

/** One frame of the client family. Control frames hold the generated protobuf message. */
export type Frame =
  | { readonly type: "ping" }
  | { readonly type: "pong" }
  | { readonly type: "auth"; readonly body: Auth }
  | { readonly type: "authOk"; readonly body: AuthOk }
  | { readonly type: "authFail"; readonly body: AuthFail }
  | { readonly type: "send"; readonly seq: number; readonly routeKey: Uint8Array; readonly payload: Uint8Array }
  | { readonly type: "ack"; readonly seq: number; readonly code: number }
  | { readonly type: "push"; readonly seq: number; readonly payload: Uint8Array }
  | { readonly type: "kick"; readonly body: Kick }
  | { readonly type: "goAway"; readonly body: GoAway }
  | { readonly type: "close"; readonly body: Close };

/** What went wrong while decoding, with its data. */
export type DecodeErrorDetail =
  | { readonly kind: "unknown_op"; readonly op: number }
  | { readonly kind: "frame_too_large"; readonly len: number; readonly max: number }
  | { readonly kind: "protocol_error"; readonly what: string };

/** Reason codes (section 4) of the three ways a decode fails. */
const DECODE_CODES = { protocol_error: 10, frame_too_large: 11, unknown_op: 12 } as const;

/** A decode failure. It closes the connection: send Close with `code`, then close the transport. */
export class DecodeError extends Error {
  override readonly name = "DecodeError";
  constructor(readonly detail: DecodeErrorDetail) {
    super(describe(detail));
  }
  /** The reason code to close the connection with. */
  get code(): number {
    return DECODE_CODES[this.detail.kind];
  }
}

/** A frame that cannot be encoded (a field over its limit). The caller's bug, not the peer's. */
export class EncodeError extends Error {
  override readonly name = "EncodeError";
}

function describe(d: DecodeErrorDetail): string {
  switch (d.kind) {
    case "unknown_op":
      return `unknown op 0x${d.op.toString(16).padStart(2, "0")}`;
    case "frame_too_large":
      return `frame length ${d.len} above the maximum ${d.max}`;
    case "protocol_error":
      return d.what;
  }
}

/** The result of decoding from the front of a buffer. */
export type DecodeResult =
  /** No complete frame: at least `need` more bytes are required (exact once the length is read). */
  | { readonly type: "need"; readonly need: number }
  /** A frame that took the first `size` bytes. */
  | { readonly type: "frame"; readonly frame: Frame; readonly size: number }
  /** The bytes are not a valid frame; the connection must be closed with `error.code`. */
  | { readonly type: "error"; readonly error: DecodeError };

const KNOWN_OPS: ReadonlySet<number> = new Set(Object.values(Op));

const protocolError = (what: string): DecodeResult => ({
  type: "error",
  error: new DecodeError({ kind: "protocol_error", what }),
});

/**
 * Decodes one frame from the front of `buf`.
 *
 * Contract, in the order the checks happen:
 * - an empty buffer needs 1 byte;
 * - an op byte outside section 2.2 is `unknown_op` at once, without waiting for the body;
 * - an incomplete length varint needs at least 1 more byte; a length varint with a fifth
 *   byte is `protocol_error`;
 * - a length above `maxFrameLen` is `frame_too_large` as soon as the varint is complete,
 *   before any body byte is looked at or any memory reserved;
 * - an incomplete body needs exactly the missing byte count;
 * - a complete frame whose body breaks section 2 is `protocol_error`.
 *
 * The returned frame owns its bytes (they are copied out of `buf`).
 */
export function decodeFrame(buf: Uint8Array, maxFrameLen: number = DEFAULT_MAX_FRAME_LEN): DecodeResult {
  const op = buf[0];
  if (op === undefined) return { type: "need", need: 1 };
  if (!KNOWN_OPS.has(op)) return { type: "error", error: new DecodeError({ kind: "unknown_op", op }) };
  let len = 0;
  let headerLen = 0;
  for (let i = 0; ; i++) {
    if (i === 4) return protocolError("length varint longer than 4 bytes");
    const b = buf[1 + i];
    if (b === undefined) return { type: "need", need: 1 };
    len += (b & 0x7f) * 2 ** (7 * i);
    if ((b & 0x80) === 0) {
      headerLen = 2 + i;
      break;
    }
  }
  if (len > maxFrameLen) {
    return { type: "error", error: new DecodeError({ kind: "frame_too_large", len, max: maxFrameLen }) };
  }
  const size = headerLen + len;
  if (buf.length < size) return { type: "need", need: size - buf.length };
  const body = buf.slice(headerLen, size);
  const decoded = decodeBody(op, body);
  if (typeof decoded === "string") return protocolError(decoded);
  const problem = validate(decoded);
  if (problem !== undefined) return protocolError(problem);
  return { type: "frame", frame: decoded, size };
}

/** Decodes a body; a string is the protocol error found. */
function decodeBody(op: number, body: Uint8Array): Frame | string {
  switch (op) {
    case Op.Ping:
    case Op.Pong:
      if (body.length !== 0) return "heartbeat with a non-empty body";
      return { type: op === Op.Ping ? "ping" : "pong" };
    case Op.Send:
      return decodeSend(body);
    case Op.Ack:
      return decodeAck(body);
    case Op.Push: {
      const seq = readVarint(body, 0);
      if (seq === undefined) return "bad seq varint in Push";
      return { type: "push", seq: seq.value, payload: body.subarray(seq.next) };
    }
    case Op.Auth:
      return proto(AuthSchema, body, (b) => ({ type: "auth", body: b }));
    case Op.AuthOk:
      return proto(AuthOkSchema, body, (b) => ({ type: "authOk", body: b }));
    case Op.AuthFail:
      return proto(AuthFailSchema, body, (b) => ({ type: "authFail", body: b }));
    case Op.Kick:
      return proto(KickSchema, body, (b) => ({ type: "kick", body: b }));
    case Op.GoAway:
      return proto(GoAwaySchema, body, (b) => ({ type: "goAway", body: b }));
    case Op.Close:
      return proto(CloseSchema, body, (b) => ({ type: "close", body: b }));
    default:
      return `unknown op 0x${op.toString(16)}`; // unreachable: decodeFrame checked the op
  }
}

function decodeSend(body: Uint8Array): Frame | string {
  const seq = readVarint(body, 0);
  if (seq === undefined) return "bad seq varint in Send";
  const keyLen = readVarint(body, seq.next);
  if (keyLen === undefined) return "bad route key length varint in Send";
  if (keyLen.value > LIMITS.routeKey) return `route key length ${keyLen.value} above ${LIMITS.routeKey}`;
  const keyEnd = keyLen.next + keyLen.value;
  if (keyEnd > body.length) return "route key runs past the end of the Send body";
  return {
    type: "send",
    seq: seq.value,
    routeKey: body.subarray(keyLen.next, keyEnd),
    payload: body.subarray(keyEnd),
  };
}

function decodeAck(body: Uint8Array): Frame | string {
  const seq = readVarint(body, 0);
  if (seq === undefined) return "bad seq varint in Ack";
  const code = readVarint(body, seq.next);
  if (code === undefined) return "bad code varint in Ack";
  if (code.value > MAX_CODE) return `Ack code ${code.value} above 2^32 - 1`;
  if (code.next !== body.length) return "bytes after the code in Ack";
  return { type: "ack", seq: seq.value, code: code.value };
}

function proto<D extends DescMessage>(
  schema: D,
  body: Uint8Array,
  wrap: (m: MessageShape<D>) => Frame,
): Frame | string {
  try {
    return wrap(fromBinary(schema, body));
  } catch (e) {
    return `bad protobuf body: ${e instanceof Error ? e.message : String(e)}`;
  }
}

/** Field rules of sections 1 and 2.4 that hold in both directions; undefined when fine. */
function validate(f: Frame): string | undefined {
  switch (f.type) {
    case "auth":
      if (utf8Length(f.body.token) > LIMITS.token) return `token longer than ${LIMITS.token} bytes`;
      if (utf8Length(f.body.userId) > LIMITS.id) return `user_id longer than ${LIMITS.id} bytes`;
      if (utf8Length(f.body.deviceId) > LIMITS.id) return `device_id longer than ${LIMITS.id} bytes`;
      return undefined;
    case "authOk":
      if (f.body.heartbeatIntervalMs === 0) return "AuthOk heartbeat_interval_ms is 0";
      if (utf8Length(f.body.nodeId) > LIMITS.id) return `node_id longer than ${LIMITS.id} bytes`;
      return undefined;
    case "send":
      if (f.routeKey.length > LIMITS.routeKey) return `route key longer than ${LIMITS.routeKey} bytes`;
      return undefined;
    default:
      return undefined;
  }
}

/** Reads an unsigned LEB128 varint of at most 8 bytes whose value is a safe integer. */
function readVarint(buf: Uint8Array, pos: number): { value: number; next: number } | undefined {
  let value = 0;
  for (let i = 0; i < 8; i++) {
    const b = buf[pos + i];
    if (b === undefined) return undefined;
    value += (b & 0x7f) * 2 ** (7 * i);
    if ((b & 0x80) === 0) return Number.isSafeInteger(value) ? { value, next: pos + i + 1 } : undefined;
  }
  return undefined;
}

/** Number of bytes `varintWrite` takes for `n`. */
function varintLen(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    len++;
  }
  return len;
}

function varintWrite(out: Uint8Array, pos: number, n: number): number {
  while (n >= 0x80) {
    out[pos++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  out[pos++] = n;
  return pos;
}

function checkUint(n: number, max: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0 || n > max) throw new EncodeError(`${what} ${n} is not an integer in 0..${max}`);
}

/**
 * Encodes one frame. Throws `EncodeError` when a field breaks a limit of section 1 or 2
 * (a route key over 255 bytes, an id over 256, a token over 4,096, a body over 2^28 - 1);
 * checking the peer's `max_frame_len` is the caller's job (see `frameLen`).
 */
export function encodeFrame(frame: Frame): Uint8Array {
  const problem = validate(frame);
  if (problem !== undefined) throw new EncodeError(problem);
  switch (frame.type) {
    case "ping":
      return Uint8Array.of(Op.Ping, 0);
    case "pong":
      return Uint8Array.of(Op.Pong, 0);
    case "send": {
      checkUint(frame.seq, Number.MAX_SAFE_INTEGER, "seq");
      const bodyLen = varintLen(frame.seq) + varintLen(frame.routeKey.length) + frame.routeKey.length + frame.payload.length;
      const { out, pos } = header(Op.Send, bodyLen);
      let p = varintWrite(out, pos, frame.seq);
      p = varintWrite(out, p, frame.routeKey.length);
      out.set(frame.routeKey, p);
      out.set(frame.payload, p + frame.routeKey.length);
      return out;
    }
    case "ack": {
      checkUint(frame.seq, Number.MAX_SAFE_INTEGER, "seq");
      checkUint(frame.code, MAX_CODE, "code");
      const { out, pos } = header(Op.Ack, varintLen(frame.seq) + varintLen(frame.code));
      varintWrite(out, varintWrite(out, pos, frame.seq), frame.code);
      return out;
    }
    case "push": {
      checkUint(frame.seq, Number.MAX_SAFE_INTEGER, "seq");
      const { out, pos } = header(Op.Push, varintLen(frame.seq) + frame.payload.length);
      out.set(frame.payload, varintWrite(out, pos, frame.seq));
      return out;
    }
    case "auth":
      return withBody(Op.Auth, toBinary(AuthSchema, frame.body));
    case "authOk":
      return withBody(Op.AuthOk, toBinary(AuthOkSchema, frame.body));
    case "authFail":
      return withBody(Op.AuthFail, toBinary(AuthFailSchema, frame.body));
    case "kick":
      return withBody(Op.Kick, toBinary(KickSchema, frame.body));
    case "goAway":
      return withBody(Op.GoAway, toBinary(GoAwaySchema, frame.body));
    case "close":
      return withBody(Op.Close, toBinary(CloseSchema, frame.body));
  }
}

/** Body length of a Send with these parts: compare it with AuthOk's `max_frame_len`. */
export function sendBodyLen(seq: number, routeKeyLen: number, payloadLen: number): number {
  return varintLen(seq) + varintLen(routeKeyLen) + routeKeyLen + payloadLen;
}

function header(op: number, bodyLen: number): { out: Uint8Array; pos: number } {
  if (bodyLen > MAX_LEN) throw new EncodeError(`body length ${bodyLen} above ${MAX_LEN}`);
  const out = new Uint8Array(1 + varintLen(bodyLen) + bodyLen);
  out[0] = op;
  return { out, pos: varintWrite(out, 1, bodyLen) };
}

function withBody(op: number, body: Uint8Array): Uint8Array {
  const { out, pos } = header(op, body.length);
  out.set(body, pos);
  return out;
}

function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

/**
 * A streaming decoder over one byte stream (the concatenated binary WebSocket messages,
 * which may each hold several frames or part of one).
 *
 * Call order: `push(chunk)`, then `next()` until it returns `need`; then push the next chunk.
 * `next()` returns, as `decodeFrame` documents:
 * - `need` (with at least how many more bytes): nothing more to hand out yet;
 * - `frame`: one frame, removed from the buffer;
 * - `error`: the stream is broken; the error is sticky (every later call returns it) and
 *   the connection must be closed with `error.code`.
 *
 * The decoder buffers only bytes it was given; a frame's declared length is checked against
 * `maxFrameLen` before its body is waited for. A chunk pushed into an empty buffer is not
 * copied; the caller must not change it afterwards.
 */
export class FrameDecoder {
  private buf: Uint8Array = new Uint8Array(0);
  private start = 0;
  private end = 0;
  /** `buf` is the caller's chunk, not ours to write into. */
  private borrowed = false;
  private failed: DecodeResult | undefined;

  constructor(private maxFrameLen: number = DEFAULT_MAX_FRAME_LEN) {}

  /** Changes the maximum accepted body length (applies to frames not yet decoded). */
  setMaxFrameLen(max: number): void {
    this.maxFrameLen = max;
  }

  /** Number of bytes buffered and not yet handed out as frames. */
  get buffered(): number {
    return this.end - this.start;
  }

  /** Appends bytes from the stream. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0 || this.failed !== undefined) return;
    const pending = this.end - this.start;
    if (pending === 0) {
      this.buf = chunk;
      this.start = 0;
      this.end = chunk.length;
      this.borrowed = true;
      return;
    }
    const needed = pending + chunk.length;
    if (this.borrowed || this.buf.length < needed) {
      const grown = new Uint8Array(Math.max(needed, this.borrowed ? 0 : this.buf.length * 2));
      grown.set(this.buf.subarray(this.start, this.end));
      this.buf = grown;
      this.borrowed = false;
    } else if (this.buf.length - this.start < needed) {
      this.buf.copyWithin(0, this.start, this.end);
    } else {
      this.buf.set(chunk, this.end);
      this.end += chunk.length;
      return;
    }
    this.start = 0;
    this.end = pending;
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }

  /** The next frame, a need-more-bytes answer, or the (sticky) error that ends the stream. */
  next(): DecodeResult {
    if (this.failed !== undefined) return this.failed;
    const result = decodeFrame(this.buf.subarray(this.start, this.end), this.maxFrameLen);
    if (result.type === "frame") {
      this.start += result.size;
      if (this.start === this.end) this.clear();
    } else if (result.type === "error") {
      this.failed = result;
      this.clear();
    }
    return result;
  }

  private clear(): void {
    this.buf = new Uint8Array(0);
    this.start = 0;
    this.end = 0;
    this.borrowed = false;
  }
}
