//! The API's requests and answers: routes, JSON (serde) and protobuf (prost) bodies turned
//! into [`Call`]s, and [`Outcome`]s turned back into bodies of the caller's format.

use base64::Engine;
use bytes::Bytes;
use prost::Message;
use ringgate_codec::ReasonCode;
use ringgate_codec::limits::MAX_ID_LEN;
use ringgate_codec::pb::api as pb;
use serde::{Deserialize, Serialize};

use crate::http::{Response, respond};
use crate::relay::{Outcome, Session, Unavailable};

/// JSON or protobuf, from the request's Content-Type (answers use the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Protobuf,
}

impl Format {
    pub fn of(headers: &hyper::HeaderMap) -> Format {
        let content_type = headers.get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let accept = headers.get(hyper::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        if content_type.starts_with("application/x-protobuf") || accept.starts_with("application/x-protobuf") {
            Format::Protobuf
        } else {
            Format::Json
        }
    }
}

/// Why a request failed, with the status it gets.
#[derive(Debug)]
pub enum Problem {
    Unauthorized,
    NotFound(String),
    Method(String),
    Bad(String),
    TooLarge(String),
    Unavailable(Unavailable),
}

/// Sizes the API accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest payload: what still fits in a client frame.
    pub payload: usize,
    /// Largest request body: the payload in base64 plus room for the envelope.
    pub body: usize,
}

impl Limits {
    pub fn for_frame_len(max_frame_len: usize) -> Limits {
        // A Push frame's body is the payload plus its seq and two field tags.
        let payload = max_frame_len.saturating_sub(16).max(1);
        Limits { payload, body: payload.div_ceil(3) * 4 + 16 * 1024 }
    }
}

/// An endpoint and what the path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Push,
    /// Several pushes in one request.
    PushBatch,
    Kick,
    Join(String),
    Leave(String),
    Presence(String),
    Room(String),
}

impl Route {
    pub fn endpoint(&self) -> &'static str {
        match self {
            Route::Push => "push",
            Route::PushBatch => "push_batch",
            Route::Kick => "kick",
            Route::Join(_) => "join",
            Route::Leave(_) => "leave",
            Route::Presence(_) => "presence",
            Route::Room(_) => "room",
        }
    }
}

/// The route of `method` `path`; path segments are percent-decoded.
pub fn route(method: &hyper::Method, path: &str) -> Result<Route, Problem> {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (route, wants) = match segments.as_slice() {
        ["v1", "push"] => (Route::Push, hyper::Method::POST),
        ["v1", "push", "batch"] => (Route::PushBatch, hyper::Method::POST),
        ["v1", "kick"] => (Route::Kick, hyper::Method::POST),
        ["v1", "rooms", room, "join"] if !room.is_empty() => (Route::Join((*room).into()), hyper::Method::POST),
        ["v1", "rooms", room, "leave"] if !room.is_empty() => (Route::Leave((*room).into()), hyper::Method::POST),
        ["v1", "presence", user] if !user.is_empty() => (Route::Presence((*user).into()), hyper::Method::GET),
        ["v1", "rooms", room] if !room.is_empty() => (Route::Room((*room).into()), hyper::Method::GET),
        _ => return Err(Problem::NotFound(format!("no endpoint {path} (see docs/api.md)"))),
    };
    if *method != wants {
        return Err(Problem::Method(format!("{path} takes {wants}, not {method}")));
    }
    Ok(route)
}

/// One API call, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    PushUser {
        user: String,
        devices: Vec<String>,
        platforms: Vec<String>,
        payload: Bytes,
        timeout_ms: Option<u64>,
    },
    PushConn {
        node: Option<String>,
        conn: u64,
        payload: Bytes,
        timeout_ms: Option<u64>,
    },
    PushRoom {
        room: String,
        exclude: Option<u64>,
        payload: Bytes,
        timeout_ms: Option<u64>,
    },
    Broadcast {
        payload: Bytes,
        timeout_ms: Option<u64>,
    },
    Kick {
        user: String,
        device: Option<String>,
        reason: ReasonCode,
        message: String,
    },
    Membership {
        user: String,
        room: String,
        join: bool,
    },
    Presence {
        user: String,
    },
    Room {
        room: String,
    },
    /// Pushes carried out at once; answered in the same order.
    Batch(Vec<Call>),
}

/// Most pushes in one batch.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchJson {
    pushes: Option<Vec<PushJson>>,
}

/// `POST /v1/push` as JSON: exactly one of `user`, `conn`, `room`, `broadcast`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushJson {
    user: Option<String>,
    #[serde(default)]
    devices: Vec<String>,
    #[serde(default)]
    platforms: Vec<String>,
    node: Option<String>,
    conn: Option<u64>,
    room: Option<String>,
    exclude_conn: Option<u64>,
    #[serde(default)]
    broadcast: bool,
    payload: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KickJson {
    user: Option<String>,
    device: Option<String>,
    /// A reason name of docs/protocol.md section 4 ("kicked", "replaced", ...) or its code.
    reason: Option<serde_json::Value>,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembershipJson {
    user: Option<String>,
}

/// Parses the body of `route` into a call.
pub fn parse(route: Route, format: Format, body: &[u8], limits: &Limits) -> Result<Call, Problem> {
    match (route, format) {
        (Route::Presence(user), _) => Ok(Call::Presence { user: id("user", user)? }),
        (Route::Room(room), _) => Ok(Call::Room { room: id("room", room)? }),
        (Route::Push, Format::Json) => push_json(json(body)?, limits),
        (Route::Push, Format::Protobuf) => push_proto(proto(body)?, limits),
        (Route::PushBatch, Format::Json) => {
            let pushes = required("pushes", json::<BatchJson>(body)?.pushes)?;
            batch(pushes.into_iter().map(|p| push_json(p, limits)).collect())
        }
        (Route::PushBatch, Format::Protobuf) => {
            let pushes = proto::<pb::PushBatch>(body)?.pushes;
            batch(pushes.into_iter().map(|p| push_proto(p, limits)).collect())
        }
        (Route::Kick, Format::Json) => {
            let k: KickJson = json(body)?;
            let reason = match k.reason {
                None => ReasonCode::KICKED,
                Some(serde_json::Value::String(name)) => reason_named(&name)?,
                Some(serde_json::Value::Number(n)) => ReasonCode(
                    n.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| bad("reason: not a reason code"))?,
                ),
                Some(other) => return Err(bad(&format!("reason: expected a name or a code, found {other}"))),
            };
            Ok(Call::Kick {
                user: id("user", required("user", k.user)?)?,
                device: k.device.map(|d| id("device", d)).transpose()?,
                reason,
                message: kick_message(k.message)?,
            })
        }
        (Route::Kick, Format::Protobuf) => {
            let k: pb::KickRequest = proto(body)?;
            Ok(Call::Kick {
                user: id("user", k.user)?,
                device: (!k.device.is_empty()).then(|| id("device", k.device)).transpose()?,
                reason: if k.reason == 0 { ReasonCode::KICKED } else { ReasonCode(k.reason) },
                message: kick_message(k.message)?,
            })
        }
        (route @ (Route::Join(_) | Route::Leave(_)), f) => {
            let (room, join) = match route {
                Route::Join(room) => (room, true),
                Route::Leave(room) => (room, false),
                _ => unreachable!("matched above"),
            };
            let user = match f {
                Format::Json => required("user", json::<MembershipJson>(body)?.user)?,
                Format::Protobuf => proto::<pb::MembershipRequest>(body)?.user,
            };
            Ok(Call::Membership { user: id("user", user)?, room: id("room", room)?, join })
        }
    }
}

/// A batch of parsed pushes; the first bad one fails the whole batch, named by its index.
fn batch(calls: Vec<Result<Call, Problem>>) -> Result<Call, Problem> {
    if calls.is_empty() || calls.len() > MAX_BATCH {
        return Err(bad(&format!("pushes: give 1 to {MAX_BATCH} pushes, not {}", calls.len())));
    }
    let mut out = Vec::with_capacity(calls.len());
    for (i, call) in calls.into_iter().enumerate() {
        match call {
            Ok(call) => out.push(call),
            Err(Problem::Bad(m)) => return Err(bad(&format!("pushes[{i}]: {m}"))),
            Err(Problem::TooLarge(m)) => return Err(Problem::TooLarge(format!("pushes[{i}]: {m}"))),
            Err(other) => return Err(other),
        }
    }
    Ok(Call::Batch(out))
}

fn push_json(p: PushJson, limits: &Limits) -> Result<Call, Problem> {
    let targets = [p.user.is_some(), p.conn.is_some(), p.room.is_some(), p.broadcast];
    let chosen = targets.iter().filter(|t| **t).count();
    if chosen != 1 {
        return Err(bad(&format!(
            "give exactly one target: user, conn, room or broadcast ({})",
            if chosen == 0 { "none given" } else { "several given" }
        )));
    }
    let encoded = required("payload", p.payload)?;
    // The base64 is checked against the limit before it is decoded.
    if encoded.len() > limits.payload.div_ceil(3) * 4 {
        return Err(too_large(encoded.len() / 4 * 3, limits));
    }
    let payload = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|e| bad(&format!("payload: not base64 ({e})")))?;
    let payload = checked_payload(Bytes::from(payload), limits)?;
    // 0 means the default, as in the protobuf form.
    let timeout_ms = p.timeout_ms.filter(|&ms| ms > 0);
    if let Some(user) = p.user {
        let devices = p.devices.into_iter().map(|d| id("devices", d)).collect::<Result<_, _>>()?;
        let platforms = p.platforms.into_iter().map(|d| id("platforms", d)).collect::<Result<_, _>>()?;
        return Ok(Call::PushUser { user: id("user", user)?, devices, platforms, payload, timeout_ms });
    }
    if let Some(conn) = p.conn {
        let node = p.node.map(|n| id("node", n)).transpose()?;
        return Ok(Call::PushConn { node, conn, payload, timeout_ms });
    }
    if let Some(room) = p.room {
        return Ok(Call::PushRoom { room: id("room", room)?, exclude: p.exclude_conn, payload, timeout_ms });
    }
    Ok(Call::Broadcast { payload, timeout_ms })
}

fn push_proto(p: pb::PushRequest, limits: &Limits) -> Result<Call, Problem> {
    use pb::push_request::Target;
    let payload = checked_payload(p.payload, limits)?;
    let timeout_ms = (p.timeout_ms != 0).then_some(u64::from(p.timeout_ms));
    match p.target {
        None => Err(bad("give exactly one target: user, conn, room or broadcast (none given)")),
        Some(Target::User(u)) => Ok(Call::PushUser {
            user: id("user", u.user)?,
            devices: u.devices.into_iter().map(|d| id("devices", d)).collect::<Result<_, _>>()?,
            platforms: u.platforms.into_iter().map(|d| id("platforms", d)).collect::<Result<_, _>>()?,
            payload,
            timeout_ms,
        }),
        Some(Target::Conn(c)) => Ok(Call::PushConn {
            node: (!c.node.is_empty()).then(|| id("node", c.node)).transpose()?,
            conn: c.conn,
            payload,
            timeout_ms,
        }),
        Some(Target::Room(r)) => Ok(Call::PushRoom {
            room: id("room", r.room)?,
            exclude: (r.exclude_conn != 0).then_some(r.exclude_conn),
            payload,
            timeout_ms,
        }),
        Some(Target::Broadcast(_)) => Ok(Call::Broadcast { payload, timeout_ms }),
    }
}

fn checked_payload(payload: Bytes, limits: &Limits) -> Result<Bytes, Problem> {
    if payload.len() > limits.payload { Err(too_large(payload.len(), limits)) } else { Ok(payload) }
}

fn too_large(len: usize, limits: &Limits) -> Problem {
    Problem::TooLarge(format!("payload of {len} bytes is over the limit of {} (session.max_frame_len)", limits.payload))
}

/// A kick's message goes into the client's Kick and Close frames: short, like a reason text.
const MAX_KICK_MESSAGE: usize = 1024;

fn kick_message(message: String) -> Result<String, Problem> {
    if message.len() > MAX_KICK_MESSAGE {
        return Err(bad(&format!("message: longer than {MAX_KICK_MESSAGE} bytes")));
    }
    Ok(message)
}

fn reason_named(name: &str) -> Result<ReasonCode, Problem> {
    (0..100u32)
        .map(ReasonCode)
        .find(|code| code.name() == Some(name))
        .ok_or_else(|| bad(&format!("reason: no reason named {name:?} (docs/protocol.md section 4)")))
}

fn json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|e| bad(&format!("malformed JSON: {e}")))
}

fn proto<T: Message + Default>(body: &[u8]) -> Result<T, Problem> {
    T::decode(body).map_err(|e| bad(&format!("malformed protobuf: {e}")))
}

fn required<T>(field: &str, value: Option<T>) -> Result<T, Problem> {
    value.ok_or_else(|| bad(&format!("missing field: {field}")))
}

/// An id field: not empty, at most [`MAX_ID_LEN`] bytes.
fn id(field: &str, value: String) -> Result<String, Problem> {
    if value.is_empty() {
        return Err(bad(&format!("{field}: must not be empty")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(bad(&format!("{field}: longer than {MAX_ID_LEN} bytes")));
    }
    Ok(value)
}

fn bad(message: &str) -> Problem {
    Problem::Bad(message.to_owned())
}

#[derive(Serialize)]
struct NodeJson<'a> {
    node: &'a str,
    count: u32,
}

#[derive(Serialize)]
struct OutcomeJson<'a> {
    delivered: u32,
    offline: bool,
    nodes: Vec<NodeJson<'a>>,
    unanswered: &'a [String],
}

fn nodes_json(outcome: &Outcome) -> Vec<NodeJson<'_>> {
    outcome.nodes.iter().map(|(node, count)| NodeJson { node, count: *count }).collect()
}

fn nodes_pb(outcome: &Outcome) -> Vec<pb::NodeCount> {
    outcome.nodes.iter().map(|(node, count)| pb::NodeCount { node: node.clone(), count: *count }).collect()
}

/// A call's outcome as a 200 answer.
pub fn outcome(format: Format, outcome: &Outcome) -> Response {
    match format {
        Format::Json => json_ok(&OutcomeJson {
            delivered: outcome.delivered,
            offline: outcome.offline,
            nodes: nodes_json(outcome),
            unanswered: &outcome.unanswered,
        }),
        Format::Protobuf => proto_ok(&pb::Outcome {
            delivered: outcome.delivered,
            offline: outcome.offline,
            nodes: nodes_pb(outcome),
            unanswered: outcome.unanswered.clone(),
        }),
    }
}

#[derive(Serialize)]
struct BatchItemJson<'a> {
    #[serde(flatten)]
    outcome: Option<OutcomeJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered_here: Option<u32>,
}

#[derive(Serialize)]
struct BatchJsonOut<'a> {
    results: Vec<BatchItemJson<'a>>,
}

/// A batch's outcomes, in the order of its pushes, as a 200 answer (a push that needed
/// Redis while it was down carries `error` and `delivered_here` instead).
pub fn batch_outcomes(format: Format, results: &[Result<Outcome, Unavailable>]) -> Response {
    match format {
        Format::Json => json_ok(&BatchJsonOut {
            results: results
                .iter()
                .map(|r| match r {
                    Ok(o) => BatchItemJson {
                        outcome: Some(OutcomeJson {
                            delivered: o.delivered,
                            offline: o.offline,
                            nodes: nodes_json(o),
                            unanswered: &o.unanswered,
                        }),
                        error: None,
                        delivered_here: None,
                    },
                    Err(u) => {
                        BatchItemJson { outcome: None, error: Some(&u.error), delivered_here: Some(u.here.delivered) }
                    }
                })
                .collect(),
        }),
        Format::Protobuf => proto_ok(&pb::PushBatchReply {
            results: results
                .iter()
                .map(|r| match r {
                    Ok(o) => pb::Outcome {
                        delivered: o.delivered,
                        offline: o.offline,
                        nodes: nodes_pb(o),
                        unanswered: o.unanswered.clone(),
                    },
                    Err(u) => pb::Outcome {
                        delivered: u.here.delivered,
                        unanswered: vec![u.error.clone()],
                        ..Default::default()
                    },
                })
                .collect(),
        }),
    }
}

#[derive(Serialize)]
struct SessionJson<'a> {
    device: &'a str,
    platform: &'a str,
    node: &'a str,
    conn: u64,
    since_ms: u64,
}

#[derive(Serialize)]
struct PresenceJson<'a> {
    user: &'a str,
    online: bool,
    devices: Vec<&'a str>,
    platforms: Vec<&'a str>,
    nodes: Vec<&'a str>,
    sessions: Vec<SessionJson<'a>>,
}

/// A user's presence as a 200 answer.
pub fn presence(format: Format, user: &str, sessions: &[Session]) -> Response {
    match format {
        Format::Json => {
            let distinct = |f: fn(&Session) -> &str| {
                let mut v: Vec<&str> = sessions.iter().map(f).collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            json_ok(&PresenceJson {
                user,
                online: !sessions.is_empty(),
                devices: distinct(|s| &s.device),
                platforms: distinct(|s| &s.platform),
                nodes: distinct(|s| &s.node),
                sessions: sessions
                    .iter()
                    .map(|s| SessionJson {
                        device: &s.device,
                        platform: &s.platform,
                        node: &s.node,
                        conn: s.conn,
                        since_ms: s.since_ms,
                    })
                    .collect(),
            })
        }
        Format::Protobuf => proto_ok(&pb::Presence {
            user: user.to_owned(),
            sessions: sessions
                .iter()
                .map(|s| pb::Session {
                    device: s.device.clone(),
                    platform: s.platform.clone(),
                    node: s.node.clone(),
                    conn: s.conn,
                    since_ms: s.since_ms,
                })
                .collect(),
        }),
    }
}

#[derive(Serialize)]
struct RoomJson<'a> {
    room: &'a str,
    members: u32,
    nodes: Vec<NodeJson<'a>>,
    unanswered: &'a [String],
}

/// A room's member counts as a 200 answer.
pub fn room(format: Format, room: &str, outcome: &Outcome) -> Response {
    match format {
        Format::Json => json_ok(&RoomJson {
            room,
            members: outcome.delivered,
            nodes: nodes_json(outcome),
            unanswered: &outcome.unanswered,
        }),
        Format::Protobuf => proto_ok(&pb::RoomInfo {
            room: room.to_owned(),
            members: outcome.delivered,
            nodes: nodes_pb(outcome),
            unanswered: outcome.unanswered.clone(),
        }),
    }
}

#[derive(Serialize)]
struct ProblemJson<'a> {
    error: &'a str,
    /// With 503: what this node delivered by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered_here: Option<u32>,
}

/// A problem's status and JSON body.
pub fn problem_json(problem: &Problem) -> (u16, String) {
    let (status, error, here) = match problem {
        Problem::Unauthorized => (401, "missing or wrong API key (Authorization: Bearer KEY)", None),
        Problem::NotFound(m) => (404, m.as_str(), None),
        Problem::Method(m) => (405, m.as_str(), None),
        Problem::Bad(m) => (400, m.as_str(), None),
        Problem::TooLarge(m) => (413, m.as_str(), None),
        Problem::Unavailable(u) => (503, u.error.as_str(), Some(u.here.delivered)),
    };
    let body = serde_json::to_string(&ProblemJson { error, delivered_here: here }).unwrap_or_default();
    (status, body)
}

fn json_ok(value: &impl Serialize) -> Response {
    respond(200, "application/json", serde_json::to_vec(value).unwrap_or_default())
}

fn proto_ok(message: &impl Message) -> Response {
    respond(200, "application/x-protobuf", message.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::for_frame_len(1024)
    }

    fn push(body: &str) -> Result<Call, Problem> {
        parse(Route::Push, Format::Json, body.as_bytes(), &limits())
    }

    fn message(result: Result<Call, Problem>) -> String {
        match result {
            Err(p) => problem_json(&p).1,
            Ok(call) => panic!("accepted: {call:?}"),
        }
    }

    #[test]
    fn push_bodies_become_calls() {
        assert_eq!(
            push(r#"{"user":"alice","platforms":["ios"],"payload":"aGk="}"#).unwrap(),
            Call::PushUser {
                user: "alice".into(),
                devices: vec![],
                platforms: vec!["ios".into()],
                payload: Bytes::from_static(b"hi"),
                timeout_ms: None
            }
        );
        assert!(matches!(push(r#"{"room":"r","payload":""}"#), Ok(Call::PushRoom { .. })));
        assert!(matches!(push(r#"{"broadcast":true,"payload":"aGk="}"#), Ok(Call::Broadcast { .. })));
        assert!(matches!(push(r#"{"node":"b","conn":7,"payload":"aGk="}"#), Ok(Call::PushConn { .. })));
        let batch = |b: &str| parse(Route::PushBatch, Format::Json, b.as_bytes(), &limits());
        let two = batch(r#"{"pushes":[{"user":"a","payload":""},{"room":"r","payload":""}]}"#).unwrap();
        assert!(matches!(two, Call::Batch(ref calls) if calls.len() == 2), "{two:?}");
        assert!(
            message(batch(r#"{"pushes":[{"user":"a","payload":""},{"user":"a"}]}"#))
                .contains("pushes[1]: missing field: payload")
        );
        assert!(message(batch(r#"{"pushes":[]}"#)).contains("give 1 to 1000"));
    }

    #[test]
    fn bad_push_bodies_name_what_is_wrong() {
        assert!(message(push(r#"{"user":"alice"}"#)).contains("missing field: payload"));
        assert!(message(push(r#"{"payload":"aGk="}"#)).contains("none given"));
        assert!(message(push(r#"{"user":"a","room":"r","payload":"aGk="}"#)).contains("several given"));
        assert!(message(push(r#"{"user":"a","payload":"!!"}"#)).contains("payload: not base64"));
        assert!(message(push(r#"{"usr":"a","payload":""}"#)).contains("unknown field `usr`"));
        assert!(message(push(r#"{"user":"#)).contains("malformed JSON"));
        assert!(message(push(r#"{"user":"","payload":""}"#)).contains("user: must not be empty"));
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; limits().payload + 1]);
        let result = push(&format!(r#"{{"user":"a","payload":"{big}"}}"#));
        assert_eq!(problem_json(&result.unwrap_err()).0, 413);
        let fits = base64::engine::general_purpose::STANDARD.encode(vec![0u8; limits().payload]);
        assert!(push(&format!(r#"{{"user":"a","payload":"{fits}"}}"#)).is_ok());
    }

    #[test]
    fn routes_and_methods() {
        let get = hyper::Method::GET;
        let post = hyper::Method::POST;
        assert_eq!(route(&post, "/v1/rooms/lobby%201/join").unwrap(), Route::Join("lobby 1".into()));
        assert_eq!(route(&get, "/v1/rooms/lobby").unwrap(), Route::Room("lobby".into()));
        assert_eq!(route(&get, "/v1/presence/alice").unwrap(), Route::Presence("alice".into()));
        assert!(matches!(route(&get, "/v1/push"), Err(Problem::Method(_))));
        assert!(matches!(route(&get, "/v2/push"), Err(Problem::NotFound(_))));
    }

    #[test]
    fn kick_reasons_by_name_or_code() {
        let kick = |b: &str| parse(Route::Kick, Format::Json, b.as_bytes(), &limits());
        assert!(matches!(kick(r#"{"user":"a"}"#), Ok(Call::Kick { reason: ReasonCode::KICKED, .. })));
        assert!(matches!(
            kick(r#"{"user":"a","reason":"replaced"}"#),
            Ok(Call::Kick { reason: ReasonCode::REPLACED, .. })
        ));
        assert!(message(kick(r#"{"user":"a","reason":"nope"}"#)).contains("no reason named"));
    }
}
