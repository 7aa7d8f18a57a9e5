"""The only module that imports paho-mqtt: connecting, wills, reconnecting, TCP_NODELAY.

Every service holds one :class:`MqttClient`. Handlers run on the client's network thread, so a
handler that publishes does so without a thread hop. Subscriptions are remembered and made again
on every (re)connect, and ``on_connect`` hooks run after that, so a service re-publishes its
retained topics whenever the broker comes back.

"Have my retained topics arrived?" is answered in one place, :meth:`MqttClient.when_synced` (and
its blocking form :meth:`MqttClient.wait_synced`): a message to one's own sync topic comes back
after the retained messages of the subscriptions made before it on Mosquitto and amqtt, and a
short grace covers brokers that give no such order (a cluster reading retained messages from a
shared store).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, cast
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from hand_mqtt.errors import ConfigError, MqttError

__all__ = [
    "DEFAULT_BROKER",
    "SYNC_GRACE_S",
    "BrokerUrl",
    "Message",
    "MqttClient",
    "Will",
    "redact_url",
]

logger = logging.getLogger("hand_mqtt")

DEFAULT_BROKER: Final = "mqtt://127.0.0.1:1883"
STABLE_CONNECTION_S: Final = 30.0
"""A connection that lasted this long resets the reconnect delay to its shortest."""
SYNC_GRACE_S: Final = 0.25
"""How long after our own sync message a retained message may still come (see ``when_synced``)."""
FAILOVER_AFTER_S: Final = 1.0
"""A connection to one broker of a list that lasted this long, once lost, is followed at once by
a try of each other broker; a shorter one waits like any reconnect (no storm of hops)."""
_DEFAULT_PORTS: Final = {
    "mqtt": 1883,
    "tcp": 1883,
    "mqtts": 8883,
    "ssl": 8883,
    "ws": 80,
    "wss": 443,
}


def _redact_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # The host part ends at the first '/', '?' or '#'; the user part at its last '@'.
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" not in authority:
        return url
    userinfo, host = authority.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    masked = f"{user}:***" if ":" in userinfo else user
    return f"{scheme}{sep}{masked}@{host}{tail}"


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``.

    Works on any text that looks like a URL or a comma-separated list of them, valid or not,
    so error messages can show it. A comma written into a password (which a list cannot hold:
    it must be ``%2C``) hides the whole of that login.
    """
    parts = url.split(",")
    shown = []
    for i, part in enumerate(parts):
        continued = i + 1 < len(parts) and "://" not in parts[i + 1] and "@" in parts[i + 1]
        if continued and "://" in part:
            # "mqtt://user:pass,word@host": the next part holds the rest of this password.
            scheme, _, rest = part.partition("://")
            shown.append(f"{scheme}://{rest.split(':', 1)[0]}:***")
        elif "://" not in part and "@" in part and i > 0:
            shown.append("***@" + part.rsplit("@", 1)[1])
        else:
            shown.append(_redact_one(part))
    return ",".join(shown)


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where the broker is and how to log in: ``mqtt[s]://[user[:password]@]host[:port]``.

    ``ws://`` and ``wss://`` reach a websockets listener (path from the URL, default ``/``).
    A comma-separated list of URLs names several brokers (the nodes of a cluster, or a second
    broker): the first is this one, the others its :attr:`fallbacks`, tried in turn when the
    one in use does not answer or goes away.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    websockets: bool = False
    path: str = "/"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    fallbacks: tuple[BrokerUrl, ...] = ()
    """The other brokers of a list, in order, each without fallbacks of its own."""

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        insecure: bool = False,
    ) -> BrokerUrl:
        """Read a broker URL, or a comma-separated list of them; a bare ``host[:port]`` means
        ``mqtt://``. The brokers of a list share one transport (TCP or websockets) and TLS or
        not; each may have its own login. A comma in a password is written ``%2C``.

        Error messages show the URL without its password.
        """
        entries = [entry.strip() for entry in url.split(",")]
        if len(entries) == 1:
            return cls._parse_one(url, ca_file, cert_file, key_file, insecure)
        if not all(entries):
            raise ConfigError(f"the broker list {redact_url(url)!r} has an empty entry")
        brokers = []
        for number, entry in enumerate(entries, 1):
            try:
                brokers.append(cls._parse_one(entry, ca_file, cert_file, key_file, insecure))
            except ConfigError:
                # Not the entry's own message: a password cut at a comma would show in it.
                raise ConfigError(
                    f"entry {number} of the broker list {redact_url(url)!r} is not a broker "
                    "URL (a comma in a password is written %2C)"
                ) from None
        first = brokers[0]
        for other in brokers[1:]:
            if (other.tls, other.websockets) != (first.tls, first.websockets):
                raise ConfigError(
                    f"the brokers of a list must all use the same scheme: {first.scheme}:// "
                    f"and {other.scheme}:// are mixed in {redact_url(url)!r}"
                )
        return replace(first, fallbacks=tuple(brokers[1:]))

    @classmethod
    def _parse_one(
        cls,
        url: str,
        ca_file: str | None,
        cert_file: str | None,
        key_file: str | None,
        insecure: bool,
    ) -> BrokerUrl:
        if "://" not in url:
            url = "mqtt://" + url
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            reason = str(exc).replace(url, shown)
            raise ConfigError(f"broker URL {shown!r} is not valid: {reason}") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ConfigError(
                f"broker URL scheme {scheme!r} is not supported; use mqtt, mqtts, ws or wss"
            )
        if not parts.hostname:
            raise ConfigError(f"broker URL {shown!r} names no host")
        return cls(
            host=parts.hostname,
            port=port or _DEFAULT_PORTS[scheme],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=scheme in ("mqtts", "ssl", "wss") or ca_file is not None,
            websockets=scheme in ("ws", "wss"),
            path=parts.path or "/",
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            insecure=insecure,
        )

    @property
    def scheme(self) -> str:
        if self.websockets:
            return "wss" if self.tls else "ws"
        return "mqtts" if self.tls else "mqtt"

    @property
    def brokers(self) -> tuple[BrokerUrl, ...]:
        """Every broker to try, in order: this one, then its fallbacks (each on its own)."""
        return (replace(self, fallbacks=()), *self.fallbacks)

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        first = f"{self.scheme}://{user}{self.host}:{self.port}"
        return ",".join([first, *(str(other) for other in self.fallbacks)])


@dataclass(frozen=True, slots=True)
class Message:
    """A message as a handler receives it."""

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 0


@dataclass(frozen=True, slots=True)
class Will:
    """What the broker publishes for us if we vanish without saying goodbye."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


Handler = Callable[[Message], None]
Hook = Callable[[], None]

_CONNACK_SENTENCES: Final = {
    1: "the broker does not speak MQTT 3.1.1",
    2: "the broker refused the client id",
    3: "the broker is unavailable",
    4: "the broker refused the username or password",
    5: "the broker says we are not authorised",
}


_DISCONNECTING: Final = getattr(
    getattr(paho, "_ConnectionState", None), "MQTT_CS_DISCONNECTING", "unknown"
)
_CLOSE_TIMEOUT_S: Final = 0.5
_LOOP_SLEEP_S: Final = 1.2
"""Longer than paho's network thread ever sleeps (a one-second select or reconnect wait)."""


def _close_gently(sock: socket.socket, timeout: float) -> None:
    """After our DISCONNECT: half-close, and read until the broker closes its side.

    Closing a socket with unread data in it (a PUBACK, or a message still on its way) makes
    the kernel send a reset, and a reset can overtake the DISCONNECT in the broker's buffer:
    the broker then sees a lost client and publishes its will ("offline") after a clean stop.
    """
    with contextlib.suppress(OSError, ValueError):
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready or not sock.recv(65536):
                return


class _PahoClient(paho.Client):
    """paho's client, minus one wasted wake-up per message a handler publishes.

    paho wakes its own network thread (a byte through a socket pair, then an extra select())
    for every packet queued, even when the network thread itself queued it from a handler and
    will write it on its next turn anyway. At the arbiter's rate that is a tenth of its CPU.
    Everything else, and every publish from another thread, goes through paho unchanged.
    """

    network_thread: int | None = None
    connected_at: float | None = None
    """When the broker last accepted our CONNECT (monotonic clock), until we reconnect."""
    held_delay: int | None = None
    brokers: tuple[BrokerUrl, ...] = ()
    """The brokers to try, in turn: each reconnect goes to the next (see :meth:`reconnect`)."""
    current: int = 0
    untried: int = 0
    """Brokers of the list to try at once, without waiting, before the reconnect delay."""
    attempted: bool = False

    failed_attempt: Callable[[OSError], None] | None = None
    """Told why a connection attempt failed (paho itself only says that it did)."""

    def reconnect(self) -> MQTTErrorCode:
        """Connect to the next broker of the list: every reconnect follows a broker that went
        away or did not answer, and the others of a cluster serve as well."""
        if self.attempted and len(self.brokers) > 1:
            self.current = (self.current + 1) % len(self.brokers)
            self.aim(self.brokers[self.current])
        self.attempted = True
        try:
            return super().reconnect()
        except OSError as exc:
            if self.failed_attempt is not None:
                self.failed_attempt(exc)
            raise

    def aim(self, broker: BrokerUrl) -> None:
        """Make ``broker`` the one the next connection goes to (its host, port and login)."""
        self._host = broker.host
        self._port = broker.port
        if broker.username is not None:
            self.username_pw_set(broker.username, broker.password)
        else:
            self.username_pw_set(None)
        if broker.websockets:
            self.ws_set_options(path=broker.path)

    def _reconnect_wait(self) -> None:
        """paho starts again from its shortest delay after every accepted CONNECT. A connection
        that is dropped again at once (its client id taken over, a broker at a limit) would then
        come back four times a second, the broker publishing its will and the service its
        availability each time. So the delay only starts afresh after a connection that lasted.

        With a list of brokers, the loss of one that served for a while is followed at once by
        a try of each of the others; only when none answers does the delay apply.
        """
        since = self.connected_at
        if since is not None and time.monotonic() - since >= FAILOVER_AFTER_S:
            self.untried = len(self.brokers) - 1
        if self.untried > 0:
            self.untried -= 1
            return
        self.connected_at = None
        brief = since is not None and time.monotonic() - since < STABLE_CONNECTION_S
        with self._reconnect_delay_mutex:
            if brief and self._reconnect_delay is None:
                self._reconnect_delay = self.held_delay
        super()._reconnect_wait()
        with self._reconnect_delay_mutex:
            self.held_delay = self._reconnect_delay

    def write_now(self) -> None:
        """``loop_write`` for a handler on the network thread: a write that fails is left for
        the network loop to find. paho's own handling of it (``on_disconnect``) takes the lock
        that the handler's caller holds, and the thread would wait for itself forever."""
        if getattr(self, "_sock", None) is not None:
            self._packet_write()

    def release(self) -> None:
        """Close every socket now; paho otherwise leaves its wake-up pair to the collector."""
        reset = getattr(self, "_reset_sockets", None)
        if reset is not None:
            reset()

    def _sock_close(self) -> None:
        sock = getattr(self, "_sock", None)
        if isinstance(sock, socket.socket) and self._state == _DISCONNECTING:
            _close_gently(sock, _CLOSE_TIMEOUT_S)
        super()._sock_close()

    def stop_loop(self, timeout: float) -> bool:
        """paho's ``loop_stop``, woken at once and waited for at most ``timeout`` seconds.

        ``loop_stop`` neither wakes the network thread (asleep in a one-second select, or
        between reconnect attempts) nor bounds its wait. The thread is a daemon and ends by
        itself within a second; returns whether it has ended already.
        """
        thread = getattr(self, "_thread", None)
        self._thread_terminate = True
        wake = getattr(self, "_sockpairW", None)
        if wake is not None:
            with contextlib.suppress(OSError):
                wake.send(b"0")
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _packet_queue(
        self,
        command: int,
        packet: bytes | bytearray,
        mid: int,
        qos: int,
        info: paho.MQTTMessageInfo | None = None,
    ) -> MQTTErrorCode:
        queue = getattr(self, "_out_packet", None)
        if threading.get_ident() != self.network_thread or queue is None:
            return super()._packet_queue(command, packet, mid, qos, info)
        queue.append(
            {
                "command": command,
                "mid": mid,
                "qos": qos,
                "pos": 0,
                "to_process": len(packet),
                "packet": packet,
                "info": info,
            }
        )
        return MQTTErrorCode.MQTT_ERR_SUCCESS


class MqttClient:
    """A connection to the broker that survives its outages.

    Create it, :meth:`subscribe` and add hooks, then :meth:`start`. Messages are handed to the
    handlers in arrival order on one thread. An exception in a handler is logged and the
    connection carries on.
    """

    def __init__(
        self,
        url: BrokerUrl,
        *,
        client_id: str | None = None,
        will: Will | None = None,
        keepalive: int = 30,
        name: str = "client",
        max_inflight: int = 1000,
        sync_grace: float = SYNC_GRACE_S,
    ) -> None:
        self.url = url
        self.name = name
        self.sync_grace = sync_grace
        """Seconds :meth:`when_synced` waits after the echo; 0 for a broker known to keep order."""
        # 128 random bits: a client id is a capability (MQTT gives it to the newest connection
        # that claims it), so it is never guessable and never published.
        self.client_id = client_id or f"hand-mqtt-{name}-{uuid.uuid4().hex}"
        transport: Literal["tcp", "websockets"] = "websockets" if url.websockets else "tcp"
        self._paho = _PahoClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv311,
            transport=transport,
            reconnect_on_failure=True,
        )
        self._paho.brokers = url.brokers
        self._paho.untried = len(url.brokers) - 1
        self._paho.aim(url.brokers[0])
        if url.tls:
            context = ssl.create_default_context(cafile=url.ca_file)
            if url.cert_file:
                context.load_cert_chain(url.cert_file, url.key_file)
            if url.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._paho.tls_set_context(context)
        if will is not None:
            self._paho.will_set(will.topic, will.payload, will.qos, will.retain)
        # paho types the delays as int but sleeps in float seconds: a quarter second first,
        # doubling to 10 s, brings services back quickly after a broker restart.
        # paho's default of 20 unacknowledged QoS 1 messages throttles a busy service to the
        # round trip; the broker's own limits still apply.
        self._paho.max_inflight_messages_set(max_inflight)
        self._paho.reconnect_delay_set(min_delay=cast(int, 0.25), max_delay=10)
        self._keepalive = keepalive
        self._subscriptions: dict[str, int] = {}
        self._pending_subscribes: dict[int, threading.Event] = {}
        self._connect_hooks: list[Hook] = []
        self._disconnect_hooks: list[Hook] = []
        self._connected = threading.Event()
        self._failure: str | None = None
        self._attempt_error: OSError | None = None
        self._refusals = 0
        """Attempts refused in a row (nothing listening, or the broker said no)."""
        self._attempts = threading.Condition()
        self._lock = threading.Lock()
        self._started = False
        self._network_thread: int | None = None
        self._sync_serial = 0
        self._sync_requests: dict[bytes, Hook] = {}
        self._sync_timers: set[threading.Timer] = set()
        self._sync_waiters: list[Callable[[], None]] = []
        self._paho.on_connect = self._on_connect
        self._paho.on_disconnect = self._on_disconnect
        self._paho.on_subscribe = self._on_subscribe
        self._paho.on_message = self._on_unrouted
        self._paho.failed_attempt = self._on_failed_attempt

    # -- configuration -------------------------------------------------------------------

    def subscribe(
        self, topic_filter: str, handler: Handler, qos: int = 1, *, wait: float | None = None
    ) -> None:
        """Route messages matching ``topic_filter`` to ``handler``, now and after reconnects.

        With ``wait``, block until the broker acknowledged the subscription (when connected).
        """

        def route(_client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
            self._dispatch(handler, message)

        self._paho.message_callback_add(topic_filter, route)
        with self._lock:
            self._subscriptions[topic_filter] = qos
        if self._connected.is_set():
            self._subscribe_now([(topic_filter, qos)], wait)

    def unsubscribe(self, topic_filter: str) -> None:
        """Stop receiving ``topic_filter``."""
        with self._lock:
            self._subscriptions.pop(topic_filter, None)
        self._paho.message_callback_remove(topic_filter)
        if self._connected.is_set():
            self._paho.unsubscribe(topic_filter)

    def set_will(self, will: Will) -> None:
        """Set the message the broker publishes if we vanish; call before :meth:`start`."""
        self._paho.will_set(will.topic, will.payload, will.qos, will.retain)

    def on_connect(self, hook: Hook) -> None:
        """Run ``hook`` on the network thread after every (re)connect and resubscribe."""
        self._connect_hooks.append(hook)

    def on_disconnect(self, hook: Hook) -> None:
        """Run ``hook`` on the network thread when the connection is lost."""
        self._disconnect_hooks.append(hook)

    # -- knowing the retained messages have arrived ------------------------------------------

    def when_synced(self, sync_topic: str, callback: Hook) -> None:
        """Call ``callback`` on the network thread once our retained messages have arrived.

        That is: the retained messages of every subscription made before this call. A marker
        published to ``sync_topic`` (this client's own echo topic, ``Topics.sync(client_id)``)
        comes back after them on a broker that keeps order; :attr:`sync_grace` seconds later a
        second marker comes back, and then ``callback`` runs. Call it while connected (after
        :meth:`connect`, or from an :meth:`on_connect` hook); a request whose echo is lost with
        the connection is dropped, so a service asks again from its ``on_connect`` hook.
        """
        with self._lock:
            self._sync_serial += 1
            marker = f"sync {self._sync_serial}".encode()
            self._sync_requests[marker] = callback
            subscribed = sync_topic in self._subscriptions
        if not subscribed:
            wait = None if threading.get_ident() == self._network_thread else 5.0
            self.subscribe(sync_topic, self._on_sync_echo, wait=wait)
        self.publish(sync_topic, marker, qos=1)

    def wait_synced(
        self, sync_topic: str, timeout: float, *, have_all: Callable[[], bool] | None = None
    ) -> bool:
        """Block until :meth:`when_synced` calls back, or ``have_all()`` is true; False on timeout.

        ``have_all`` (called on the network thread after every message) says whether every
        retained topic the caller needs has arrived: then there is nothing left to wait for.
        """
        done = threading.Event()

        def check() -> None:
            if have_all is not None and have_all():
                done.set()

        self._sync_waiters.append(check)
        try:
            self.when_synced(sync_topic, done.set)
            check()
            return done.wait(timeout)
        finally:
            self._sync_waiters.remove(check)

    def _on_sync_echo(self, message: Message) -> None:
        with self._lock:
            callback = self._sync_requests.pop(message.payload, None)
        if callback is None:
            return
        if message.payload.startswith(b"sync ") and self.sync_grace > 0:
            grace_marker = b"grace" + message.payload[len(b"sync") :]
            with self._lock:
                self._sync_requests[grace_marker] = callback
            timer = threading.Timer(
                self.sync_grace, self._send_grace_marker, (message.topic, grace_marker)
            )
            timer.daemon = True
            self._sync_timers.add(timer)
            timer.start()
            return
        callback()

    def _send_grace_marker(self, topic: str, marker: bytes) -> None:
        self._sync_timers.discard(cast(threading.Timer, threading.current_thread()))
        with contextlib.suppress(MqttError):
            self.publish(topic, marker, qos=1)

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background; reconnects forever until :meth:`stop`."""
        if self._started:
            return
        self._started = True
        try:
            self._paho.connect_async(self.url.host, self.url.port, keepalive=self._keepalive)
            self._paho.aim(self.url.brokers[0])
        except (OSError, ValueError) as exc:
            raise MqttError(f"cannot connect to {self.url}: {exc}") from None
        self._paho.loop_start()

    def wait_connected(self, timeout: float, *, wait_for_broker: bool = True) -> None:
        """Block until connected; raise :class:`MqttError` saying why not after ``timeout``.

        With ``wait_for_broker`` false, give up at once when the broker's address refuses the
        connection (nothing listens there) or the broker refuses us (a wrong password): a
        person at a terminal learns that now, not after the timeout. A broker that does not
        answer at all still gets the whole timeout.
        """
        with self._attempts:
            self._attempts.wait_for(
                lambda: (
                    self._connected.is_set()
                    or (not wait_for_broker and self._refused() is not None)
                ),
                timeout,
            )
        if self._connected.is_set():
            return
        where = "the broker at" if not self.url.fallbacks else "any of the brokers"
        refused = self._refused()
        if refused is not None:
            raise MqttError(f"could not connect to {where} {self.url}: {refused}") from (
                self._attempt_error
            )
        reason = self._failure or (
            str(self._attempt_error) if self._attempt_error is not None else "no answer"
        )
        raise MqttError(f"could not connect to {where} {self.url}: {reason}")

    def _refused(self) -> str | None:
        # With a list, only once every broker of it has refused: the next may well answer.
        if self._refusals < len(self.url.brokers):
            return None
        if isinstance(self._attempt_error, ConnectionRefusedError):
            return "nothing is listening there (connection refused)"
        return self._failure

    def connect(self, timeout: float = 5.0, *, wait_for_broker: bool = True) -> None:
        """:meth:`start` and :meth:`wait_connected` in one call."""
        self.start()
        try:
            self.wait_connected(timeout, wait_for_broker=wait_for_broker)
        except MqttError:
            self.stop()
            raise

    def stop(self, *, timeout: float = 2.0) -> None:
        """Disconnect cleanly (no will is sent) and stop the network thread."""
        if not self._started:
            return
        self._started = False
        for timer in list(self._sync_timers):
            timer.cancel()
        deadline = time.monotonic() + timeout
        if self._connected.is_set():
            done = threading.Event()
            self._disconnect_hooks.append(done.set)
            self._paho.disconnect()
            done.wait(timeout)
        # At least the longest paho sleeps between reconnect attempts (a second).
        if self._paho.stop_loop(max(_LOOP_SLEEP_S, deadline - time.monotonic())):
            self._paho.release()
        self._connected.clear()

    def abort(self) -> None:
        """Drop the connection without a DISCONNECT, so the broker publishes our will."""
        sock = self._paho.socket()
        self._started = False
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._paho.stop_loop(_LOOP_SLEEP_S):
            self._paho.release()
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def broker(self) -> BrokerUrl:
        """The broker of :attr:`url`'s list that this client uses (or tries) now."""
        return self._paho.brokers[self._paho.current]

    # -- publishing ----------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        wait: float | None = None,
    ) -> None:
        """Publish; queued while disconnected (QoS 1) and sent on reconnect.

        With ``wait``, block until the broker acknowledged it (QoS 1) or it was written.
        """
        info = self._paho.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise MqttError(f"cannot publish to {topic!r}: {paho.error_string(info.rc)}")
        if wait is not None:
            try:
                info.wait_for_publish(wait)
            except (RuntimeError, ValueError) as exc:
                raise MqttError(f"publishing to {topic!r} failed: {exc}") from None
            if not info.is_published():
                raise MqttError(f"the broker did not acknowledge a publish to {topic!r}")

    def flush(self) -> None:
        """From a handler: write what was published so far now, not after the handler returns.

        paho writes queued packets on its next loop turn; a handler that publishes the message
        others are waiting for, then does more work, saves that turn by flushing first.
        """
        if threading.get_ident() == self._network_thread:
            self._paho.write_now()

    # -- paho callbacks ------------------------------------------------------------------

    def _subscribe_now(self, subscriptions: list[tuple[str, int]], wait: float | None) -> None:
        if not subscriptions:
            return
        result, mid = self._paho.subscribe(subscriptions)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or wait is None or mid is None:
            return
        event = self._pending_subscribes.setdefault(mid, threading.Event())
        if threading.get_ident() != self._network_thread and not event.wait(wait):
            raise MqttError("the broker did not acknowledge a subscription")

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        if reason_code.is_failure:
            value = getattr(reason_code, "value", 0)
            with self._attempts:
                self._failure = _CONNACK_SENTENCES.get(value, str(reason_code))
                self._refusals += 1
                self._attempts.notify_all()
            logger.warning("%s: broker %s refused: %s", self.name, self.broker, self._failure)
            return
        self._network_thread = self._paho.network_thread = threading.get_ident()
        self._paho.connected_at = time.monotonic()
        sock = client.socket()
        if isinstance(sock, socket.socket):
            # Without this each hop waits for the peer's delayed ACK: about 40 ms.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            subscriptions = list(self._subscriptions.items())
        self._subscribe_now(subscriptions, None)
        with self._attempts:
            self._failure = None
            self._attempt_error = None
            self._refusals = 0
            self._connected.set()
            self._attempts.notify_all()
        logger.info("%s: connected to %s", self.name, self.broker)
        for hook in list(self._connect_hooks):
            self._run_hook(hook)

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason_code: Any,
        _properties: Any,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and self._started:
            logger.warning("%s: lost the broker (%s); reconnecting", self.name, reason_code)
        for hook in list(self._disconnect_hooks):
            self._run_hook(hook)

    def _on_subscribe(
        self, _client: paho.Client, _userdata: Any, mid: int, _codes: Any, _properties: Any
    ) -> None:
        self._pending_subscribes.setdefault(mid, threading.Event()).set()
        # Forget old acknowledgements so the table stays small.
        if len(self._pending_subscribes) > 64:
            for old in sorted(self._pending_subscribes)[:32]:
                self._pending_subscribes.pop(old, None)

    def _on_failed_attempt(self, error: OSError) -> None:
        with self._attempts:
            self._attempt_error = error
            if isinstance(error, ConnectionRefusedError):
                self._refusals += 1
            self._attempts.notify_all()
        logger.debug("%s: cannot reach %s: %s", self.name, self.broker, error)

    def _on_unrouted(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        logger.debug("%s: no handler for %s", self.name, message.topic)

    def _dispatch(self, handler: Handler, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            logger.warning("%s: dropped a message whose topic is not UTF-8", self.name)
            return
        try:
            handler(Message(topic, bytes(message.payload), bool(message.retain), message.qos))
        except Exception:
            logger.exception("%s: handler for %s failed; carrying on", self.name, topic)
        if self._sync_waiters:
            for check in list(self._sync_waiters):
                check()

    def _run_hook(self, hook: Hook) -> None:
        try:
            hook()
        except Exception:
            logger.exception("%s: connection hook failed; carrying on", self.name)
