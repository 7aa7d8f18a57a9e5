"""The firmware's parser, encoder and controller against protocol/vectors.json, plus fuzzing
(`make -C firmware test`: g++ with AddressSanitizer and UBSan)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import FIRMWARE_DIR, need

pytestmark = pytest.mark.firmware


def test_host_conformance_and_fuzz(tmp_path: Path) -> None:
    need(
        shutil.which("make") is not None and shutil.which("g++") is not None,
        "make and g++ are needed: sudo apt-get install make g++",
    )
    done = subprocess.run(
        ["make", "-C", str(FIRMWARE_DIR), f"BUILD_DIR={tmp_path}", "test"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert re.search(r"conformance: all \d+ checks passed", output), output[-4000:]
    assert re.search(r"fuzz: all \d+ checks passed", output), output[-4000:]
    vectors = re.search(
        r"vectors: (\d+) crc, (\d+) frames, (\d+) requests, (\d+) pulses, (\d+) streams, "
        r"(\d+) stale",
        output,
    )
    assert vectors is not None
    assert all(int(count) > 0 for count in vectors.groups())
