"""How every command parses its arguments and prints its help.

- A negative number is a value, never an option: ``set index -5`` reaches the range check and
  ``nudge thumb -15`` moves the thumb, as a person expects (Click alone reads ``-5`` as an
  unknown option).
- Usage lines name the arguments as a person reads them: ``set [OPTIONS] FINGER ANGLE``.
- Options show what they take (``--broker URL``), flags show nothing (no ``<bool>``).
- Every command lists the exit codes it can return (:data:`EXIT_CODES`, also in the README).
- The top-level help groups the commands by what they are for.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = [
    "BROKER_UNREACHABLE",
    "EXIT_CODES",
    "NOT_SERVED",
    "HandCommand",
    "HandGroup",
    "exit_status",
    "invocation",
]

# Exit codes shared by every command that talks to a hand.
NOT_SERVED: Final = 3
BROKER_UNREACHABLE: Final = 4

_OK: Final = "done"
_USAGE: Final = "the command line, or a file it names, is wrong (the sentence says how)"
_FAILED: Final = "could not start (its port is taken, say): the sentence says why"
_BROKER: Final = "the broker could not be reached or refused us, or no answer in time"
_NOT_SERVED: Final = "no arbiter is running for this hand, or it serves other hands"

_DRIVE: Final = {
    0: "the arbiter applied the command; the new state is printed",
    1: "the arbiter rejected the command; its sentence is printed",
    2: _USAGE,
    NOT_SERVED: _NOT_SERVED,
    BROKER_UNREACHABLE: _BROKER,
}
_SERVICE: Final = {0: "stopped by Ctrl-C or SIGTERM", 1: _FAILED, 2: _USAGE}
_FILES: Final = {0: _OK, 2: _USAGE}

EXIT_CODES: Final[dict[str, dict[int, str]]] = {
    "up": {**_SERVICE, BROKER_UNREACHABLE: "the broker given with --broker could not be reached"},
    "broker": _SERVICE,
    "arbiter": _SERVICE,
    "device": {
        **_SERVICE,
        1: "could not start: another device service owns the hand, say",
        NOT_SERVED: "another device service took the hand over (--takeover)",
        BROKER_UNREACHABLE: _BROKER,
    },
    "simulate": _SERVICE,
    "set": _DRIVE,
    "nudge": _DRIVE,
    "pose": _DRIVE,
    "angles": _DRIVE,
    "relax": _DRIVE,
    "stop": _DRIVE,
    "unlock": _DRIVE,
    "play": {
        0: "the arbiter started the gesture (with --wait: it played to its end)",
        1: "the arbiter rejected it, or (with --wait) a command ended it first",
        2: _USAGE,
        NOT_SERVED: _NOT_SERVED,
        BROKER_UNREACHABLE: _BROKER,
    },
    "record": {
        0: "the gesture was saved in FILE",
        1: "nothing to save: the hand did not change while recording",
        2: _USAGE,
        BROKER_UNREACHABLE: _BROKER,
    },
    "state": {
        0: "the state is printed",
        2: _USAGE,
        NOT_SERVED: "the broker holds no state for this hand; the sentence says why",
        BROKER_UNREACHABLE: _BROKER,
    },
    "watch": {
        0: "stopped by Ctrl-C, SIGTERM or --for",
        2: _USAGE,
        BROKER_UNREACHABLE: _BROKER,
    },
    "gui": {
        0: "the window was closed",
        1: "no display to open a window on",
        2: _USAGE,
        BROKER_UNREACHABLE: _BROKER,
    },
    "plot": {
        0: "the picture was drawn (or written to --out)",
        1: "matplotlib is missing, or there is no display (give --out)",
        2: _USAGE,
        NOT_SERVED: "no state to draw: no arbiter has published one for this hand",
        BROKER_UNREACHABLE: _BROKER,
    },
    "retire": {
        0: "the arbiter forgot the hand",
        1: "the arbiter refused, or did not answer within --timeout",
        2: _USAGE,
        BROKER_UNREACHABLE: _BROKER,
    },
    "web": _SERVICE,
    "calibrate": {
        0: "the stops were saved (or you quit: nothing saved)",
        1: "the serial port failed, or both stops were the same",
        2: "the command line or a file it names is wrong, or this is not a terminal",
    },
    "homeassistant": {0: _OK, 2: _USAGE, BROKER_UNREACHABLE: _BROKER},
    "health": {
        0: "the service is online",
        1: "it is not online, or the broker could not be reached",
        2: _USAGE,
    },
    "users add": _FILES,
    "users passwd": _FILES,
    "users remove": _FILES,
    "users list": _FILES,
    "firmware build": {0: "built within the size budget", 1: "the build failed", 2: _USAGE},
    "firmware export": {
        0: "the sketch folder was written",
        1: "it could not be written, or its files exist already (--force)",
        2: _USAGE,
    },
    "firmware flash": {
        0: "flashed",
        1: "the port is not a serial device, or the build or avrdude failed",
        2: _USAGE,
    },
}


def exit_status(command: str) -> str:
    """The ``Exit status`` section of a command's help (Click keeps ``\\b`` blocks as written)."""
    codes = EXIT_CODES[command]
    lines = [f"  {code}  {meaning}" for code, meaning in sorted(codes.items())]
    return "\b\nExit status:\n" + "\n".join(lines)


_SCRIPT: Final = "hand-mqtt"

# A negative number as a whole argument: -5, -15, -0.5 (the range check says what is wrong).
_NEGATIVE_NUMBER = re.compile(r"-[0-9]+(?:\.[0-9]*)?")


def _values_after_options(params: Sequence[object], args: list[str]) -> list[str]:
    """Move every argument behind ``--`` so that a negative number is read as a value.

    Options (with the values they take) keep their order in front; nothing changes when no
    argument is a negative number, so every other mistake gets Click's own message.
    """
    takes: dict[str, int] = {}
    for param in params:
        if isinstance(param, TyperOption):
            count = 0 if param.is_flag or param.count else param.nargs
            for name in (*param.opts, *param.secondary_opts):
                takes[name] = count
    options: list[str] = []
    values: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            values.extend(args[index:])
            break
        if _NEGATIVE_NUMBER.fullmatch(arg) or not arg.startswith("-") or arg == "-":
            values.append(arg)
            continue
        options.append(arg)
        if "=" not in arg:
            wanted = takes.get(arg, 0)
            options.extend(args[index : index + wanted])
            index += wanted
    if not any(_NEGATIVE_NUMBER.fullmatch(value) for value in values):
        return args
    return [*options, "--", *values]


def _argument_name(param: TyperArgument) -> str:
    return param.metavar or (param.name or "value").upper()


class HandCommand(TyperCommand):
    """A Typer command with the conventions described in this module's docstring."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        for param in self.params:
            if isinstance(param, TyperOption) and (param.is_flag or param.count):
                param.metavar = ""  # a flag takes nothing: show nothing after it

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _values_after_options(self.get_params(ctx), args))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = _argument_name(param)
                if param.nargs != 1 and param.metavar is None:
                    name += "..."
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments: list[tuple[str, str]] = []
        options: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                arguments.append((_argument_name(param), param.help or ""))
                continue
            record = param.get_help_record(ctx)
            if record is not None:
                options.append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)


class HandGroup(TyperGroup):
    """Lists its commands in sections, by the ``rich_help_panel`` each one names."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        rows = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        shown = [(name, command) for name, command in rows if command and not command.hidden]
        if not shown:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        for name, command in shown:
            assert command is not None
            panel = getattr(command, "rich_help_panel", None) or "Commands"
            sections.setdefault(panel, []).append((name, command.get_short_help_str(limit)))
        for panel, entries in sections.items():
            with formatter.section(panel):
                formatter.write_dl(entries)


def invocation() -> str:
    """How to run hand-mqtt again, as this process was run: a command that works as printed.

    ``hand-mqtt`` when that is what the shell finds; else the script's path (relative to the
    current folder when it lies inside it, as ``.venv/bin/hand-mqtt`` after ``make run``);
    ``python -m hand_mqtt`` with this interpreter when run that way. Called from another
    program (a test runner), plain ``hand-mqtt``.
    """
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    if script.name == "__main__.py" and script.parent.name == "hand_mqtt":
        return f"{_shown_path(Path(sys.executable))} -m hand_mqtt"
    if script.name != _SCRIPT or not script.exists():
        return _SCRIPT
    on_path = shutil.which(_SCRIPT)
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return _SCRIPT
    return _shown_path(script)


def _shown_path(path: Path) -> str:
    absolute = path.absolute()
    try:
        relative = absolute.relative_to(Path.cwd())
    except ValueError:
        return shlex.quote(str(absolute))
    return shlex.quote(str(relative) if relative.parent != Path() else f"./{relative}")
