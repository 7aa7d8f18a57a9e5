"""The images compose.yaml starts FROM: pulled when a registry answers, else local stand-ins.

The stand-ins (``standins/``) are built on a minimal Debian bookworm made with ``debootstrap``
from the machine's own Debian mirror and imported with ``docker import``. They carry the official
names, so compose.yaml and the Dockerfile run unchanged, and a label with a digest of what they
were built from, so that a changed stand-in is rebuilt while an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

from tests.conftest import need
from tests.deploy.engine.dockerd import DockerEngine

STANDINS = Path(__file__).with_name("standins")
DEBIAN_BASE = "hand-mqtt-test/debian:bookworm"
STAND_IN_LABEL = "org.hand-mqtt.test.stand-in"
OFFICIAL_IMAGES = {"python:3.11-slim": "python", "eclipse-mosquitto:2": "mosquitto"}
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The machine's mirror for Debian bookworm main (one-line and deb822 sources)."""
    entries: list[tuple[list[str], list[str], list[str], list[str]]] = []
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields: dict[str, list[str]] = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith(("#", " ")):
                        key, _, value = line.partition(":")
                        fields[key.strip().lower()] = value.split()
                entries.append(
                    (
                        fields.get("types", []),
                        fields.get("uris", []),
                        fields.get("suites", []),
                        fields.get("components", []),
                    )
                )
        else:
            for line in text.splitlines():
                words = line.split("#")[0].split()
                if words and words[1:2] and words[1].startswith("["):
                    # Options in brackets: drop them.
                    end = next(i for i, w in enumerate(words) if w.endswith("]"))
                    words = [words[0], *words[end + 1 :]]
                if len(words) >= 4:
                    entries.append(([words[0]], [words[1]], [words[2]], words[3:]))
    for types, uris, suites, components in entries:
        if "deb" in types and "bookworm" in suites and "main" in components and uris:
            return uris[0].rstrip("/")
    return DEFAULT_MIRROR


def _context(name: str, work: Path) -> tuple[Path, str]:
    """The stand-in's build context (with the machine's extra CA certificates for Python)."""
    context = work / f"stand-in-{name}"
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(STANDINS / name, context)
    if name == "python":
        certs = context / "ca-certificates"
        certs.mkdir()
        if EXTRA_CA_DIR.is_dir():
            for cert in sorted(EXTRA_CA_DIR.rglob("*.crt")):
                shutil.copy(cert, certs / cert.name)
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes())
    return context, digest.hexdigest()[:16]


def make_debian_base(engine: DockerEngine, work: Path, log: Path) -> None:
    """debootstrap a minimal bookworm and import it as :data:`DEBIAN_BASE`."""
    need(shutil.which("debootstrap") is not None, "debootstrap is not installed")
    rootfs = work / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    mirror = debian_mirror()
    with log.open("a") as out:
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=900,
        )
    need(done.returncode == 0, f"no registry, and debootstrap from {mirror} failed: see {log}")
    # Lighter, like Debian's own images: no package lists or downloaded packages, and no
    # service may start while an image is built.
    for cached in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for entry in (rootfs / cached).glob("*"):
            if entry.is_file():
                entry.unlink()
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        engine.docker("import", "-", DEBIAN_BASE, stdin=tar.stdout, timeout=600)
    shutil.rmtree(rootfs)


def provide_base_images(engine: DockerEngine, work: Path, log: Path) -> dict[str, str]:
    """Make sure each official image the project starts FROM is there; says how, per image."""
    how: dict[str, str] = {}
    for image, name in OFFICIAL_IMAGES.items():
        started = time.monotonic()
        context, digest = _context(name, work)
        present = engine.has_image(image)
        label = engine.label(image, STAND_IN_LABEL) if present else None
        if present and label in (None, digest):
            how[image] = "cached stand-in" if label else "cached"
            continue
        pulled = engine.docker("pull", "-q", image, check=False, timeout=300)
        if pulled.returncode == 0:
            how[image] = "pulled"
            continue
        if not engine.has_image(DEBIAN_BASE):
            make_debian_base(engine, work, log)
            how[DEBIAN_BASE] = f"debootstrap and import, {time.monotonic() - started:.0f} s"
            started = time.monotonic()
        built = engine.docker(
            "build", "-q", "--build-arg", f"STAND_IN={digest}", "-t", image, str(context),
            check=False, timeout=900,
        )  # fmt: skip
        with log.open("a") as out:
            out.write(built.stdout + built.stderr)
        need(built.returncode == 0, f"no registry, and the stand-in for {image} failed: {log}")
        how[image] = (
            f"stand-in built in {time.monotonic() - started:.0f} s (no registry: "
            f"{pulled.stderr.strip()[:100]})"
        )
    return how
