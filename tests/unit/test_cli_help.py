"""The command line's help reads like a good CLI's, and every exit code is written down."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from hand_mqtt import __version__
from hand_mqtt.cli import app
from hand_mqtt.cli.base import EXIT_CODES, _values_after_options, invocation

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands() -> Iterator[str]:
    def walk(command: object, path: list[str]) -> Iterator[str]:
        children = getattr(command, "commands", None)
        if children is None:
            yield " ".join(path)
            return
        for name, child in children.items():
            yield from walk(child, [*path, name])

    yield from walk(typer.main.get_command(app), [])


COMMANDS = sorted(_commands())


def _help(command: str) -> str:
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_has_its_exit_codes_written_down() -> None:
    assert sorted(EXIT_CODES) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_every_exit_code(command: str) -> None:
    shown = _help(command)
    status = shown.split("Exit status:\n", 1)[1]
    codes = [int(line.split()[0]) for line in status.splitlines() if line.strip()]
    assert codes == sorted(EXIT_CODES[command])


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_type_labels_and_fits_80_columns(command: str) -> None:
    shown = _help(command)
    assert not re.search(r"<(bool|int|str|float|file|path|dir|list)", shown), shown
    assert "{" not in shown.splitlines()[0], "usage shows {argument}"
    assert max(len(line) for line in shown.splitlines()) <= 80


def test_readme_lists_the_same_exit_codes() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    listed: dict[str, list[int]] = {}
    for row in section.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`hand-mqtt "):
            continue
        codes = [int(code) for code in re.findall(r"\b(\d)\b", cells[1])]
        for name in re.findall(r"`hand-mqtt ([a-z ]+?)`", cells[0]):
            listed[name] = codes
    assert listed == {command: sorted(codes) for command, codes in EXIT_CODES.items()}


def test_usage_names_the_arguments() -> None:
    assert _help("set").startswith("Usage: hand-mqtt set [OPTIONS] FINGER ANGLE\n")
    assert _help("angles").startswith(
        "Usage: hand-mqtt angles [OPTIONS] INDEX MIDDLE RING PINKY THUMB\n"
    )
    assert _help("health").startswith("Usage: hand-mqtt health [OPTIONS] arbiter|device|web\n")


def test_flags_and_options_read_plainly() -> None:
    shown = _help("state")
    assert "\n  --json " in shown
    assert "-b, --broker URL" in shown
    assert "mqtts://" in shown  # TLS is a broker URL away
    assert "-t, --timeout SECONDS" in shown
    assert "-v, --verbose" in shown
    assert "-vv" in shown


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"hand-mqtt {__version__}\n"


def test_top_level_help_groups_the_commands() -> None:
    result = CliRunner().invoke(app, [], env={"COLUMNS": "80"})
    assert result.exit_code == 2  # no command: the help, as a usage error
    for section in ("Run the system:", "Drive the hand:", "Look at the hand:"):
        assert section in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["index", "-5"], ["--", "index", "-5"]),
        (["index", "-5", "--hand", "left"], ["--hand", "left", "--", "index", "-5"]),
        (["-t", "3", "thumb", "-15", "-v"], ["-t", "3", "-v", "--", "thumb", "-15"]),
        (["index", "90"], ["index", "90"]),  # nothing to protect: left alone
        (["index", "--brokr", "x"], ["index", "--brokr", "x"]),  # Click says what is wrong
        (["--", "index", "-5"], ["--", "index", "-5"]),
        (["-", "-5", "0", "0", "-"], ["--", "-", "-5", "0", "0", "-"]),
    ],
)
def test_negative_numbers_move_behind_the_options(args: list[str], expected: list[str]) -> None:
    command = typer.main.get_command(app).commands["set"]  # type: ignore[attr-defined]
    params = command.get_params(typer.Context(command))
    assert _values_after_options(params, args) == expected


def test_invocation_is_a_command_that_works_as_printed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "hand-mqtt"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [".venv/bin/hand-mqtt", "up"])
    assert invocation() == ".venv/bin/hand-mqtt"  # after make run, in the checkout
    monkeypatch.setattr(sys, "argv", [str(script), "up"])
    assert invocation() == ".venv/bin/hand-mqtt"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert invocation() == "hand-mqtt"  # what the shell finds (an activated venv, pipx)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert invocation() == str(script)  # from another folder: the whole path
    main = Path(typer.__file__).parent.parent / "hand_mqtt" / "__main__.py"
    monkeypatch.setattr(sys, "argv", [str(main), "up"])
    assert invocation().endswith(" -m hand_mqtt")
    monkeypatch.setattr(sys, "argv", ["/usr/bin/some-test-runner"])
    assert invocation() == "hand-mqtt"
