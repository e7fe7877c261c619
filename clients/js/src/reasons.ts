/**
 * Reason codes, docs/protocol.md section 4: one table for both frame families, stable from
 * version 1 on (a code is never renumbered or reused). `test/reasons.test.ts` parses the
 * table out of the document and checks that this one equals it.
 *
 * This module imports nothing: it sits at the bottom of the SDK's layers.
 */

/** What a client should do after a reason: the "retry" column of the table. */
export type Retry = "none" | "no" | "backoff" | "reconnect";

/** One row of the table. `retry` is `"none"` where the document says `-`. */
export interface ReasonInfo {
  readonly code: number;
  readonly name: string;
  readonly retry: Retry;
}

/** The table of docs/protocol.md section 4, in its order. */
export const REASONS = [
  { code: 0, name: "ok", retry: "none" },
  { code: 1, name: "normal", retry: "none" },
  { code: 10, name: "protocol_error", retry: "no" },
  { code: 11, name: "frame_too_large", retry: "no" },
  { code: 12, name: "unknown_op", retry: "no" },
  { code: 13, name: "unexpected_frame", retry: "no" },
  { code: 14, name: "unsupported_version", retry: "no" },
  { code: 20, name: "auth_timeout", retry: "backoff" },
  { code: 21, name: "auth_invalid", retry: "no" },
  { code: 22, name: "auth_expired", retry: "no" },
  { code: 23, name: "auth_unknown_key", retry: "no" },
  { code: 24, name: "auth_unavailable", retry: "backoff" },
  { code: 30, name: "idle_timeout", retry: "backoff" },
  { code: 31, name: "slow_consumer", retry: "backoff" },
  { code: 32, name: "too_many_in_flight", retry: "backoff" },
  { code: 33, name: "too_many_connections", retry: "backoff" },
  { code: 34, name: "rate_limited", retry: "backoff" },
  { code: 40, name: "kicked", retry: "no" },
  { code: 41, name: "replaced", retry: "no" },
  { code: 42, name: "server_draining", retry: "reconnect" },
  { code: 43, name: "server_shutdown", retry: "reconnect" },
  { code: 44, name: "server_overloaded", retry: "backoff" },
  { code: 50, name: "backend_unavailable", retry: "backoff" },
  { code: 51, name: "backend_busy", retry: "backoff" },
  { code: 52, name: "backend_timeout", retry: "backoff" },
  { code: 53, name: "backend_rejected", retry: "no" },
  { code: 54, name: "not_delivered", retry: "none" },
  { code: 60, name: "internal_error", retry: "backoff" },
] as const satisfies readonly ReasonInfo[];

/** A name from the table. */
export type ReasonName = (typeof REASONS)[number]["name"];

/** Reason codes by name, for comparisons: `Reason.replaced === 41`. */
export const Reason = Object.freeze(
  Object.fromEntries(REASONS.map((r) => [r.name, r.code])) as { readonly [K in ReasonName]: number },
);

const BY_CODE: ReadonlyMap<number, ReasonInfo> = new Map(REASONS.map((r) => [r.code, r]));

/**
 * The row for `code`. A code this SDK does not know (a later version's) is accepted and
 * treated by its range, as section 4 asks: the name is `unknown_<code>` and the retry advice
 * is the range's: 1-19 protocol errors are `no`; every other range holds a retryable reason,
 * so an unknown code there is `backoff` (a client that backs off does little harm; one that
 * stops for good on a code it cannot read would).
 */
export function reasonInfo(code: number): ReasonInfo {
  const known = BY_CODE.get(code);
  if (known !== undefined) return known;
  const retry: Retry = code >= 1 && code <= 19 ? "no" : "backoff";
  return { code, name: `unknown_${code}`, retry };
}

/** The name of `code`, or `unknown_<code>`. */
export function reasonName(code: number): string {
  return reasonInfo(code).name;
}
