"""Stopping a long-running command on SIGINT or SIGTERM, however many arrive.

A Python signal handler runs on the main thread between two bytecodes, possibly while that
thread holds a lock (an ``Event``'s, a logging handler's). A handler that takes a lock itself can
deadlock the process, so the handler here does nothing at all: the interpreter's C-level handler
writes the signal number to a pipe (``signal.set_wakeup_fd``) and a watcher thread reads it.

The watcher asks the command to stop on the first signal. Stopping normally takes well under a
second; if it hangs, the process is ended without cleanup (``os._exit``, with a message):

- on a third signal, or on a second one that comes :data:`GRACE_S` or more after the first;
- :data:`DEADLINE_S` after the first signal, with no further signal needed.

The broker then publishes the services' wills (``offline``), as after a crash.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Final, Self

__all__ = ["DEADLINE_S", "GRACE_S", "StopSignals"]

logger = logging.getLogger("hand_mqtt")

GRACE_S: Final = 2.0
"""A second signal this long after the first forces the exit; sooner, it is taken as a repeat."""
DEADLINE_S: Final = 5.0
"""Stopping that takes longer than this after the first signal is ended by force."""
_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
_FORCE_AFTER_SIGNALS: Final = 3
_TICK_S: Final = 0.2


class StopSignals:
    """SIGINT and SIGTERM ask the command to stop; see the module's text for forced exits.

    Use it around the whole life of a service, start and stop included::

        with StopSignals() as signals:
            service.start()
            try:
                signals.wait()
            finally:
                service.stop()

    A signal during start-up is remembered: :meth:`wait` then returns at once. After a stop
    that a signal asked for, SIGINT and SIGTERM stay ignored for the rest of the process's life
    (its exit). Outside the main thread (where Python cannot take signals) it only waits for
    ``tick``.
    """

    def __init__(self, *, grace: float = GRACE_S, deadline: float = DEADLINE_S) -> None:
        self.grace = grace
        self.deadline = deadline
        self.requested = threading.Event()
        self.received = 0
        self.first_signal = 0
        self._first_at: float | None = None
        self._pipe: tuple[int, int] | None = None
        self._previous_handlers: dict[int, object] = {}
        self._previous_fd = -1
        self._closing = False
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> Self:
        if threading.current_thread() is not threading.main_thread():
            return self
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for sig in _SIGNALS:
            self._previous_handlers[sig] = signal.signal(sig, _ignore)
        self._watcher = threading.Thread(target=self._watch, name="hand-mqtt-signals", daemon=True)
        self._watcher.start()
        return self

    def __exit__(
        self,
        _exc_type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self._pipe is None:
            return
        for sig, handler in self._previous_handlers.items():
            if self.first_signal:
                # The process is on its way out after a signal; later ones (the rest of a
                # burst) are repeats and stay ignored, rather than kill it in the middle of its
                # exit. SIG_IGN, not a Python function: the interpreter puts its own handlers
                # back to the default (which kills) while it shuts down.
                signal.signal(sig, signal.SIG_IGN)
            else:
                signal.signal(sig, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._previous_fd)
        self._closing = True
        read_fd, write_fd = self._pipe
        with contextlib.suppress(OSError):
            os.write(write_fd, b"\0")
        if self._watcher is not None:
            self._watcher.join()
        os.close(read_fd)
        os.close(write_fd)
        self._pipe = None

    def wait(self, tick: Callable[[], bool] | None = None) -> None:
        """Block until a stop is asked for, or ``tick`` (called every 0.2 s) returns False."""
        while not self.requested.wait(_TICK_S):
            if tick is not None and not tick():
                return
        logger.info("%s received; stopping", _signal_name(self.first_signal))

    # -- watcher thread ------------------------------------------------------------------

    def _watch(self) -> None:
        assert self._pipe is not None
        read_fd = self._pipe[0]
        while not self._closing:
            timeout = None
            if self._first_at is not None:
                timeout = max(0.0, self._first_at + self.deadline - time.monotonic())
            ready, _, _ = select.select([read_fd], [], [], timeout)
            if self._closing:
                return
            if not ready:
                _force(f"stopping took more than {self.deadline:g} s", 1)
            try:
                data = os.read(read_fd, 64)
            except BlockingIOError:
                continue
            for signum in data:
                if signum in _SIGNALS:  # the pipe also carries other handled signals
                    self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        # No logging here: a stuck thread may hold the handler's lock, and this thread must
        # stay free to force the exit.
        now = time.monotonic()
        self.received += 1
        if self._first_at is None:
            self._first_at = now
            self.first_signal = signum
            self.requested.set()
            return
        name = _signal_name(signum)
        if self.received >= _FORCE_AFTER_SIGNALS or now - self._first_at >= self.grace:
            _force(f"{name} received while stopping", 128 + signum)
        _say(f"{name} received again: stopping already (once more forces the exit)")


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """Take the signal and do nothing: the wake-up pipe carries it to the watcher thread."""


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _say(text: str) -> None:
    # os.write, not logging or print: a stuck thread may hold their locks.
    with contextlib.suppress(OSError):
        os.write(2, f"\nhand-mqtt: {text}\n".encode())


def _force(reason: str, code: int) -> None:
    _say(f"{reason}; exiting without cleaning up")
    os._exit(code)
