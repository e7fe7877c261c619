/**
 * Reconnect delays: exponential backoff with full jitter, as centrifuge-js does it
 * (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
 * Layers: imports nothing.
 */

/** Bounds of the reconnect delay. */
export interface BackoffOptions {
  /** Smallest delay and the base of the exponent, in ms. Default 500. */
  readonly minDelayMs?: number;
  /** Largest delay, in ms. Default 20,000. */
  readonly maxDelayMs?: number;
}

export const DEFAULT_BACKOFF = { minDelayMs: 500, maxDelayMs: 20_000 } as const;

/**
 * The delay before reconnect attempt `attempt` (0 for the first retry):
 * `min + uniform(0, min(max, min * 2^attempt))`, capped at `max`. Always within [min, max].
 * `random` returns a number in [0, 1), like `Math.random`.
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number): number {
  const min = options.minDelayMs ?? DEFAULT_BACKOFF.minDelayMs;
  const max = Math.max(min, options.maxDelayMs ?? DEFAULT_BACKOFF.maxDelayMs);
  const step = Math.min(Math.max(0, attempt), 31);
  const window = Math.min(max, min * 2 ** step);
  return Math.min(max, min + Math.floor(random() * window));
}
