"""Misbehaving firmwares: the simulated firmware with one fault each, for the serial seam.

Each runs behind a real pty or TCP port (``PtyHand(firmware=...)``, ``SocketHand(...)``), so
the device service meets it exactly as it would meet a real board.
"""

from __future__ import annotations

import threading
import time

from hand_mqtt import SimulatedFirmware
from hand_mqtt.hardware import protocol as p


def _frames(data: bytes) -> list[p.Frame]:
    return p.FrameDecoder().feed(data)


class FalseStartFirmware(SimulatedFirmware):
    """Puts ``A5 10`` (a sync byte claiming 16 payload bytes) before every answer."""

    def feed(self, data: bytes) -> bytes:
        out = super().feed(data)
        return b"\xa5\x10" + out if out else out


class ClampingFirmware(SimulatedFirmware):
    """Applies what it is sent but acknowledges every angle clamped to ``low`` .. ``high``."""

    def __init__(self, low: int = 10, high: int = 170) -> None:
        super().__init__()
        self.low, self.high = low, high

    def feed(self, data: bytes) -> bytes:
        out = b""
        for frame in _frames(super().feed(data)):
            reply = p.parse_reply(frame)
            if isinstance(reply, p.Ack):
                clamped = [min(max(a, self.low), self.high) for a in reply.angles]
                out += p.ack_frame(reply.seq, clamped, reply.status, reply.relaxed).encode()
            else:
                out += frame.encode()
        return out


class NackingFirmware(SimulatedFirmware):
    """Refuses every SET_ALL and SET_SOME with a NACK (changing nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[float] = []
        """When each SET was refused (``time.monotonic()``)."""

    def feed(self, data: bytes) -> bytes:
        sets = [
            f.seq for f in _frames(data) if f.type in (p.FrameType.SET_ALL, p.FrameType.SET_SOME)
        ]
        if sets:
            self.refused += [time.monotonic()] * len(sets)
            return b"".join(p.nack_frame(seq, p.NackReason.BAD_ANGLE).encode() for seq in sets)
        return super().feed(data)


class SilentFirmware(SimulatedFirmware):
    """Answers nothing while :attr:`silent` is set (it still hears, as a broken TX line)."""

    def __init__(self) -> None:
        super().__init__()
        self.silent = threading.Event()

    def feed(self, data: bytes) -> bytes:
        out = super().feed(data)
        return b"" if self.silent.is_set() else out


class LossyFirmware(SimulatedFirmware):
    """Ignores the first ``drop`` SET frames it receives, as if they were lost on the line."""

    def __init__(self, drop: int) -> None:
        super().__init__()
        self.drop = drop

    def feed(self, data: bytes) -> bytes:
        if self.drop and any(
            f.type in (p.FrameType.SET_ALL, p.FrameType.SET_SOME) for f in _frames(data)
        ):
            self.drop -= 1
            return b""
        return super().feed(data)
