"""A small terminal screen for tests: what a person would see after a program's output.

It understands what rich's live display writes (text, CR, LF, cursor up, erase line, colours
and cursor visibility, which it ignores) and records whether any line was too long for the
screen and wrapped: a live view that wraps cannot be redrawn cleanly.
"""

from __future__ import annotations

import re

__all__ = ["Screen"]

_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


class Screen:
    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.lines: list[list[str]] = [[]]
        self.row = 0
        self.col = 0
        self.wrapped = 0
        """How many times a line was longer than the screen and wrapped."""

    def feed(self, text: str) -> None:
        position = 0
        while position < len(text):
            match = _CSI.match(text, position)
            if match is not None:
                self._control(match.group(1), match.group(2))
                position = match.end()
                continue
            char = text[position]
            position += 1
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self._down()
            elif char >= " ":
                if self.col >= self.columns:
                    self.wrapped += 1
                    self.col = 0
                    self._down()
                line = self.lines[self.row]
                line.extend(" " * (self.col - len(line) + 1))
                line[self.col] = char
                self.col += 1

    def _down(self) -> None:
        self.row += 1
        if self.row == len(self.lines):
            self.lines.append([])

    def _control(self, params: str, final: str) -> None:
        if final == "A":
            self.row = max(0, self.row - int(params or "1"))
        elif final == "K" and params == "2":
            self.lines[self.row] = []
        # colours (m), cursor visibility (h, l) and the rest change nothing we look at

    def text(self) -> list[str]:
        """The screen's lines, trailing spaces removed, trailing empty lines dropped."""
        shown = ["".join(line).rstrip() for line in self.lines]
        while shown and not shown[-1]:
            shown.pop()
        return shown
