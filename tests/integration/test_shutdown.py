"""Services stop on SIGINT and SIGTERM however many arrive, and a hung stop is ended by force.

Every wait here is a hang detector (a generous timeout), never a measure of speed.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from functools import partial

import pytest

from hand_mqtt import BrokerUrl, EmbeddedBroker, MqttClient, Topics
from harness.brokers import RunningBroker, free_port
from harness.waiting import wait_until
from tests.support.system import Recorder

HANG = 30.0
"""Seconds after which a process that has not exited counts as hung."""
FORCED = {130, 143}
"""Exit codes of a forced exit: 128 + SIGINT or SIGTERM."""


class _Process:
    """A child process whose merged output is read without blocking."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert self.popen.stdout is not None
        self._fd = self.popen.stdout.fileno()
        self.output = ""

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return True
        data = os.read(self._fd, 65536)
        self.output += data.decode("utf-8", "replace")
        return bool(data)

    def read_until(self, text: str, timeout: float = HANG) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output and time.monotonic() < deadline:
            if not self._read(0.2):
                break
        assert text in self.output, f"never printed {text!r}: {self.output}"

    def signal(self, *signals: signal.Signals) -> None:
        for sig in signals:
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                return

    def finish(self) -> int:
        """Wait for the exit (a hang fails the test) and read the output to its end."""
        try:
            code = self.popen.wait(HANG)
        except subprocess.TimeoutExpired:
            self.close()
            pytest.fail(f"the process hung on shutdown: {self.output}")
        while self._read(HANG):
            pass
        return code

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()
        assert self.popen.stdout is not None
        self.popen.stdout.close()


@pytest.fixture
def up() -> Iterator[_Process]:
    process = _Process(
        "-m", "hand_mqtt", "up", "--port", str(free_port()), "--no-live", "--verbose"
    )
    try:
        process.read_until("Ctrl-C stops everything")
        yield process
    finally:
        process.close()


@pytest.mark.parametrize(
    "signals",
    [
        [signal.SIGINT],
        [signal.SIGTERM],
        [signal.SIGINT, signal.SIGINT],
        [signal.SIGTERM, signal.SIGINT] * 10,
        [signal.SIGTERM] * 50,
    ],
    ids=["int", "term", "int-twice", "mixed-burst", "term-burst"],
)
def test_up_stops_on_any_burst_of_signals(up: _Process, signals: list[signal.Signals]) -> None:
    up.signal(*signals)
    code = up.finish()
    assert "Traceback" not in up.output
    if len(signals) < 3:
        # One or two signals in quick succession: a clean stop.
        assert code == 0, up.output
        assert "stopping" in up.output
    else:
        # The third forces the exit, unless the clean stop was quicker.
        assert code in {0} | FORCED, up.output
        if code != 0:
            assert "exiting without cleaning up" in up.output


def test_up_stops_cleanly_while_clients_stay_connected(up: _Process) -> None:
    """Clients of the embedded broker (a GUI, a watcher) do not hold up its shutdown."""
    port = int(up.output.split("broker   mqtt://127.0.0.1:")[1].split()[0])
    clients = [MqttClient(BrokerUrl.parse(f"mqtt://127.0.0.1:{port}"), name="x") for _ in range(3)]
    try:
        for client in clients:
            client.connect()
            for n in range(50):
                client.publish("elsewhere/topic", str(n), qos=0)
        up.signal(signal.SIGINT)
        assert up.finish() == 0, up.output
        assert "exiting without cleaning up" not in up.output
    finally:
        for client in clients:
            client.stop()


def test_the_embedded_broker_lets_go_of_its_port_with_clients_connected() -> None:
    broker = EmbeddedBroker("127.0.0.1", 0)
    broker.start()
    clients = [MqttClient(BrokerUrl.parse(broker.url), name="x") for _ in range(3)]
    try:
        for client in clients:
            client.connect()
            for n in range(50):
                client.publish("some/topic", str(n), qos=0)
        broker.stop()
        # The port is free at once: a broker started on it again listens.
        again = EmbeddedBroker("127.0.0.1", broker.port)
        again.start()
        again.stop()
    finally:
        for client in clients:
            client.stop()
        broker.stop()


def _arbiter(broker: RunningBroker, topics: Topics) -> _Process:
    return _Process("-m", "hand_mqtt", "arbiter", "-b", broker.url, "--base", topics.base)


def test_arbiter_stops_cleanly_on_sigterm_and_says_offline(
    broker: RunningBroker, topics: Topics
) -> None:
    recorder = Recorder(BrokerUrl.parse(broker.url), topics.bridge_state)
    process = _arbiter(broker, topics)
    try:
        wait_until(lambda: [m.payload for m in recorder.on(topics.bridge_state)] == [b"online"])
        process.signal(signal.SIGTERM)
        assert process.finish() == 0, process.output
        assert "Traceback" not in process.output
        wait_until(lambda: recorder.on(topics.bridge_state)[-1].payload == b"offline")
    finally:
        recorder.close()
        process.close()


def _more(count: Callable[[], int], than: int) -> bool:
    return count() > than


def test_arbiter_survives_bursts_of_signals(broker: RunningBroker, topics: Topics) -> None:
    """The burst that used to deadlock the signal handler, tried on several fresh arbiters."""
    recorder = Recorder(BrokerUrl.parse(broker.url), topics.bridge_state)

    def onlines() -> int:
        return sum(m.payload == b"online" for m in recorder.on(topics.bridge_state))

    try:
        for round_ in range(3):
            before = onlines()
            process = _arbiter(broker, topics)
            try:
                wait_until(partial(_more, onlines, before), HANG, "the arbiter online")
                process.signal(*[signal.SIGTERM, signal.SIGINT] * (5 + 5 * round_))
                code = process.finish()
            finally:
                process.close()
            assert code in {0} | FORCED, process.output
            assert "Traceback" not in process.output
            # A clean stop, or a forced one and the broker published the will: offline either way.
            wait_until(lambda: recorder.on(topics.bridge_state)[-1].payload == b"offline", HANG)
    finally:
        recorder.close()


# -- forced exits, with a stop that hangs on purpose ------------------------------------------

_HANGING_SERVICE = textwrap.dedent(
    """
    import sys, threading
    from hand_mqtt.cli.shutdown import StopSignals

    with StopSignals(grace=float(sys.argv[1]), deadline=float(sys.argv[2])) as signals:
        print("ready", flush=True)
        signals.wait()
        print("stopping", flush=True)
        threading.Event().wait()  # a stop that never ends
    """
)


@pytest.fixture
def hanging() -> Iterator[Callable[[float, float], _Process]]:
    started: list[_Process] = []

    def start(grace: float, deadline: float) -> _Process:
        process = _Process("-c", _HANGING_SERVICE, str(grace), str(deadline))
        started.append(process)
        process.read_until("ready")
        return process

    yield start
    for process in started:
        process.close()


def test_a_third_signal_forces_the_exit_of_a_hung_stop(
    hanging: Callable[[float, float], _Process],
) -> None:
    process = hanging(3600, 3600)
    process.signal(signal.SIGTERM)
    process.read_until("stopping")
    process.signal(signal.SIGINT)
    process.read_until("stopping already")
    process.signal(signal.SIGTERM)
    assert process.finish() == 128 + signal.SIGTERM
    assert "SIGTERM received while stopping; exiting without cleaning up" in process.output


def test_a_second_signal_after_the_grace_period_forces_the_exit(
    hanging: Callable[[float, float], _Process],
) -> None:
    process = hanging(0.2, 3600)
    process.signal(signal.SIGINT)
    process.read_until("stopping")
    time.sleep(0.3)  # past the grace period, so this one is not a repeat of the first
    process.signal(signal.SIGINT)
    assert process.finish() == 128 + signal.SIGINT
    assert "SIGINT received while stopping" in process.output


def test_a_stop_that_hangs_is_ended_after_the_deadline(
    hanging: Callable[[float, float], _Process],
) -> None:
    process = hanging(3600, 0.5)
    process.signal(signal.SIGTERM)
    assert process.finish() == 1
    assert "stopping took more than 0.5 s; exiting without cleaning up" in process.output


def test_a_signal_during_start_up_is_kept_for_the_wait() -> None:
    script = textwrap.dedent(
        """
        import os, signal
        from hand_mqtt.cli.shutdown import StopSignals

        with StopSignals() as signals:
            os.kill(os.getpid(), signal.SIGTERM)  # while "starting"
            signals.wait()
        print("stopped", flush=True)
        """
    )
    process = _Process("-c", script)
    try:
        assert process.finish() == 0, process.output
        assert "stopped" in process.output
    finally:
        process.close()
