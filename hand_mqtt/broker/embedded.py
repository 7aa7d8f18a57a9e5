"""The only module that imports amqtt: the embedded, zero-setup broker.

amqtt is asyncio-based and must be built inside a running loop, so :class:`EmbeddedBroker` runs
its own event loop on a background thread; the rest of hand-mqtt talks to it over TCP like to any
other broker. Its retained messages live in memory: they are gone when it stops.

By default anyone may connect and do anything, which suits one machine on a trusted network.
Given Mosquitto's password file and ACL file (see ``hand_mqtt.accounts``) it checks users and
topic rights the way Mosquitto does, with two plugins of ours: one checks passwords, the other
checks every publish and every delivery (retained messages too) against the ACL; like Mosquitto
it accepts any subscription. Wills, client ids and resource limits are handled as Mosquitto does
too (see ``_broker_class`` and :class:`BrokerLimits`).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import math
import resource
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hand_mqtt.accounts import read_password_file, verify_password
from hand_mqtt.broker.acl import READ, WRITE, AccessRules
from hand_mqtt.errors import BrokerStartError, ConfigError

__all__ = ["BrokerLimits", "EmbeddedBroker"]

logger = logging.getLogger("hand_mqtt")

# amqtt logs every connection and packet at INFO; keep our own log readable.
for _name in ("amqtt", "transitions", "websockets"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class _QuietProbes(logging.Filter):
    """Drops amqtt's ERROR for a connection that closes before sending a packet: port probes
    and health checks do exactly that. Also its traceback when it cannot start: we raise
    :class:`BrokerStartError` with one sentence instead (the cause kept, for ``-v``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # Refused or broken connections: hand-mqtt logs them itself, once and plainly. A start
        # that fails: BrokerStartError says it in one sentence (the cause kept, for -v).
        return not any(
            noise in message
            for noise in (
                "No data from",
                "No data to decode",
                "Failed to initialize client",
                "Broker startup failed",
            )
        )


for _name in ("amqtt.broker", "amqtt.mqtt.protocol.handler"):
    logging.getLogger(_name).addFilter(_QuietProbes())


_PLUGINS = __name__


@functools.cache
def _plugin_classes() -> dict[str, type]:
    """Our amqtt plugins, made on first use so that importing hand_mqtt does not load amqtt."""
    from amqtt.contexts import Action
    from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

    class PasswordFilePlugin(BaseAuthPlugin):  # type: ignore[misc]
        """Checks user names and passwords against a Mosquitto password file."""

        @dataclass
        class Config:
            password_file: str = ""
            allow_anonymous: bool = False

        def __init__(self, context: Any) -> None:
            super().__init__(context)
            self._users = read_password_file(Path(self.config.password_file))

        async def authenticate(self, *, session: Any) -> bool:
            username = getattr(session, "username", None)
            if not username:
                return bool(self.config.allow_anonymous)
            hashed = self._users.get(username)
            if hashed is None:
                logger.info("embedded broker: refused unknown user %r", username)
                return False
            password = getattr(session, "password", None) or ""
            # PBKDF2 takes milliseconds: keep the broker's loop free meanwhile.
            ok = await asyncio.to_thread(verify_password, password, hashed)
            if not ok:
                logger.info("embedded broker: refused a wrong password for %r", username)
            return ok

    class AclFilePlugin(BaseTopicPlugin):  # type: ignore[misc]
        """Checks publish, delivery and subscription against a Mosquitto ACL file."""

        @dataclass
        class Config:
            acl_file: str = ""

        def __init__(self, context: Any) -> None:
            super().__init__(context)
            self._rules = AccessRules.from_file(Path(self.config.acl_file))

        async def topic_filtering(
            self, *, session: Any = None, topic: str | None = None, action: Any = None
        ) -> bool:
            if session is None or not topic:
                return False
            username = getattr(session, "username", None) or None
            client_id = getattr(session, "client_id", None) or ""
            if action == Action.PUBLISH:
                allowed = self._rules.allowed(username, client_id, topic, WRITE)
                if not allowed:
                    logger.info("embedded broker: %r may not publish to %s", username, topic)
                return allowed
            if action == Action.RECEIVE:
                return self._rules.allowed(username, client_id, topic, READ)
            # Like Mosquitto: any subscription, and each message it brings checked on its way
            # (the retained ones too, see HandBroker).
            return bool(action == Action.SUBSCRIBE)

    return {"PasswordFilePlugin": PasswordFilePlugin, "AclFilePlugin": AclFilePlugin}


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    """What one client may cost the embedded broker (Mosquitto has settings for each).

    A connection that breaks a limit is closed; its will, if it may publish it, is published.
    """

    connect_timeout: float = 10.0
    """Seconds a new connection has to send a complete CONNECT."""
    max_connections: int = 1000
    """Open connections at once, counting those that have not sent CONNECT yet; more are closed
    at once. Never more than the process's file descriptor limit allows (less a reserve)."""
    max_packet_size: int = 65536
    """Bytes in one MQTT packet, header included, like Mosquitto's ``max_packet_size`` in the
    shipped configuration. A bigger packet is refused from its header, before its body is read."""
    max_queued_messages: int = 10_000
    """Live messages waiting to be written to one client (each costs the broker about 5 kB).
    A client this far behind is not reading: it is disconnected, rather than kept while its
    backlog fills the broker's memory. A client that reads, even a busy one taking a burst of
    10,000 commands, stays far below (about 130 measured)."""

    def connections_allowed(self) -> int:
        """``max_connections``, lowered to what the file descriptor limit leaves room for."""
        try:
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        except (OSError, ValueError):  # pragma: no cover - every POSIX system has it
            return self.max_connections
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - _RESERVED_DESCRIPTORS))


# Descriptors kept for everything but client connections: listeners, files, the serial port,
# the services' own MQTT clients when they share the process (hand-mqtt up).
_RESERVED_DESCRIPTORS: Final = 64


class PacketTooLargeError(ConnectionError):
    """A client announced a packet above the limit: the connection is closed unread."""


class _PacketSizeGuard:
    """Follows MQTT's framing through the bytes amqtt reads, and stops a packet whose header
    announces more than ``limit`` bytes before amqtt asks for its body.

    amqtt reads each packet exactly: the fixed header byte by byte, then the body in pieces of
    known size, so the bytes handed out here are the packets, in order.
    """

    def __init__(self, inner: Any, limit: int) -> None:
        self._inner = inner
        self._limit = limit
        self._body_left = 0
        self._header: bytearray | None = None  # None: the next byte starts a packet

    async def read(self, n: int = -1) -> bytes:
        data: bytes = await self._inner.read(n)
        self._account(data)
        return data

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def _account(self, data: bytes) -> None:
        position = 0
        while position < len(data):
            if self._body_left:
                used = min(self._body_left, len(data) - position)
                self._body_left -= used
                position += used
                continue
            byte = data[position]
            position += 1
            if self._header is None:
                self._header = bytearray([byte])
                continue
            self._header.append(byte)
            if byte & 0x80 and len(self._header) < 5:
                continue
            length = 0
            for shift, encoded in enumerate(self._header[1:]):
                length |= (encoded & 0x7F) << (7 * shift)
            size = len(self._header) + length
            self._header = None
            if size > self._limit:
                raise PacketTooLargeError(
                    f"a packet of {size} bytes (at most {self._limit} are accepted)"
                )
            self._body_left = length


def _abort(writer: Any) -> None:
    """Close a client's connection now, without waiting to write what is queued for it (a
    client that does not read would make a polite close wait forever)."""
    stream = getattr(writer, "_writer", None) or getattr(writer, "_protocol", None)
    transport = getattr(stream, "transport", None)
    if transport is not None:
        transport.abort()


def _valid_topic_name(topic: str | None) -> bool:
    """A topic one may publish to: not empty, no wildcard, not a ``$`` topic."""
    if not topic:
        return False
    return "+" not in topic and "#" not in topic and not topic.startswith("$")


_AUTHENTICATED: Final = "hand_mqtt.authenticated"


class _SubscriptionTable(dict[str, list[Any]]):
    """amqtt's table of subscriptions (filter → sessions), walked over a copy.

    amqtt awaits the ACL inside its loops over this table; a subscription made or dropped
    meanwhile changed it under the loop, which then stopped ("dictionary changed size during
    iteration") and a message was lost for every subscriber.
    """

    def items(self) -> list[tuple[str, list[Any]]]:  # type: ignore[override]
        return [(key, list(value)) for key, value in super().items()]

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))


@functools.cache
def _broker_class() -> type:
    """amqtt's Broker, with what hand-mqtt relies on and amqtt 0.12 does not do by itself.

    - Retained messages go to a client only for its own subscriptions, and only those it may
      read. amqtt 0.12 replays, to every client that connects, the retained messages matching
      *every* subscription any client holds, and never asks the ACL about retained messages: a
      client with no rights would read the hand's state.
    - A login is checked before anything happens to an existing session with the same client
      id. amqtt 0.12 deletes that session (or hands it the newcomer's credentials) first, so a
      refused login left the service that held the id connected but deaf.
    - A client that takes over a client id with a valid login closes the old connection, as
      MQTT and Mosquitto do (amqtt 0.12 left it open and deaf).
    - A will is published only if its topic passes the same check as a PUBLISH, as Mosquitto
      does. amqtt 0.12 published any will: a viewer's will could forge the hand's state.
    - :class:`BrokerLimits`: CONNECT timeout, connection limit, packet size limit, a bound on
      what waits to be written to one client, and the keep-alive (amqtt 0.12 never closes a
      silent connection).
    - Every connection's socket is closed when the connection ends (amqtt 0.12 left the socket
      of a client that vanished to the garbage collector).
    - Broadcasts walk a copy of the subscriptions: amqtt 0.12 walks the live table while it
      awaits the ACL, and a subscription made meanwhile made it drop the message.
    - Shutting down closes the listeners and every client's connection first. amqtt 0.12 then
      waits for each connection's reader to stop; a read cancelled on Python 3.11 can lose its
      cancellation (``asyncio.wait_for``), and shutdown waited for a client that never wrote
      again: :meth:`EmbeddedBroker.stop` gave up after 10 s and left the port taken.
    """
    from amqtt.broker import Broker
    from amqtt.contexts import Action
    from amqtt.errors import AMQTTError, NoDataError
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
    from amqtt.utils import gen_client_id

    class HandHandler(BrokerProtocolHandler):  # type: ignore[misc]
        """One client connection: bounded backlog, keep-alive enforced."""

        limits = BrokerLimits()
        queued = 0
        gave_up = False

        def handle_read_timeout(self) -> None:
            # amqtt waits 1.5 times the keep-alive for a packet (set when connecting), then
            # calls this and carries on waiting; MQTT says the connection is then closed.
            if not self.gave_up:
                self.gave_up = True
                logger.info("embedded broker: %s went silent; disconnecting", self._client())
                _abort(self.writer)

        async def mqtt_publish(
            self,
            topic: str,
            data: bytes | bytearray,
            qos: int | None,
            retain: bool,
            ack_timeout: int | None = None,
        ) -> Any:
            if self.gave_up:
                return None
            if retain:
                # Retained messages for a new subscription: as many as there are retained
                # topics, sent once; only the live flow can grow without end.
                return await super().mqtt_publish(topic, data, qos, retain, ack_timeout)
            if self.queued >= self.limits.max_queued_messages:
                self.gave_up = True
                logger.warning(
                    "embedded broker: %s is %d messages behind (not reading?); disconnecting",
                    self._client(),
                    self.queued,
                )
                _abort(self.writer)
                return None
            self.queued += 1
            try:
                return await super().mqtt_publish(topic, data, qos, retain, ack_timeout)
            finally:
                self.queued -= 1

        def _client(self) -> str:
            session = self.session
            return repr(session.client_id) if session is not None else "a client"

    class HandBroker(Broker):  # type: ignore[misc]
        limits = BrokerLimits()
        connections = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._subscriptions = _SubscriptionTable()
            self._writers: set[Any] = set()

        async def shutdown(self) -> None:
            for server in self._servers.values():
                if server.instance is not None:
                    server.instance.close()  # no new connection while the old ones go
            for writer in list(self._writers):
                _abort(writer)  # their readers see the end of the stream and stop
            await super().shutdown()

        async def _client_connected(self, listener_name: str, reader: Any, writer: Any) -> None:
            if self.connections >= self.limits.connections_allowed():
                logger.warning(
                    "embedded broker: %d connections open; refusing another", self.connections
                )
                _abort(writer)
                return
            self.connections += 1
            self._writers.add(writer)
            try:
                guarded = _PacketSizeGuard(reader, self.limits.max_packet_size)
                await super()._client_connected(listener_name, guarded, writer)
            finally:
                self.connections -= 1
                self._writers.discard(writer)
                # amqtt closes a connection by draining it first; when the client is already
                # gone the drain fails and the socket was left to the garbage collector.
                _abort(writer)

        async def _initialize_client_session(
            self, reader: Any, writer: Any, remote_address: str, remote_port: int
        ) -> tuple[Any, Any]:
            where = f"{remote_address}:{remote_port}"
            try:
                handler, incoming = await asyncio.wait_for(
                    HandHandler.init_from_connect(reader, writer, self.plugins_manager),
                    self.limits.connect_timeout,
                )
            except TimeoutError:
                logger.info("embedded broker: no CONNECT from %s in time; disconnecting", where)
                _abort(writer)
                raise AMQTTError("no CONNECT in time") from None
            except NoDataError:  # closed before a whole CONNECT: port probes, health checks
                _abort(writer)
                raise
            except Exception as exc:  # any broken CONNECT: amqtt raises several kinds
                logger.info("embedded broker: no valid CONNECT from %s (%s)", where, exc)
                _abort(writer)
                raise AMQTTError("no valid CONNECT") from None
            handler.limits = self.limits
            # The login first: until it is accepted, nothing may change for another client.
            if not await super()._authenticate(incoming, None):
                handler.attach(incoming, reader, writer)
                await handler.mqtt_connack_authorize(False)
                _abort(writer)
                raise AMQTTError("login refused")
            incoming.attributes[_AUTHENTICATED] = True
            session = incoming
            if incoming.clean_session:
                if incoming.client_id:
                    await self._take_over(incoming.client_id)
                else:
                    incoming.client_id = gen_client_id()
                incoming.parent = 0
            elif incoming.client_id in self._sessions:
                # A persistent session continues, with this connection's will and login; if it
                # is connected elsewhere amqtt closes that connection next.
                session = self._sessions[incoming.client_id][0]
                for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain"):
                    setattr(session, name, getattr(incoming, name))
                session.keep_alive = incoming.keep_alive
                session.username = incoming.username
                session.password = incoming.password
                session.attributes[_AUTHENTICATED] = True
                session.parent = 1
            else:
                incoming.parent = 0
            if session.keep_alive > 0:
                session.keep_alive = math.ceil(session.keep_alive * 1.5)
            return handler, session

        async def _take_over(self, client_id: str) -> None:
            """Close the connection that holds ``client_id`` and forget its session."""
            old = self._sessions.get(client_id)
            if old is not None and old[0].transitions.is_connected():
                logger.info(
                    "embedded broker: %r connected again; closing the old connection", client_id
                )
                await old[1].handle_connection_closed()
                await old[1].stop()
            await self._delete_session(client_id)

        async def _authenticate(self, session: Any, listener: Any) -> bool:
            # Checked once in _initialize_client_session, before any session changed.
            return bool(session.attributes.pop(_AUTHENTICATED, False))

        async def _handle_disconnect(
            self, client_session: Any, handler: Any, disconnect_waiter: Any
        ) -> None:
            if client_session.will_flag and not (
                _valid_topic_name(client_session.will_topic)
                and await self._topic_filtering(
                    client_session, client_session.will_topic, Action.PUBLISH
                )
            ):
                logger.info(
                    "embedded broker: dropped the will of %r: it may not publish to %r",
                    client_session.username,
                    client_session.will_topic,
                )
                client_session.will_flag = False
            await super()._handle_disconnect(client_session, handler, disconnect_waiter)

        async def _publish_retained_messages_for_subscription(
            self, subscription: tuple[str, int], session: Any
        ) -> None:
            topic_filter, qos = subscription
            holders = self._subscriptions.get(topic_filter, [])
            if not any(held.client_id == session.client_id for held, _qos in holders):
                return
            handler = self._get_handler(session)
            if handler is None:
                return
            sends = []
            for retained in list(self._retained_messages.values()):
                if not self._matches(retained.topic, topic_filter):
                    continue
                if not await self._topic_filtering(session, retained.topic, Action.RECEIVE):
                    continue
                sends.append(
                    asyncio.ensure_future(
                        handler.mqtt_publish(
                            retained.topic, retained.data, min(qos, retained.qos or qos), True
                        )
                    )
                )
            if sends:
                await asyncio.wait(sends)

    for method in (
        "_initialize_client_session",
        "_authenticate",
        "_handle_disconnect",
        "_client_connected",
        "_delete_session",
        "_publish_retained_messages_for_subscription",
    ):
        if not hasattr(Broker, method):
            logger.warning("this amqtt version is unknown to hand-mqtt: %s is missing", method)
    return HandBroker


def __getattr__(name: str) -> type:
    # amqtt loads plugins by dotted name: hand_mqtt.broker.embedded.PasswordFilePlugin and so on.
    classes = _plugin_classes() if name in ("PasswordFilePlugin", "AclFilePlugin") else {}
    if name in classes:
        return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class EmbeddedBroker:
    """An amqtt broker on ``host:port`` in a background thread.

    ``port=0`` picks a free port; :attr:`port` tells which one after :meth:`start`.

    With ``password_file`` only known users with the right password get in (unless
    ``allow_anonymous``); with ``acl_file`` every publish, delivery and subscription is checked
    against it. Both files are Mosquitto's formats, so one pair serves both brokers.
    ``websockets_port`` adds an MQTT-over-websockets listener (``ws://host:port/``).
    ``limits`` bounds what each client may cost (:class:`BrokerLimits`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        password_file: str | Path | None = None,
        acl_file: str | Path | None = None,
        allow_anonymous: bool | None = None,
        websockets_port: int | None = None,
        limits: BrokerLimits | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.password_file = Path(password_file) if password_file is not None else None
        self.acl_file = Path(acl_file) if acl_file is not None else None
        self.allow_anonymous = password_file is None if allow_anonymous is None else allow_anonymous
        self.websockets_port = websockets_port
        self.limits = limits or BrokerLimits()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._stopped: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def websockets_url(self) -> str | None:
        if self.websockets_port is None:
            return None
        return f"ws://{self.host}:{self.websockets_port}/"

    def _config(self) -> dict[str, Any]:
        listeners: dict[str, Any] = {
            "default": {"type": "tcp", "bind": f"{self.host}:{self.port}"},
        }
        if self.websockets_port is not None:
            listeners["websockets"] = {
                "type": "ws",
                "bind": f"{self.host}:{self.websockets_port}",
            }
        plugins: dict[str, Any] = {}
        if self.password_file is None:
            plugins["amqtt.plugins.authentication.AnonymousAuthPlugin"] = {
                "allow_anonymous": self.allow_anonymous
            }
        else:
            plugins[f"{_PLUGINS}.PasswordFilePlugin"] = {
                "password_file": str(self.password_file),
                "allow_anonymous": self.allow_anonymous,
            }
        if self.acl_file is not None:
            plugins[f"{_PLUGINS}.AclFilePlugin"] = {"acl_file": str(self.acl_file)}
        return {"listeners": listeners, "plugins": plugins}

    def _check_files(self) -> None:
        """Read both files once here, so that a mistake is a clear error before listening."""
        if self.password_file is not None:
            if not self.password_file.is_file():
                raise BrokerStartError(f"the password file {self.password_file} does not exist")
            try:
                if not read_password_file(self.password_file):
                    logger.warning("the password file %s has no users", self.password_file)
            except ConfigError as exc:
                raise BrokerStartError(str(exc)) from None
        if self.acl_file is not None:
            try:
                AccessRules.from_file(self.acl_file)
            except ConfigError as exc:
                raise BrokerStartError(str(exc)) from None

    def start(self, timeout: float = 10.0) -> None:
        """Start listening; raise :class:`BrokerStartError` if it cannot."""
        self._check_files()
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="hand-mqtt-broker", daemon=True
        )
        self._thread.start()
        try:
            ready.result(timeout)
        except TimeoutError:
            raise BrokerStartError("the embedded broker did not start in time") from None

    def _run(self, ready: Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        finally:
            loop.close()

    async def _serve(self, ready: Future[None]) -> None:
        from amqtt.errors import BrokerError, PluginError, PluginLoadError

        self._stopped = asyncio.Event()
        try:
            broker = _broker_class()(self._config())
            broker.limits = self.limits
            await broker.start()
        except (BrokerError, OSError, PluginError, PluginLoadError) as exc:
            cause = exc.__cause__ or exc
            error = BrokerStartError(self._start_failure(cause))
            error.__cause__ = cause
            ready.set_exception(error)
            return
        self._broker = broker
        if self.port == 0:
            server = broker._servers["default"].instance
            self.port = int(server.sockets[0].getsockname()[1])
        if self.websockets_port == 0:
            server = broker._servers["websockets"].instance
            self.websockets_port = int(next(iter(server.sockets)).getsockname()[1])
        mode = "anonymous" if self.password_file is None else "password file"
        if self.acl_file is not None:
            mode += " + ACL"
        logger.info("embedded broker listening on %s (%s)", self.url, mode)
        ready.set_result(None)
        await self._stopped.wait()
        try:
            await broker.shutdown()
        except Exception:
            logger.exception("embedded broker did not shut down cleanly")

    def _start_failure(self, cause: BaseException) -> str:
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            return (
                f"port {self.port} on {self.host} is already taken "
                "(by another broker, or a second hand-mqtt up?)"
            )
        if isinstance(cause, OSError) and cause.errno == errno.EACCES:
            return f"port {self.port} on {self.host} is reserved for root; choose one above 1023"
        if isinstance(cause, OSError) and cause.errno == errno.EADDRNOTAVAIL:
            return f"{self.host} is not an address of this machine"
        return f"cannot start the broker on {self.host}:{self.port}: {cause}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker and its thread."""
        loop, stopped, thread = self._loop, self._stopped, self._thread
        if loop is None or stopped is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(stopped.set)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
