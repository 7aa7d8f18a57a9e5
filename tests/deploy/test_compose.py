"""compose.yaml: valid for docker-compose and the compose spec, and every command in it is real.

These run without a Docker Engine, in seconds: each Python service's ``command`` and health
check run as plain processes, as they are written (after compose's variable interpolation),
against Mosquitto running the shipped configuration with users made by ``hand-mqtt users add``.
tests/deploy/engine/ runs the same file in a real engine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from selenium.webdriver.common.by import By

from hand_mqtt import PtyHand
from harness.brokers import free_port, mosquitto_binary
from harness.browser import Page, chromium_available, start_chromium
from tests.conftest import need
from tests.deploy.support import ROOT, ServiceProcess, ShippedMosquitto, service_env

COMPOSE = ROOT / "compose.yaml"
DUMMY_SECRETS = {"HAND_ARBITER_PASSWORD": "check", "HAND_DEVICE_PASSWORD": "check"}


def compose_tool() -> str | None:
    return shutil.which("docker-compose")


def test_docker_compose_accepts_the_file() -> None:
    tool = compose_tool()
    need(tool is not None, "docker-compose is not installed")
    assert tool is not None
    env = {**os.environ, **DUMMY_SECRETS}
    done = subprocess.run(
        [tool, "-f", str(COMPOSE), "config", "-q"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    for profile in ("hardware", "simulated"):
        listed = subprocess.run(
            [tool, "-f", str(COMPOSE), "--profile", profile, "config", "--services"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
        )
        assert listed.returncode == 0, listed.stderr
        assert "mosquitto" in listed.stdout.split()


def test_docker_compose_refuses_to_run_without_the_passwords() -> None:
    tool = compose_tool()
    need(tool is not None, "docker-compose is not installed")
    assert tool is not None
    env = {k: v for k, v in os.environ.items() if k not in DUMMY_SECRETS}
    done = subprocess.run(
        [tool, "-f", str(COMPOSE), "config", "-q"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "HAND_ARBITER_PASSWORD" in done.stderr


def test_the_compose_spec_schema_accepts_the_file() -> None:
    tool = shutil.which("check-jsonschema") or str(
        Path(sys.executable).with_name("check-jsonschema")
    )
    need(Path(tool).exists(), "check-jsonschema is not installed (pip install -e '.[test]')")
    done = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- the commands run --------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3)
        found = env.get(name)
        if op in (":-", ":?") and not found:
            found = None
        if found is not None:
            return found
        if op in (":-", "-"):
            return arg or ""
        if op in (":?", "?"):
            raise AssertionError(f"compose would stop: {arg}")
        return ""

    return _VARIABLE.sub(replace, value)


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    return node


def compose_file(env: Mapping[str, str]) -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    resolved = resolve(data, env)
    assert isinstance(resolved, dict)
    return resolved


def python_services(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in data["services"].items() if "build" in svc}


def test_python_services_run_hand_mqtt_as_their_command() -> None:
    data = compose_file(DUMMY_SECRETS)
    services = python_services(data)
    assert set(services) == {"arbiter", "device", "hand", "device-simulated", "web"}
    for name, svc in services.items():
        assert svc["command"][0] == "hand-mqtt", name
        test = svc.get("healthcheck", {}).get("test")
        assert test is None or test[:2] == ["CMD", "hand-mqtt"], name
        assert svc["restart"] == "unless-stopped"
    for svc in data["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and source not in ("./broker/passwd", "./broker/certs"):
                assert (ROOT / source).exists(), f"{source} is mounted but not in the repository"


class Deployment:
    """The shipped broker config plus the compose services, run as plain processes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.broker_dir = folder / "broker"
        self.broker_dir.mkdir()
        shutil.copy(ROOT / "broker" / "acl", self.broker_dir / "acl")
        self.passwords = {
            "arbiter": self.add_user("arbiter", "arbiter"),
            "device": self.add_user("device", "device"),
            "viewer": self.add_user("viewer", "viewer"),
        }
        self.broker = ShippedMosquitto(self.broker_dir)
        self.processes: list[ServiceProcess] = []

    def add_user(self, name: str, role: str) -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "hand_mqtt",
                "users",
                "add",
                name,
                "--role",
                role,
                "--password-file",
                str(self.broker_dir / "passwd"),
                "--acl-file",
                str(self.broker_dir / "acl"),
                "--iterations",
                "101",
            ],
            env=service_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def env(self, extra: Mapping[str, str]) -> dict[str, str]:
        return {
            "HAND_ARBITER_PASSWORD": self.passwords["arbiter"],
            "HAND_DEVICE_PASSWORD": self.passwords["device"],
            **extra,
        }

    def localise(self, value: str, ports: Mapping[str, str]) -> str:
        """Compose's names and ports as this machine's, in one pass (no replacement twice)."""
        replacements = {
            "@mosquitto:1883": f"@127.0.0.1:{self.broker.port}",
            "/data/": f"{self.folder}/data/",  # the arbiter's volume
            **ports,
        }
        pattern = "|".join(re.escape(old) for old in sorted(replacements, key=len, reverse=True))
        return re.sub(pattern, lambda found: replacements[found.group(0)], value)

    def run(
        self, name: str, svc: Mapping[str, Any], ports: Mapping[str, str]
    ) -> tuple[ServiceProcess, dict[str, str]]:
        env = {k: self.localise(v, ports) for k, v in svc.get("environment", {}).items()}
        args = [self.localise(arg, ports) for arg in svc["command"][1:]]
        process = ServiceProcess(args, self.folder / f"{name}.log", env=env).start()
        self.processes.append(process)
        return process, env

    def healthy(self, svc: Mapping[str, Any], env: Mapping[str, str], timeout: float) -> None:
        test = svc["healthcheck"]["test"]
        assert test[:2] == ["CMD", "hand-mqtt"]
        command = [sys.executable, "-m", "hand_mqtt", *test[2:]]
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            done = subprocess.run(
                command,
                check=False,
                env=service_env(env),
                capture_output=True,
                text=True,
                timeout=30,
            )
            if done.returncode == 0:
                return
            last = done.stdout + done.stderr
            time.sleep(0.3)
        logs = "\n".join(p.log()[-1500:] for p in self.processes)
        raise AssertionError(f"{test} never exited 0: {last}\n{logs}")

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        self.broker.stop()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    need(mosquitto_binary() is not None, "mosquitto is not installed")
    running = Deployment(tmp_path)
    running.broker.start()
    try:
        yield running
    finally:
        running.stop()


def test_mosquitto_health_check_runs(deployment: Deployment) -> None:
    need(shutil.which("mosquitto_pub") is not None, "mosquitto-clients is not installed")
    data = compose_file(deployment.env({}))
    test = data["services"]["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    command = [arg.replace("1880", str(deployment.broker.health_port)) for arg in test[1:]]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    # And it is the health listener that answered: anonymous clients are refused on 1883.
    refused = subprocess.run(
        [*command[:4], str(deployment.broker.port), *command[5:]],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0


def test_services_start_and_report_healthy_with_real_hardware_settings(
    deployment: Deployment,
) -> None:
    """The hardware profile: HAND_SERIAL points at a pty instead of /dev/ttyACM0."""
    with PtyHand() as sim:
        data = compose_file(deployment.env({"HAND_SERIAL": sim.path}))
        services = python_services(data)
        arbiter, arbiter_env = deployment.run("arbiter", services["arbiter"], {})
        deployment.healthy(services["arbiter"], arbiter_env, 20)
        assert services["device"]["devices"] == [f"{sim.path}:{sim.path}"]
        device, device_env = deployment.run("device", services["device"], {})
        deployment.healthy(services["device"], device_env, 20)
        assert sim.firmware.targets == (180, 180, 180, 180, 180)
        assert arbiter.alive()
        assert device.alive()
        device.stop()


def test_services_start_and_report_healthy_with_the_simulated_profile(
    deployment: Deployment,
) -> None:
    data = compose_file(deployment.env({}))
    services = python_services(data)
    # The simulated hand listens on the compose network, where the device finds it by name.
    port = str(free_port())
    ports = {"hand:5555": f"127.0.0.1:{port}", "5555": port, "0.0.0.0": "127.0.0.1"}
    _arbiter, arbiter_env = deployment.run("arbiter", services["arbiter"], ports)
    hand, _ = deployment.run("hand", services["hand"], ports)
    device, device_env = deployment.run("device-simulated", services["device-simulated"], ports)
    deployment.healthy(services["arbiter"], arbiter_env, 20)
    deployment.healthy(services["device-simulated"], device_env, 20)
    # The device health check with the link required says the simulated hand is connected.
    strict = dict(services["device-simulated"]["healthcheck"])
    strict["test"] = [*strict["test"], "--require-link"]
    deployment.healthy({"healthcheck": strict}, device_env, 20)
    assert hand.alive()
    assert device.alive()


def test_the_web_service_serves_the_page_for_mosquittos_websockets_listener(
    deployment: Deployment,
) -> None:
    """The page from the web service, in Chromium, signs in on the shipped 9001 listener."""
    data = compose_file(deployment.env({}))
    svc = python_services(data)["web"]
    port = str(free_port())
    ports = {"8080": port, "9001": str(deployment.broker.ws_port)}
    web, _env = deployment.run("web", svc, ports)
    check = {
        **svc["healthcheck"],
        "test": [deployment.localise(a, ports) for a in svc["healthcheck"]["test"]],
    }
    deployment.healthy({"healthcheck": check}, {}, 20)
    # "0.0.0.0": the browser reaches the broker on the host it loaded the page from.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/config.json", timeout=10) as answer:
        assert json.loads(answer.read())["broker"] == f"ws://0.0.0.0:{deployment.broker.ws_port}/"
    need(chromium_available(), "Debian's chromium and chromium-driver are not installed")
    driver = start_chromium()
    try:
        page = Page(driver, f"http://127.0.0.1:{port}/").open()
        page.until(lambda: page.driver.find_element(By.ID, "login").is_displayed(), "the form")
        page.type_into("login-user", "viewer")
        page.type_into("login-password", deployment.passwords["viewer"])
        page.driver.find_element(By.ID, "login-submit").click()
        page.until(lambda: page.mode() == "readonly", "the viewer's read-only page")
        assert page.status()["broker"] == "connected"
    finally:
        driver.quit()
    assert web.alive()
    # With nothing at the address, the health check says so and fails.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hand_mqtt",
            "health",
            "web",
            "--url",
            f"http://127.0.0.1:{free_port()}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: web: no page at http://127.0.0.1:")
