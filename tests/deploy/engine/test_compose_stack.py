"""compose.yaml as shipped, run by a real Docker Engine, reached only through its published ports.

The stack (``conftest.py``) is the ``simulated`` profile brought up the way docs/deployment.md
tells a user to. The tests share it in this order, and each leaves it healthy: commands and
rights, the arbiter crashing, Mosquitto restarting, ``down`` and ``up``, the simulated hand and
its device service crashing, the websockets listener. A crash is SIGKILL to the container's main
process from the host: ``docker kill`` is a manual stop, after which the restart policy does not
apply.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from hand_mqtt import BUILTIN_POSES, BrokerUrl, HandState, MqttClient, MqttError, Reported
from hand_mqtt.clients.web import page_problem
from harness.browser import Page, chromium_available, start_chromium
from harness.waiting import wait_until as eventually
from tests.conftest import need
from tests.deploy.engine.conftest import Stack
from tests.deploy.support import Watcher

# The time limit is each test's own: the stack's set-up may first wait its turn for the engine
# (other runs on the machine) and bounds each of its steps itself.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(300, func_only=True)]

HAND = "hand/hand1"
# Generous: the machine is shared, and a restart goes through the engine's restart policy.
WAIT = 60.0


def mosquitto_pub(
    stack: Stack, user: str | None, topic: str, message: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Publish with QoS 1 from the host, through the published port."""
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(stack.project.mqtt_port), "-q", "1"]
    if user is not None:
        args += ["-u", user, "-P", stack.project.passwords[user]]
    return subprocess.run(
        [*args, *extra, "-t", topic, "-m", message],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def operator_sets(stack: Stack, command: dict[str, Any]) -> None:
    done = mosquitto_pub(stack, "alice", f"{HAND}/set", json.dumps(command))
    assert done.returncode == 0, done.stderr


def states(watcher: Watcher) -> list[HandState]:
    return [HandState.model_validate_json(p) for p in watcher.payloads(f"{HAND}/state") if p]


def reports(watcher: Watcher) -> list[Reported]:
    return [Reported.model_validate_json(p) for p in watcher.payloads(f"{HAND}/reported") if p]


def state_of(watcher: Watcher, transaction: str) -> HandState:
    """The state the arbiter published for ``transaction`` (waits for it)."""
    eventually(
        lambda: any(s.transaction == transaction for s in states(watcher)),
        WAIT,
        f"the state of transaction {transaction}",
    )
    return next(s for s in states(watcher) if s.transaction == transaction)


def hand_reaches(watcher: Watcher, angles: tuple[int, ...], *, after: int = 0) -> Reported:
    """Wait until the device reports ``angles`` acknowledged by the firmware (link up)."""

    def reached() -> Reported | None:
        return next(
            (r for r in reports(watcher)[after:] if r.link == "up" and r.angles == angles), None
        )

    eventually(reached, WAIT, f"the hand to report {angles}")
    found = reached()
    assert found is not None
    return found


def set_and_follow(stack: Stack, angles: tuple[int, ...], transaction: str) -> HandState:
    """The operator sets ``angles``; returns the state once the hand reports them."""
    watcher = stack.watch(f"{HAND}/state", f"{HAND}/reported")
    operator_sets(stack, {"angles": list(angles), "transaction": transaction})
    state = state_of(watcher, transaction)
    assert state.angles == angles
    hand_reaches(watcher, angles)
    return state


# -- up ----------------------------------------------------------------------------------------


def test_every_service_is_healthy_and_the_broker_logs_show(running: Stack) -> None:
    containers = running.project.containers()
    assert set(containers) == running.services
    assert all(c.ready for c in containers.values()), containers
    # Mosquitto's own lines reach `docker compose logs` (Debian's 2.0 fully buffers stdout
    # when it is not a terminal; the shipped configuration logs to stderr).
    logs = running.project.logs("mosquitto")
    assert re.search(r"New client connected from .*u'arbiter'", logs), logs[-2000:]


# -- commands and rights -----------------------------------------------------------------------


def test_the_operator_moves_the_hand_and_reported_follows(running: Stack) -> None:
    watcher = running.watch(f"{HAND}/state", f"{HAND}/reported")
    eventually(lambda: states(watcher) and reports(watcher), WAIT, "the retained messages")
    before = states(watcher)[-1].version
    seen = len(reports(watcher))
    done = mosquitto_pub(running, "alice", f"{HAND}/pose/set", "peace")
    assert done.returncode == 0, done.stderr
    eventually(lambda: states(watcher)[-1].version > before, WAIT, "a new state")
    state = states(watcher)[-1]
    assert state.pose == "peace"
    assert state.angles == (180, 180, 0, 0, 0)
    reported = hand_reaches(watcher, state.angles, after=seen)
    assert reported.version == state.version


def test_the_viewer_cannot_command_and_anonymous_clients_are_refused(running: Stack) -> None:
    set_and_follow(running, (100, 100, 100, 100, 100), "before-viewer")
    watcher = running.watch(f"{HAND}/state")
    refused = mosquitto_pub(running, "kiosk", f"{HAND}/pose/set", "fist", "-V", "mqttv5")
    assert "not authorized" in refused.stderr.lower(), refused.stderr
    mosquitto_pub(running, "kiosk", f"{HAND}/set", json.dumps({"pose": "fist"}))
    # The sentinel, after the viewer's commands on the same broker: only it may have applied.
    operator_sets(running, {"index": 77, "transaction": "after-viewer"})
    assert state_of(watcher, "after-viewer").angles == (77, 100, 100, 100, 100)
    assert all(s.pose != "fist" for s in states(watcher))

    anonymous = mosquitto_pub(running, None, f"{HAND}/pose/set", "fist")
    assert anonymous.returncode != 0
    assert "not authori" in anonymous.stderr.lower(), anonymous.stderr


# -- faults ------------------------------------------------------------------------------------


def test_a_crashed_arbiter_is_restarted_and_the_version_continues(running: Stack) -> None:
    before = set_and_follow(running, (30, 60, 90, 120, 150), "before-crash")
    watcher = running.watch(f"{HAND}/state", "hand/bridge/state")
    eventually(lambda: watcher.last("hand/bridge/state") == b"online", WAIT, "arbiter online")
    crashed = running.project.crash("arbiter")
    eventually(
        lambda: b"offline" in watcher.payloads("hand/bridge/state"), WAIT, "the arbiter's will"
    )
    eventually(
        lambda: watcher.last("hand/bridge/state") == b"online", WAIT, "the arbiter back online"
    )
    running.wait_ready()
    assert running.project.containers()["arbiter"].restarts > crashed.restarts
    operator_sets(running, {"angles": [None, None, None, None, 0], "transaction": "after-crash"})
    after = state_of(watcher, "after-crash")
    assert after.angles == (30, 60, 90, 120, 0)
    assert after.version == before.version + 1


def test_restarting_mosquitto_keeps_the_retained_state(running: Stack) -> None:
    before = set_and_follow(running, (11, 22, 33, 44, 55), "before-broker-restart")
    # Nobody may publish the state again: what comes back is what Mosquitto kept on disk.
    running.project.compose("stop", "arbiter", "device-simulated")
    running.project.compose("restart", "mosquitto")
    running.project.wait_ready({"mosquitto"})
    watcher = running.watch(f"{HAND}/state", f"{HAND}/reported")
    eventually(lambda: states(watcher) and reports(watcher), WAIT, "the retained messages")
    assert states(watcher) == [before]
    assert reports(watcher)[-1].angles == before.angles
    running.project.compose("start", "arbiter", "device-simulated")
    running.wait_ready()


def test_down_and_up_keep_the_hand_state_in_the_volume(running: Stack) -> None:
    before = set_and_follow(running, (5, 15, 25, 35, 45), "before-down")
    running.project.compose("down")
    volumes = running.project.engine.docker("volume", "ls", "-q").stdout.split()
    assert "hand-mqtt_mosquitto-data" in volumes
    running.project.compose("up", "-d")
    running.wait_ready()
    watcher = running.watch(f"{HAND}/state", f"{HAND}/reported")
    eventually(lambda: states(watcher), WAIT, "the retained state")
    assert states(watcher)[-1].angles == before.angles
    assert states(watcher)[-1].version >= before.version
    # A new simulated hand starts open; the device service brings it to the kept state.
    hand_reaches(watcher, before.angles)


def test_a_crashed_simulated_hand_comes_back_and_commands_reach_it(running: Stack) -> None:
    set_and_follow(running, (40, 40, 40, 40, 40), "before-hand-crash")
    watcher = running.watch(f"{HAND}/reported", f"{HAND}/availability")
    eventually(lambda: reports(watcher), WAIT, "the retained report")
    seen = len(reports(watcher))
    crashed = running.project.crash("hand")
    eventually(lambda: any(r.link == "down" for r in reports(watcher)[seen:]), WAIT, "link down")
    down_at = next(i for i, r in enumerate(reports(watcher)) if i >= seen and r.link == "down")
    # The device service finds the restarted hand by its service name and pushes the state.
    hand_reaches(watcher, (40, 40, 40, 40, 40), after=down_at)
    assert running.project.containers()["hand"].restarts > crashed.restarts
    after_restart = len(reports(watcher))
    operator_sets(running, {"angles": [1, 2, 3, 4, 5], "transaction": "after-hand-crash"})
    hand_reaches(watcher, (1, 2, 3, 4, 5), after=after_restart)
    # The device service itself never went away.
    assert watcher.payloads(f"{HAND}/availability") == [b"online"]


def test_a_crashed_device_service_goes_offline_and_comes_back(running: Stack) -> None:
    set_and_follow(running, (60, 70, 80, 90, 100), "before-device-crash")
    watcher = running.watch(f"{HAND}/reported", f"{HAND}/availability")
    eventually(lambda: watcher.last(f"{HAND}/availability") == b"online", WAIT, "online")
    crashed = running.project.crash("device-simulated")
    eventually(
        lambda: b"offline" in watcher.payloads(f"{HAND}/availability"), WAIT, "the device's will"
    )
    eventually(
        lambda: watcher.last(f"{HAND}/availability") == b"online", WAIT, "the device back online"
    )
    running.wait_ready()
    assert running.project.containers()["device-simulated"].restarts > crashed.restarts
    seen = len(reports(watcher))
    operator_sets(running, {"angles": [9, 8, 7, 6, 5], "transaction": "after-device-crash"})
    hand_reaches(watcher, (9, 8, 7, 6, 5), after=seen)


# -- websockets --------------------------------------------------------------------------------


def test_the_websockets_listener_serves_users_with_credentials(running: Stack) -> None:
    watcher = running.watch(f"{HAND}/state", f"{HAND}/reported", scheme="ws")
    operator = MqttClient(BrokerUrl.parse(running.url("alice", scheme="ws")), name="ws-operator")
    operator.connect(10)
    try:
        command = {"pose": "rockstar", "transaction": "over-websockets"}
        operator.publish(f"{HAND}/set", json.dumps(command).encode(), qos=1, wait=10)
    finally:
        operator.stop()
    assert state_of(watcher, "over-websockets").angles == (180, 0, 0, 180, 180)
    hand_reaches(watcher, (180, 0, 0, 180, 180))

    anonymous = MqttClient(BrokerUrl.parse(running.url(None, scheme="ws")), name="ws-anonymous")
    with pytest.raises(MqttError, match=r"(?i)not authori[sz]ed"):
        anonymous.connect(5)


# -- the web page ------------------------------------------------------------------------------


def test_the_web_page_drives_the_hand_through_the_published_ports(running: Stack) -> None:
    """A browser on the host loads the page from the web container and talks to Mosquitto's
    websockets listener itself, with the operator's account."""
    url = f"http://127.0.0.1:{running.project.web_port}/"
    assert page_problem(url) is None
    need(chromium_available(), "Debian's chromium and chromium-driver are not installed")
    watcher = running.watch(f"{HAND}/reported")
    seen = len(reports(watcher))
    driver = start_chromium()
    try:
        page = Page(driver, url).open()
        page.until(lambda: page.driver.find_element(By.ID, "login").is_displayed(), "the form")
        page.type_into("login-user", "alice")
        page.type_into("login-password", running.project.passwords["alice"])
        page.driver.find_element(By.ID, "login-submit").click()
        page.wait_ready(WAIT)
        page.click("okay")
        hand_reaches(watcher, BUILTIN_POSES["okay"], after=seen)
        page.wait_reported(BUILTIN_POSES["okay"], WAIT)
    finally:
        driver.quit()
