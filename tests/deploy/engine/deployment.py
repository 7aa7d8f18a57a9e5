"""The project as a user deploys it: a copy of the checkout, users made inside the built image,
the ``.env`` from docs/deployment.md, ``docker-compose --profile simulated up -d``.

Everything goes through the commands a user types, against the engine of
:mod:`tests.deploy.engine.dockerd`; the tests reach the stack through its published ports only.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.brokers import free_port
from tests.deploy.engine.dockerd import DockerEngine
from tests.deploy.support import ROOT

DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
IMAGE = "hand-mqtt:latest"
PROFILE = "simulated"
# What a clone would not have: local environments, caches, build output, secrets.
_NOT_COPIED = {
    ".git",
    ".venv",
    ".env",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "build",
    "dist",
    "node_modules",
    "test-artifacts",
    "results",
}
_SECRETS = {ROOT / "broker" / "passwd", ROOT / "broker" / "certs"}


def image_alias(doc: str, folder: Path) -> list[str]:
    """The docs' ``alias hand-mqtt='docker run ...'`` (the CLI inside the image), as argv."""
    found = re.search(r"^alias hand-mqtt='([^']*)'$", doc, flags=re.MULTILINE)
    assert found, "docs/deployment.md shows no `alias hand-mqtt='docker run ...'`"
    command = (
        found.group(1)
        .replace("$(id -u)", str(os.getuid()))
        .replace("$(id -g)", str(os.getgid()))
        .replace("$PWD", str(folder))
    )
    return shlex.split(command)


def env_block(doc: str) -> str:
    """The shell block of docs/deployment.md that writes ``.env``."""
    for block in re.findall(r"```sh\n(.*?)```", doc, flags=re.DOTALL):
        if "cat > .env" in block:
            return str(block)
    raise AssertionError("docs/deployment.md shows no block that writes .env")


@dataclass
class Container:
    """What ``docker inspect`` says about one service's container."""

    id: str
    service: str
    status: str
    health: str | None
    pid: int
    restarts: int

    @property
    def ready(self) -> bool:
        return self.status == "running" and self.health in (None, "healthy")


class ComposeProject:
    """A copy of the project in ``folder`` (named ``hand-mqtt``, like a clone), on one engine."""

    def __init__(self, engine: DockerEngine, parent: Path, log: Path) -> None:
        self.engine = engine
        self.folder = parent / "hand-mqtt"
        self.log = log
        self.passwords: dict[str, str] = {}
        self.mqtt_port = free_port()
        self.ws_port = free_port()
        self.web_port = free_port()

    # -- setting up, as the docs say -----------------------------------------------------

    def copy_checkout(self) -> None:
        def ignore(folder: str, names: list[str]) -> set[str]:
            return {
                name
                for name in names
                if name in _NOT_COPIED or name.endswith(".pyc") or Path(folder, name) in _SECRETS
            }

        shutil.copytree(ROOT, self.folder, ignore=ignore, symlinks=True)

    def build_image(self) -> None:
        self.engine.docker("build", "-q", "-t", IMAGE, str(self.folder), timeout=900)

    def add_user(self, name: str, role: str) -> str:
        """``users add NAME --role ROLE`` in the image; returns the password it printed."""
        docker, *command = image_alias(DEPLOYMENT_DOC.read_text(), self.folder)
        assert docker == "docker"
        done = subprocess.run(
            [self.engine.cli, *command, "users", "add", name, "--role", role],
            env=self.engine.env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr
        password = done.stdout.strip()
        assert re.fullmatch(r"\S{16,}", password), f"users add printed {done.stdout!r}"
        self.passwords[name] = password
        return password

    def let_the_broker_read_the_passwords(self) -> None:
        """The docs' ``chgrp 1883 broker/passwd && chmod 640 broker/passwd``."""
        passwd = self.folder / "broker" / "passwd"
        os.chown(passwd, -1, 1883)
        passwd.chmod(0o640)

    def write_env(self) -> None:
        """Run the docs' ``.env`` block with the printed passwords; add the published ports."""
        block = env_block(DEPLOYMENT_DOC.read_text())
        for service in ("arbiter", "device"):
            block = block.replace(f"<printed for {service}>", self.passwords[service])
        assert not re.search(r"<[a-z ]+>", block), f"a placeholder is not filled: {block}"
        subprocess.run(["sh", "-e"], input=block, text=True, cwd=self.folder, check=True)
        env = self.folder / ".env"
        assert env.stat().st_mode & 0o077 == 0, ".env must be readable only by its owner"
        with env.open("a") as out:
            out.write(
                f"HAND_MQTT_PORT={self.mqtt_port}\nHAND_MQTT_WS_PORT={self.ws_port}\n"
                f"HAND_WEB_PORT={self.web_port}\n"
            )

    # -- compose -------------------------------------------------------------------------

    def compose(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            ["docker-compose", "--profile", PROFILE, *args],
            env=self.engine.env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        with self.log.open("a") as out:
            out.write(f"$ docker-compose --profile {PROFILE} {' '.join(args)}\n")
            out.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def services(self) -> frozenset[str]:
        """The services ``up`` starts: those without a profile, and those of :data:`PROFILE`.

        (docker-compose 1.29's ``config --services`` lists every profile's.)
        """
        data = yaml.safe_load((self.folder / "compose.yaml").read_text())
        return frozenset(
            name
            for name, service in data["services"].items()
            if PROFILE in service.get("profiles", [PROFILE])
        )

    def containers(self) -> dict[str, Container]:
        ids = self.compose("ps", "-q").split()
        if not ids:
            return {}
        found: list[dict[str, Any]] = json.loads(self.engine.docker("inspect", *ids).stdout)
        return {
            item["Config"]["Labels"]["com.docker.compose.service"]: Container(
                id=item["Id"],
                service=item["Config"]["Labels"]["com.docker.compose.service"],
                status=item["State"]["Status"],
                health=(item["State"].get("Health") or {}).get("Status"),
                pid=int(item["State"]["Pid"]),
                restarts=int(item["RestartCount"]),
            )
            for item in found
        }

    def wait_ready(self, services: set[str], timeout: float = 120) -> float:
        """Wait until every one of ``services`` runs and is healthy; returns the seconds taken."""
        started = time.monotonic()
        containers: dict[str, Container] = {}
        while time.monotonic() - started < timeout:
            containers = self.containers()
            if services <= set(containers) and all(containers[s].ready for s in services):
                return time.monotonic() - started
            time.sleep(0.25)
        states = {name: (c.status, c.health) for name, c in containers.items()}
        raise AssertionError(f"not all of {sorted(services)} healthy in {timeout} s: {states}")

    def crash(self, service: str) -> Container:
        """SIGKILL the container's main process from the host, as a crash would.

        (``docker kill`` counts as a manual stop: the restart policy would not apply.)
        """
        container = self.containers()[service]
        os.kill(container.pid, signal.SIGKILL)
        return container

    def logs(self, *services: str) -> str:
        return self.compose("logs", "--no-color", *services)
