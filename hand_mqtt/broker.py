"""The only module that imports amqtt: the embedded, zero-setup broker.

amqtt is asyncio-based and must be built inside a running loop, so :class:`EmbeddedBroker` runs
its own event loop on a background thread; the rest of hand-mqtt talks to it over TCP like to any
other broker. Its retained messages live in memory: they are gone when it stops.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from typing import Any

from .errors import BrokerStartError

__all__ = ["EmbeddedBroker"]

logger = logging.getLogger("hand_mqtt")

# amqtt logs every connection and packet at INFO; keep our own log readable.
for _name in ("amqtt", "transitions"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class EmbeddedBroker:
    """An amqtt broker on ``host:port`` in a background thread.

    ``port=0`` picks a free port; :attr:`port` tells which one after :meth:`start`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._stopped: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    def start(self, timeout: float = 10.0) -> None:
        """Start listening; raise :class:`BrokerStartError` if it cannot."""
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
        from amqtt.broker import Broker
        from amqtt.errors import BrokerError

        self._stopped = asyncio.Event()
        try:
            broker = Broker(self._config())
            await broker.start()
        except (BrokerError, OSError) as exc:
            cause = exc.__cause__ or exc
            ready.set_exception(
                BrokerStartError(f"cannot start the broker on {self.host}:{self.port}: {cause}")
            )
            return
        self._broker = broker
        if self.port == 0:
            server = broker._servers["default"].instance
            self.port = int(server.sockets[0].getsockname()[1])
        logger.info("embedded broker listening on %s", self.url)
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
