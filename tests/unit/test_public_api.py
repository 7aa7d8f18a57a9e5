"""The package's public surface is exactly what ``__all__`` lists."""

from __future__ import annotations
import __future__

import types

import hand_mqtt


def test_every_exported_name_exists() -> None:
    for name in hand_mqtt.__all__:
        assert hasattr(hand_mqtt, name), name


def test_nothing_public_is_left_out_of_all() -> None:
    for name in hand_mqtt.__all__:  # load the lazily imported ones too
        getattr(hand_mqtt, name)
    public = {
        name
        for name, value in vars(hand_mqtt).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType | __future__._Feature)
    }
    assert public == set(hand_mqtt.__all__) - {"__version__"}


def test_every_error_has_the_one_root() -> None:
    errors = [getattr(hand_mqtt, n) for n in hand_mqtt.__all__ if n.endswith("Error")]
    assert errors
    for error in errors:
        assert issubclass(error, hand_mqtt.HandMqttError)
