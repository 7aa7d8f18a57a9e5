"""The browser page in a real Chromium, on both brokers, driving the simulated hand.

Every check of the hand goes through an independent MQTT subscriber (the retained ``reported``
state) and the simulated firmware itself. "Nothing was sent" is proved with a sentinel: a later
command from the same page, which the broker delivers after anything sent before it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from hand_mqtt import BUILTIN_POSES, FINGERS, Arbiter, MqttClient
from harness.waiting import wait_until
from tests.web.conftest import WebRig

pytestmark = pytest.mark.web

OPEN = (180, 180, 180, 180, 180)


def test_the_page_connects_and_shows_the_retained_state(rig: WebRig) -> None:
    # The hand is moved before the page exists: what the page shows is the retained state.
    client = rig.system.client("other")
    try:
        client.publish(rig.system.hand_topics.pose_set, b"peace", qos=1)
        rig.wait_hand(BUILTIN_POSES["peace"])
    finally:
        client.stop()
    page = rig.page.open()
    page.wait_ready()
    page.wait_desired(BUILTIN_POSES["peace"])
    page.wait_reported(BUILTIN_POSES["peace"])
    assert page.sliders() == dict(zip(FINGERS, BUILTIN_POSES["peace"], strict=True))
    page.until(
        lambda: (
            page.status()
            == {"broker": "connected", "arbiter": "online", "device": "online", "link": "up"}
        ),
        "every status green",
    )
    page.until(lambda: page.pose_button("peace").get_attribute("aria-current") == "true", "peace")
    assert "Pose: peace" in page.text("pose-line")
    assert "hand-mqtt" in page.text("firmware")
    # The poses are the ones the arbiter announces on bridge/poses, in its order.
    names = [b.text for b in page.driver.find_elements(By.CSS_SELECTOR, "#pose-list .pose")]
    assert names == list(BUILTIN_POSES)
    assert page.console() == []


def test_a_pose_button_moves_the_hand(rig: WebRig) -> None:
    page = rig.page.open()
    page.wait_ready()
    page.click("rockstar")
    rig.wait_command("pose rockstar", {"pose": "rockstar"})
    rig.wait_hand(BUILTIN_POSES["rockstar"])
    page.wait_desired(BUILTIN_POSES["rockstar"])
    page.wait_reported(BUILTIN_POSES["rockstar"])
    page.until(lambda: page.text("message") == "Done: pose rockstar", "the page saying done")


def test_finger_buttons_contract_nudge_and_extend(rig: WebRig) -> None:
    page = rig.page.open()
    page.wait_ready()
    page.click("Contract index")
    rig.wait_hand((0, 180, 180, 180, 180))
    page.click("Index +15")
    rig.wait_hand((15, 180, 180, 180, 180))
    page.click("Thumb \u221215")
    rig.wait_hand((15, 180, 180, 180, 165))
    page.click("Extend index")
    rig.wait_hand((180, 180, 180, 180, 165))
    assert [body for _t, body in rig.command_bodies()] == [
        {"angle": 0},
        {"delta": 15},
        {"delta": -15},
        {"angle": 180},
    ]
    page.wait_desired((180, 180, 180, 180, 165))


def test_a_slider_dragged_with_the_pointer_moves_the_hand(rig: WebRig) -> None:
    page = rig.page.open()
    page.wait_ready()
    slider = page.driver.find_element(By.ID, "slider-middle")
    width = slider.size["width"]
    # From the right end (180) towards the left, in steps, as a hand on a mouse does.
    page.js("arguments[0].scrollIntoView({block: 'center'})", slider)
    drag = (
        ActionChains(page.driver, duration=20)
        .move_to_element_with_offset(slider, width // 2 - 8, 0)
        .click_and_hold()
    )
    for _ in range(6):
        drag = drag.move_by_offset(-width // 10, 0).pause(0.03)
    drag.release().perform()
    final = page.sliders()["middle"]
    assert 0 < final < 180
    expected = (180, final, 180, 180, 180)
    rig.wait_hand(expected)
    page.wait_desired(expected)
    # The last command the broker carried holds the slider's final value.
    last_topic, last_body = rig.command_bodies()[-1]
    assert (last_topic, last_body) == ("set", {"middle": final})
    assert page.sliders()["middle"] == final


def test_a_slider_drag_sends_a_bounded_stream_that_ends_with_the_final_value(
    rig: WebRig,
) -> None:
    page = rig.page.open()
    page.wait_ready()
    # 180 input events in one go, as a very fast drag: the page sends the first value at once,
    # then only the latest value once its interval is over; nothing in between.
    page.js(
        "const s = document.getElementById('slider-index');"
        "for (let v = 179; v >= 0; v--) { s.value = v;"
        " s.dispatchEvent(new Event('input', {bubbles: true})); }"
        "s.value = 42; s.dispatchEvent(new Event('input', {bubbles: true}));"
        "s.dispatchEvent(new Event('change', {bubbles: true}));"
    )
    rig.wait_hand((42, 180, 180, 180, 180))
    # Sentinel: a button command from the same page, which the broker delivers after anything
    # the slider sent before it.
    page.click("Contract thumb")
    rig.wait_command("the sentinel", {"angle": 0})
    assert rig.command_bodies() == [
        ("set", {"index": 179}),
        ("set", {"index": 42}),
        ("thumb/set", {"angle": 0}),
    ]
    rig.wait_hand((42, 180, 180, 180, 0))


def test_another_clients_command_shows_up_in_the_page(rig: WebRig) -> None:
    page = rig.page.open()
    page.wait_ready()
    page.wait_desired(OPEN)
    client = rig.system.client("other")
    try:
        client.publish(rig.system.hand_topics.set, b'{"angles": [10, 20, 30, 40, 50]}', qos=1)
    finally:
        client.stop()
    page.wait_desired((10, 20, 30, 40, 50))
    page.wait_reported((10, 20, 30, 40, 50))
    page.until(
        lambda: page.sliders() == dict(zip(FINGERS, (10, 20, 30, 40, 50), strict=True)),
        "the sliders following",
    )


def test_a_rejected_custom_angle_names_the_finger_and_sends_nothing(rig: WebRig) -> None:
    page = rig.page.open()
    page.wait_ready()
    before = rig.system.state().version
    page.type_into("custom-index", "90")
    page.type_into("custom-ring", "200")
    page.type_into("custom-thumb", "abc")
    page.click("Send angles")
    message = page.until(lambda: page.text("custom-message"), "the validation message")
    assert message.startswith("Not sent: Ring and Thumb must each be a whole number")
    invalid = {
        f: page.js(
            "return document.getElementById(arguments[0]).getAttribute('aria-invalid')",
            f"custom-{f}",
        )
        for f in FINGERS
    }
    assert invalid == {
        "index": "false",
        "middle": "false",
        "ring": "true",
        "pinky": "false",
        "thumb": "true",
    }
    # Sentinel: the page's next command is the first the broker carries.
    page.click("fist")
    rig.wait_command("the sentinel", {"pose": "fist"})
    assert rig.command_bodies() == [("set", {"pose": "fist"})]
    rig.wait_hand(BUILTIN_POSES["fist"])
    assert rig.system.state().version == before + 1

    # Corrected, the boxes are sent together as one command; empty boxes keep their finger.
    page.type_into("custom-ring", "120")
    page.type_into("custom-thumb", "")
    page.click("Send angles")
    rig.wait_hand((90, 0, 120, 0, 0))
    assert rig.command_bodies()[-1] == ("set", {"angles": [90, None, 120, None, None]})


def test_the_arbiters_error_sentences_are_shown(rig: WebRig) -> None:
    page = rig.page.open()
    page.wait_ready()
    client = rig.system.client("other")
    try:
        client.publish(rig.system.hand_topics.finger_set("index"), b"999", qos=1)
    finally:
        client.stop()
    sentence = page.until(
        lambda: page.js(
            "const e = document.querySelector('#errors .sentence'); return e && e.textContent"
        ),
        "the arbiter's sentence on the page",
    )
    assert sentence == "index: 999 is out of range (an angle is 0 to 180)"


def test_a_choice_of_hand_when_the_broker_has_several(rig: WebRig) -> None:
    # The rig's arbiter serves one hand; a second arbiter on the same base serves "left".
    other = Arbiter(
        MqttClient(rig.system.url, name="arbiter"), topics=rig.system.topics, hands=["left"]
    )
    other.start()
    try:
        assert other.wait_ready(10)
        page = rig.page.open()
        page.wait_ready()
        page.until(
            lambda: page.driver.find_element(By.ID, "hand-select").is_displayed(),
            "the choice of hand",
        )
        options = [
            o.get_attribute("value")
            for o in page.driver.find_elements(By.CSS_SELECTOR, "#hand-select option")
        ]
        assert options == sorted([rig.hand, "left"])
        Select(page.control("Hand")).select_by_value("left")
        page.until(lambda: page.text("hand-title") == "left", "the page showing left")
        page.wait_ready()
        page.click("peace")
        wait_until(lambda: other.state("left").angles == BUILTIN_POSES["peace"], 15, "left moved")
        page.wait_desired(BUILTIN_POSES["peace"])
        # left has no device service; hand1 did not move.
        page.until(lambda: page.status()["device"] == "unknown", "no device for left")
        assert rig.system.state().angles == OPEN
        assert rig.command_bodies() == []
    finally:
        other.stop()


def _connections_to(port: int) -> int:
    """Established TCP connections whose local end is ``port`` (the broker's side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "01":
                count += 1
    return count


def test_leaving_the_page_closes_its_connection_and_coming_back_reconnects(rig: WebRig) -> None:
    ws_port = int(rig.broker.ws_url.rsplit(":", 1)[1].strip("/"))
    page = rig.page.open()
    page.wait_ready()
    wait_until(lambda: _connections_to(ws_port) >= 1, 10, "the page's connection")
    # Browsers keep a page they leave in their back-forward cache: without closing its socket,
    # the broker would keep sending to a frozen page until its keep-alive ran out.
    page.leave()
    wait_until(lambda: _connections_to(ws_port) == 0, 10, "the connection closed")
    page.driver.back()
    page.wait_ready()
    page.click("peace")
    rig.wait_hand(BUILTIN_POSES["peace"])


def test_a_gesture_button_plays_the_gesture(rig: WebRig) -> None:
    page = rig.page.open()
    page.wait_ready()
    names = [b.text for b in page.driver.find_elements(By.CSS_SELECTOR, "#gesture-list .gesture")]
    assert names == ["count", "wave"]  # as the arbiter announces them on bridge/gestures
    page.click("fist")
    rig.wait_hand(BUILTIN_POSES["fist"])
    page.click("Play wave")
    rig.wait_command("gesture wave", {"gesture": "wave"})
    page.until(lambda: "playing wave, step" in page.text("pose-line"), "the gesture's progress")
    assert page.text("message") == "Playing gesture wave"
    # wave ends on an open hand, and the state says the gesture is over.
    rig.wait_hand(OPEN)
    page.until(lambda: "playing" not in page.text("pose-line"), "the gesture's end")


def test_stop_relax_and_unlock(rig: WebRig) -> None:
    page = rig.page.open()
    page.wait_ready()
    assert not page.control("Stop").get_attribute("disabled")
    page.click("Relax")
    rig.wait_command("relax", {"relax": True})
    page.until(lambda: page.js("return !document.getElementById('relaxed-thumb').hidden"), "badge")
    page.click("Stop")
    rig.wait_command("the emergency stop", {"lock": True})
    page.until(lambda: page.driver.find_element(By.ID, "locked").is_displayed(), "the lock")
    # The arbiter refuses motion now; the page keeps it from being tried, and says why.
    for name in ("peace", "Play wave", "Contract index", "Send angles", "Index"):
        assert page.control(name).get_attribute("disabled") is not None, name
    assert not page.control("Relax").get_attribute("disabled")
    client = rig.system.client("other")
    try:
        client.publish(rig.system.hand_topics.pose_set, b"fist", qos=1)
    finally:
        client.stop()
    sentence = page.until(
        lambda: page.js(
            "const e = document.querySelector('#errors .sentence'); return e && e.textContent"
        ),
        "the arbiter's refusal on the page",
    )
    assert sentence.startswith("the hand is locked (emergency stop)")
    page.click("Unlock")
    rig.wait_command("unlock", {"lock": False})
    page.wait_ready()
    page.until(lambda: not page.driver.find_element(By.ID, "locked").is_displayed(), "unlocked")
    assert not page.driver.find_elements(By.CSS_SELECTOR, ".hand-action.unlock:not([hidden])")
    # Unlocked, the fingers stay relaxed until a command moves them.
    assert page.js("return !document.getElementById('relaxed-index').hidden")
    page.click("peace")
    rig.wait_hand(BUILTIN_POSES["peace"])
    page.until(
        lambda: page.js("return document.querySelectorAll('.badge:not([hidden])').length") == 0,
        "every finger driven again",
    )
    assert [body for _t, body in rig.command_bodies()] == [
        {"relax": True},
        {"lock": True},
        {"lock": False},
        {"pose": "peace"},
    ]
    state = rig.recorder.last_json(rig.system.hand_topics.state)
    assert state["relaxed"] == []
    assert state["locked"] is False
