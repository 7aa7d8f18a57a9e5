"""A clustered broker for tests and benchmarks: Aedes nodes sharing one Redis.

Redis carries the messages between the nodes and keeps the retained messages, sessions and
wills, so a client may connect to any node. Each node is a Node.js process running
``tests/cluster/aedes/node.mjs``; the packages it needs are pinned in the package.json beside
it and installed by ``make test`` (``npm ci``). Debian's ``redis-server`` runs as a plain
process on a free port with nothing saved to disk.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness.brokers import free_port, wait_for_port

AEDES_DIR = Path(__file__).resolve().parent.parent / "tests" / "cluster" / "aedes"
LAUNCHER = AEDES_DIR / "node.mjs"
NODE_MAJOR_NEEDED = 20


def node_binary() -> str | None:
    return shutil.which("node")


def node_major() -> int | None:
    node = node_binary()
    if node is None:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    found = re.match(r"v(\d+)\.", out.stdout.strip())
    return int(found.group(1)) if found else None


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


def missing_parts() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    if redis_binary() is None:
        return "redis-server is not installed (apt-get install redis-server)"
    major = node_major()
    if major is None:
        return "node is not installed"
    if major < NODE_MAJOR_NEEDED:
        return f"aedes needs Node.js {NODE_MAJOR_NEEDED} or newer; this is {major}"
    if not (AEDES_DIR / "node_modules" / "aedes").is_dir():
        return f"the cluster's packages are not installed (cd {AEDES_DIR} && npm ci)"
    return None


def _stop(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """redis-server on a free loopback port, keeping nothing on disk."""

    def __init__(self, workdir: Path) -> None:
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=self.log,
            stderr=self.log,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None
            self.log.close()


class AedesNode:
    """One node of the cluster; a broker like the others to the tests (``url``, ``kill``)."""

    kind = "aedes"

    def __init__(self, redis_port: int, name: str, workdir: Path, heartbeat_ms: int) -> None:
        self.redis_port = redis_port
        self.name = name
        self.workdir = workdir
        self.heartbeat_ms = heartbeat_ms
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the node (on the port it had before, after a kill or stop)."""
        node = node_binary()
        if node is None:
            raise RuntimeError("node is not installed")
        self.log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                node,
                str(LAUNCHER),
                "--redis",
                str(self.redis_port),
                "--port",
                str(self.port),
                "--id",
                self.name,
                "--heartbeat",
                str(self.heartbeat_ms),
            ],
            cwd=AEDES_DIR,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, left))
            chunk = os.read(self.process.stdout.fileno(), 256) if ready else b""
            if not chunk:
                self.kill()
                log = (self.workdir / f"{self.name}.log").read_text(errors="replace")
                raise RuntimeError(f"aedes node {self.name} did not start:\n{log[-2000:]}")
            line += chunk
        found = re.match(rb"listening (\d+)", line)
        assert found, line
        self.port = int(found.group(1))

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self._closed()

    def kill(self) -> None:
        """SIGKILL: the node crashes; its clients' sockets close at once."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()
            self._closed()

    def _closed(self) -> None:
        assert self.process is not None
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None
        self.log.close()


class AedesCluster:
    """``nodes`` Aedes nodes on one Redis; ``urls`` lists them for a client's failover."""

    kind = "aedes"

    def __init__(self, nodes: int = 3, *, heartbeat_ms: int = 500) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="hand-mqtt-cluster-"))
        self.redis = RedisServer(self.workdir)
        self.nodes = [
            AedesNode(self.redis.port, f"node{chr(ord('a') + i)}", self.workdir, heartbeat_ms)
            for i in range(nodes)
        ]

    def start(self) -> None:
        self.redis.start()
        try:
            for node in self.nodes:
                node.start()
        except Exception:
            self.stop()
            raise

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def url(self) -> str:
        """The first node alone (for clients that must stay on one node)."""
        return self.nodes[0].url

    def urls(self, *order: int) -> str:
        """A broker list for a client: the nodes in ``order`` (every node, first to last,
        by default), comma-separated."""
        chosen = order or tuple(range(len(self.nodes)))
        return ",".join(self.nodes[i].url for i in chosen)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)
