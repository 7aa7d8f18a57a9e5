"""Helpers for the deployment tests: the shipped Mosquitto config on free ports, users, services.

``ShippedMosquitto`` runs ``broker/mosquitto.conf`` exactly as shipped except for what a test
must change: ports (loopback only), the paths of the password/ACL/cert files and of the
persistence folder. ``ServiceProcess`` runs a real ``python -m hand_mqtt ...`` in a subprocess
so that a test can kill it with SIGKILL by its own PID.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path

from hand_mqtt import BrokerUrl, Message, MqttClient, Topics
from hand_mqtt.accounts import (
    Account,
    Role,
    hash_password,
    new_password,
    render_acl,
    write_private,
)
from harness.brokers import MosquittoProcess, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONF = ROOT / "broker" / "mosquitto.conf"
SHIPPED_ACL = ROOT / "broker" / "acl"
MAKE_CERTS = ROOT / "broker" / "make-certs.sh"


def make_users(
    folder: Path, users: Mapping[str, Account | Role], base: str = "hand", iterations: int = 101
) -> dict[str, str]:
    """Write ``passwd`` and ``acl`` into ``folder``; return each user's password."""
    passwords = {name: new_password() for name in users}
    write_private(
        folder / "passwd",
        "".join(
            f"{name}:{hash_password(pw, iterations=iterations)}\n" for name, pw in passwords.items()
        ),
    )
    (folder / "acl").write_text(render_acl(users, base))
    return passwords


class ShippedMosquitto(MosquittoProcess):
    """Mosquitto running ``broker/mosquitto.conf`` with test ports and paths."""

    def __init__(
        self,
        folder: Path,
        *,
        tls: bool = False,
        port: int | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        super().__init__(port, workdir=folder, persistence=True)
        self.folder = folder
        self.ws_port = free_port()
        self.health_port = free_port()
        self.tls_port = free_port() if tls else None

    def start(self) -> None:
        super().start()
        # Mosquitto opens its listeners one after the other.
        for port in (self.ws_port, self.health_port, self.tls_port):
            if port is not None:
                wait_for_port(port)

    def config_text(self) -> str:
        return adapt_config(
            SHIPPED_CONF.read_text(),
            folder=self.folder,
            port=self.port,
            ws_port=self.ws_port,
            health_port=self.health_port,
            tls_port=self.tls_port,
        )

    def url_for(self, user: str | None, password: str | None, *, scheme: str = "mqtt") -> str:
        port = {"mqtt": self.port, "ws": self.ws_port, "mqtts": self.tls_port}[scheme]
        auth = f"{user}:{password}@" if user is not None else ""
        return f"{scheme}://{auth}127.0.0.1:{port}"


def adapt_config(
    text: str,
    *,
    folder: Path,
    port: int,
    ws_port: int,
    health_port: int,
    tls_port: int | None,
) -> str:
    """The shipped config with loopback test ports and paths under ``folder``."""
    text = text.replace("/mosquitto/config/", f"{folder}/").replace(
        "/mosquitto/data/", f"{folder}/data/"
    )
    (folder / "data").mkdir(exist_ok=True)
    text = re.sub(r"(?m)^listener 1883$", f"listener {port} 127.0.0.1", text)
    text = re.sub(r"(?m)^listener 9001$", f"listener {ws_port} 127.0.0.1", text)
    text = re.sub(r"(?m)^listener 1880 127\.0\.0\.1$", f"listener {health_port} 127.0.0.1", text)
    if tls_port is not None:
        block = re.search(r"(?ms)^#listener 8883$.*?^#acl_file [^\n]*$", text)
        assert block is not None, "the TLS block is not in the shipped config any more"
        live = re.sub(r"(?m)^#", "", block.group(0)).replace(
            "listener 8883", f"listener {tls_port} 127.0.0.1"
        )
        text = text.replace(block.group(0), live)
    if os.geteuid() == 0:
        # Started as root, Mosquitto would switch to the "mosquitto" user, which cannot read
        # the test's private files; in the container it runs as that user from the start.
        text = "user root\n" + text
    # Quicker saves so a test that restarts the broker finds everything on disk.
    return text.replace("autosave_interval 30", "autosave_interval 1")


def make_certs(folder: Path) -> Path:
    """Run the shipped certificate script; returns the folder with ca.crt and server.*."""
    subprocess.run(
        ["sh", str(MAKE_CERTS), str(folder), "localhost", "127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return folder


# -- clients -----------------------------------------------------------------------------------


class Watcher:
    """An MQTT client that keeps every message it receives (retained ones included)."""

    def __init__(self, url: str, *filters: str, ca_file: str | None = None) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self.client = MqttClient(BrokerUrl.parse(url, ca_file=ca_file), name="watcher")
        for topic_filter in filters:
            self.client.subscribe(topic_filter, self._keep)
        self.client.connect()

    def _keep(self, message: Message) -> None:
        with self._lock:
            self.messages.append(message)

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> bytes | None:
        found = self.on(topic)
        return found[-1].payload if found else None

    def payloads(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.on(topic)]

    def barrier(self, base: str = "hand", timeout: float = 10.0) -> None:
        """Wait until what the broker had queued for this watcher has arrived.

        A message to its own sync topic comes back after them: the sentinel for "nothing
        else came", instead of a sleep.
        """
        topic = Topics(base).sync(self.client.client_id)
        marker = uuid.uuid4().bytes
        back = threading.Event()

        def echo(message: Message) -> None:
            if message.payload == marker:
                back.set()

        self.client.subscribe(topic, echo, wait=timeout)
        self.client.publish(topic, marker, qos=1)
        assert back.wait(timeout), "the broker never echoed the watcher's sync message"

    def close(self) -> None:
        self.client.stop()


# -- services as subprocesses ---------------------------------------------------------------------


def service_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAND_MQTT_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class ServiceProcess:
    """``python -m hand_mqtt ARGS`` in a subprocess; output goes to a log file."""

    def __init__(self, args: list[str], log: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log
        self.env = service_env(env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hand_mqtt", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL by PID: no goodbye, the broker publishes the will."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL after 10 s); returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""


class SimulatedHandProcess(ServiceProcess):
    """``hand-mqtt simulate`` (a pty by default); :attr:`path` is what it printed."""

    def __init__(self, log: Path, *, args: list[str] | None = None) -> None:
        super().__init__(["simulate", *(args or [])], log)
        self.path = ""

    def start(self) -> SimulatedHandProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hand_mqtt", *self.args],
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.env,
                cwd=ROOT,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        assert line, f"the simulated hand printed nothing: {self.log()}"
        self.path = line
        return self

    def stop(self) -> int | None:
        process = self.process
        code = super().stop()
        if process is not None and process.stdout is not None:
            process.stdout.close()
        return code

    def kill(self) -> None:
        process = self.process
        super().kill()
        if process is not None and process.stdout is not None:
            process.stdout.close()
