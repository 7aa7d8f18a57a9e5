"""The ``hand-mqtt`` command: a thin Typer layer over the library.

Composed one way: every module of this package holds one ``app`` (a ``typer.Typer``); the
top-level commands' apps are added without a name, the groups (``users``, ``firmware``) with
one. Every command is a :class:`~hand_mqtt.cli.base.HandCommand`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from hand_mqtt import __version__

from . import calibrate, clients, control, deploy, firmware, gestures, services
from .base import HandCommand, HandGroup

__all__ = ["app", "main"]

app = typer.Typer(
    name="hand-mqtt",
    cls=HandGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"hand-mqtt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Drive a servo-actuated robotic hand over MQTT.

    Start everything with 'hand-mqtt up', then drive the hand from another terminal.
    Every command has --help.
    """


def _compose() -> None:
    groups = {deploy.users_app: "users", firmware.app: "firmware"}
    for part in (
        services.app,
        control.app,
        gestures.app,
        clients.app,
        calibrate.app,
        deploy.app,
        *groups,
    ):
        for info in part.registered_commands:
            info.cls = HandCommand
        part.rich_markup_mode = None
        name = groups.get(part)
        app.add_typer(part, name=name, rich_help_panel="Production and hardware" if name else None)


_compose()


def main() -> None:
    app()
