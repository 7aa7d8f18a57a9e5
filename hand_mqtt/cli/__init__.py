"""The ``hand-mqtt`` command: a thin Typer layer over the library."""

from __future__ import annotations

import typer

from . import calibrate, clients, control, deploy, firmware, gestures, services

__all__ = ["app", "main"]

app = typer.Typer(
    name="hand-mqtt",
    help="Drive a servo-actuated robotic hand over MQTT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.registered_commands += services.app.registered_commands
app.registered_commands += control.app.registered_commands
app.registered_commands += gestures.app.registered_commands
app.registered_commands += clients.app.registered_commands
app.registered_commands += calibrate.app.registered_commands
deploy.register(app)
app.add_typer(firmware.app, name="firmware")


def main() -> None:
    app()
