"""A TCP relay in front of a real broker that holds back chosen messages to its clients.

Clustered brokers (Aedes over Redis) can deliver a retained message after later ones, such as a
client's own sync echo; Mosquitto and amqtt never do. This relay reproduces that order on
either broker: it passes every byte through, except that PUBLISH packets from the broker that
``hold`` picks are kept back until :meth:`HoldingRelay.release` (and acknowledged to the broker
meanwhile, as a client that got them would). It reads MQTT's fixed header and the PUBLISH
header only; the broker stays the real one.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

_PUBLISH = 3
_PUBACK = 4


@dataclass(frozen=True, slots=True)
class Relayed:
    """A PUBLISH the relay passed to a client."""

    topic: str
    payload: bytes
    retain: bool


Hold = Callable[[Relayed], bool]


def _split(buffer: bytearray) -> bytes | None:
    """Take one whole MQTT packet off the front of ``buffer``, or None if it is not all here."""
    length = 0
    for i in range(1, 5):
        if i >= len(buffer):
            return None
        length |= (buffer[i] & 0x7F) << (7 * (i - 1))
        if not buffer[i] & 0x80:
            end = i + 1 + length
            if len(buffer) < end:
                return None
            packet = bytes(buffer[:end])
            del buffer[:end]
            return packet
    raise ValueError("malformed MQTT remaining length")


def _body(packet: bytes) -> int:
    """Where the variable header starts, after the fixed header."""
    start = 1
    while packet[start] & 0x80:
        start += 1
    return start + 1


def _publish_of(packet: bytes) -> tuple[Relayed, int | None] | None:
    """The message in a PUBLISH packet, and its packet id (None at QoS 0)."""
    if packet[0] >> 4 != _PUBLISH:
        return None
    start = _body(packet)
    topic_end = start + 2 + int.from_bytes(packet[start : start + 2], "big")
    packet_id = None
    payload_start = topic_end
    if (packet[0] >> 1) & 0x03:
        packet_id = int.from_bytes(packet[topic_end : topic_end + 2], "big")
        payload_start += 2
    message = Relayed(
        packet[start + 2 : topic_end].decode("utf-8", "replace"),
        packet[payload_start:],
        bool(packet[0] & 0x01),
    )
    return message, packet_id


def _puback(packet_id: int) -> bytes:
    return bytes([_PUBACK << 4, 2]) + packet_id.to_bytes(2, "big")


class _Connection:
    def __init__(self, relay: HoldingRelay, client: socket.socket, upstream: socket.socket):
        self.relay = relay
        self.client = client
        self.upstream = upstream
        self.send_lock = threading.Lock()
        self.upstream_lock = threading.Lock()
        self.acknowledged: set[bytes] = set()
        """PUBACKs the relay sent for held messages; the client's own are dropped."""
        self.threads = [
            threading.Thread(target=self._to_broker, daemon=True),
            threading.Thread(target=self._to_client, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _to_broker(self) -> None:
        buffer = bytearray()
        with contextlib.suppress(OSError):
            while data := self.client.recv(65536):
                buffer += data
                while (packet := _split(buffer)) is not None:
                    if packet[0] >> 4 == _PUBACK and packet in self.acknowledged:
                        self.acknowledged.discard(packet)  # the broker has had it already
                        continue
                    self.send_upstream(packet)
        self.close()

    def send_upstream(self, packet: bytes) -> None:
        with self.upstream_lock, contextlib.suppress(OSError):
            self.upstream.sendall(packet)

    def _to_client(self) -> None:
        buffer = bytearray()
        with contextlib.suppress(OSError):
            while data := self.upstream.recv(65536):
                buffer += data
                while (packet := _split(buffer)) is not None:
                    self.relay.pass_on(self, packet)
        self.close()

    def send(self, packet: bytes) -> None:
        with self.send_lock, contextlib.suppress(OSError):
            self.client.sendall(packet)

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def join(self) -> None:
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join(5)
        self.client.close()
        self.upstream.close()


class HoldingRelay:
    """Listens on a free loopback port and relays to ``broker_port``; see the module's text."""

    def __init__(self, broker_port: int, hold: Hold) -> None:
        self.broker_port = broker_port
        self.hold = hold
        self.holding = True
        self.relayed: list[Relayed] = []
        """Every PUBLISH passed to a client, in the order it was passed."""
        self.changed = threading.Condition()
        self._held: list[tuple[_Connection, bytes, Relayed]] = []
        self._connections: list[_Connection] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._server.accept()
                upstream = socket.create_connection(("127.0.0.1", self.broker_port))
                for sock in (client, upstream):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self.changed:
                    self._connections.append(_Connection(self, client, upstream))

    def pass_on(self, connection: _Connection, packet: bytes) -> None:
        publish = _publish_of(packet)
        message = None if publish is None else publish[0]
        with self.changed:
            if publish is not None and self.holding and self.hold(publish[0]):
                self._held.append((connection, packet, publish[0]))
                self.changed.notify_all()
                held_id = publish[1]
            else:
                held_id = -1
        if held_id == -1:
            self._deliver(connection, packet, message)
        elif held_id is not None:
            # Acknowledge it now, for the client: a broker may stop delivering to a client
            # (amqtt does) while a QoS 1 message to it is unacknowledged.
            ack = _puback(held_id)
            connection.acknowledged.add(ack)
            connection.send_upstream(ack)

    def _deliver(self, connection: _Connection, packet: bytes, message: Relayed | None) -> None:
        connection.send(packet)
        if message is not None:
            with self.changed:
                self.relayed.append(message)
                self.changed.notify_all()

    @property
    def held(self) -> list[Relayed]:
        with self.changed:
            return [message for _c, _p, message in self._held]

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate`` (about :attr:`relayed` or :attr:`held`) is true."""
        with self.changed:
            if not self.changed.wait_for(predicate, timeout):
                raise AssertionError(f"timed out after {timeout} s; relayed {self.relayed}")

    def release(self) -> None:
        """Pass on everything held, in the order it came, and hold nothing from now on."""
        with self.changed:
            self.holding = False
            held, self._held = self._held, []
        for connection, packet, message in held:
            self._deliver(connection, packet, message)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._server.close()
        self._accepting.join(5)
        with self.changed:
            connections = list(self._connections)
        for connection in connections:
            connection.close()
        for connection in connections:
            connection.join()
