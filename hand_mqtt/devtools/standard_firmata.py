"""The real StandardFirmata for the emulator, fetched from the npm registry on first use.

No Debian or PyPI package ships StandardFirmata, and hand-mqtt does not carry its image. The npm
package ``avrgirl-arduino@5.0.1`` ships prebuilt images for many boards; the Uno's is
``package/junk/hex/uno/StandardFirmata.cpp.hex`` (StandardFirmata 2.4, Firmata protocol 2.4).
:func:`standard_firmata` fetches it with ``npm pack`` into a cache folder (never into the
project), checks its SHA-256, and converts the Intel HEX image into an ELF with ``avr-objcopy``
so that the simavr runner loads it like the bundled firmware's. Later calls find it there.

Needs ``npm`` (and access to the npm registry the first time) and ``avr-objcopy``
(``gcc-avr``'s binutils).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Final

from hand_mqtt.errors import FirmwareError

__all__ = ["HEX_MEMBER", "HEX_SHA256", "NPM_PACKAGE", "cache_dir", "standard_firmata"]

logger = logging.getLogger("hand_mqtt")

NPM_PACKAGE: Final = "avrgirl-arduino@5.0.1"
"""The npm package that carries the image."""
HEX_MEMBER: Final = "package/junk/hex/uno/StandardFirmata.cpp.hex"
"""The Uno's StandardFirmata image inside the package."""
HEX_SHA256: Final = "6d57ea7cf30e26c9c2f3a01ee37907d2c951f8bc9c27f84dddad12fa9c8b8f36"
"""The image's digest: a package that changed under the same version is refused."""
_NPM_TIMEOUT_S: Final = 180.0
_HEX_NAME: Final = "StandardFirmata.cpp.hex"
_ELF_NAME: Final = "StandardFirmata.elf"


def cache_dir() -> Path:
    """Where the image is kept: ``$XDG_CACHE_HOME/hand-mqtt/standard-firmata``
    (``~/.cache`` when ``XDG_CACHE_HOME`` is unset)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "hand-mqtt" / "standard-firmata"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tool(name: str, packages: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise FirmwareError(
            f"{name} is not installed; on Debian/Ubuntu: sudo apt-get install {packages}"
        )
    return found


def _run(command: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=_NPM_TIMEOUT_S,
            cwd=cwd,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirmwareError(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        reason = " / ".join(lines[-3:]) or f"exit {done.returncode}"
        raise FirmwareError(f"{what} failed: {reason[:500]}")


def _partial(path: Path) -> Path:
    """A file of this process's own to write before renaming it to ``path`` (two processes
    that fetch at once never see each other's half-written file)."""
    return path.with_name(f".{path.name}.{os.getpid()}.part")


def _fetch_hex(target: Path) -> None:
    npm = _tool("npm", "npm")
    with tempfile.TemporaryDirectory(prefix="hand-mqtt-npm-") as tmp:
        folder = Path(tmp)
        _run(
            [npm, "pack", NPM_PACKAGE, "--pack-destination", str(folder), "--silent"],
            f"fetching StandardFirmata (npm pack {NPM_PACKAGE})",
            cwd=folder,
        )
        tarballs = sorted(folder.glob("*.tgz"))
        if not tarballs:
            raise FirmwareError(f"npm pack {NPM_PACKAGE} left no tarball")
        try:
            with tarfile.open(tarballs[0], "r:gz") as archive:
                member = archive.extractfile(HEX_MEMBER)
                data = member.read() if member is not None else None
        except (OSError, tarfile.TarError, KeyError) as exc:
            raise FirmwareError(f"{NPM_PACKAGE} has no {HEX_MEMBER}: {exc}") from None
    if data is None:
        raise FirmwareError(f"{NPM_PACKAGE} has no {HEX_MEMBER}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != HEX_SHA256:
        raise FirmwareError(
            f"{HEX_MEMBER} of {NPM_PACKAGE} is not the image hand-mqtt knows "
            f"(SHA-256 {digest}, expected {HEX_SHA256})"
        )
    partial = _partial(target)
    partial.write_bytes(data)
    partial.replace(target)


def standard_firmata(folder: Path | None = None) -> Path:
    """The StandardFirmata ELF for the emulator, fetched and converted when missing.

    Raises :class:`FirmwareError` with the reason when npm, the registry or ``avr-objcopy``
    fails."""
    folder = folder if folder is not None else cache_dir()
    hex_path, elf = folder / _HEX_NAME, folder / _ELF_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not hex_path.is_file() or _digest(hex_path) != HEX_SHA256:
            logger.info("fetching StandardFirmata from npm (%s)", NPM_PACKAGE)
            _fetch_hex(hex_path)
            elf.unlink(missing_ok=True)
        if not elf.is_file():
            objcopy = _tool("avr-objcopy", "binutils-avr")
            partial = _partial(elf)
            _run(
                [
                    objcopy, "-I", "ihex", "-O", "elf32-avr",
                    "--rename-section", ".sec1=.text,contents,alloc,load,readonly,code",
                    str(hex_path), str(partial),
                ],
                "converting StandardFirmata to ELF (avr-objcopy)",
            )  # fmt: skip
            partial.replace(elf)
    except OSError as exc:
        raise FirmwareError(f"cannot keep StandardFirmata in {folder}: {exc}") from None
    return elf
