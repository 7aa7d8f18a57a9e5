"""Serves the browser page: a handful of static files and the page's settings.

The page talks MQTT over websockets straight to the broker; this server only hands out the
files and tells the page where the broker is (``/config.json``). It never sees a password: the
login form keeps the user name and password in the browser tab and gives them to the broker.

Only a fixed list of files is served, each read once at start; anything else is a 404.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Final
from urllib.parse import urljoin, urlsplit

from hand_mqtt.errors import ConfigError, WebStartError
from hand_mqtt.topics import Topics, validate_hand_name

__all__ = ["MQTT_JS_SHA256", "MQTT_JS_VERSION", "WebServer", "check_broker_ws", "page_problem"]

logger = logging.getLogger("hand_mqtt")

MQTT_JS_VERSION: Final = "5.16.0"
"""The vendored MQTT.js (``npm pack mqtt@5.16.0``, its ``dist/mqtt.min.js``)."""
MQTT_JS_SHA256: Final = "f3cbeae580d3010048938ee370f2db0c15d16e6f7fc147cb32ae5510e571b387"

_STATIC: Final = "static"
_FILES: Final[dict[str, tuple[str, str]]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/vendor/mqtt.min.js": ("vendor/mqtt.min.js", "text/javascript; charset=utf-8"),
    "/vendor/THIRD-PARTY-NOTICES.txt": (
        "vendor/THIRD-PARTY-NOTICES.txt",
        "text/plain; charset=utf-8",
    ),
}

# The page loads only its own files and talks only to websockets. MQTT.js keeps its timers in
# a worker made from a blob (so that a background tab's keep-alive is not throttled), hence
# worker-src blob:. form-action 'none': even without JavaScript the login form posts nothing.
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; worker-src blob:; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def check_broker_ws(url: str) -> str:
    """Return ``url`` if a browser can open it as an MQTT websocket, else raise ConfigError.

    A comma-separated list names brokers to fail over to, in order (see docs/deployment.md):
    each entry is checked, and the page tries them in turn.
    """
    entries = [entry.strip() for entry in url.split(",")]
    if len(entries) > 1:
        return ",".join(check_broker_ws(entry) for entry in entries)
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError(
            f"the broker's websocket URL must be ws://host:port/ or wss://…, not {url!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "the broker's websocket URL must not hold a user or password: "
            "people sign in on the page"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(f"bad port in {url!r}") from None
    return url


def page_problem(url: str, timeout: float = 5.0) -> str | None:
    """What is wrong with the page served at ``url`` (http://...), or None when it is served.

    It is served when its settings (``config.json``) come back and name a broker: the health
    check of ``hand-mqtt health web``.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        return f"{url!r} is not an http:// or https:// address"
    settings = urljoin(url if url.endswith("/") else url + "/", "config.json")
    try:
        with urllib.request.urlopen(settings, timeout=timeout) as answer:  # noqa: S310 - http(s)
            config = json.loads(answer.read(65536))
    except urllib.error.HTTPError as exc:
        return f"{settings} answered {exc.code} {exc.reason}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return f"no page at {url}: {reason}"
    if not isinstance(config, dict) or not isinstance(config.get("broker"), str):
        return f"{url} does not serve the hand-mqtt page"
    return None


@dataclass(frozen=True, slots=True)
class _Site:
    files: dict[str, tuple[bytes, str]]
    config: bytes


def _load_site(broker_ws: str, base: str, hand: str) -> _Site:
    folder = resources.files(__package__ or "hand_mqtt.clients.web") / _STATIC
    files: dict[str, tuple[bytes, str]] = {}
    for path, (name, content_type) in _FILES.items():
        resource = folder.joinpath(*name.split("/"))
        try:
            files[path] = (resource.read_bytes(), content_type)
        except OSError as exc:
            raise WebStartError(
                f"the page's file {name} is missing from the package: {exc}"
            ) from None
    config = {"broker": broker_ws, "base": base, "hand": hand, "mqttjs": MQTT_JS_VERSION}
    return _Site(files, json.dumps(config).encode())


class _Handler(BaseHTTPRequestHandler):
    server_version = "hand-mqtt"
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a client may stay silent; keeps idle connections from piling up
    site: _Site

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/config.json":
            body, content_type = self.site.config, "application/json"
        elif path in self.site.files:
            body, content_type = self.site.files[path]
        else:
            body, content_type = b"not found\n", "text/plain; charset=utf-8"
            self._send(HTTPStatus.NOT_FOUND, body, content_type, with_body)
            return
        self._send(HTTPStatus.OK, body, content_type, with_body)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, with_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def _refuse(self) -> None:
        body = b"only GET and HEAD\n"
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("web: %s %s", self.address_string(), format % args)


class WebServer:
    """Serves the page on ``http://host:port/``; ``port=0`` picks a free port.

    ``broker_ws`` is the broker's MQTT-over-websockets URL as the *browser* must reach it. A
    host of ``0.0.0.0`` in it means "the host the page was loaded from", for a broker that
    listens next to this server on every interface.
    """

    def __init__(
        self,
        broker_ws: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        base: str = "hand",
        hand: str = "hand1",
    ) -> None:
        self.broker_ws = check_broker_ws(broker_ws)
        self.host = host
        self.port = port
        self.base = Topics(base).base
        self.hand = validate_hand_name(hand)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Listen and serve in a background thread; raise WebStartError if the port is taken."""
        site = _load_site(self.broker_ws, self.base, self.hand)
        handler = type("Handler", (_Handler,), {"site": site})
        try:
            server = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            raise WebStartError(
                f"cannot serve the web page on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="hand-mqtt-web"
        )
        self._thread.daemon = True
        self._thread.start()
        logger.info("web page on %s (broker %s)", self.url, self.broker_ws)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        # shutdown() waits for serve_forever to look at its flag, which it does only between
        # polls; a connection of our own wakes it at once instead of after the poll interval.
        stopping = threading.Thread(target=server.shutdown, name="hand-mqtt-web-stop")
        stopping.start()
        while stopping.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection(self._wake_address(server), timeout=0.2).close()
            stopping.join(0.01)
        server.server_close()
        if thread is not None:
            thread.join(5)

    @staticmethod
    def _wake_address(server: ThreadingHTTPServer) -> tuple[str, int]:
        host, port = server.server_address[:2]
        if host in ("0.0.0.0", "::", ""):  # listening everywhere: loopback reaches it
            host = "::1" if server.address_family == socket.AF_INET6 else "127.0.0.1"
        return str(host), int(port)

    def __enter__(self) -> WebServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
