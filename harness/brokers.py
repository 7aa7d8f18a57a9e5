"""Real brokers for tests and benchmarks: Mosquitto as a subprocess, amqtt in-process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Protocol

from hand_mqtt import EmbeddedBroker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on port {port}")


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )


class RunningBroker(Protocol):
    kind: str
    port: int

    @property
    def url(self) -> str: ...

    @property
    def ws_url(self) -> str:
        """MQTT over websockets, for browsers."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class MosquittoProcess:
    """Mosquitto on a free loopback port, with the settings hand-mqtt ships."""

    kind = "mosquitto"

    def __init__(
        self,
        port: int | None = None,
        *,
        extra_config: str = "",
        persistence: bool = False,
        workdir: Path | None = None,
        autosave_interval: int = 1,
        websockets_port: int | None = None,
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.port = port or free_port()
        self.websockets_port = websockets_port
        self.extra_config = extra_config
        self.persistence = persistence
        self.autosave_interval = autosave_interval
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="hand-mqtt-mosquitto-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        if self.websockets_port is None:
            raise RuntimeError("this Mosquitto has no websockets listener (pass websockets_port)")
        return f"ws://127.0.0.1:{self.websockets_port}/"

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "set_tcp_nodelay true",
            "max_queued_messages 10000",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"autosave_interval {self.autosave_interval}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            # Started as root, Mosquitto would switch to the "mosquitto" user, which cannot
            # write the test's private folder: persistence would fail ("Permission denied").
            lines.insert(0, "user root")
        if self.websockets_port is not None:
            lines += [f"listener {self.websockets_port} 127.0.0.1", "protocol websockets"]
        return "\n".join(lines) + "\n" + self.extra_config

    def start(self) -> None:
        config = self.workdir / "mosquitto.conf"
        config.write_text(self.config_text())
        self.log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [self.binary, "-c", str(config)], stdout=self.log, stderr=self.log
        )
        try:
            wait_for_port(self.port)
            if self.websockets_port is not None:
                wait_for_port(self.websockets_port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
            self.log.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
            self.log.close()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class AmqttBroker:
    """The embedded amqtt broker on a free loopback port (and websockets on ``websockets_port``).

    A port of 0 is chosen by the broker when it starts (and kept if it is started again).
    """

    kind = "amqtt"

    def __init__(self, port: int | None = None, *, websockets_port: int | None = None) -> None:
        self.port = free_port() if port is None else port
        self.websockets_port = websockets_port
        self._broker: EmbeddedBroker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        if self.websockets_port is None:
            raise RuntimeError("this broker has no websockets listener (pass websockets_port)")
        return f"ws://127.0.0.1:{self.websockets_port}/"

    def start(self) -> None:
        self._broker = EmbeddedBroker("127.0.0.1", self.port, websockets_port=self.websockets_port)
        self._broker.start()
        self.port = self._broker.port
        self.websockets_port = self._broker.websockets_port

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.stop()
            self._broker = None

    def cleanup(self) -> None:
        self.stop()


class AmqttProcess:
    """The embedded broker as ``hand-mqtt broker``, in a process of its own, on fixed ports.

    For a test that restarts its broker or gives it users and rights: it can be stopped and
    started again on the same ports, and the sockets amqtt leaves to the garbage collector stay
    in that process.
    """

    kind = "amqtt"

    def __init__(
        self,
        port: int | None = None,
        *,
        websockets_port: int | None = None,
        password_file: Path | None = None,
        acl_file: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.websockets_port = websockets_port
        self.password_file = password_file
        self.acl_file = acl_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        if self.websockets_port is None:
            raise RuntimeError("this broker has no websockets listener (pass websockets_port)")
        return f"ws://127.0.0.1:{self.websockets_port}/"

    def start(self) -> None:
        args = [sys.executable, "-m", "hand_mqtt", "broker", "--port", str(self.port)]
        if self.websockets_port is not None:
            args += ["--websockets", str(self.websockets_port)]
        if self.password_file is not None:
            args += ["--password-file", str(self.password_file)]
        if self.acl_file is not None:
            args += ["--acl-file", str(self.acl_file)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for port in (self.port, self.websockets_port):
                if port is not None:
                    wait_for_port(port, 30)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def cleanup(self) -> None:
        self.stop()
