"""The arbiter's own record of every hand's desired state, so that no accepted command is lost
when the broker and the arbiter crash together.

The retained ``state`` on the broker is the truth while the broker runs, but a broker saves its
retained messages from time to time (Mosquitto: every ``autosave_interval`` seconds; the
embedded broker never). If both die between two saves, the hand's state is gone, and a fresh
arbiter would start again from an open hand at version 0. With a journal the arbiter writes each
new state to a file before it publishes it, and reads the file back when it starts.

The file holds one JSON object per line, appended: ``{"hand": "hand1", "state": {...}}`` or
``{"hand": "hand1", "retired": true}``; the last line about a hand wins. Each line is handed to
the operating system before the state is published, so it survives a crash of the process
(``sync=True`` also waits for the disk, to survive a power cut, at a cost per command). When the
file holds many more lines than hands it is rewritten with one line per hand, atomically. A line
that cannot be read (the last one, cut short by a crash) is skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import IO, Final

from pydantic import ValidationError

from hand_mqtt.errors import ConfigError
from hand_mqtt.model import HandState

__all__ = ["StateJournal"]

logger = logging.getLogger("hand_mqtt")

_MIN_LINES_BEFORE_COMPACTING: Final = 1000


def _state_line(hand: str, state: HandState) -> str:
    return f'{{"hand":{json.dumps(hand)},"state":{state.to_json()}}}\n'


class StateJournal:
    """An append-only file of hand states (see the module's description)."""

    def __init__(self, path: Path, *, sync: bool = False) -> None:
        self.path = path
        self.sync = sync
        self._states: dict[str, HandState] = {}
        self._lines = 0
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def load(self) -> dict[str, HandState]:
        """Read the file (an absent one is empty) and open it for appending."""
        unreadable = 0
        try:
            with self.path.open(encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    if not line.strip():
                        continue
                    self._lines += 1
                    if not self._apply(line):
                        unreadable += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot read the state file {self.path}: {exc.strerror}") from None
        if unreadable:
            logger.warning(
                "arbiter: skipped %d unreadable line(s) of %s (a write cut short by a crash?)",
                unreadable,
                self.path,
            )
        self._open()
        return dict(self._states)

    def record(self, hand: str, state: HandState) -> None:
        """Write ``state`` as the hand's latest, before it is published."""
        self._states[hand] = state
        self._append(_state_line(hand, state))

    def retire(self, hand: str) -> None:
        """Forget the hand: after a restart it is not restored."""
        self._states.pop(hand, None)
        self._append(f'{{"hand":{json.dumps(hand)},"retired":true}}\n')

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    # -- inside ----------------------------------------------------------------------------

    def _apply(self, line: str) -> bool:
        try:
            entry = json.loads(line)
            hand = entry["hand"]
            if not isinstance(hand, str):
                return False
            if entry.get("retired") is True:
                self._states.pop(hand, None)
            else:
                self._states[hand] = HandState.model_validate(entry["state"])
        except (ValueError, KeyError, TypeError, ValidationError):
            return False
        return True

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
            if self._file.tell() > 0:
                with self.path.open("rb") as tail:
                    tail.seek(-1, os.SEEK_END)
                    if tail.read(1) != b"\n":
                        # A line cut short by a crash: the next one must not be glued to it.
                        self._file.write("\n")
        except OSError as exc:
            raise ConfigError(f"cannot write the state file {self.path}: {exc.strerror}") from None

    def _append(self, line: str) -> None:
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(line)
                self._file.flush()
                if self.sync:
                    os.fsync(self._file.fileno())
            except OSError as exc:
                logger.error("arbiter: cannot write the state file %s: %s", self.path, exc)
                return
            self._lines += 1
            if self._lines > max(_MIN_LINES_BEFORE_COMPACTING, 4 * len(self._states)):
                self._compact()

    def _compact(self) -> None:
        """Rewrite the file with one line per hand (atomically: a crash leaves the old one)."""
        text = "".join(_state_line(hand, state) for hand, state in self._states.items())
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            logger.error("arbiter: cannot rewrite the state file %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        assert self._file is not None
        self._file.close()
        self._file = self.path.open("a", encoding="utf-8")
        self._lines = len(self._states)
