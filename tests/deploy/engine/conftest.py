"""The compose deployment in a real Docker Engine: one stack for the module, set up as a user would.

Set-up, in order: install docker.io, docker-compose, debootstrap and mosquitto-clients when
missing; take the engine lock; start our own dockerd; provide the base images (pulled, cached or
stand-ins); copy the checkout; build the image; make the users with ``hand-mqtt users`` inside it;
write the ``.env`` the docs show; ``docker-compose --profile simulated up -d``; wait until every
service is healthy. Tear-down: ``down -v``, stop our dockerd by its PID, put the machine back.
Each step's duration goes to ``test-artifacts/engine/timings.txt``; the logs sit beside it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import need
from tests.deploy.engine.deployment import ComposeProject
from tests.deploy.engine.dockerd import DockerEngine, EngineStartError, cache_dir, other_dockerd
from tests.deploy.engine.host import install_packages
from tests.deploy.engine.images import provide_base_images
from tests.deploy.support import ROOT, Watcher

PACKAGES = ("docker.io", "docker-compose", "debootstrap", "mosquitto-clients")
# The services these tests drive; compose.yaml may have more, and every one must be healthy.
SERVICES = frozenset({"mosquitto", "arbiter", "hand", "device-simulated"})
# The users docs/deployment.md makes: the two services' and one person per role.
USERS = {"arbiter": "arbiter", "device": "device", "alice": "operator", "kiosk": "viewer"}
ARTIFACTS = ROOT / "test-artifacts" / "engine"


@dataclass
class Timings:
    """Seconds per step, written out as they happen."""

    path: Path
    steps: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.steps[name] = time.monotonic() - started
        with self.path.open("a") as out:
            out.write(f"{name:<32} {self.steps[name]:7.1f} s\n")


@dataclass
class Stack:
    """The running deployment: its compose project and the passwords of :data:`USERS`."""

    project: ComposeProject
    timings: Timings
    images: dict[str, str]
    services: frozenset[str]
    """Every service compose.yaml starts with the profile."""
    _watchers: list[Watcher] = field(default_factory=list)

    def url(self, user: str | None, *, scheme: str = "mqtt") -> str:
        port = self.project.ws_port if scheme == "ws" else self.project.mqtt_port
        auth = f"{user}:{self.project.passwords[user]}@" if user is not None else ""
        return f"{scheme}://{auth}127.0.0.1:{port}"

    def watch(self, *filters: str, user: str = "kiosk", scheme: str = "mqtt") -> Watcher:
        """A client keeping every message on ``filters`` (the viewer by default)."""
        watcher = Watcher(self.url(user, scheme=scheme), *filters)
        self._watchers.append(watcher)
        return watcher

    def close_watchers(self) -> None:
        while self._watchers:
            self._watchers.pop().close()

    def wait_ready(self) -> float:
        return self.project.wait_ready(set(self.services))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    need(sys.platform == "linux", "a Docker Engine runs on Linux")
    need(os.geteuid() == 0, "starting dockerd and changing iptables needs root")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    timings = Timings(ARTIFACTS / "timings.txt")
    engine = DockerEngine(cache_dir(), ARTIFACTS / "dockerd.log")
    with contextlib.ExitStack() as cleanup:
        # Terminated, the run still stops its engine and puts the machine back: pytest tears
        # fixtures down after an interrupt. (Killed, the next run does it.)
        previous = signal.signal(signal.SIGTERM, _interrupt)
        cleanup.callback(signal.signal, signal.SIGTERM, previous)
        # One run at a time from here on, installing included (a policy-rc.d of another run's
        # could vanish in the middle of ours).
        with timings.step("wait for the engine lock"):
            engine.lock(timeout=1800)
        cleanup.callback(engine.unlock)
        with timings.step("install packages"):
            install_packages(PACKAGES, ARTIFACTS / "apt.log")
        need(shutil.which("dockerd") is not None, "dockerd is not installed")
        recovered = engine.recover()
        if recovered:
            (ARTIFACTS / "recovered.txt").write_text("".join(f"{line}\n" for line in recovered))
        other = other_dockerd()
        need(
            other is None,
            f"another dockerd (PID {other}) runs here; this test starts its own engine, and two "
            "would fight over docker0 and the iptables chains",
        )
        cleanup.callback(_stop_engine, engine, timings)
        try:
            with timings.step("start dockerd"):
                engine.start()
        except EngineStartError as exc:
            log = engine.log_path.read_text(errors="replace")[-1500:]
            need(False, f"dockerd cannot run on this machine: {exc}\n{log}")
        engine.remove_leftovers()
        with timings.step("base images"):
            images = provide_base_images(engine, engine.cache, ARTIFACTS / "images.log")
        (ARTIFACTS / "images.txt").write_text(
            "".join(f"{image}: {how}\n" for image, how in images.items())
        )
        project = ComposeProject(
            engine, tmp_path_factory.mktemp("compose"), ARTIFACTS / "compose.log"
        )
        cleanup.callback(_take_down, project, timings)
        project.copy_checkout()
        with timings.step("build the hand-mqtt image"):
            project.build_image()
        with timings.step("users inside the image"):
            for name, role in USERS.items():
                project.add_user(name, role)
        project.let_the_broker_read_the_passwords()
        project.write_env()
        services = project.services()
        assert services >= SERVICES, f"compose.yaml lost services the tests need: {services}"
        with timings.step("docker-compose up -d"):
            project.compose("up", "-d")
        with timings.step("up -d to all healthy"):
            project.wait_ready(set(services))
        yield Stack(project, timings, images, services)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}: stopping the Docker Engine test")


def _take_down(project: ComposeProject, timings: Timings) -> None:
    """Keep the services' logs, remove the stack and its volume, drop superseded images."""
    if (project.folder / ".env").exists():
        with contextlib.suppress(AssertionError, OSError):
            (ARTIFACTS / "services.log").write_text(project.logs())
        with timings.step("docker-compose down -v"):
            project.compose("down", "-v", "--remove-orphans")
    # Each run's image replaces the last one's, which is left without a name.
    project.engine.docker("image", "prune", "-f")


def _stop_engine(engine: DockerEngine, timings: Timings) -> None:
    with timings.step("stop dockerd, restore the host"):
        undone = engine.stop()
    (ARTIFACTS / "restored.txt").write_text("".join(f"{line}\n" for line in undone))


@pytest.fixture
def running(stack: Stack) -> Iterator[Stack]:
    """The stack, healthy at the start of the test; its watchers closed at the end."""
    stack.wait_ready()
    try:
        yield stack
    finally:
        stack.close_watchers()
