/**
 * The SDK's public error type. Layers: imports only `reasons.ts`.
 */
import { reasonInfo, type Retry } from "./reasons.js";

/** Names of client-side failures that have no reason code of section 4. */
export type LocalReason = "transport_closed" | "not_connected";

/**
 * A failed `send()` or a failed connection. `code` is the section 4 reason code (an Ack's
 * code, or the reason the connection closed with) and `reason` its name; `code` is `null`
 * only for the client-side failures of `LocalReason`. `retry` is the table's advice.
 */
export class RinggateError extends Error {
  override readonly name = "RinggateError";
  readonly code: number | null;
  readonly reason: string;
  readonly retry: Retry;

  constructor(code: number | null, message?: string, local: LocalReason = "transport_closed") {
    const info = code === null ? undefined : reasonInfo(code);
    const reason = info?.name ?? local;
    super(message !== undefined && message !== "" ? `${reason}: ${message}` : reason);
    this.code = code;
    this.reason = reason;
    this.retry = info?.retry ?? "backoff";
  }
}
