"""The only module that imports pyserial: open a serial URL, read, write, and say why not.

A serial URL is a device path (``/dev/ttyACM0``, a pty), or any pyserial URL handler such as
``socket://host:port``, ``rfc2217://host:port`` or ``loop://``. This is the seam tests use: the
device service runs the same code against a pty, a socket or a real Arduino.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
from typing import Any

import serial

from hand_mqtt.errors import LinkError

__all__ = ["DEFAULT_BAUDRATE", "SerialLink"]

logger = logging.getLogger("hand_mqtt")

DEFAULT_BAUDRATE = 115200


class SerialLink:
    """One serial connection; every failure is raised as :class:`LinkError`.

    The port is opened non-blocking: :meth:`read_available` never waits, and a thread that
    owns the link waits for input on :meth:`fileno` together with anything else it waits for
    (the device service's link thread also waits for news from MQTT that way).
    """

    def __init__(
        self, url: str, *, baudrate: int = DEFAULT_BAUDRATE, read_timeout: float = 0.05
    ) -> None:
        self.url = url
        self.baudrate = baudrate
        self.read_timeout = read_timeout
        self._port: Any = None
        self._fd: int | None = None

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def open(self) -> None:
        """Open the port (8N1, no flow control) and discard whatever was waiting in it."""
        self.close()
        options: dict[str, Any] = {
            "baudrate": self.baudrate,
            "timeout": 0,  # reads never wait: whoever owns the link waits on fileno()
            "write_timeout": 2.0,
        }
        if "://" not in self.url:
            # Two services must not share one hand's port.
            options["exclusive"] = True
        try:
            port = serial.serial_for_url(self.url, do_not_open=True, **options)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"cannot open {self.url}: {_reason(exc)}") from None
        try:
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            # socket:// may fail after connecting (the peer resets at once): do not leave its
            # socket to the garbage collector.
            _close_socket_of(port)
            raise LinkError(f"cannot open {self.url}: {_reason(exc)}") from None
        self._port = port
        # A local port (a tty or pty) is a plain non-blocking descriptor: writing to it
        # directly skips pyserial's select() after every write, a quarter of a frame's cost.
        fd = getattr(port, "fd", None)
        self._fd = fd if isinstance(fd, int) and "://" not in self.url else None
        with contextlib.suppress(serial.SerialException, OSError):
            port.reset_input_buffer()

    def close(self) -> None:
        port, self._port = self._port, None
        self._fd = None
        if port is not None:
            # pyserial's socket:// handler loses its socket when the peer has reset the
            # connection (shutdown() raises before close()): close that socket ourselves.
            sock = getattr(port, "_socket", None)
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()
            _close_socket_of(port, sock)

    def fileno(self) -> int | None:
        """A descriptor that turns readable when bytes arrive, for ``select``/``poll``.

        None when the port has none (``rfc2217://``, ``loop://``): poll :meth:`read_available`
        then. Valid until the link is closed or reopened.
        """
        port = self._port
        if port is None:
            return None
        fd = getattr(port, "fd", None)  # a tty or pty
        if isinstance(fd, int):
            return fd
        sock = getattr(port, "_socket", None)  # socket://
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                number = sock.fileno()
                return number if isinstance(number, int) and number >= 0 else None
        return None

    def read_available(self) -> bytes:
        """Whatever has arrived, without waiting (``b""`` when nothing has)."""
        port = self._require()
        if self._fd is not None:
            data = self._read_fd(self._fd)
            if data:
                return data
            # A tty read gives b"" both when nothing is there and when the device is gone;
            # a descriptor that says it is readable yet gives nothing is gone.
            try:
                readable, _, _ = select.select([self._fd], [], [], 0)
            except (OSError, ValueError) as exc:
                raise LinkError(f"reading {self.url} failed: {_reason(exc)}") from None
            if not readable:
                return b""
            data = self._read_fd(self._fd)
            if not data:
                raise LinkError(f"reading {self.url} failed: the device was disconnected")
            return data
        try:
            return bytes(port.read(4096))
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            # TypeError/AttributeError: pyserial's socket handler after the peer vanished.
            raise LinkError(f"reading {self.url} failed: {_reason(exc)}") from None

    def _read_fd(self, fd: int) -> bytes:
        try:
            return os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            raise LinkError(f"reading {self.url} failed: {_reason(exc)}") from None

    def read(self) -> bytes:
        """Whatever has arrived, waiting at most ``read_timeout`` for the first byte."""
        self._require()
        fd = self.fileno()
        if fd is not None:
            with contextlib.suppress(OSError, ValueError):
                select.select([fd], [], [], self.read_timeout)
            return self.read_available()
        deadline = time.monotonic() + self.read_timeout
        while True:
            data = self.read_available()
            if data or time.monotonic() >= deadline:
                return data
            time.sleep(0.005)

    def write(self, data: bytes) -> None:
        port = self._require()
        if self._fd is not None:
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                raise LinkError(f"writing to {self.url} failed: {_reason(exc)}") from None
            if written == len(data):
                return
            data = data[written:]
        try:
            port.write(data)
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            raise LinkError(f"writing to {self.url} failed: {_reason(exc)}") from None

    def _require(self) -> Any:
        if self._port is None:
            raise LinkError(f"{self.url} is not open")
        return self._port


def _close_socket_of(port: Any, sock: Any = None) -> None:
    """Close a socket:// port's socket, even one pyserial has already let go of."""
    sock = sock if sock is not None else getattr(port, "_socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
