"""The only module that imports amqtt: the embedded, zero-setup broker.

amqtt is asyncio-based and must be built inside a running loop, so :class:`EmbeddedBroker` runs
its own event loop on a background thread; the rest of hand-mqtt talks to it over TCP like to any
other broker. Its retained messages live in memory: they are gone when it stops.

By default anyone may connect and do anything, which suits one machine on a trusted network.
Given Mosquitto's password file and ACL file (see ``hand_mqtt.accounts``) it checks users and
topic rights the way Mosquitto does, with two plugins of ours: one checks passwords, the other
checks every publish, every delivery and every subscription against the ACL.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hand_mqtt.accounts import read_password_file, verify_password
from hand_mqtt.broker.acl import READ, WRITE, AccessRules
from hand_mqtt.errors import BrokerStartError, ConfigError

__all__ = ["EmbeddedBroker"]

logger = logging.getLogger("hand_mqtt")

# amqtt logs every connection and packet at INFO; keep our own log readable.
for _name in ("amqtt", "transitions", "websockets"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class _QuietProbes(logging.Filter):
    """Drops amqtt's ERROR for a connection that closes before sending a packet: port probes
    and health checks do exactly that."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "No data from" not in message and "No data to decode" not in message


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
            if action == Action.SUBSCRIBE:
                # amqtt sends retained messages on subscription without asking us, so a
                # subscription must stay within what the client may read.
                allowed = self._rules.may_subscribe(username, client_id, topic)
                if not allowed:
                    logger.info("embedded broker: %r may not subscribe to %s", username, topic)
                return allowed
            return False

    return {"PasswordFilePlugin": PasswordFilePlugin, "AclFilePlugin": AclFilePlugin}


@functools.cache
def _broker_class() -> type:
    """amqtt's Broker, minus a leak of retained messages to clients that did not ask for them.

    amqtt 0.12 replays, to every client that connects, the retained messages matching *every*
    subscription any client holds, without asking the ACL: a client with no rights would read
    the hand's state. A client gets retained messages here only for its own subscriptions.
    """
    from amqtt.broker import Broker

    class HandBroker(Broker):  # type: ignore[misc]
        async def _publish_retained_messages_for_subscription(
            self, subscription: tuple[str, int], session: Any
        ) -> None:
            holders = self._subscriptions.get(subscription[0], [])
            if not any(held.client_id == session.client_id for held, _qos in holders):
                return
            await super()._publish_retained_messages_for_subscription(subscription, session)

    if not hasattr(Broker, "_publish_retained_messages_for_subscription"):
        logger.warning("this amqtt version is unknown to hand-mqtt: retained messages unchecked")
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
    ) -> None:
        self.host = host
        self.port = port
        self.password_file = Path(password_file) if password_file is not None else None
        self.acl_file = Path(acl_file) if acl_file is not None else None
        self.allow_anonymous = password_file is None if allow_anonymous is None else allow_anonymous
        self.websockets_port = websockets_port
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
            await broker.start()
        except (BrokerError, OSError, PluginError, PluginLoadError) as exc:
            cause = exc.__cause__ or exc
            ready.set_exception(
                BrokerStartError(f"cannot start the broker on {self.host}:{self.port}: {cause}")
            )
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
