"""A simulated hand behind a real port: a pseudo-terminal or a TCP socket.

:class:`PtyHand` runs a :class:`~hand_mqtt.devtools.simulator.SimulatedFirmware` behind a
pseudo-terminal (a symlink gives it a stable path a serial client can open) and
:class:`SocketHand` behind a TCP port (``socket://127.0.0.1:PORT``); both can be "unplugged"
and "plugged" again like a USB cable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import socket
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from hand_mqtt.devtools.simulator import FrameListener, SimulatedFirmware
from hand_mqtt.hardware import protocol as p

__all__ = ["DEFAULT_BAUDRATE", "PtyHand", "SocketHand"]

_log = logging.getLogger("hand_mqtt")


DEFAULT_BAUDRATE: Final = 115200
_OUT_LIMIT: Final = 64 * 1024  # like a UART nobody reads: old bytes are lost beyond this
_SELECT_S: Final = 0.005


class _Transport:
    """Runs a :class:`SimulatedFirmware` in a background thread behind some file descriptors.

    Subclasses own the descriptors; every open/close of them happens either before the
    thread starts, after it stopped, or inside it (via :meth:`_call`), never concurrently.
    """

    def __init__(self, firmware: SimulatedFirmware | None, on_frame: FrameListener | None) -> None:
        self._firmware = firmware if firmware is not None else SimulatedFirmware()
        self.on_frame = on_frame
        """Called (in the background thread) for every good frame the firmware receives."""
        self.baudrate: int | None = DEFAULT_BAUDRATE
        """Line speed the transport imitates (None: as fast as the host can go)."""
        self._stats_lock = threading.Lock()
        self._bytes_received = 0
        self._frames_received = 0
        self._out = bytearray()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_r = -1
        self._wake_w = -1
        self._pending: list[tuple[Callable[[], None], threading.Event]] = []
        self._pending_lock = threading.Lock()
        self._plugged = False

    # -- public ----------------------------------------------------------------------------

    @property
    def firmware(self) -> SimulatedFirmware:
        """The simulated firmware (inspect its targets, config, counters...)."""
        return self._firmware

    @property
    def bytes_received(self) -> int:
        """Bytes the host wrote to the simulated hand."""
        with self._stats_lock:
            return self._bytes_received

    @property
    def frames_received(self) -> int:
        """Good frames the simulated hand received."""
        with self._stats_lock:
            return self._frames_received

    @property
    def plugged(self) -> bool:
        """Whether the hand is currently plugged in."""
        return self._plugged

    def start(self) -> None:
        """Plug in, boot (the boot HELLO is queued for the host) and start serving."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping.clear()
        self._firmware.add_listener(self._count_frame)
        try:
            self._plug()
        except BaseException:
            self._firmware.remove_listener(self._count_frame)
            self._close_wake()
            raise
        self._thread = threading.Thread(
            target=self._run, name=f"{type(self).__name__}-firmware", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release every descriptor. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wake()
        thread.join()
        self._unplug()
        self._close_wake()
        self._firmware.remove_listener(self._count_frame)
        self._finish()

    def unplug(self) -> None:
        """Pull the cable: the host's open port starts failing."""
        self._call(self._unplug)

    def plug(self) -> None:
        """Plug the cable back in: the firmware reboots and queues a HELLO."""
        self._call(self._plug)

    def inject(self, data: bytes) -> None:
        """Send raw bytes to the host, as if the firmware (or line noise) wrote them."""
        payload = bytes(data)
        self._call(lambda: self._queue(payload))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- thread machinery ------------------------------------------------------------------

    def _count_frame(self, frame: p.Frame) -> None:
        with self._stats_lock:
            self._frames_received += 1
        hook = self.on_frame
        if hook is not None:
            hook(frame)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def _close_wake(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _call(self, action: Callable[[], None]) -> None:
        thread = self._thread
        if thread is None or threading.current_thread() is thread:
            action()
            return
        done = threading.Event()
        with self._pending_lock:
            self._pending.append((action, done))
        self._wake()
        while not done.wait(0.05):
            if not thread.is_alive():  # pragma: no cover - defensive
                raise RuntimeError("the simulator thread died")

    def _queue(self, data: bytes) -> None:
        if not self._plugged or not data:
            return
        self._out += data
        if len(self._out) > _OUT_LIMIT:
            del self._out[: len(self._out) - _OUT_LIMIT]

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception:  # pragma: no cover - keep the hand alive whatever happens
                _log.exception("simulated hand: unexpected error")
                time.sleep(_SELECT_S)

    def _step(self) -> None:
        readers = [self._wake_r, *self._read_fds()]
        writers = self._write_fds() if self._out else []
        readable, writable, _ = select.select(readers, writers, [], _SELECT_S)
        if self._wake_r in readable:
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 512)
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for action, done in pending:
            try:
                action()
            except Exception:
                _log.exception("simulated hand: request failed")
            finally:
                done.set()
        if pending:
            return  # descriptors may have changed: select again
        for fd in readable:
            if fd != self._wake_r:
                data = self._read(fd)
                if data:
                    with self._stats_lock:
                        self._bytes_received += len(data)
                    reply = self._firmware.feed(data)
                    if self.baudrate:
                        # A UART is busy for 10 bit times per byte each way (8N1): model it,
                        # so a burst from the host meets the pace of a real serial line.
                        time.sleep((len(data) + len(reply)) * 10 / self.baudrate)
                    self._queue(reply)
        self._queue(self._firmware.poll())
        if self._out and writable:
            sent = self._write(bytes(self._out))
            del self._out[:sent]

    # -- subclass hooks ----------------------------------------------------------------------

    def _plug(self) -> None:
        raise NotImplementedError

    def _unplug(self) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Release what outlives unplug (called once by :meth:`stop`)."""

    def _read_fds(self) -> list[int]:
        raise NotImplementedError

    def _write_fds(self) -> list[int]:
        raise NotImplementedError

    def _read(self, fd: int) -> bytes:
        raise NotImplementedError

    def _write(self, data: bytes) -> int:
        raise NotImplementedError


class PtyHand(_Transport):
    """A simulated hand behind a pseudo-terminal, reachable at a stable symlink :attr:`path`.

    The host opens :attr:`path` like a serial port (pyserial, 115200 baud; the baud rate is
    ignored). The simulator keeps the slave side open too, so a client closing and reopening
    the port never makes the master see EIO. :meth:`unplug` closes the pty and removes the
    symlink (the client's reads and writes fail, as with a pulled USB cable); :meth:`plug`
    makes a new pty, re-points the symlink and reboots the firmware, which queues a HELLO.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        firmware: SimulatedFirmware | None = None,
        name: str = "hand",
        on_frame: FrameListener | None = None,
    ) -> None:
        super().__init__(firmware, on_frame)
        self._own_dir = directory is None
        self._dir = (
            Path(tempfile.mkdtemp(prefix="hand-pty-")) if directory is None else Path(directory)
        )
        self._path = self._dir / name
        self._master = -1
        self._slave = -1
        self._device = ""

    @property
    def path(self) -> str:
        """The symlink to open; stays the same across unplug/plug."""
        return str(self._path)

    @property
    def device(self) -> str:
        """The pts device the symlink points to right now ("" when unplugged)."""
        return self._device

    def _plug(self) -> None:
        if self._plugged:
            return
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            os.set_blocking(master, False)
            device = os.ttyname(slave)
            link = self._path.with_name(f".{self._path.name}.tmp")
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(device)
            link.replace(self._path)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave, self._device = master, slave, device
        self._plugged = True
        self._out.clear()
        self._queue(self._firmware.boot())

    def _unplug(self) -> None:
        if not self._plugged:
            return
        self._plugged = False
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1
        self._device = ""
        self._out.clear()

    def _finish(self) -> None:
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _read_fds(self) -> list[int]:
        return [self._master] if self._plugged else []

    def _write_fds(self) -> list[int]:
        return [self._master] if self._plugged else []

    def _read(self, fd: int) -> bytes:
        try:
            return os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:  # EIO cannot happen while we hold the slave, but never die on it
            return b""

    def _write(self, data: bytes) -> int:
        try:
            return os.write(self._master, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return len(data)  # nobody can receive it: drop, like a UART


class SocketHand(_Transport):
    """A simulated hand behind a TCP port (``host``, loopback by default): open :attr:`url`.

    One client at a time (a second connection is closed at once). Bytes the firmware sends
    while nobody is connected are kept (bounded) for the next client, like the pty's buffer;
    a client's leftovers are dropped when it disconnects. :meth:`unplug` drops the client and
    closes the listener; :meth:`plug` listens again on the same port and reboots the firmware.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        firmware: SimulatedFirmware | None = None,
        on_frame: FrameListener | None = None,
    ) -> None:
        super().__init__(firmware, on_frame)
        self._host = host
        self._port = port
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None

    @property
    def port(self) -> int:
        """The TCP port (chosen at the first :meth:`start` when 0 was given)."""
        return self._port

    @property
    def url(self) -> str:
        """``socket://127.0.0.1:PORT`` for ``serial.serial_for_url``."""
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        return f"socket://{host}:{self._port}"

    @property
    def connected(self) -> bool:
        """Whether a client is connected."""
        return self._client is not None

    def _plug(self) -> None:
        if self._plugged:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self._host, self._port))
            listener.listen(1)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._plugged = True
        self._out.clear()
        self._queue(self._firmware.boot())

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
            self._out.clear()

    def _unplug(self) -> None:
        if not self._plugged:
            return
        self._plugged = False
        self._drop_client()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._out.clear()

    def _read_fds(self) -> list[int]:
        fds = []
        if self._listener is not None:
            fds.append(self._listener.fileno())
        if self._client is not None:
            fds.append(self._client.fileno())
        return fds

    def _write_fds(self) -> list[int]:
        return [self._client.fileno()] if self._client is not None else []

    def _read(self, fd: int) -> bytes:
        if self._listener is not None and fd == self._listener.fileno():
            self._accept()
            return b""
        if self._client is None or fd != self._client.fileno():
            return b""
        try:
            data = self._client.recv(4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            data = b""
        if not data:
            self._drop_client()
        return data

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if self._client is not None:
            conn.close()  # one client at a time, like a serial port
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = conn

    def _write(self, data: bytes) -> int:
        if self._client is None:
            return 0
        try:
            return self._client.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self._drop_client()
            return 0
