/**
 * One client connection's protocol state, sans-IO (docs/protocol.md section 2.1): bytes and
 * `now` in; frames to send, events and the next deadline out. No socket, no timer, no clock.
 *
 * Call order (the driver in `client.ts` does this; tests do it by hand):
 * 1. `new Session(options, now)` once the transport is open: it queues the Auth frame.
 * 2. On bytes from the transport: `handleBytes(chunk, now)`.
 *    On the deadline of `pollTimeout()`: `handleTimeout(now)`.
 *    To send: `canSend()`, then `send(seq, routeKey, payload, now)`. To close: `close(reason, now)`.
 * 3. After each of those: drain `pollTransmit()` (one frame per call, each one WebSocket message)
 *    and `pollEvent()`, then re-arm the timer with `pollTimeout()` (absolute ms; undefined: none).
 * A `closed` event is the last event; the driver then closes the transport.
 *
 * Layers: imports the codec and the reason table.
 */
import { create } from "@bufbuild/protobuf";
import { DEFAULT_MAX_FRAME_LEN, FrameDecoder, encodeFrame, type Frame } from "./codec.js";
import { AuthSchema, CloseSchema, Platform } from "./gen/client_pb.js";
import { Reason, reasonName } from "./reasons.js";

/** The protocol version this SDK speaks. */
export const PROTOCOL_VERSION = 1;

/** What the client sends in Auth. */
export interface Credentials {
  readonly token: string;
  readonly userId: string;
  readonly deviceId: string;
  readonly platform: Platform;
  /** Reserved for session resumption (section 2.4); empty or absent means none. */
  readonly resumeToken?: Uint8Array;
}

export interface SessionOptions {
  readonly credentials: Credentials;
  /** Largest body accepted from the gateway. Default 65,536. */
  readonly maxFrameLen?: number;
  /** Heartbeat intervals without any frame from the gateway after which it is dead. Default 3. */
  readonly idleMultiple?: number;
  /** Time allowed from the transport opening until AuthOk, in ms. Default 10,000. */
  readonly authTimeoutMs?: number;
}

/** AuthOk, as the client uses it. */
export interface ConnectedInfo {
  readonly connectionId: bigint;
  readonly nodeId: string;
  readonly heartbeatIntervalMs: number;
  readonly serverTimeMs: number;
  readonly protocolVersion: number;
  /** Largest Send body the gateway accepts (its 0 is read as the default, 65,536). */
  readonly maxFrameLen: number;
  /** Most Sends without an Ack the gateway allows (0: the gateway stated none). */
  readonly maxInFlight: number;
  readonly resumeToken: Uint8Array;
}

/** GoAway, as the client uses it. */
export interface GoAwayInfo {
  readonly code: number;
  readonly reason: string;
  /** Addresses to reconnect to; empty means the usual address. */
  readonly alternatives: readonly string[];
  readonly reconnectAfterMs: number;
  readonly reconnectJitterMs: number;
}

export type SessionEvent =
  | { readonly type: "authOk"; readonly info: ConnectedInfo }
  | { readonly type: "authFail"; readonly code: number; readonly message: string; readonly supportedVersions: readonly number[] }
  | { readonly type: "push"; readonly seq: number; readonly payload: Uint8Array }
  | { readonly type: "ack"; readonly seq: number; readonly code: number }
  | { readonly type: "kick"; readonly code: number; readonly message: string }
  | { readonly type: "goAway"; readonly info: GoAwayInfo }
  /** The session is over. `by: "local"` means this side sent Close (decode error, idle, drained). */
  | { readonly type: "closed"; readonly code: number; readonly message: string; readonly by: "peer" | "local" };

type Phase = "authenticating" | "open" | "draining" | "closed";

export class Session {
  private phase: Phase = "authenticating";
  private readonly decoder: FrameDecoder;
  private readonly outbox: Uint8Array[] = [];
  private readonly events: SessionEvent[] = [];
  private readonly inFlight = new Set<number>();
  private readonly idleMultiple: number;
  private readonly authDeadline: number;
  private info: ConnectedInfo | undefined;
  private lastSent: number;
  private lastReceived: number;

  constructor(options: SessionOptions, now: number) {
    this.decoder = new FrameDecoder(options.maxFrameLen ?? DEFAULT_MAX_FRAME_LEN);
    this.idleMultiple = options.idleMultiple ?? 3;
    this.authDeadline = now + (options.authTimeoutMs ?? 10_000);
    this.lastSent = now;
    this.lastReceived = now;
    const c = options.credentials;
    const body = create(AuthSchema, {
      protocolVersion: PROTOCOL_VERSION,
      token: c.token,
      userId: c.userId,
      deviceId: c.deviceId,
      platform: c.platform,
      resumeToken: c.resumeToken ?? new Uint8Array(0),
    });
    this.transmit({ type: "auth", body }, now);
  }

  /** AuthOk's fields, once it arrived. */
  get connected(): ConnectedInfo | undefined {
    return this.info;
  }

  /** True after GoAway: no new Sends; the session closes once the in-flight ones are acked. */
  get draining(): boolean {
    return this.phase === "draining";
  }

  get isClosed(): boolean {
    return this.phase === "closed";
  }

  /** Sends without an Ack yet. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Whether a Send may start now: authenticated, no GoAway, under `max_in_flight`. */
  canSend(): boolean {
    if (this.phase !== "open" || this.info === undefined) return false;
    return this.info.maxInFlight === 0 || this.inFlight.size < this.info.maxInFlight;
  }

  /** Queues a Send. `seq` must be unused among the in-flight ones; check `canSend()` first. */
  send(seq: number, routeKey: Uint8Array, payload: Uint8Array, now: number): void {
    if (!this.canSend()) throw new Error("Session.send while canSend() is false");
    if (this.inFlight.has(seq)) throw new Error(`seq ${seq} is already in flight`);
    this.transmit({ type: "send", seq, routeKey, payload }, now);
    this.inFlight.add(seq);
  }

  /** Closes from this side: queues Close with `code` and ends the session. */
  close(code: number, now: number, message = ""): void {
    if (this.phase === "closed") return;
    this.transmit({ type: "close", body: create(CloseSchema, { reason: code, message }) }, now);
    this.end(code, message, "local");
  }

  /** Bytes from the transport (any split: part of a frame, several frames). */
  handleBytes(chunk: Uint8Array, now: number): void {
    if (this.phase === "closed") return;
    this.lastReceived = now;
    this.decoder.push(chunk);
    while (!this.isClosed) {
      const r = this.decoder.next();
      if (r.type === "need") return;
      if (r.type === "error") {
        this.close(r.error.code, now, r.error.message);
        return;
      }
      this.handleFrame(r.frame, now);
    }
  }

  /** Call at (or after) the `pollTimeout()` deadline. */
  handleTimeout(now: number): void {
    if (this.phase === "closed") return;
    if (this.info === undefined) {
      if (now >= this.authDeadline) this.close(Reason.auth_timeout, now, "no AuthOk in time");
      return;
    }
    const hb = this.info.heartbeatIntervalMs;
    if (now >= this.lastReceived + this.idleMultiple * hb) {
      this.close(Reason.idle_timeout, now, "nothing from the gateway");
    } else if (now >= this.lastSent + hb) {
      this.transmit({ type: "ping" }, now);
    }
  }

  /** The next frame to write, as one WebSocket message. */
  pollTransmit(): Uint8Array | undefined {
    return this.outbox.shift();
  }

  pollEvent(): SessionEvent | undefined {
    return this.events.shift();
  }

  /** When `handleTimeout` is next due (absolute ms), or undefined once closed. */
  pollTimeout(): number | undefined {
    if (this.phase === "closed") return undefined;
    if (this.info === undefined) return this.authDeadline;
    const hb = this.info.heartbeatIntervalMs;
    return Math.min(this.lastSent + hb, this.lastReceived + this.idleMultiple * hb);
  }

  private transmit(frame: Frame, now: number): void {
    this.outbox.push(encodeFrame(frame));
    this.lastSent = now;
  }

  private end(code: number, message: string, by: "peer" | "local"): void {
    this.phase = "closed";
    this.events.push({ type: "closed", code, message, by });
  }

  private handleFrame(f: Frame, now: number): void {
    switch (f.type) {
      case "ping":
        return this.transmit({ type: "pong" }, now);
      case "pong":
        return;
      case "close":
        return this.end(f.body.reason, f.body.message, "peer");
      case "kick":
        this.events.push({ type: "kick", code: f.body.reason, message: f.body.message });
        return;
      case "authOk":
        return this.phase === "authenticating" ? this.onAuthOk(f) : this.unexpected(f, now);
      case "authFail":
        if (this.phase !== "authenticating") return this.unexpected(f, now);
        this.events.push({
          type: "authFail",
          code: f.body.reason,
          message: f.body.message,
          supportedVersions: [...f.body.supportedVersions],
        });
        return;
      case "ack":
      case "push":
      case "goAway":
        if (this.phase === "authenticating") return this.unexpected(f, now);
        return this.onData(f, now);
      case "auth":
      case "send":
        return this.unexpected(f, now);
    }
  }

  private onAuthOk(f: Extract<Frame, { type: "authOk" }>): void {
    const b = f.body;
    this.info = {
      connectionId: b.connectionId,
      nodeId: b.nodeId,
      heartbeatIntervalMs: b.heartbeatIntervalMs,
      serverTimeMs: Number(b.serverTimeMs),
      protocolVersion: b.protocolVersion,
      maxFrameLen: b.maxFrameLen === 0 ? DEFAULT_MAX_FRAME_LEN : b.maxFrameLen,
      maxInFlight: b.maxInFlight,
      resumeToken: b.resumeToken,
    };
    this.phase = "open";
    this.events.push({ type: "authOk", info: this.info });
  }

  private onData(f: Extract<Frame, { type: "ack" | "push" | "goAway" }>, now: number): void {
    if (f.type === "push") {
      this.events.push({ type: "push", seq: f.seq, payload: f.payload });
    } else if (f.type === "ack") {
      // An Ack for a seq not in flight is ignored: the gateway promises one per Send.
      if (!this.inFlight.delete(f.seq)) return;
      this.events.push({ type: "ack", seq: f.seq, code: f.code });
    } else {
      const b = f.body;
      this.phase = "draining";
      this.events.push({
        type: "goAway",
        info: {
          code: b.reason,
          reason: reasonName(b.reason),
          alternatives: [...b.alternatives],
          reconnectAfterMs: b.reconnectAfterMs,
          reconnectJitterMs: b.reconnectJitterMs,
        },
      });
    }
    if (this.phase === "draining" && this.inFlight.size === 0) {
      this.close(Reason.normal, now, "drained after GoAway");
    }
  }

  private unexpected(f: Frame, now: number): void {
    this.close(Reason.unexpected_frame, now, `${f.type} not allowed now`);
  }
}


