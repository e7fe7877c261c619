#!/usr/bin/env python3
"""A ringgate client in plain Python, written from docs/protocol.md alone.

Usage: hello.py HOST:PORT TOKEN USER DEVICE [MESSAGE]
Authenticates, sends MESSAGE (no route key: the embedded backend echoes it), prints the Push
and the Ack, and exits 0 when both arrived.
"""
import socket, sys

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
        if b < 0x80: return value, i

def field(tag, wire, data):  # protobuf: key = (tag << 3) | wire type
    return varint(tag << 3 | wire) + (varint(data) if wire == 0 else varint(len(data)) + data)

def frame(op, body): return bytes([op]) + varint(len(body)) + body

def read_frame(sock, buf):
    while True:
        if len(buf) >= 2:
            length, start = read_varint(buf, 1)
            if len(buf) >= start + length:
                return buf[0], buf[start:start + length], buf[start + length:]
        chunk = sock.recv(65536)
        if not chunk: sys.exit("connection closed")
        buf += chunk

host, port = sys.argv[1].rsplit(":", 1)
token, user, device = sys.argv[2], sys.argv[3], sys.argv[4]
message = (sys.argv[5] if len(sys.argv) > 5 else "hello ringgate").encode()
sock = socket.create_connection((host, int(port)))
auth = field(1, 0, 1) + field(2, 2, token.encode()) + field(3, 2, user.encode()) + field(4, 2, device.encode())
sock.sendall(frame(0x10, auth))                                  # Auth, protocol version 1
op, body, buf = read_frame(sock, b"")
if op != 0x11: sys.exit(f"auth failed: op 0x{op:02x} body {body.hex()}")
print("authenticated")
sock.sendall(frame(0x20, varint(1) + varint(0) + message))      # Send seq 1, no route key
got_push = got_ack = False
while not (got_push and got_ack):
    op, body, buf = read_frame(sock, buf)
    if op == 0x22:                                               # Push: seq, payload
        seq, i = read_varint(body, 0); print(f"push {seq}: {body[i:].decode()}"); got_push = body[i:] == message
    elif op == 0x21:                                             # Ack: seq, code
        seq, i = read_varint(body, 0); code, _ = read_varint(body, i); print(f"ack {seq}: code {code}"); got_ack = code == 0
sock.sendall(frame(0x32, field(1, 0, 1)))                        # Close, reason normal
