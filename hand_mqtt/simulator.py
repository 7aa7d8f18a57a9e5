"""A simulated hand: the firmware's behaviour in Python, optionally behind a pty or a TCP port.

:class:`SimulatedFirmware` is a pure state machine (no I/O, injectable clock) that follows
``docs/serial-protocol.md`` from the firmware's side: power-on defaults, ACK/NACK/HELLO,
failsafe, motion speed and the 50 ms stale-partial-frame rule. :class:`PtyHand` runs one
behind a pseudo-terminal (a symlink gives it a stable path a serial client can open) and
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

from hand_mqtt import protocol as p
from hand_mqtt.errors import ProtocolError

__all__ = [
    "FIRMWARE_VERSION",
    "STALE_FRAME_S",
    "PtyHand",
    "SimulatedFirmware",
    "SocketHand",
]

_log = logging.getLogger("hand_mqtt")

FIRMWARE_VERSION: Final = (1, 0, 0)
"""The version the simulated firmware reports in HELLO."""
STALE_FRAME_S: Final = 0.050
"""After this much silence an incomplete frame's sync byte is dropped and what followed it is
scanned again (as after a bad LEN or CRC)."""
_EPSILON_S: Final = 1e-6  # clock jitter tolerance: 0.1 s measured as 0.0999999 still counts
_ALL_FINGERS: Final = (1 << p.FINGER_COUNT) - 1
_POWER_ON_TARGETS: Final = (90, 90, 90, 90, 90)

FrameListener = Callable[[p.Frame], None]


class SimulatedFirmware:
    """The firmware's protocol behaviour, byte for byte, without any I/O.

    Feed it what the host writes (:meth:`feed`) and send back what it returns; call
    :meth:`poll` regularly so the failsafe can fire on its own. Time comes from ``clock``
    (seconds, monotonic), so tests can drive it with a fake clock. All methods are safe to
    call from several threads.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        firmware_version: tuple[int, int, int] = FIRMWARE_VERSION,
    ) -> None:
        self._clock = clock
        self._version = firmware_version
        self._lock = threading.RLock()
        self._listeners: list[FrameListener] = []
        self._decoder = p.FrameDecoder()
        self.frames_received = 0
        """Frames with a good CRC (acted on or NACKed); not reset by :meth:`boot`."""
        self.frames_applied = 0
        """Frames accepted (answered with ACK or HELLO); not reset by :meth:`boot`."""
        self.frames_nacked = 0
        """Frames answered with NACK; not reset by :meth:`boot`."""
        self.stale_discards = 0
        """Incomplete frames dropped after 50 ms of silence; not reset by :meth:`boot`."""
        self.failsafe_count = 0
        """How many times the failsafe fired; not reset by :meth:`boot`."""
        self._bad_before_boot = 0
        self._power_on(self._clock())

    # -- state ---------------------------------------------------------------------------

    def _power_on(self, now: float) -> None:
        self._bad_before_boot += self._decoder.bad_crc + self._decoder.bad_length
        self._decoder.reset()
        self._rx_tail = b""
        self._targets: tuple[int, int, int, int, int] = _POWER_ON_TARGETS
        self._positions: list[float] = [float(a) for a in self._targets]
        self._config = p.DeviceConfig()
        self._failsafe_active = False
        self._failsafe_armed = False
        self._driven = 0
        self._last_valid = now
        self._last_motion = now
        self._last_rx = now

    @property
    def targets(self) -> tuple[int, int, int, int, int]:
        """The five target angles (90 each until the first SET)."""
        with self._lock:
            return self._targets

    @property
    def positions(self) -> tuple[float, ...]:
        """Where each servo is now, moving toward its target at ``speed_dps``."""
        with self._lock:
            self._advance(self._clock())
            return tuple(self._positions)

    @property
    def config(self) -> p.DeviceConfig:
        """The configuration in force (power-on: failsafe off, hold, open hand, speed 0)."""
        with self._lock:
            return self._config

    @property
    def failsafe_active(self) -> bool:
        """Whether the failsafe has fired and no SET_ALL/SET_SOME has come since."""
        with self._lock:
            return self._failsafe_active

    @property
    def driving(self) -> bool:
        """Whether any servo is driven (False until the first SET or a safe-pose failsafe)."""
        with self._lock:
            return self._driven != 0

    @property
    def driven(self) -> int:
        """Mask of the driven servos (bit 0 index … bit 4 thumb): a SET_SOME drives its own."""
        with self._lock:
            return self._driven

    @property
    def moving(self) -> bool:
        """Whether a servo has not reached its target yet."""
        with self._lock:
            self._advance(self._clock())
            return self._is_moving()

    @property
    def status(self) -> int:
        """The status flags as they would be sent now."""
        with self._lock:
            self._advance(self._clock())
            return self._status()

    @property
    def bad_frames(self) -> int:
        """Frames dropped for a bad LEN or CRC (never acted on, never answered)."""
        with self._lock:
            return self._bad_before_boot + self._decoder.bad_crc + self._decoder.bad_length

    @property
    def firmware_version(self) -> tuple[int, int, int]:
        """The version reported in HELLO."""
        return self._version

    def add_listener(self, listener: FrameListener) -> None:
        """Call ``listener(frame)`` for every frame with a good CRC, before it is handled."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: FrameListener) -> None:
        """Undo :meth:`add_listener`."""
        with self._lock:
            self._listeners.remove(listener)

    # -- inputs --------------------------------------------------------------------------

    def boot(self) -> bytes:
        """Power on: reset to the defaults and return the boot HELLO (SEQ 0)."""
        with self._lock:
            self._power_on(self._clock())
            return p.hello_frame(0, self._version, self._status()).encode()

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the host; return the bytes the firmware sends back."""
        with self._lock:
            now = self._clock()
            out = bytearray(self._tick(now))
            if data:
                self._last_rx = now
                # The decoder only ever holds a suffix of the stream (shorter than a frame):
                # keep that much, so a stale partial frame can be rescanned.
                self._rx_tail = (self._rx_tail + bytes(data))[-p.MAX_FRAME :]
                for frame in self._decoder.feed(data):
                    out += self._handle(frame, now)
            return bytes(out)

    def poll(self) -> bytes:
        """Let time pass: motion, stale-frame discard, failsafe.

        Returns what the firmware sends on its own: a FAILSAFE, or the answers to frames found
        behind a stale sync byte (``b""`` mostly).
        """
        with self._lock:
            return self._tick(self._clock())

    # -- internals (lock held) -------------------------------------------------------------

    def _tick(self, now: float) -> bytes:
        self._advance(now)
        out = b""
        if self._decoder.pending and now - self._last_rx >= STALE_FRAME_S - _EPSILON_S:
            out += self._drop_stale(now)
        timeout_ms = self._config.failsafe_timeout_ms
        if (
            timeout_ms
            and self._failsafe_armed
            and now - self._last_valid >= timeout_ms / 1000.0 - _EPSILON_S
        ):
            out += self._fire_failsafe()
        return out

    def _drop_stale(self, now: float) -> bytes:
        """Give up on the incomplete frame held back: drop its sync byte and scan what followed.

        As after a bad LEN or CRC, scanning resumes right after the offending sync byte, so a
        complete frame that arrived behind it is still found (and answered). Every byte held is
        stale, so this repeats until nothing is held.
        """
        self.stale_discards += 1
        out = bytearray()
        held = self._rx_tail[len(self._rx_tail) - self._decoder.pending :]
        while held:
            self._decoder.discard()
            held = held[1:]
            for frame in self._decoder.feed(held):
                out += self._handle(frame, now)
            held = held[len(held) - self._decoder.pending :] if self._decoder.pending else b""
        self._rx_tail = b""
        return bytes(out)

    def _fire_failsafe(self) -> bytes:
        self._failsafe_armed = False
        self._failsafe_active = True
        self.failsafe_count += 1
        if self._config.failsafe_action == p.FailsafeAction.SAFE_POSE:
            self._set_targets(self._config.safe_pose, _ALL_FINGERS)
        _log.debug("simulated firmware: failsafe fired, targets %s", self._targets)
        return p.failsafe_frame(self._targets, self._status()).encode()

    def _advance(self, now: float) -> None:
        elapsed = max(0.0, now - self._last_motion)
        self._last_motion = now
        speed = self._config.speed_dps
        for i, target in enumerate(self._targets):
            here = self._positions[i]
            if speed == 0 or abs(target - here) <= speed * elapsed:
                self._positions[i] = float(target)
            elif target > here:
                self._positions[i] = here + speed * elapsed
            else:
                self._positions[i] = here - speed * elapsed

    def _is_moving(self) -> bool:
        return any(pos != t for pos, t in zip(self._positions, self._targets, strict=True))

    def _status(self) -> int:
        flags = p.STATUS_FAILSAFE if self._failsafe_active else 0
        if self._is_moving():
            flags |= p.STATUS_MOVING
        return flags

    def _set_targets(self, targets: tuple[int, int, int, int, int], mask: int) -> None:
        self._targets = targets
        self._driven |= mask
        if self._config.speed_dps == 0:
            self._positions = [float(a) for a in targets]

    def _handle(self, frame: p.Frame, now: float) -> bytes:
        self.frames_received += 1
        for listener in list(self._listeners):
            try:
                listener(frame)
            except Exception:
                _log.exception("simulated firmware: frame listener failed")
        try:
            request = p.parse_request(frame)
        except p.RequestRejected as rejected:
            self.frames_nacked += 1
            return p.nack_frame(frame.seq, rejected.reason).encode()
        except ProtocolError:  # pragma: no cover - parse_request raises only RequestRejected
            self.frames_nacked += 1
            return p.nack_frame(frame.seq, p.NackReason.UNKNOWN_TYPE).encode()
        self.frames_applied += 1
        self._last_valid = now
        self._failsafe_armed = True
        match request:
            case p.HelloRequest(seq=seq):
                return p.hello_frame(seq, self._version, self._status()).encode()
            case p.SetAll(seq=seq, angles=angles):
                self._failsafe_active = False
                self._set_targets(angles, _ALL_FINGERS)
            case p.SetSome(mask=mask):
                self._failsafe_active = False
                self._set_targets(request.apply(self._targets), mask)
            case p.Configure(config=config):
                self._config = config
                if config.speed_dps == 0:  # no speed: every servo is at its target at once
                    self._positions = [float(a) for a in self._targets]
            case p.Heartbeat():
                pass
        return p.ack_frame(frame.seq, self._targets, self._status()).encode()


# ------------------------------------------------------------------------------------------
# Transports


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
