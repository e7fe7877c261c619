#!/usr/bin/env python3
"""A ringgate WebSocket client on the `websockets` library (PyPI), for gateway/tests/websocket.rs.

Usage: ws_client.py SCENARIO URL [ARGS...]; tokens come as JSON in RINGGATE_TOKENS
({"user/device": token}). Prints one line per step and exits 0 when every check held.
The client protocol is written from docs/protocol.md (ops, varints, protobuf Auth).
"""
import asyncio, json, os, ssl, sys

import websockets

TOKENS = json.loads(os.environ.get("RINGGATE_TOKENS", "{}"))
CA = os.environ.get("RINGGATE_CA")


def varint(n):
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7F) | 0x80]); n >>= 7
    return out + bytes([n])


def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]; i += 1
        value |= (b & 0x7F) << shift; shift += 7
        if b < 0x80:
            return value, i


def field(tag, wire, data):
    return varint(tag << 3 | wire) + (varint(data) if wire == 0 else varint(len(data)) + data)


def frame(op, body):
    return bytes([op]) + varint(len(body)) + body


def auth(user, device):
    token = TOKENS[f"{user}/{device}"].encode()
    return frame(0x10, field(1, 0, 1) + field(2, 2, token) + field(3, 2, user.encode()) + field(4, 2, device.encode()))


def send(seq, payload, key=None):
    key = (key or "").encode()
    return frame(0x20, varint(seq) + varint(len(key)) + key + payload)


class Conn:
    """One WebSocket carrying the client protocol: messages in, frames out of one stream."""

    def __init__(self, ws):
        self.ws, self.buf = ws, b""

    async def frame(self, timeout=5):
        while True:
            if len(self.buf) >= 2:
                length, start = read_varint(self.buf, 1)
                if len(self.buf) >= start + length:
                    op, body = self.buf[0], self.buf[start:start + length]
                    self.buf = self.buf[start + length:]
                    return op, body
            message = await asyncio.wait_for(self.ws.recv(), timeout)
            assert isinstance(message, bytes), f"text message from the gateway: {message!r}"
            self.buf += message

    async def until(self, op, timeout=5):
        while True:
            got, body = await self.frame(timeout)
            if got == op:
                return body


async def connect(url, user, device, **kw):
    kw.setdefault("subprotocols", ["ringgate.v1"])
    if url.startswith("wss:"):
        ctx = ssl.create_default_context(cafile=CA)
        # As browsers do for wss: offer HTTP/1.1 over ALPN (the gateway must accept it).
        ctx.set_alpn_protocols(["http/1.1"])
        kw["ssl"] = ctx
    ws = await websockets.connect(url, max_size=None, **kw)
    c = Conn(ws)
    await ws.send(auth(user, device))
    op, body = await c.frame()
    assert op == 0x11, f"AuthOk expected, got op {op:#x} {body.hex()}"
    return c


def step(name):
    print(f"ok {name}", flush=True)


async def basics(url):
    c = await connect(url, "alice", "web")
    assert c.ws.subprotocol == "ringgate.v1", c.ws.subprotocol
    step("auth and subprotocol")
    await c.ws.send(frame(0x01, b""))
    assert (await c.frame())[0] == 0x02
    step("ringgate ping/pong")
    pong = await c.ws.ping(b"life")
    await asyncio.wait_for(pong, 5)
    step("websocket ping/pong")
    payload = bytes(range(256)) * 160  # 40 KB
    whole = send(1, payload)
    chunks = [whole[i:i + 4096] for i in range(0, len(whole), 4096)]
    await c.ws.send(chunks)  # one message in 10 fragments
    push = await c.until(0x22)
    _, i = read_varint(push, 0)
    assert push[i:] == payload, "40 KB echo differs"
    ack = await c.until(0x21)
    assert ack == varint(1) + varint(0), ack.hex()
    step("40 KB echo over fragments")
    # Two frames in one message, and one frame split over two messages.
    both = send(2, b"two") + send(3, b"three")
    await c.ws.send(both[:5])
    await c.ws.send(both[5:])
    seen = set()
    while len(seen) < 2:
        op, body = await c.frame()
        if op == 0x21:
            seen.add(read_varint(body, 0)[0])
    step("frames cut anywhere across messages")
    await c.ws.send(frame(0x32, field(1, 0, 1)))  # Close normal
    try:
        while True:
            await c.frame()
    except websockets.ConnectionClosed as e:
        assert e.rcvd is not None and e.rcvd.code == 4001, e
    step("clean close: 4000 + normal")


async def room(url, tcp):
    host, port = tcp.rsplit(":", 1)
    c = await connect(url, "rw", "web")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(auth("rt", "tcp")); await writer.drain()
    tcp_buf = b""

    async def tcp_frame():
        nonlocal tcp_buf
        while True:
            if len(tcp_buf) >= 2:
                length, start = read_varint(tcp_buf, 1)
                if len(tcp_buf) >= start + length:
                    op, body = tcp_buf[0], tcp_buf[start:start + length]
                    tcp_buf = tcp_buf[start + length:]
                    return op, body
            tcp_buf += await asyncio.wait_for(reader.read(65536), 5)

    assert (await tcp_frame())[0] == 0x11
    await c.ws.send(send(1, b"", "join:lobby"))
    await c.until(0x21)
    writer.write(send(1, b"", "join:lobby")); await writer.drain()
    while (await tcp_frame())[0] != 0x21:
        pass
    await c.ws.send(send(2, b"hello room", "room:lobby"))
    push = await c.until(0x22)
    assert push.endswith(b"hello room")
    while True:
        op, body = await tcp_frame()
        if op == 0x22:
            assert body.endswith(b"hello room"); break
    step("room fan-out across websocket and tcp")
    writer.close()


async def kicked(url):
    first = await connect(url, "kim", "phone")
    await connect(url, "kim", "phone")
    body = await first.until(0x30)
    assert b"logged in elsewhere" in body or len(body) > 0
    try:
        while True:
            await first.frame()
    except websockets.ConnectionClosed as e:
        assert e.rcvd is not None and e.rcvd.code == 4041, e
        assert e.rcvd.reason == "replaced", e.rcvd.reason
    step("kick replaced, close 4041")


async def hold(url, seconds):
    """Logs in and waits for GoAway or a close; prints what came."""
    c = await connect(url, "gary", "web")
    print("ready", flush=True)
    try:
        while True:
            op, body = await c.frame(timeout=float(seconds))
            if op == 0x31:
                step("goaway")
            if op == 0x32:
                step(f"close frame {body.hex()}")
    except websockets.ConnectionClosed as e:
        step(f"closed {e.rcvd.code if e.rcvd else None} {e.rcvd.reason if e.rcvd else ''}")


async def refused(url, origin, subprotocols):
    try:
        await websockets.connect(url, origin=origin or None, subprotocols=subprotocols or None)
    except websockets.InvalidStatus as e:
        step(f"status {e.response.status_code}")
        return
    sys.exit("connected, expected a refusal")


async def main():
    scenario, url, *rest = sys.argv[1:]
    if scenario == "basics":
        await basics(url)
    elif scenario == "room":
        await room(url, rest[0])
    elif scenario == "kicked":
        await kicked(url)
    elif scenario == "hold":
        await hold(url, rest[0])
    elif scenario == "refused":
        await refused(url, rest[0], rest[1:])
    else:
        sys.exit(f"unknown scenario {scenario}")


asyncio.run(main())
