"""What running a Docker Engine changes on the machine, written down before and put back after.

dockerd adds iptables chains and NAT rules, the ``docker0`` bridge (and a bridge and veth pair
per compose network and container), turns ``ip_forward`` on and writes a few files; stopping it
undoes none of that. :class:`HostSnapshot` records the parts it touches before the engine
starts and puts them back once it has stopped. The snapshot is also kept on disk, so a run that
was killed half-way is cleaned up by the next one.

Packages are installed with a temporary ``/usr/sbin/policy-rc.d`` that exits 101: there is no
init system, and the packages must not try to start their services.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.conftest import need

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")

# Kernel settings dockerd may change (forwarding for the bridges' NAT, bridge netfilter).
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/ipv6/conf/default/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
)
# Files and folders dockerd and containerd create outside their data and exec roots (the
# trust key, plugin and shim socket folders, libmount's folder), whatever flags they are given.
CREATED_PATHS = (
    "/etc/docker/key.json",
    "/run/docker",
    "/run/containerd",
    "/run/mount",
    "/var/lib/docker",
)
# Network links dockerd creates: the default bridge, one bridge per network, veth pairs.
_DOCKER_LINK = re.compile(r"^(docker0|br-[0-9a-f]{12}|veth[0-9a-f]{7})$")


def run(args: list[str], *, stdin: str | None = None, timeout: float = 60) -> str:
    done = subprocess.run(
        args, input=stdin, capture_output=True, text=True, check=False, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def deb_installed(package: str) -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0 and done.stdout.strip() == "install ok installed"


def install_packages(packages: Iterable[str], log: Path) -> list[str]:
    """apt-get install whatever is missing; returns what was installed.

    No init system runs here: a ``policy-rc.d`` that exits 101 keeps the packages' scripts from
    starting their services (docker.io would start a daemon with the default settings). It is
    removed afterwards unless it was there before.
    """
    missing = [p for p in packages if not deb_installed(p)]
    if not missing:
        return []
    need(shutil.which("apt-get") is not None, f"apt-get is needed to install {missing}")
    need(os.geteuid() == 0, f"installing {missing} needs root")
    created = not POLICY_RC_D.exists()
    if created:
        POLICY_RC_D.write_text(
            "#!/bin/sh\n# No services start during this installation.\nexit 101\n"
        )
        POLICY_RC_D.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "-q"]
    try:
        with log.open("a") as out:
            for args in (
                [*apt, "update"],
                [*apt, "install", "-y", "--no-install-recommends", *missing],
            ):
                done = subprocess.run(
                    args, stdout=out, stderr=subprocess.STDOUT, env=env, check=False, timeout=900
                )
                need(done.returncode == 0, f"{' '.join(args[-3:])} failed here: see {log}")
    finally:
        if created:
            POLICY_RC_D.unlink(missing_ok=True)
    return missing


def _tables(saved: str) -> dict[str, list[str]]:
    """``iptables-save`` output as table name -> its lines (counters and comments left out)."""
    tables: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in saved.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], [])
        elif current is not None and line and not line.startswith("#"):
            current.append(re.sub(r" \[\d+:\d+\]$", "", line))
    return tables


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def _links() -> list[str]:
    return sorted(path.name for path in Path("/sys/class/net").iterdir())


@dataclass
class HostSnapshot:
    """The parts of the machine a Docker Engine changes, as they were before it started."""

    iptables: dict[str, str]
    links: list[str]
    sysctls: dict[str, str]
    existing_paths: list[str]

    @classmethod
    def take(cls) -> HostSnapshot:
        return cls(
            iptables={
                tool: run([f"{tool}-save"])
                for tool in ("iptables", "ip6tables")
                if shutil.which(tool)
            },
            links=_links(),
            sysctls={name: value for name in SYSCTLS if (value := _read_sysctl(name)) is not None},
            existing_paths=[path for path in CREATED_PATHS if os.path.lexists(path)],
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> HostSnapshot:
        data = json.loads(path.read_text())
        return cls(**data)

    def restore(self) -> list[str]:
        """Put the machine back as it was; returns a line for each thing undone."""
        undone: list[str] = []
        for name in _links():
            if name not in self.links and _DOCKER_LINK.match(name):
                run(["ip", "link", "delete", name])
                undone.append(f"deleted network link {name}")
        for tool, before in self.iptables.items():
            undone += _restore_iptables(tool, before)
        for name, value in self.sysctls.items():
            if _read_sysctl(name) != value:
                Path("/proc/sys", name).write_text(value + "\n")
                undone.append(f"{name.replace('/', '.')} = {value}")
        for path in CREATED_PATHS:
            if path in self.existing_paths or not os.path.lexists(path):
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                if path == "/run/mount" and any(Path(path).iterdir()):
                    continue  # something else mounted since: not ours to remove
                shutil.rmtree(path)
            else:
                os.unlink(path)
            undone.append(f"removed {path}")
        return undone


def _restore_iptables(tool: str, before_text: str) -> list[str]:
    before = _tables(before_text)
    after = _tables(run([f"{tool}-save"]))
    undone: list[str] = []
    for table, lines in after.items():
        if before.get(table) == lines:
            continue
        if table in before:
            run([f"{tool}-restore"], stdin="\n".join([f"*{table}", *before[table]]) + "\n")
        else:
            # iptables-nft drops a table restored empty; legacy iptables keeps its built-in
            # chains, whose policies must go back to the default (dockerd sets FORWARD DROP).
            run([f"{tool}-restore"], stdin=f"*{table}\nCOMMIT\n")
            left = _tables(run([f"{tool}-save"])).get(table)
            if left:
                chains = [re.sub(r" \S+$", " ACCEPT", line) for line in left if line[0] == ":"]
                run([f"{tool}-restore"], stdin="\n".join([f"*{table}", *chains, "COMMIT"]) + "\n")
        undone.append(f"{tool}: table {table} as before")
    return undone
