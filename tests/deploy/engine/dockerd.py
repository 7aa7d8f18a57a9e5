"""A Docker Engine of the test's own: ``dockerd`` started in the background, stopped by its PID.

Its data root lives in the user's cache folder and outlives the run: the images in it (the
Debian base, the stand-ins, the layers of the hand-mqtt image) are what makes a second run
fast. Nothing else may use that data root, so any container, network or volume found in it at
start is a leftover of an interrupted run and is removed. Everything else (exec root, socket,
PID file, its own empty daemon.json so that the machine's is not read) sits in a run folder
that is removed when the engine stops. A lock file keeps two test runs from starting engines
side by side (they would share docker0 and the iptables chains).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

from tests.deploy.engine.host import HostSnapshot

RUN_DIR = Path("/run/hand-mqtt-test-engine")


def cache_dir() -> Path:
    """Where the engine's data root and the lock live (``$XDG_CACHE_HOME/hand-mqtt/docker``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hand-mqtt" / "docker"


def other_dockerd() -> int | None:
    """The PID of a dockerd this test did not start, if one runs."""
    ours = _read_pid(RUN_DIR / "dockerd.pid")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == ours:
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == "dockerd":
                return int(entry.name)
    return None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class EngineStartError(Exception):
    """dockerd could not start here (no permission, no kernel support...)."""


class DockerEngine:
    """One dockerd with its own data root, exec root and socket."""

    def __init__(self, cache: Path, log: Path) -> None:
        self.cache = cache
        self.data_root = cache / "data"
        self.log_path = log
        self.snapshot_path = cache / "host-before.json"
        self.socket = RUN_DIR / "docker.sock"
        self.pid_file = RUN_DIR / "dockerd.pid"
        self.process: subprocess.Popen[bytes] | None = None
        self.snapshot: HostSnapshot | None = None
        self._lock: IO[str] | None = None
        self._log: IO[bytes] | None = None

    @functools.cached_property
    def dockerd(self) -> str:
        """The daemon (looked up on first use: the packages may be installed after the lock)."""
        return shutil.which("dockerd") or "/usr/sbin/dockerd"

    @functools.cached_property
    def cli(self) -> str:
        """The client packaged with this engine (another docker CLI may come first on PATH)."""
        beside = (Path(self.dockerd).with_name("docker"), Path("/usr/bin/docker"))
        found = next((str(path) for path in beside if path.exists()), None)
        return found or shutil.which("docker") or "docker"

    @property
    def env(self) -> dict[str, str]:
        """The environment for docker and docker-compose: this engine, no stray settings."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DOCKER_", "COMPOSE_", "HAND_"))
        }
        env["DOCKER_HOST"] = f"unix://{self.socket}"
        env["DOCKER_CONFIG"] = str(RUN_DIR / "client")
        return env

    # -- life cycle ----------------------------------------------------------------------

    def lock(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until no other test run has an engine up."""
        self.cache.mkdir(parents=True, exist_ok=True)
        self._lock = (self.cache / "lock").open("w")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another test run held {self.cache / 'lock'} for {timeout:.0f} s"
                    ) from None
                time.sleep(1)

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def recover(self) -> list[str]:
        """Undo what an interrupted run left behind (its dockerd and its host changes)."""
        done: list[str] = []
        pid = _read_pid(self.pid_file)
        if pid is not None and _alive(pid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if str(self.data_root).encode() in cmdline:
                self._terminate(pid)
                done.append(f"stopped the dockerd left running by an earlier run (PID {pid})")
        self._unmount_leftovers()
        if self.snapshot_path.exists():
            done += HostSnapshot.load(self.snapshot_path).restore()
            self.snapshot_path.unlink()
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        return done

    def start(self, timeout: float = 60) -> float:
        """Start dockerd; returns the seconds it took to answer."""
        self.snapshot = HostSnapshot.take()
        self.snapshot.save(self.snapshot_path)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        (RUN_DIR / "client").mkdir(exist_ok=True)
        config = RUN_DIR / "daemon.json"
        config.write_text("{}\n")
        self.data_root.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        started = time.monotonic()
        self.process = subprocess.Popen(
            [
                self.dockerd,
                "--data-root",
                str(self.data_root),
                "--exec-root",
                str(RUN_DIR / "exec"),
                "--pidfile",
                str(self.pid_file),
                "--host",
                f"unix://{self.socket}",
                "--config-file",
                str(config),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise EngineStartError(f"dockerd exited with {self.process.returncode}")
            if self.docker("version", check=False, timeout=10).returncode == 0:
                return time.monotonic() - started
            time.sleep(0.2)
        raise EngineStartError(f"dockerd did not answer within {timeout:.0f} s")

    def stop(self) -> list[str]:
        """Stop our dockerd (by its PID) and put the machine back as it was."""
        process, self.process = self.process, None
        if process is not None:
            # dockerd stops its containers (each with its 10 s grace) before it exits.
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        undone = self._unmount_leftovers()
        if self.snapshot is not None:
            undone += self.snapshot.restore()
            self.snapshot = None
        self.snapshot_path.unlink(missing_ok=True)
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        return undone

    @staticmethod
    def _terminate(pid: int) -> None:
        """Stop a dockerd that is not our child: SIGTERM, SIGKILL after 60 s."""
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    def _unmount_leftovers(self) -> list[str]:
        roots = (str(self.data_root) + "/", str(RUN_DIR) + "/")
        mounts = [
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(roots) or line.split()[1] == str(self.data_root)
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        return [f"unmounted {mount}" for mount in mounts]

    # -- commands ------------------------------------------------------------------------

    def docker(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        stdin: IO[bytes] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.cli, *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            stdin=stdin,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False).returncode == 0

    def label(self, image: str, label: str) -> str | None:
        found = self.docker(
            "image", "inspect", "-f", f'{{{{index .Config.Labels "{label}"}}}}', image, check=False
        )
        value = found.stdout.strip()
        return value if found.returncode == 0 and value not in ("", "<no value>") else None

    def remove_leftovers(self) -> list[str]:
        """Containers, networks and volumes in our data root are leftovers of an earlier run."""
        removed: list[str] = []
        containers = self.docker("ps", "-aq").stdout.split()
        if containers:
            self.docker("rm", "-f", "-v", *containers)
            removed.append(f"removed {len(containers)} containers left by an earlier run")
        for kind in ("network", "volume"):
            pruned = self.docker(kind, "prune", "-f").stdout.strip()
            if "Deleted" in pruned:
                removed.append(f"pruned {kind}s left by an earlier run")
        return removed
