/**
 * ringgate-client: the TypeScript SDK of the ringgate gateway (docs/protocol.md, client family).
 *
 * `Client` is what applications use; the codec and `Session` are exported for tools, tests and
 * other transports that drive the protocol themselves.
 */
export {
  Client,
  SUBPROTOCOL,
  alternativeToUrl,
  type Ack,
  type ClientEvents,
  type ClientOptions,
  type ClientState,
  type Clock,
  type ConnectedEvent,
  type DisconnectedEvent,
  type KickedEvent,
  type SendOptions,
  type TimerHandle,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client.js";
export { RinggateError, type LocalReason } from "./errors.js";
export { REASONS, Reason, reasonInfo, reasonName, type ReasonInfo, type ReasonName, type Retry } from "./reasons.js";
export { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
export {
  PROTOCOL_VERSION,
  Session,
  type ConnectedInfo,
  type Credentials,
  type GoAwayInfo,
  type SessionEvent,
  type SessionOptions,
} from "./session.js";
export {
  DEFAULT_MAX_FRAME_LEN,
  DecodeError,
  EncodeError,
  FrameDecoder,
  LIMITS,
  MAX_LEN,
  Op,
  decodeFrame,
  encodeFrame,
  sendBodyLen,
  type DecodeErrorDetail,
  type DecodeResult,
  type Frame,
} from "./codec.js";
export { Platform } from "./gen/client_pb.js";
export type { Auth, AuthFail, AuthOk, Close, GoAway, Kick } from "./gen/client_pb.js";
