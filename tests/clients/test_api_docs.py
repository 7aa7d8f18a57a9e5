"""The Python shown in docs/api.md and the README runs as printed.

Each ```python block is a whole program. They run in order against a Mosquitto of their own
(so the default base topic ``hand`` is theirs alone), the arbiter, the device service and the
simulated hand; only the broker's port is changed from the printed 1883.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hand_mqtt import BrokerUrl, Topics
from harness.brokers import MosquittoProcess, mosquitto_binary
from tests.conftest import need
from tests.support.system import System

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


@pytest.fixture
def default_hand() -> Iterator[System]:
    need(mosquitto_binary() is not None, "mosquitto is not installed")
    broker = MosquittoProcess()
    broker.start()
    system = System(BrokerUrl.parse(broker.url), Topics("hand")).start()
    try:
        yield system
    finally:
        system.stop()
        broker.cleanup()


@pytest.mark.parametrize("doc", ["docs/api.md", "README.md"])
def test_python_blocks_run_as_printed(default_hand: System, doc: str) -> None:
    blocks = python_blocks(ROOT / doc)
    assert blocks, f"{doc} shows no Python"
    port = default_hand.url.port
    for number, block in enumerate(blocks, start=1):
        assert "127.0.0.1:1883" in block, f"block {number} of {doc} names no broker"
        done = subprocess.run(
            [sys.executable, "-c", block.replace("127.0.0.1:1883", f"127.0.0.1:{port}")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"block {number} of {doc}:\n{block}\n{done.stderr}"
