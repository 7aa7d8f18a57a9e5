"""The firmware ships with the package: from a wheel installed in a fresh virtual environment,
away from any checkout, `hand-mqtt firmware build`, `firmware export` and `up --emulate` work.

The wheel is built from this tree and installed without its dependencies; they come from the
test environment's own site-packages through a path file (the network is not needed, and the
hand_mqtt the commands import is the wheel's, which the test checks).
"""

from __future__ import annotations

import json
import os
import signal
import site
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.brokers import free_port, wait_for_port

pytestmark = [pytest.mark.firmware, pytest.mark.emulator]

ROOT = Path(__file__).resolve().parents[2]


class Installed:
    """A fresh virtual environment with the hand-mqtt wheel in it, used from ``cwd``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.venv = tmp / "venv"
        self.cwd = tmp / "elsewhere"
        self.cache = tmp / "cache"
        self.cwd.mkdir()
        dist = tmp / "dist"
        self._run_here(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(dist), str(ROOT)],
        )  # fmt: skip
        (wheel,) = dist.glob("hand_mqtt-*.whl")
        self._run_here([sys.executable, "-m", "venv", "--without-pip", str(self.venv)])
        self._run_here(
            [sys.executable, "-m", "pip", "--python", str(self.venv / "bin" / "python"),
             "install", "--no-deps", "--no-index", str(wheel)],
        )  # fmt: skip
        (site_packages,) = (self.venv / "lib").glob("python3*/site-packages")
        self.site_packages = site_packages
        (site_packages / "test-dependencies.pth").write_text(
            "\n".join(site.getsitepackages()) + "\n", encoding="utf-8"
        )

    @staticmethod
    def _run_here(command: list[str]) -> None:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PYTHONPATH", "HAND_MQTT_FIRMWARE_DIR", "VIRTUAL_ENV")
        }
        env["XDG_CACHE_HOME"] = str(self.cache)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return {**env, **extra}

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "hand-mqtt"), *args],
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env=self.env(**extra),
            timeout=300,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, toolchain: None) -> Installed:
    return Installed(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_is_what_runs(installed: Installed) -> None:
    done = subprocess.run(
        [
            str(installed.venv / "bin" / "python"),
            "-c",
            "import hand_mqtt; print(hand_mqtt.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=installed.cwd,
        env=installed.env(),
        check=True,
    )
    assert Path(done.stdout.strip()).is_relative_to(installed.site_packages)
    assert (
        installed.site_packages / "hand_mqtt" / "data" / "firmware" / "hand" / "hand.ino"
    ).is_file()


def test_firmware_build_from_the_wheel_goes_to_the_cache(installed: Installed) -> None:
    done = installed.run("firmware", "build")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "flash " in done.stdout
    elf = Path(done.stdout.split("ELF ", 1)[1].split()[0])
    assert elf.is_file()
    assert elf.is_relative_to(installed.cache / "hand-mqtt"), elf
    # Nothing is written next to the installed sources.
    assert not (installed.site_packages / "hand_mqtt" / "data" / "firmware" / "build").exists()
    # A second build finds everything up to date in the same folder.
    again = installed.run("firmware", "build")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"ELF {elf}" in again.stdout


def test_exported_sketch_builds_to_the_same_image(installed: Installed) -> None:
    done = installed.run("firmware", "export", "sketchbook")
    assert done.returncode == 0, done.stdout + done.stderr
    sketch = installed.cwd / "sketchbook" / "hand"
    names = sorted(path.name for path in sketch.iterdir())
    assert "hand.ino" in names
    assert all(name.endswith((".ino", ".cpp", ".h")) for name in names), names
    assert "sketch sketchbook/hand" in done.stdout
    # Exporting again over the same files is fine; over a changed file it needs --force.
    assert installed.run("firmware", "export", "sketchbook").returncode == 0
    (sketch / "config.h").write_text("// mine\n", encoding="utf-8")
    refused = installed.run("firmware", "export", "sketchbook")
    assert refused.returncode == 1
    assert "config.h already exists and differs" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert installed.run("firmware", "export", "sketchbook", "--force").returncode == 0
    # The folder as the IDE would compile it: the same flash image as the bundled build.
    built = installed.run("firmware", "build")
    reference = Path(built.stdout.split("HEX ", 1)[1].split()[0])
    makefile_dir = installed.site_packages / "hand_mqtt" / "data" / "firmware"
    out = installed.tmp / "sketch-build"
    make = subprocess.run(
        ["make", "-C", str(makefile_dir), f"SKETCH_DIR={sketch}", f"BUILD_DIR={out}", "all"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert make.returncode == 0, make.stdout[-2000:] + make.stderr[-2000:]
    assert (out / "hand.hex").read_text() == reference.read_text()


@pytest.fixture
def up(installed: Installed) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(
        [str(installed.venv / "bin" / "hand-mqtt"), "up", "--emulate", "--port", str(port),
         "--no-live"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=installed.cwd,
        env=installed.env(),
    )  # fmt: skip
    try:
        wait_for_port(port, 120)
        yield process, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_up_emulate_from_the_wheel(
    installed: Installed, up: tuple[subprocess.Popen[str], int]
) -> None:
    process, port = up
    deadline = time.monotonic() + 60
    reported: dict[str, object] = {}
    while time.monotonic() < deadline:
        done = installed.run("state", "--json", HAND_MQTT_BROKER=f"mqtt://127.0.0.1:{port}")
        if done.returncode == 0:
            reported = json.loads(done.stdout).get("reported") or {}
            if reported.get("link") == "up":
                break
        time.sleep(0.3)
    assert reported.get("link") == "up", reported
    firmware = reported["firmware"]
    assert isinstance(firmware, dict)
    assert {key: firmware[key] for key in ("name", "version", "protocol", "fingers")} == {
        "name": "hand-mqtt",
        "version": "2.0.0",
        "protocol": 2,
        "fingers": 5,
    }
    assert firmware["failsafe"] is True
    runners = list(installed.cache.glob("hand-mqtt/firmware-*/sim/hand-sim"))
    assert runners, "the simavr runner was not built in the cache"
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output[-3000:]
    assert "bundled firmware in the emulator on /dev/pts/" in output
