/** In-memory WebSocket and clock for driving `Client` deterministically. */
import { create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { decodeFrame, encodeFrame, type Frame } from "../src/codec.js";
import { AuthFailSchema, AuthOkSchema, CloseSchema, GoAwaySchema, KickSchema } from "../src/gen/client_pb.js";
import type { Clock, TimerHandle } from "../src/client.js";

interface Timer {
  readonly id: number;
  readonly at: number;
  readonly fn: () => void;
}

/** A clock whose time moves only in `advance`, running due timers in deadline order. */
export class FakeClock implements Clock {
  private t = 1_000_000;
  private nextId = 1;
  private timers: Timer[] = [];

  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const timer = { id: this.nextId++, at: this.t + Math.max(0, ms), fn };
    this.timers.push(timer);
    return timer.id;
  }
  clearTimeout(handle: TimerHandle): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }
  /** Delays of the pending timers, from now, soonest first. */
  pending(): number[] {
    return this.timers.map((t) => t.at - this.t).sort((a, b) => a - b);
  }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (due === undefined) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.t = due.at;
      due.fn();
    }
    this.t = end;
  }
}

/** A WebSocket stand-in: records what the client writes; the test plays the gateway. */
export class FakeWebSocket {
  static instances: FakeWebSocket[] = [];
  binaryType = "blob";
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  readonly sent: Uint8Array[] = [];
  closed: { code: number | undefined; reason: string | undefined } | undefined;

  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {
    FakeWebSocket.instances.push(this);
  }
  static reset(): void {
    FakeWebSocket.instances = [];
  }
  static last(): FakeWebSocket {
    const ws = FakeWebSocket.instances.at(-1);
    if (ws === undefined) throw new Error("no WebSocket created");
    return ws;
  }

  send(data: Uint8Array): void {
    if (this.closed !== undefined) throw new Error("send after close");
    this.sent.push(data.slice());
  }
  close(code?: number, reason?: string): void {
    this.closed ??= { code, reason };
  }

  // ---- the gateway's side ----
  open(): void {
    this.onopen?.({});
  }
  receive(...frames: Frame[]): void {
    const parts = frames.map(encodeFrame);
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    this.receiveBytes(all);
  }
  receiveBytes(bytes: Uint8Array): void {
    const buf = new ArrayBuffer(bytes.length);
    new Uint8Array(buf).set(bytes);
    this.onmessage?.({ data: buf });
  }
  /** The transport closing (the gateway's WebSocket close, or the network). */
  drop(code = 1006, reason = ""): void {
    this.onclose?.({ code, reason });
  }
  /** Frames the client wrote, decoded. */
  frames(): Frame[] {
    return this.sent.map((b) => {
      const r = decodeFrame(b);
      if (r.type !== "frame" || r.size !== b.length) throw new Error("client wrote a bad frame");
      return r.frame;
    });
  }
  /** Frames the client wrote, of one type. */
  framesOf<T extends Frame["type"]>(type: T): Extract<Frame, { type: T }>[] {
    return this.frames().filter((f): f is Extract<Frame, { type: T }> => f.type === type);
  }
}

const msg = <D extends DescMessage>(schema: D, init: MessageInitShape<D>) => create(schema, init);

export const gw = {
  authOk: (init: MessageInitShape<typeof AuthOkSchema> = {}): Frame => ({
    type: "authOk",
    body: msg(AuthOkSchema, { connectionId: 7n, nodeId: "gw-1", heartbeatIntervalMs: 30_000, serverTimeMs: 1n,
      protocolVersion: 1, maxFrameLen: 65_536, maxInFlight: 64, ...init }),
  }),
  authFail: (reason: number, message = ""): Frame => ({ type: "authFail", body: msg(AuthFailSchema, { reason, message, supportedVersions: [1] }) }),
  close: (reason: number, message = ""): Frame => ({ type: "close", body: msg(CloseSchema, { reason, message }) }),
  kick: (reason: number, message = ""): Frame => ({ type: "kick", body: msg(KickSchema, { reason, message }) }),
  goAway: (init: MessageInitShape<typeof GoAwaySchema>): Frame => ({ type: "goAway", body: msg(GoAwaySchema, init) }),
  ack: (seq: number, code = 0): Frame => ({ type: "ack", seq, code }),
  push: (seq: number, payload: string): Frame => ({ type: "push", seq, payload: new TextEncoder().encode(payload) }),
  ping: (): Frame => ({ type: "ping" }),
};

/** Lets promise callbacks (token functions, send results) run. */
export const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
