"""MQTT 3.1.1 packets by hand, on a plain socket: for what a well-behaved client never sends
(a will it may not publish, a stolen client id, a header announcing 32 MiB, silence)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

CONNACK_ACCEPTED = 0


def string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(data)) + data


def remaining_length(length: int) -> bytes:
    encoded = bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(encoded)


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + remaining_length(len(body)) + body


@dataclass(frozen=True)
class RawWill:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


def connect_packet(
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    will: RawWill | None = None,
    keepalive: int = 60,
    clean: bool = True,
) -> bytes:
    flags = 0x02 if clean else 0
    payload = string(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += string(will.topic) + string(will.payload)
    if username is not None:
        flags |= 0x80
        payload += string(username)
    if password is not None:
        flags |= 0x40
        payload += string(password)
    header = string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    return packet(0x10, header + payload)


def publish_packet(topic: str, payload: bytes, *, retain: bool = False) -> bytes:
    return packet(0x30 | (0x01 if retain else 0), string(topic) + payload)


def subscribe_packet(packet_id: int, topic_filter: str, qos: int = 0) -> bytes:
    return packet(0x82, struct.pack("!H", packet_id) + string(topic_filter) + bytes([qos]))


class RawClient:
    """One TCP connection speaking just enough MQTT to misbehave on purpose."""

    def __init__(self, port: int, *, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data

    def connect(self, client_id: str, **options: object) -> int:
        """Send CONNECT; return the CONNACK's return code."""
        self.send(connect_packet(client_id, **options))  # type: ignore[arg-type]
        header = self.read_exactly(2)
        assert header[0] == 0x20, f"expected CONNACK, got {header!r}"
        return self.read_exactly(header[1])[1]

    def closed_by_broker(self) -> bool:
        """Read until the broker closes the connection (True) or the socket times out (False).

        Whatever the broker sent before closing is read and thrown away.
        """
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
