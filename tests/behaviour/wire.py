"""Speak the serial protocol to a hand (simulated or emulated) over pyserial, frame by frame."""

from __future__ import annotations

import random
import time
from collections import deque
from typing import TypeVar

import serial

from hand_mqtt.hardware import protocol as p

R = TypeVar("R", p.Hello, p.Ack, p.Nack, p.Failsafe, p.Arrived)
S = TypeVar("S", p.Hello, p.Ack, p.Nack)


class Wire:
    """An open serial port plus a frame decoder: write frames, read the replies."""

    def __init__(self, path: str) -> None:
        self.port = serial.Serial(path, 115200, timeout=0.01)
        self.decoder = p.FrameDecoder()
        self.frames: deque[p.Frame] = deque()

    def close(self) -> None:
        self.port.close()

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def send(self, frame: p.Frame) -> None:
        self.write(frame.encode())

    def _pump(self) -> None:
        chunk = self.port.read(self.port.in_waiting or 1)
        if chunk:
            self.frames.extend(self.decoder.feed(chunk))

    def read_frame(self, timeout: float = 2.0) -> p.Frame | None:
        """The next frame from the hand, or None when none comes within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.frames and time.monotonic() < deadline:
            self._pump()
        return self.frames.popleft() if self.frames else None

    def expect(self, kind: type[R], timeout: float = 2.0) -> R:
        """The next reply, which must be a ``kind``."""
        frame = self.read_frame(timeout)
        assert frame is not None, f"no reply within {timeout} s (wanted {kind.__name__})"
        reply = p.parse_reply(frame)
        assert isinstance(reply, kind), f"wanted {kind.__name__}, got {reply}"
        return reply

    def request(self, frame: p.Frame, kind: type[S], timeout: float = 2.0) -> S:
        """Send ``frame`` and return its answer, which must be a ``kind`` with the same SEQ."""
        self.send(frame)
        reply = self.expect(kind, timeout)
        assert reply.seq == frame.seq, f"answer to SEQ {frame.seq} carries SEQ {reply.seq}"
        return reply

    def silent_for(self, seconds: float) -> bool:
        """True when not a single byte arrives for ``seconds``."""
        deadline = time.monotonic() + seconds
        got = b""
        while time.monotonic() < deadline:
            got += self.port.read(self.port.in_waiting or 1)
        return got == b"" and not self.frames

    def drain(self) -> None:
        """Forget whatever has arrived so far."""
        self.port.reset_input_buffer()
        self.decoder.reset()
        self.frames.clear()


def line_noise(seed: int, frames: int = 12) -> bytes:
    """Garbage a hand must never act on or answer, the same for every ``seed``.

    Random bytes without a sync byte, SET_ALL frames with one bit flipped after LEN (CRC-8
    catches every single-bit error), sync bytes followed by LEN > 16, and a truncated frame at
    the end (which the 50 ms rule clears).
    """
    rng = random.Random(seed)
    noise = bytearray(b for b in rng.randbytes(300) if b != p.SYNC)
    for seq in range(frames):
        frame = bytearray(p.set_all(seq, (180 - seq, 0, 180, 0, 180)).encode())
        frame[rng.randrange(2, len(frame))] ^= 1 << rng.randrange(8)
        noise += frame
        noise += bytes((p.SYNC, 17 + seq, 0x01, seq))
        noise += bytes(b for b in rng.randbytes(20) if b != p.SYNC)
    noise += bytes((p.SYNC, 5, 0x01))
    return bytes(noise)
