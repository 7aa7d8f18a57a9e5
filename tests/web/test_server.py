"""The page's server over real HTTP: exactly the page's files, its settings, safe headers; the
vendored MQTT.js is the pinned release, with its licences."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
from collections.abc import Iterator
from importlib import resources

import pytest

from hand_mqtt import ConfigError, WebServer, WebStartError
from hand_mqtt.clients.web import MQTT_JS_SHA256, MQTT_JS_VERSION

BROKER_WS = "ws://127.0.0.1:9001/"


@pytest.fixture(scope="module")
def server() -> Iterator[WebServer]:
    with WebServer(BROKER_WS, port=0, base="lab/hands", hand="left") as running:
        yield running


def get(server: WebServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_the_page_and_its_files_are_served_with_safe_headers(server: WebServer) -> None:
    status, headers, body = get(server, "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<script src="vendor/mqtt.min.js" defer></script>' in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "connect-src 'self' ws: wss:" in csp
    assert "form-action 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Server"] == "hand-mqtt"  # no Python version
    for path, kind in [
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/vendor/mqtt.min.js", "text/javascript"),
        ("/vendor/THIRD-PARTY-NOTICES.txt", "text/plain"),
        ("/index.html", "text/html"),
        ("/?hand=right", "text/html"),
    ]:
        status, headers, body = get(server, path)
        assert status == 200, path
        assert headers["Content-Type"].startswith(kind), path
        assert int(headers["Content-Length"]) == len(body) > 0


def test_the_page_learns_where_the_broker_is(server: WebServer) -> None:
    status, headers, body = get(server, "/config.json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "broker": BROKER_WS,
        "base": "lab/hands",
        "hand": "left",
        "mqttjs": MQTT_JS_VERSION,
    }


def test_nothing_else_is_served(server: WebServer) -> None:
    for path in [
        "/server.py",
        "/../server.py",
        "/static/app.js",
        "/vendor/",
        "/vendor/../../server.py",
        "/%2e%2e/server.py",
        "/etc/passwd",
        "//etc/passwd",
        "/favicon.ico",
    ]:
        status, _headers, body = get(server, path)
        assert status == 404, path
        assert body == b"not found\n"
    status, headers, _body = get(server, "/", "POST")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    status, headers, body = get(server, "/app.js", "HEAD")
    assert status == 200
    assert body == b""
    assert int(headers["Content-Length"]) > 1000


def test_a_garbage_request_gets_an_error_and_the_server_carries_on(server: WebServer) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"\x00\xff not http at all\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert b"400" in answer
    assert b"Traceback" not in answer
    assert get(server, "/")[0] == 200


def test_the_vendored_mqtt_js_is_the_pinned_release_with_its_licences(server: WebServer) -> None:
    static = resources.files("hand_mqtt.clients.web") / "static"
    vendored = (static / "vendor" / "mqtt.min.js").read_bytes()
    assert hashlib.sha256(vendored).hexdigest() == MQTT_JS_SHA256
    assert get(server, "/vendor/mqtt.min.js")[2] == vendored
    notices = get(server, "/vendor/THIRD-PARTY-NOTICES.txt")[2].decode()
    assert f"MQTT.js {MQTT_JS_VERSION}" in notices
    assert MQTT_JS_SHA256 in notices
    for licence in ("MIT", "ISC", "Apache-2.0", "BSD-3-Clause"):
        assert f"({licence})" in notices
    for bundled in ("mqtt-packet", "readable-stream", "@jspm/core", "ieee754", "lru-cache"):
        assert f"\n{bundled} " in notices
    # The page links to the notices, and never loads anything from elsewhere.
    index = get(server, "/")[2].decode()
    assert 'href="vendor/THIRD-PARTY-NOTICES.txt"' in index
    assert "http://" not in index
    assert "https://" not in index


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:9001/", "must be ws://host:port/"),
        ("mqtt://127.0.0.1:1883", "must be ws://host:port/"),
        ("ws:///", "must be ws://host:port/"),
        ("ws://alice:secret@127.0.0.1:9001/", "must not hold a user or password"),
        ("ws://127.0.0.1:99999/", "bad port"),
    ],
)
def test_a_bad_broker_url_is_refused_with_a_sentence(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        WebServer(url)


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(WebStartError, match=f"cannot serve the web page on 127.0.0.1:{port}"):
            WebServer(BROKER_WS, port=port).start()
