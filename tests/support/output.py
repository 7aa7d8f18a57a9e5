"""A process's output as lines, read on a thread so that none waits unseen in a buffer."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time

__all__ = ["OutputLines", "banner_port"]


class OutputLines:
    """Follows a process's stdout (text mode) line by line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        threading.Thread(target=self._read, name="output-lines", daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self, timeout: float = 20) -> str:
        """The next line; fails when none comes in ``timeout`` or the output ended."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s after: {self.seen[-5:]}") from None
        if line is None:
            self._ended = True
            raise AssertionError(f"the output ended after: {self.seen[-5:]}")
        self.seen.append(line)
        return line

    def until(self, text: str, timeout: float = 30) -> str:
        """Every line up to and including the first that contains ``text``."""
        start = len(self.seen)
        deadline = time.monotonic() + timeout
        while True:
            if text in self.line(max(0.0, deadline - time.monotonic())):
                return "\n".join(self.seen[start:]) + "\n"

    def rest(self, timeout: float = 30) -> str:
        """Every line until the output ends (the process closed it or exited)."""
        start = len(self.seen)
        deadline = time.monotonic() + timeout
        while not self._ended:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the output did not end within {timeout} s") from None
            if line is None:
                self._ended = True
            else:
                self.seen.append(line)
        return "\n".join(self.seen[start:]) + "\n"


def banner_port(banner: str) -> int:
    """The embedded broker's port, as ``hand-mqtt up``'s banner gives it (after ``--port 0``)."""
    found = re.search(r"broker   mqtt://127\.0\.0\.1:(\d+) \(embedded\)", banner)
    assert found is not None, banner
    return int(found.group(1))
