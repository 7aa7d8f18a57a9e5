"""The device service's link thread: the one owner of the hand driver and of ``reported``.

Exactly one thread touches the driver, so exactly one thread writes the serial port. Other
threads (the MQTT network thread above all) hand it news through a mailbox and never wait for
the port: :meth:`DeviceLink.want` leaves the latest desired state (latest wins) and
:meth:`DeviceLink.republish` asks for ``reported`` again. Each rings a doorbell, a pipe the
link thread waits on together with the port, so a new state is on the wire as soon as the
thread is scheduled, not at its next poll.

The link thread is also the only one that builds ``reported`` from what the driver confirmed,
and publishes it through the callback it was given. A version in ``reported`` always names a
desired state whose five angles and relaxed fingers are exactly the confirmed ones: a state the
hand was never sent (a failsafe's safe pose, a firmware that clamps, fingers a restarted board
no longer drives) is reported with no version.

It keeps the hold timeout too (:class:`~hand_mqtt.services.hold.HoldTimer`): fingers held at
their target too long are added to the ones the desired state relaxes, and ``reported`` lists
them in ``hold_relaxed``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Final

from hand_mqtt.errors import LinkError
from hand_mqtt.hardware.driver import Confirmed, HandDriver, HandInfo, Target
from hand_mqtt.model import FINGERS, MAX_ANGLE, Angles, HandState, Reported
from hand_mqtt.services.hold import HoldTimer

__all__ = ["DeviceLink"]

logger = logging.getLogger("hand_mqtt")

_POLL_S: Final = 0.01
"""How often a port without a descriptor (rfc2217://, loop://) is looked at."""
_RELAX_ON_STOP_S: Final = 2.0
"""How long a stop waits for the firmware to confirm that every finger is relaxed."""
_VERSIONS_KEPT: Final = 64
"""Desired states remembered between two confirmations (a handful in practice)."""


_Shape = tuple[Angles, frozenset[int]]
"""Five angles and the relaxed fingers: what a version in ``reported`` stands for."""


class _Stopping(LinkError):
    """The link thread is asked to stop: unwinds a driver's wait."""


class _Mailbox:
    """The latest desired state and a republish request, with a doorbell the owner can wait on.

    ``post`` and ``ask_republish`` are cheap and never block: a lock guards a few fields, and
    the doorbell is a byte written to a non-blocking pipe (after the lock is released, so the
    owner it wakes never waits for the poster) only when none is waiting to be noticed. The
    pipe exists between :meth:`open` and :meth:`close`; news posted outside that time is kept,
    and nobody is woken.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: HandState | None = None
        self._republish = False
        self._rung = False
        self._unread = 0  # the owner's only
        self.read_fd = -1
        self._write_fd = -1

    def open(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        with self._lock:
            self.read_fd, self._write_fd = read_fd, write_fd
            self._rung = False
        self._unread = 0

    def close(self) -> None:
        """Close the pipe; only once no other thread can post any more."""
        with self._lock:
            fds, self.read_fd, self._write_fd = (self.read_fd, self._write_fd), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def post(self, state: HandState) -> None:
        with self._lock:
            self._state = state
            fd = self._claim_ring()
        self._ring(fd)

    def ask_republish(self) -> None:
        with self._lock:
            self._republish = True
            fd = self._claim_ring()
        self._ring(fd)

    def ring(self) -> None:
        """Wake the owner without news (it is stopping)."""
        with self._lock:
            fd = self._claim_ring()
        self._ring(fd)

    def take(self, *, state: bool = True) -> tuple[HandState | None, bool]:
        """The owner: the latest state (left in place when ``state`` is false) and whether a
        republish was asked for, both cleared. Call :meth:`drain` before waiting again."""
        with self._lock:
            if self._rung:
                self._rung = False
                self._unread += 1  # news after this rings again, with a byte of its own
            taken = self._state if state else None
            if state:
                self._state = None
            republish, self._republish = self._republish, False
        return taken, republish

    def drain(self) -> None:
        """The owner: read the doorbell bytes of the news taken. A system call, so it is made
        after the frame the news asked for is on its way, not before."""
        if self._unread:
            # A byte rung for but not written yet is read at the next drain.
            with contextlib.suppress(BlockingIOError, InterruptedError):
                self._unread -= len(os.read(self.read_fd, self._unread))

    def _claim_ring(self) -> int:
        """Under the lock: the descriptor to ring, or -1 when the owner is already rung."""
        if self._rung or self._write_fd < 0:
            return -1
        self._rung = True
        return self._write_fd

    @staticmethod
    def _ring(fd: int) -> None:
        if fd >= 0:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                os.write(fd, b"\0")


class DeviceLink:
    """Runs a hand driver on a thread of its own and keeps ``reported`` from what it confirms.

    ``publish`` is called on the link thread with every new ``reported`` (never while a lock
    is held); it must not block for long.
    """

    def __init__(
        self,
        driver: HandDriver,
        *,
        initial: Reported,
        publish: Callable[[Reported], None],
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        hold_timeout: float | None = None,
    ) -> None:
        self.driver = driver
        self._hold = HoldTimer(hold_timeout) if hold_timeout else None
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._publish_callback = publish
        self._reported = initial
        self._mail = _Mailbox()
        self._stopping = threading.Event()
        self._relax_on_stop = False
        self._thread: threading.Thread | None = None
        self._poller = select.poll()
        self._polled_fd: int | None = None
        self._up = False
        self._desired: HandState | None = None
        self._versions: dict[_Shape, int] = {}
        self._handed: _Shape | None = None
        self._said_unsupported = False
        self._said_untimed = False
        self._said_no_failsafe = False
        self._version: int | None = None
        self._seen: (
            tuple[Confirmed, HandInfo | None, HandState | None, bool, frozenset[int]] | None
        ) = None

    # -- any thread ------------------------------------------------------------------------

    def start(self) -> None:
        self._mail.open()
        self._poller.register(self._mail.read_fd, select.POLLIN)
        self._thread = threading.Thread(target=self._run, name="hand-mqtt-link", daemon=True)
        self._thread.start()

    def step_down(self) -> None:
        """Stop driving and publishing, without waiting (safe on the MQTT network thread)."""
        self._stopping.set()
        self._mail.ring()

    def stop(self, timeout: float = 5.0, *, relax: bool = False) -> None:
        """Stop the thread and close the port; returns when both are done (or ``timeout``).

        With ``relax`` every finger is relaxed first, if the firmware can, and the firmware's
        confirmation awaited (at most :data:`_RELAX_ON_STOP_S`)."""
        self._relax_on_stop = relax
        self.step_down()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("device: the link thread did not stop in %.0f s", timeout)

    def close(self) -> None:
        """Release the doorbell, after :meth:`stop`, once no other thread can call
        :meth:`want` or :meth:`republish` any more."""
        if self._thread is None:
            self._mail.close()

    def want(self, state: HandState) -> None:
        """The latest desired state; replaces any the link thread has not taken yet."""
        self._mail.post(state)

    def republish(self) -> None:
        """Ask the link thread to publish ``reported`` again (after a reconnect)."""
        self._mail.ask_republish()

    @property
    def link_up(self) -> bool:
        """Whether the firmware has answered the handshake and the link works."""
        return self._up

    @property
    def reported(self) -> Reported:
        """The latest ``reported`` (replaced, never changed in place, by the link thread)."""
        return self._reported

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stopping.is_set()

    # -- the link thread ---------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.backoff_initial
        driver = self.driver
        while not self._stopping.is_set():
            try:
                driver.open(self._wait)
                logger.info("device: opened %s", driver.url)
                republish = self._take_mail()  # so the handshake ends with the latest state
                self._mail.drain()
                if republish:
                    self._publish(self._reported)
                info = driver.handshake()
                if not info.failsafe and not self._said_no_failsafe:
                    logger.warning(
                        "device: %s has no failsafe: if this service stops or the link breaks, "
                        "the servos keep their last pulses (--relax-on-exit relaxes them on a "
                        "clean stop)",
                        info.firmware.name,
                    )
                    self._said_no_failsafe = True
                self._up = True
                backoff = self.backoff_initial
                self._refresh()
                self._serve()
            except _Stopping:
                if self._relax_on_stop and self._up:
                    self._relax_before_closing()
            except LinkError as exc:
                if not self._stopping.is_set():
                    logger.warning("device: %s; trying again in %.1f s", exc, backoff)
            except Exception:  # a driver's bug must not leave the hand without a link thread
                logger.exception("device: the driver failed; trying again in %.1f s", backoff)
            finally:
                driver.close()
                self._link_down()
            if self._stopping.is_set():
                break
            self._sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    def _serve(self) -> None:
        driver = self.driver
        mail = self._mail
        while True:
            republish = self._take_mail()
            driver.service()
            self._hold_fingers()
            self._refresh(force=republish)
            mail.drain()
            hold_due = self._hold.deadline if self._hold is not None else math.inf
            self._poll(min(driver.deadline, hold_due) - time.monotonic())

    def _take_mail(self) -> bool:
        """Hand the latest desired state to the driver; True when a republish was asked for."""
        state, republish = self._mail.take()
        if state is not None:
            self._take(state)
        return republish

    def _take(self, state: HandState) -> None:
        # The arbiter is the only writer and MQTT keeps its order: the latest one wins, even
        # with a lower version (an arbiter that started afresh counts from 0).
        self._desired = state
        self._hold_fingers()
        self._hand_over(state)

    def _hand_over(self, state: HandState) -> None:
        target = self._target(state)
        try:
            self.driver.apply(target)
        except ValueError as exc:  # a driver for a firmware that cannot relax fingers
            if not self._said_unsupported:
                logger.warning("device: %s; driving the angles only", exc)
                self._said_unsupported = True
            target = Target(state.angles)
            self.driver.apply(target)
        shape = (target.angles, target.relaxed)
        self._handed = shape
        versions = self._versions
        versions.pop(shape, None)
        versions[shape] = state.version
        if len(versions) > _VERSIONS_KEPT:
            del versions[next(iter(versions))]

    def _target(self, state: HandState) -> Target:
        """What the driver is asked for: the desired state, less what the firmware cannot
        do (said once). A move the firmware cannot time happens at once."""
        info = self.driver.info
        duration = state.duration_ms or 0
        if duration and info is not None and not info.timed_moves:
            if not self._said_untimed:
                logger.warning(
                    "device: %s cannot time moves: the fingers move at once (duration_ms is "
                    "ignored on this firmware)",
                    info.firmware.name,
                )
                self._said_untimed = True
            duration = 0
        relaxed = frozenset(FINGERS.index(finger) for finger in state.relaxed)
        if self._hold is not None:
            relaxed |= self._hold.relaxed
        return Target(state.angles, relaxed, duration)

    def _hold_fingers(self) -> None:
        """Let the hold timeout look at what is wanted and what the hand confirmed; hand the
        driver the new set of relaxed fingers when it changed."""
        hold = self._hold
        state = self._desired
        if hold is None or state is None or not self._up:
            return
        wanted = {FINGERS.index(finger) for finger in state.relaxed}
        if hold.update(time.monotonic(), state.angles, wanted, self.driver.confirmed):
            logger.info(
                "device: the hold timeout relaxed %s",
                ", ".join(FINGERS[f] for f in sorted(hold.relaxed)) or "no finger",
            )
            self._hand_over(state)

    def _relax_before_closing(self) -> None:
        """The service stops and was asked to leave the hand limp: relax every finger and wait
        briefly for the firmware to confirm it. ``reported`` is brought up to date but not
        published: the last word is the stopping service's."""
        driver = self.driver
        info = driver.info
        if info is None or not info.relax:
            logger.warning(
                "device: the firmware on %s cannot relax fingers; they keep their angles",
                driver.url,
            )
            return
        everything = frozenset(range(len(FINGERS)))
        desired = self._desired
        angles = desired.angles if desired is not None else driver.confirmed.angles
        if angles is None:  # nothing was ever driven: the angles do not matter
            angles = (MAX_ANGLE, MAX_ANGLE, MAX_ANGLE, MAX_ANGLE, MAX_ANGLE)
        try:
            driver.apply(Target(angles, relaxed=everything))
            until = time.monotonic() + _RELAX_ON_STOP_S
            while driver.confirmed.relaxed != everything:
                now = time.monotonic()
                if now >= until:
                    logger.warning(
                        "device: the firmware on %s did not confirm the relaxed fingers in %.0f s",
                        driver.url,
                        _RELAX_ON_STOP_S,
                    )
                    break
                fd = driver.fileno()
                timeout = max(0.0, min(until, driver.deadline) - now)
                if fd is None:
                    time.sleep(min(timeout, _POLL_S))
                else:
                    select.select([fd], [], [], timeout)
                driver.service()
        except LinkError as exc:
            logger.warning("device: could not relax the fingers before stopping: %s", exc)
            return
        self._refresh()
        if driver.confirmed.relaxed == everything:
            logger.info("device: every finger relaxed on %s", driver.url)

    def _wait(self, timeout: float) -> None:
        """A driver's wait (inside a handshake): input on the port or mail, at most
        ``timeout`` seconds. A new state stays in the mailbox for :meth:`_serve`; a republish
        request is served at once."""
        if self._poll(timeout):
            _state, republish = self._mail.take(state=False)
            self._mail.drain()
            if republish:
                self._publish(self._reported)

    def _poll(self, timeout: float) -> bool:
        """Wait for input on the port or mail, at most ``timeout`` seconds; True when mail
        came. Raises :class:`_Stopping` when the link is stopping."""
        if self._stopping.is_set():
            raise _Stopping("stopping")
        fd = self.driver.fileno()
        if fd != self._polled_fd:
            self._forget_polled_fd()
            if fd is not None:
                self._poller.register(fd, select.POLLIN | select.POLLPRI)
            self._polled_fd = fd
        if fd is None:
            timeout = min(timeout, _POLL_S)
        timeout_ms = None if timeout == math.inf else max(0, math.ceil(timeout * 1000))
        events = self._poller.poll(timeout_ms)
        if self._stopping.is_set():
            raise _Stopping("stopping")
        return any(ready == self._mail.read_fd for ready, _ in events)

    def _sleep(self, seconds: float) -> None:
        """Wait before reopening; serve republish requests meanwhile."""
        until = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return
            events = self._poller.poll(max(1, round(left * 1000)))
            if events:
                _state, republish = self._mail.take(state=False)
                self._mail.drain()
                if republish:
                    self._publish(self._reported)

    def _link_down(self) -> None:
        self._forget_polled_fd()
        if self._hold is not None:
            self._hold.forget()
        if not self._up:
            return
        self._up = False
        self._refresh()

    def _forget_polled_fd(self) -> None:
        if self._polled_fd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(self._polled_fd)
            self._polled_fd = None

    def _refresh(self, *, force: bool = False) -> None:
        """Rebuild ``reported`` from what the driver confirmed; publish it when it changed."""
        driver = self.driver
        confirmed, info, desired, up = driver.confirmed, driver.info, self._desired, self._up
        hold_relaxed = self._hold.relaxed if self._hold is not None else frozenset()
        seen = self._seen
        if not force and seen == (confirmed, info, desired, up, hold_relaxed):
            return
        self._seen = (confirmed, info, desired, up, hold_relaxed)
        if not up:
            # The last confirmed angles stay: as far as anyone can tell the hand still has them.
            self._update({"link": "down"}, force=force)
            return
        angles = confirmed.angles
        shape = (angles, confirmed.relaxed) if angles is not None else None
        new_confirmation = seen is None or seen[0] != confirmed
        if shape is not None and desired is not None and shape == self._handed:
            self._version = desired.version
        elif new_confirmation:
            if confirmed.failsafe:
                # The failsafe acted: the hand holds the state it had, or it moved to a pose
                # nobody asked for.
                held = seen is not None and seen[0].angles == angles
                self._version = self._version if held else None
            else:
                # The newest state handed to the driver with exactly these angles and relaxed
                # fingers, if any (none when the firmware changed them).
                self._version = self._versions.get(shape) if shape is not None else None
        if new_confirmation:
            # From now on only states handed over after this confirmation can be confirmed.
            self._versions.clear()
            if desired is not None and self._handed is not None:
                self._versions[self._handed] = desired.version
        changes: dict[str, object] = dict(
            zip(FINGERS, angles if angles is not None else (None,) * len(FINGERS), strict=True)
        )
        changes.update(
            link="up",
            version=self._version,
            relaxed=tuple(FINGERS[finger] for finger in sorted(confirmed.relaxed)),
            hold_relaxed=tuple(FINGERS[f] for f in sorted(hold_relaxed & confirmed.relaxed)),
            failsafe=confirmed.failsafe,
            moving=confirmed.moving,
            mismatch=confirmed.mismatch,
        )
        if info is not None:
            # What the firmware can do is the driver's word (HandInfo), published with it.
            changes["firmware"] = info.firmware.model_copy(
                update={
                    "failsafe": info.failsafe,
                    "relax": info.relax,
                    "timed_moves": info.timed_moves,
                }
            )
        self._update(changes, force=force)

    def _update(self, changes: dict[str, object], *, force: bool) -> None:
        reported = self._reported.model_copy(update=changes)
        if force or reported != self._reported:
            self._reported = reported
            self._publish(reported)

    def _publish(self, reported: Reported) -> None:
        if self._stopping.is_set():
            return  # stopping or stepped down: the final word is not the link thread's
        try:
            self._publish_callback(reported)
        except Exception:
            logger.exception("device: could not publish reported")
