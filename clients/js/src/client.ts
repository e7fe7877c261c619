/**
 * The ringgate client: a WebSocket driver around the sans-IO `Session`, plus what outlives one
 * connection: state, reconnects with backoff, token refresh, the Send queue.
 * Modelled on centrifuge-js (`src/centrifuge.ts`).
 *
 * States (`client.state`, and the `state` event):
 * - `disconnected`: no transport. Initially, and while waiting for a reconnect.
 * - `connecting`: fetching a token, opening the WebSocket, or waiting for AuthOk.
 * - `connected`: AuthOk received; Sends flow.
 * - `closed`: stopped, no reconnect: after `disconnect()`, or a reason whose advice is "no"
 *   (`replaced`, `kicked`, `auth_invalid`, ...). `connect()` starts again from here.
 *
 * Transport (docs/protocol.md 2.5 and the WebSocket contract): `ws[s]://host:port/ws`, offering
 * subprotocol `ringgate.v1`; binary messages carry the byte stream (any split); each frame
 * this client writes is one message. All I/O and time go through `WebSocket`, `clock` and
 * `random`, which tests replace.
 *
 * Layers: imports session, codec, reasons, errors, backoff.
 */
import { DEFAULT_BACKOFF, backoffDelay, type BackoffOptions } from "./backoff.js";
import { LIMITS, sendBodyLen } from "./codec.js";
import { RinggateError } from "./errors.js";
import { Platform } from "./gen/client_pb.js";
import { Reason, reasonInfo, type Retry } from "./reasons.js";
import { Session, type ConnectedInfo, type GoAwayInfo, type SessionEvent } from "./session.js";

/** The WebSocket subprotocol the gateway speaks. */
export const SUBPROTOCOL = "ringgate.v1";

/** The part of a WebSocket (browser, Node 22, or the `ws` package) the client uses. */
export interface WebSocketLike {
  binaryType: string;
  onopen: ((ev: never) => void) | null;
  onmessage: ((ev: never) => void) | null;
  onclose: ((ev: never) => void) | null;
  onerror: ((ev: never) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor: `globalThis.WebSocket` or `ws`'s `WebSocket`. */
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

/** Handle returned by `Clock.setTimeout`. */
export type TimerHandle = unknown;

/** Time, injectable for tests. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export type ClientState = "disconnected" | "connecting" | "connected" | "closed";

export interface ClientOptions {
  /** Gateway WebSocket URLs (`wss://host:port/ws`); attempts go round them in order. */
  readonly urls: string | readonly string[];
  /** A token, or a function fetching one: called at the first connect and again whenever the
   * gateway answers `auth_expired` or `auth_unknown_key`, and once after `auth_invalid` (a
   * token of a rotated-out key; a fresh token refused again ends the client). */
  readonly token: string | (() => string | Promise<string>);
  readonly userId: string;
  readonly deviceId: string;
  /** Default `Platform.WEB`. */
  readonly platform?: Platform;
  /** Default `globalThis.WebSocket` (browsers, Node 22+); Node 20 needs `ws`'s. */
  readonly WebSocket?: WebSocketConstructor;
  /** Reconnect delays; default 500 ms to 20 s with full jitter. */
  readonly backoff?: BackoffOptions;
  /** Largest body accepted from the gateway. Default 65,536. */
  readonly maxFrameLen?: number;
  /** Heartbeat intervals of silence from the gateway after which the connection is dead. Default 3. */
  readonly idleMultiple?: number;
  /** From creating the WebSocket to AuthOk, in ms. Default 10,000. */
  readonly connectTimeoutMs?: number;
  /** Turns a GoAway alternative (`host:port`) into a URL. Default: a value containing `://`
   * is used as it is; otherwise it replaces the host and port of the current URL. */
  readonly alternativeUrl?: (alternative: string, current: string) => string;
  readonly clock?: Clock;
  /** Uniform in [0, 1). Default `Math.random`. */
  readonly random?: () => number;
}

/** A successful Send: the gateway's Ack with code `ok`. */
export interface Ack {
  readonly seq: number;
  readonly code: number;
}

export interface SendOptions {
  /** Route key (at most 255 bytes); absent or empty: none. */
  readonly routeKey?: string | Uint8Array;
}

export interface ConnectedEvent extends ConnectedInfo {
  readonly url: string;
}

export interface DisconnectedEvent {
  /** Section 4 reason code, or null when the transport closed without one. */
  readonly code: number | null;
  /** Reason name, or `transport_closed`. */
  readonly reason: string;
  readonly message: string;
  readonly willReconnect: boolean;
  /** When `willReconnect`: the delay before the next attempt, in ms. */
  readonly delayMs?: number;
}

export interface KickedEvent {
  readonly code: number;
  readonly reason: string;
  readonly message: string;
}

export interface ClientEvents {
  state: { readonly state: ClientState; readonly previous: ClientState };
  connected: ConnectedEvent;
  push: { readonly payload: Uint8Array; readonly seq: number };
  disconnected: DisconnectedEvent;
  goaway: GoAwayInfo;
  kicked: KickedEvent;
  error: { readonly error: Error };
}

type Listener<K extends keyof ClientEvents> = (event: ClientEvents[K]) => void;

interface PendingSend {
  readonly routeKey: Uint8Array;
  readonly payload: Uint8Array;
  readonly resolve: (ack: Ack) => void;
  readonly reject: (err: RinggateError) => void;
}

/** One transport attempt. */
interface Conn {
  readonly ws: WebSocketLike;
  readonly url: string;
  session: Session | undefined;
  timer: TimerHandle | undefined;
  nextSeq: number;
  readonly inFlight: Map<number, PendingSend>;
  /** The reason that ended it, as far as known: Kick and AuthFail win over Close. */
  end: { code: number; message: string; by: "peer" | "local" } | undefined;
  kick: { code: number; message: string } | undefined;
  goAway: GoAwayInfo | undefined;
}

const encoder = new TextEncoder();
const toBytes = (v: string | Uint8Array): Uint8Array => (typeof v === "string" ? encoder.encode(v) : v);

const defaultClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (h) => globalThis.clearTimeout(h as Parameters<typeof globalThis.clearTimeout>[0]),
};

/** Default `alternativeUrl`: `10.0.0.2:7000` on `wss://a:443/ws` gives `wss://10.0.0.2:7000/ws`. */
export function alternativeToUrl(alternative: string, current: string): string {
  if (alternative.includes("://")) return alternative;
  const url = new URL(current);
  url.host = alternative;
  return url.toString();
}

export class Client {
  private readonly opts: ClientOptions;
  private readonly urls: readonly string[];
  private readonly WS: WebSocketConstructor;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly listeners = new Map<keyof ClientEvents, Set<Listener<never>>>();
  private current: ClientState = "disconnected";
  /** connect() was called and disconnect() was not. */
  private wanted = false;
  /** Bumped by every connect/disconnect: async work of an older epoch is dropped. */
  private epoch = 0;
  private conn: Conn | undefined;
  private reconnectTimer: TimerHandle | undefined;
  private attempt = 0;
  private urlIndex = 0;
  private preferredUrl: string | undefined;
  private token: string | undefined;
  /** A fresh token was fetched after an auth_invalid, and not yet accepted. */
  private refetchedAfterInvalid = false;
  private readonly queue: PendingSend[] = [];
  private driving = false;

  constructor(options: ClientOptions) {
    this.opts = options;
    this.urls = typeof options.urls === "string" ? [options.urls] : [...options.urls];
    if (this.urls.length === 0) throw new TypeError("ringgate: `urls` is empty");
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (WS === undefined) throw new TypeError("ringgate: no global WebSocket; pass the `WebSocket` option (e.g. from `ws`)");
    this.WS = WS;
    this.clock = options.clock ?? defaultClock;
    this.random = options.random ?? Math.random;
    if (typeof options.token === "string") this.token = options.token;
  }

  get state(): ClientState {
    return this.current;
  }

  /** Subscribes to an event; returns the unsubscribe function. */
  on<K extends keyof ClientEvents>(event: K, listener: Listener<K>): () => void {
    let set = this.listeners.get(event);
    if (set === undefined) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  off<K extends keyof ClientEvents>(event: K, listener: Listener<K>): void {
    this.listeners.get(event)?.delete(listener);
  }

  /** Starts connecting (and reconnecting) unless already connecting or connected. */
  connect(): void {
    if (this.current === "connecting" || this.current === "connected") return;
    this.wanted = true;
    this.epoch++;
    this.cancelReconnect();
    this.attempt = 0;
    // A token the gateway refused is not sent again: a new connect() asks for a fresh one.
    if (this.refetchedAfterInvalid && typeof this.opts.token !== "string") this.token = undefined;
    this.refetchedAfterInvalid = false;
    void this.open(this.epoch);
  }

  /** Closes the connection (Close `normal`) and stops reconnecting. Pending Sends are rejected. */
  disconnect(): void {
    this.wanted = false;
    this.epoch++;
    this.cancelReconnect();
    const conn = this.conn;
    if (conn?.session !== undefined && !conn.session.isClosed) {
      conn.session.close(Reason.normal, this.clock.now(), "disconnect() called");
      this.drive(conn);
    } else if (conn !== undefined) {
      conn.end = { code: Reason.normal, message: "disconnect() called", by: "local" };
      this.closeTransport(conn);
      this.finish(conn);
    } else {
      this.stop({ code: Reason.normal, reason: "normal", message: "disconnect() called", willReconnect: false });
    }
  }

  /**
   * Sends `payload` to a backend. Resolves with the Ack when its code is `ok`; rejects with a
   * `RinggateError` carrying the Ack's reason otherwise, or the connection's reason if it
   * ended first (the backend may or may not have seen it). At most AuthOk's `max_in_flight`
   * Sends are outstanding; more wait in a queue, kept across reconnects. No Send starts after
   * a GoAway: queued ones go out on the next connection.
   */
  send(payload: string | Uint8Array, options: SendOptions = {}): Promise<Ack> {
    const routeKey = toBytes(options.routeKey ?? new Uint8Array(0));
    if (routeKey.length > LIMITS.routeKey) {
      return Promise.reject(new RinggateError(Reason.protocol_error, `route key longer than ${LIMITS.routeKey} bytes`));
    }
    if (!this.wanted) return Promise.reject(new RinggateError(null, "call connect() first", "not_connected"));
    return new Promise<Ack>((resolve, reject) => {
      this.queue.push({ routeKey, payload: toBytes(payload), resolve, reject });
      if (this.conn !== undefined) this.drive(this.conn);
    });
  }

  // ---- events and state --------------------------------------------------------------

  private emit<K extends keyof ClientEvents>(event: K, value: ClientEvents[K]): void {
    const set = this.listeners.get(event);
    if (set === undefined) return;
    for (const fn of [...set] as Listener<K>[]) {
      try {
        fn(value);
      } catch (e) {
        if (event !== "error") this.emit("error", { error: e instanceof Error ? e : new Error(String(e)) });
      }
    }
  }

  private setState(state: ClientState): void {
    if (state === this.current) return;
    const previous = this.current;
    this.current = state;
    this.emit("state", { state, previous });
  }

  // ---- opening a transport -----------------------------------------------------------

  private async open(epoch: number): Promise<void> {
    this.setState("connecting");
    if (this.token === undefined) {
      const fetch = this.opts.token;
      try {
        const token = typeof fetch === "string" ? fetch : await fetch();
        if (epoch !== this.epoch) return;
        this.token = token;
      } catch (e) {
        if (epoch !== this.epoch) return;
        this.emit("error", { error: e instanceof Error ? e : new Error(String(e)) });
        this.retryLater(backoffDelay(this.attempt++, this.backoff(), this.random), {
          code: null, reason: "transport_closed", message: "token function failed",
        });
        return;
      }
    }
    const url = this.nextUrl();
    const ws = new this.WS(url, [SUBPROTOCOL]);
    ws.binaryType = "arraybuffer";
    const conn: Conn = {
      ws, url, session: undefined, timer: undefined, nextSeq: 1, inFlight: new Map(),
      end: undefined, kick: undefined, goAway: undefined,
    };
    this.conn = conn;
    ws.onopen = () => this.onOpen(conn);
    ws.onmessage = (ev: { data: unknown }) => this.onMessage(conn, ev.data);
    ws.onclose = (ev: { code: number; reason: string }) => this.onTransportClose(conn, ev.code, ev.reason);
    ws.onerror = () => this.emit("error", { error: new RinggateError(null, `WebSocket error on ${url}`) });
    this.arm(conn, this.clock.now() + (this.opts.connectTimeoutMs ?? 10_000), () => {
      conn.end = { code: Reason.auth_timeout, message: "WebSocket did not open in time", by: "local" };
      this.closeTransport(conn);
      this.finish(conn);
    });
  }

  private nextUrl(): string {
    const preferred = this.preferredUrl;
    this.preferredUrl = undefined;
    if (preferred !== undefined) return preferred;
    const url = this.urls[this.urlIndex % this.urls.length] ?? this.urls[0] ?? "";
    this.urlIndex++;
    return url;
  }

  private onOpen(conn: Conn): void {
    if (conn !== this.conn) return;
    const now = this.clock.now();
    conn.session = new Session(
      {
        credentials: {
          token: this.token ?? "",
          userId: this.opts.userId,
          deviceId: this.opts.deviceId,
          platform: this.opts.platform ?? Platform.WEB,
        },
        maxFrameLen: this.opts.maxFrameLen,
        idleMultiple: this.opts.idleMultiple,
        authTimeoutMs: this.opts.connectTimeoutMs,
      },
      now,
    );
    this.drive(conn);
  }

  private onMessage(conn: Conn, data: unknown): void {
    const session = conn.session;
    if (conn !== this.conn || session === undefined) return;
    let bytes: Uint8Array;
    if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else {
      session.close(Reason.protocol_error, this.clock.now(), "text WebSocket message");
      return this.drive(conn);
    }
    session.handleBytes(bytes, this.clock.now());
    this.drive(conn);
  }

  private onTransportClose(conn: Conn, code: number, reason: string): void {
    if (conn !== this.conn) return;
    if (conn.end === undefined && code >= 4000 && code <= 4999) {
      conn.end = { code: code - 4000, message: reason, by: "peer" };
    }
    this.finish(conn);
  }

  // ---- the driver loop ---------------------------------------------------------------

  /** Starts queued Sends, writes the session's frames, handles its events, re-arms its timer. */
  private drive(conn: Conn): void {
    if (this.driving) return;
    this.driving = true;
    try {
      for (let progress = true; progress && conn === this.conn; ) {
        progress = this.startSends(conn);
        const session = conn.session;
        if (session === undefined) break;
        for (let frame = session.pollTransmit(); frame !== undefined; frame = session.pollTransmit()) {
          this.write(conn, frame);
          progress = true;
        }
        for (let ev = session.pollEvent(); ev !== undefined; ev = session.pollEvent()) {
          this.onSessionEvent(conn, ev);
          progress = true;
        }
      }
    } finally {
      this.driving = false;
    }
    const deadline = conn === this.conn ? conn.session?.pollTimeout() : undefined;
    if (deadline !== undefined) {
      this.arm(conn, deadline, () => {
        conn.session?.handleTimeout(this.clock.now());
        this.drive(conn);
      });
    }
  }

  private write(conn: Conn, frame: Uint8Array): void {
    try {
      conn.ws.send(frame);
    } catch (e) {
      this.emit("error", { error: e instanceof Error ? e : new Error(String(e)) });
    }
  }

  private arm(conn: Conn, deadline: number, fn: () => void): void {
    if (conn.timer !== undefined) this.clock.clearTimeout(conn.timer);
    conn.timer = this.clock.setTimeout(() => {
      conn.timer = undefined;
      if (conn === this.conn) fn();
    }, Math.max(0, deadline - this.clock.now()));
  }

  /** Moves queued Sends into the session while it allows; true if any started. */
  private startSends(conn: Conn): boolean {
    const session = conn.session;
    const info = session?.connected;
    if (session === undefined || info === undefined) return false;
    let started = false;
    while (this.queue.length > 0 && session.canSend()) {
      const p = this.queue.shift();
      if (p === undefined) break;
      const seq = conn.nextSeq++;
      const len = sendBodyLen(seq, p.routeKey.length, p.payload.length);
      if (len > info.maxFrameLen) {
        p.reject(new RinggateError(Reason.frame_too_large, `Send body ${len} bytes above the gateway's ${info.maxFrameLen}`));
        continue;
      }
      session.send(seq, p.routeKey, p.payload, this.clock.now());
      conn.inFlight.set(seq, p);
      started = true;
    }
    return started;
  }

  private onSessionEvent(conn: Conn, ev: SessionEvent): void {
    switch (ev.type) {
      case "authOk":
        this.attempt = 0;
        this.refetchedAfterInvalid = false;
        this.setState("connected");
        this.emit("connected", { ...ev.info, url: conn.url });
        return;
      case "authFail":
        conn.end = { code: ev.code, message: ev.message, by: "peer" };
        return;
      case "ack": {
        const p = conn.inFlight.get(ev.seq);
        conn.inFlight.delete(ev.seq);
        if (ev.code === Reason.ok) p?.resolve({ seq: ev.seq, code: ev.code });
        else p?.reject(new RinggateError(ev.code));
        return;
      }
      case "push":
        this.emit("push", { payload: ev.payload, seq: ev.seq });
        return;
      case "kick":
        conn.kick = { code: ev.code, message: ev.message };
        this.emit("kicked", { code: ev.code, reason: reasonInfo(ev.code).name, message: ev.message });
        return;
      case "goAway":
        conn.goAway = ev.info;
        this.emit("goaway", ev.info);
        return;
      case "closed":
        conn.end ??= { code: ev.code, message: ev.message, by: ev.by };
        this.closeTransport(conn);
        this.finish(conn);
        return;
    }
  }

  // ---- ending a transport and planning the next ----------------------------------------

  private closeTransport(conn: Conn): void {
    const code = conn.end?.code;
    try {
      if (code === undefined || code === Reason.normal) conn.ws.close(1000);
      else conn.ws.close(4000 + code, reasonInfo(code).name);
    } catch {
      // Closing a socket that already failed: nothing left to do.
    }
  }

  /** The transport of `conn` is gone: settle its Sends, then reconnect or stop. */
  private finish(conn: Conn): void {
    if (conn !== this.conn) return;
    this.conn = undefined;
    if (conn.timer !== undefined) this.clock.clearTimeout(conn.timer);
    conn.ws.onopen = conn.ws.onmessage = conn.ws.onclose = conn.ws.onerror = null;
    const kick = conn.kick;
    const end = kick !== undefined ? { ...kick, by: "peer" as const } : conn.end;
    const err = new RinggateError(end?.code ?? null, end?.message);
    for (const p of conn.inFlight.values()) p.reject(err);
    const base = { code: end?.code ?? null, reason: err.reason, message: end?.message ?? "" };
    const delay = this.wanted ? this.plan(conn, end) : undefined;
    if (delay === undefined) this.stop({ ...base, willReconnect: false });
    else this.retryLater(delay, base);
  }

  /** The delay before reconnecting after `end`, or undefined to stop. */
  private plan(conn: Conn, end: Conn["end"]): number | undefined {
    const backoff = (): number => backoffDelay(this.attempt++, this.backoff(), this.random);
    const goAway = conn.goAway;
    if (goAway !== undefined && (end === undefined || end.code === Reason.normal || reasonInfo(end.code).retry !== "no")) {
      const alt = goAway.alternatives[Math.floor(this.random() * goAway.alternatives.length)];
      if (alt !== undefined) this.preferredUrl = (this.opts.alternativeUrl ?? alternativeToUrl)(alt, conn.url);
      return goAway.reconnectAfterMs + Math.floor(this.random() * goAway.reconnectJitterMs);
    }
    if (end === undefined) return backoff();
    // This side closed (a bad frame, a silent gateway, no AuthOk in time): the gateway or the
    // path is at fault, so try again.
    if (end.by === "local") return backoff();
    if (end.code === Reason.auth_expired || end.code === Reason.auth_unknown_key) {
      if (typeof this.opts.token === "string") return undefined;
      this.token = undefined;
      return backoff();
    }
    // A gateway answers a token of a retired key auth_invalid (it does not say which key ids
    // exist): fetch one fresh token and try once; a fresh token refused too is terminal.
    if (end.code === Reason.auth_invalid && typeof this.opts.token !== "string" && !this.refetchedAfterInvalid) {
      this.refetchedAfterInvalid = true;
      this.token = undefined;
      return backoff();
    }
    const retry: Retry = reasonInfo(end.code).retry;
    if (retry === "no") return undefined;
    if (retry === "reconnect") return Math.floor(this.random() * (this.backoff().minDelayMs ?? DEFAULT_BACKOFF.minDelayMs));
    return backoff();
  }

  private backoff(): BackoffOptions {
    return this.opts.backoff ?? DEFAULT_BACKOFF;
  }

  private retryLater(delayMs: number, ev: Omit<DisconnectedEvent, "willReconnect" | "delayMs">): void {
    this.setState("disconnected");
    this.emit("disconnected", { ...ev, willReconnect: true, delayMs });
    const epoch = this.epoch;
    this.reconnectTimer = this.clock.setTimeout(() => {
      this.reconnectTimer = undefined;
      if (epoch === this.epoch && this.wanted) void this.open(epoch);
    }, delayMs);
  }

  private stop(ev: DisconnectedEvent): void {
    this.wanted = false;
    const err = new RinggateError(ev.code, ev.message, "not_connected");
    for (const p of this.queue.splice(0)) p.reject(err);
    const was = this.current;
    this.setState("closed");
    if (was !== "closed") this.emit("disconnected", ev);
  }

  private cancelReconnect(): void {
    if (this.reconnectTimer !== undefined) this.clock.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
  }
}
