"""Tk objects must die on the thread that made them."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def collect_tk_garbage_here() -> Iterator[None]:
    """Collect a test's leftovers on the main thread, right after the test.

    Tk widgets and variables sit in reference cycles, so the cyclic garbage collector frees
    them, on whichever thread happens to trigger it. If that is a broker or MQTT thread, Tcl
    aborts the whole process ("async handler deleted by the wrong thread"). This fixture is
    set up first, so its teardown runs after every other fixture of the test has let go.
    """
    yield
    gc.collect()
