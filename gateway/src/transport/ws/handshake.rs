//! The server side of the WebSocket opening handshake (RFC 6455 §4.2), sans-IO: request
//! bytes in, the upgrade response or a refusal out. The HTTP/1.1 request is parsed with
//! `httparse`, the accept key computed with `sha1` and `base64`; nothing here reads a socket.
//!
//! # Contract
//!
//! [`parse`] takes everything received so far:
//! - `Ok(None)`: the request head is not complete; read more (the caller bounds the wait by
//!   the auth deadline, and the size by [`MAX_REQUEST`]);
//! - `Ok(Some(Upgrade))`: a valid upgrade; write `response`, then bytes from `consumed` on
//!   are WebSocket frames;
//! - `Err(Refusal)`: write [`Refusal::response`] and close.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha1::{Digest, Sha1};

/// The subprotocol a ringgate WebSocket speaks.
pub const SUBPROTOCOL: &str = "ringgate.v1";

/// The most bytes a request head may take.
pub const MAX_REQUEST: usize = 8 * 1024;

/// What a full node answers a WebSocket client before its handshake.
pub const OVERLOADED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 25\r\nConnection: close\r\n\r\nserver_overloaded (full)\n";

/// What a WebSocket client from an address over its limits gets (the Close reason's name in
/// the body, as for the others).
pub const TOO_MANY: &[u8] =
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 30\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many from this address :(\n";

/// Most header lines a request may have.
const MAX_HEADERS: usize = 32;

/// RFC 6455's GUID, appended to the client's key for the accept value.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the handshake checks requests against: `[ws]`.
pub use crate::config::WsRules as Rules;

/// Why a request was refused; each has its HTTP status and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not an HTTP/1.1 GET, or a header is malformed or missing (`Sec-WebSocket-Key`).
    BadRequest,
    /// The request head is larger than [`MAX_REQUEST`].
    TooLarge,
    /// Not the configured path.
    WrongPath,
    /// A plain HTTP request: no `Upgrade: websocket`, or not version 13.
    NoUpgrade,
    /// `Origin` is not in `allowed_origins`.
    BadOrigin,
    /// Subprotocols were offered, none of them `ringgate.v1`.
    BadSubprotocol,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::BadRequest,
        Refusal::TooLarge,
        Refusal::WrongPath,
        Refusal::NoUpgrade,
        Refusal::BadOrigin,
        Refusal::BadSubprotocol,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad_request",
            Refusal::TooLarge => "request_too_large",
            Refusal::WrongPath => "wrong_path",
            Refusal::NoUpgrade => "no_upgrade",
            Refusal::BadOrigin => "bad_origin",
            Refusal::BadSubprotocol => "bad_subprotocol",
        }
    }

    fn status(self) -> (u16, &'static str, &'static str) {
        match self {
            Refusal::BadRequest => (400, "Bad Request", "not a valid WebSocket upgrade request\n"),
            Refusal::TooLarge => (431, "Request Header Fields Too Large", "request head over 8 KiB\n"),
            Refusal::WrongPath => (404, "Not Found", "no WebSocket endpoint at this path\n"),
            Refusal::NoUpgrade => (426, "Upgrade Required", "this is a WebSocket endpoint (ringgate.v1)\n"),
            Refusal::BadOrigin => (403, "Forbidden", "origin not allowed\n"),
            Refusal::BadSubprotocol => (400, "Bad Request", "subprotocol ringgate.v1 required\n"),
        }
    }

    /// The HTTP response that says so, closing the connection.
    pub fn response(self) -> Vec<u8> {
        let (code, reason, body) = self.status();
        let upgrade =
            if self == Refusal::NoUpgrade { "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" } else { "" };
        format!(
            "HTTP/1.1 {code} {reason}\r\n{upgrade}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// A valid upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The 101 response to write.
    pub response: Vec<u8>,
    /// Bytes of the input the request head took; what follows is WebSocket frames.
    pub consumed: usize,
    /// The client offered `ringgate.v1` (and it was selected).
    pub subprotocol: bool,
    /// The client's address by `X-Forwarded-For`: its right-most entry that is not one of
    /// the trusted proxies (what a chain of them appended; entries left of it could be
    /// anything the client wrote). Used only when the connection came from a trusted proxy.
    pub forwarded_for: Option<std::net::IpAddr>,
}

/// Parses the request head in `input`; see the module docs for the contract.
pub fn parse(input: &[u8], rules: &Rules, trusted: &[ipnet::IpNet]) -> Result<Option<Upgrade>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() > MAX_REQUEST => return Err(Refusal::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::BadRequest),
    };
    if consumed > MAX_REQUEST {
        return Err(Refusal::TooLarge);
    }
    if request.method != Some("GET") || request.version != Some(1) {
        return Err(Refusal::BadRequest);
    }
    let path = request.path.unwrap_or_default();
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path != rules.path {
        return Err(Refusal::WrongPath);
    }
    let headers: &[httparse::Header<'_>] = request.headers;
    let header = |name: &'static str| headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name));
    let has_token = |name: &'static str, token: &str| {
        header(name).any(|h| {
            std::str::from_utf8(h.value).is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token("upgrade", "websocket")
        || !has_token("connection", "upgrade")
        || !has_token("sec-websocket-version", "13")
    {
        return Err(Refusal::NoUpgrade);
    }
    let key = header("sec-websocket-key").next().map(|h| h.value.trim_ascii()).ok_or(Refusal::BadRequest)?;
    if B64.decode(key).map_or(true, |k| k.len() != 16) {
        return Err(Refusal::BadRequest);
    }
    if !rules.allowed_origins.is_empty() {
        let origin = header("origin").next().and_then(|h| std::str::from_utf8(h.value).ok());
        // A request without Origin is not from a browser page; the check is for pages.
        if origin.is_some_and(|o| !rules.allowed_origins.iter().any(|a| a.eq_ignore_ascii_case(o.trim()))) {
            return Err(Refusal::BadOrigin);
        }
    }
    let offered = header("sec-websocket-protocol").count() > 0;
    let subprotocol = has_token("sec-websocket-protocol", SUBPROTOCOL);
    if offered && !subprotocol {
        return Err(Refusal::BadSubprotocol);
    }
    let forwarded_for = if trusted.is_empty() { None } else { forwarded_for(header("x-forwarded-for"), trusted) };
    Ok(Some(Upgrade { response: switching(key, subprotocol), consumed, subprotocol, forwarded_for }))
}

/// The right-most `X-Forwarded-For` address (over every such header, in order) that is not a
/// trusted proxy. The bytes are split on commas before any of them is read as text, so an
/// entry the client wrote cannot hide the ones proxies appended after it. When the right-most
/// untrusted entry is not an address (`unknown`, garbage), [`UNKNOWN_CLIENT`]: such clients
/// share one address's limits rather than escape them. `None` only without the header (or
/// when every entry is a trusted proxy).
fn forwarded_for<'h>(
    headers: impl Iterator<Item = &'h httparse::Header<'h>>,
    trusted: &[ipnet::IpNet],
) -> Option<std::net::IpAddr> {
    let entries: Vec<&[u8]> = headers.flat_map(|h| h.value.split(|&b| b == b',')).map(<[u8]>::trim_ascii).collect();
    let parse = |entry: &[u8]| -> Option<std::net::IpAddr> {
        let entry = std::str::from_utf8(entry).ok()?;
        entry
            .parse()
            .ok()
            .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
            .map(|ip: std::net::IpAddr| ip.to_canonical())
    };
    for entry in entries.iter().rev() {
        let Some(ip) = parse(entry) else { return Some(UNKNOWN_CLIENT) };
        if !trusted.iter().any(|net| net.contains(&ip)) {
            return Some(ip);
        }
    }
    None
}

/// The address clients behind a trusted proxy count under when their `X-Forwarded-For`
/// entry is not an address (`::`, which no client has).
pub const UNKNOWN_CLIENT: std::net::IpAddr = std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

/// The accept value for a client key (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    B64.encode(sha.finalize())
}

fn switching(key: &[u8], subprotocol: bool) -> Vec<u8> {
    let protocol = if subprotocol { format!("Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n") } else { String::new() };
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{protocol}\r\n",
        accept_key(key)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules { path: "/ws".into(), allowed_origins: vec!["https://app.example".into()] }
    }

    const REQUEST: &str = "GET /ws?x=1 HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Protocol: chat, ringgate.v1\r\nOrigin: https://app.example\r\n\r\n";

    #[test]
    fn accepts_the_rfc_example_and_selects_the_subprotocol() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let mut input = REQUEST.as_bytes().to_vec();
        input.extend_from_slice(&[0x82, 0x80]);
        let up = parse(&input, &rules(), &[]).unwrap().unwrap();
        assert_eq!(up.consumed, REQUEST.len());
        assert!(up.subprotocol);
        let text = String::from_utf8(up.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{text}");
        assert!(text.contains("Sec-WebSocket-Protocol: ringgate.v1\r\n"), "{text}");
    }

    #[test]
    fn waits_for_the_whole_head_fed_byte_by_byte() {
        for end in 0..REQUEST.len() {
            assert_eq!(parse(&REQUEST.as_bytes()[..end], &rules(), &[]), Ok(None), "at {end}");
        }
    }

    #[test]
    fn refuses_each_kind_with_its_status() {
        let cases = [
            (REQUEST.replace("/ws?x=1", "/other"), Refusal::WrongPath, "404"),
            (REQUEST.replace("https://app.example", "https://evil.example"), Refusal::BadOrigin, "403"),
            (REQUEST.replace("chat, ringgate.v1", "chat"), Refusal::BadSubprotocol, "400"),
            (REQUEST.replace("Upgrade: websocket\r\n", ""), Refusal::NoUpgrade, "426"),
            (REQUEST.replace("Version: 13", "Version: 8"), Refusal::NoUpgrade, "426"),
            (REQUEST.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), Refusal::BadRequest, "400"),
            (REQUEST.replace("GET", "POST"), Refusal::BadRequest, "400"),
            (format!("GET /ws HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_REQUEST)), Refusal::TooLarge, "431"),
            ("\x16\x03\x01 binary".to_string(), Refusal::BadRequest, "400"),
        ];
        for (request, refusal, status) in cases {
            assert_eq!(parse(request.as_bytes(), &rules(), &[]), Err(refusal), "{request:?}");
            let response = String::from_utf8(refusal.response()).unwrap();
            assert!(response.starts_with(&format!("HTTP/1.1 {status} ")), "{response}");
        }
    }

    #[test]
    fn no_subprotocol_offer_and_no_origin_are_accepted() {
        let bare = REQUEST
            .replace("Sec-WebSocket-Protocol: chat, ringgate.v1\r\n", "")
            .replace("Origin: https://app.example\r\n", "");
        let up = parse(bare.as_bytes(), &rules(), &[]).unwrap().unwrap();
        assert!(!up.subprotocol);
        assert!(!String::from_utf8(up.response).unwrap().contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn forwarded_for_is_the_rightmost_address_past_the_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "192.0.2.1/32".parse().unwrap()];
        let with = |xff: &[&str]| {
            let extra: String = xff.iter().map(|v| format!("X-Forwarded-For: {v}\r\n")).collect();
            let request = REQUEST.replacen("Host: gw\r\n", &format!("Host: gw\r\n{extra}"), 1);
            parse(request.as_bytes(), &rules(), &trusted).unwrap().unwrap().forwarded_for
        };
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        assert_eq!(with(&["203.0.113.5"]), ip("203.0.113.5"));
        // The client wrote the first entry itself; a chain of trusted proxies appended the rest.
        assert_eq!(with(&["6.6.6.6, 203.0.113.5, 10.1.2.3"]), ip("203.0.113.5"));
        assert_eq!(with(&["6.6.6.6", "203.0.113.5:4711, 192.0.2.1"]), ip("203.0.113.5"));
        assert_eq!(with(&["[2001:db8::5]:443"]), ip("2001:db8::5"));
        assert_eq!(with(&["unknown"]), Some(UNKNOWN_CLIENT), "not an address: counted, not let through");
        assert_eq!(with(&["203.0.113.5, garbage"]), Some(UNKNOWN_CLIENT));
        assert_eq!(with(&["10.0.0.9"]), None);
        // A client's non-text bytes, in the header nginx appends to, hide nothing after them.
        let request = REQUEST.replacen("Host: gw\r\n", "Host: gw\r\nX-Forwarded-For: \u{7f}junk, 203.0.113.7\r\n", 1);
        let mut bytes = request.into_bytes();
        let at = bytes.iter().position(|&b| b == 0x7f).unwrap();
        bytes[at] = 0xff;
        let got = parse(&bytes, &rules(), &trusted).unwrap().unwrap().forwarded_for;
        assert_eq!(got, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(with(&[]), None);
        // Nobody trusted: the header is not even read.
        let request = REQUEST.replacen("Host: gw\r\n", "Host: gw\r\nX-Forwarded-For: 203.0.113.5\r\n", 1);
        assert_eq!(parse(request.as_bytes(), &rules(), &[]).unwrap().unwrap().forwarded_for, None);
    }
}
