"""The page on a phone and on a desktop: one column at 390 px, touch targets of at least 44 px,
an accessible name on every control; and the screenshots in docs/web.md and the README.

Screenshots always go to test-artifacts/; with HAND_MQTT_UPDATE_DOCS=1 also to docs/images/.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from hand_mqtt import BUILTIN_POSES, FINGERS, Topics
from harness.brokers import AmqttProcess, free_port
from harness.browser import DESKTOP, PHONE, Page
from tests.web.conftest import WebRig, open_rig

pytestmark = pytest.mark.web

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
DOCS_IMAGES = ROOT / "docs" / "images"
TOUCH = 44


def test_on_a_phone_one_column_touch_targets_and_every_control_named(rig: WebRig) -> None:
    page = rig.page
    page.emulate(PHONE, mobile=True, scale=2)
    page.open()
    page.wait_ready()
    page.until(lambda: page.pose_button("open"), "the poses")
    page.click("Sign in")  # the form's fields count too
    layout = page.js(
        "return [...document.querySelectorAll('.panel')].map(p => {"
        " const r = p.getBoundingClientRect(); return [p.className, r.left, r.width, r.top,"
        " r.bottom]; })"
    )
    lefts = {round(left) for _name, left, _w, _t, _b in layout}
    widths = {round(width) for _name, _l, width, _t, _b in layout}
    assert len(lefts) == 1, layout  # one column
    assert len(widths) == 1, layout
    assert all(a[4] <= b[3] for a, b in itertools.pairwise(layout)), layout
    assert page.js("return document.documentElement.scrollWidth") <= PHONE[0]

    small = page.js(
        "return [...document.querySelectorAll('button, input, select')]"
        ".filter(e => e.getClientRects().length)"
        ".map(e => { const r = e.getBoundingClientRect();"
        " return [e.id || e.getAttribute('aria-label') || e.textContent, r.width, r.height]; })"
        ".filter(([, w, h]) => w < arguments[0] || h < arguments[0])",
        TOUCH,
    )
    assert small == []

    # Names as Chromium computes them for assistive technology, for every control on screen
    # (Sign out and the choice of hand are hidden here: not signed in, one hand).
    names = [
        element.accessible_name
        for element in page.driver.find_elements(By.CSS_SELECTOR, "button, input, select")
        if element.is_displayed()
    ]
    assert all(names), names
    expected = {"Stop", "Relax", "Sign in", "User name", "Password", "Cancel", "Send angles"}
    for finger in FINGERS:
        name = finger.capitalize()
        expected |= {
            name,  # the slider
            f"Contract {finger}",
            f"{name} \u221215",
            f"{name} +15",
            f"Extend {finger}",
            f"{name} custom angle",
        }
    expected |= set(BUILTIN_POSES) | {"Play count", "Play wave"}
    assert set(names) == expected
    assert len(names) == len(set(names)), "two controls share a name"

    # Stop is on screen wherever the page is scrolled to.
    for where in ("document.documentElement.scrollHeight", "0"):
        page.js(f"window.scrollTo(0, {where})")
        top, bottom = page.js(
            "const r = document.querySelector('.hand-action.stop').getBoundingClientRect();"
            " return [r.top, r.bottom]"
        )
        assert 0 <= top < bottom <= PHONE[1]


def test_on_a_desktop_the_fingers_and_the_poses_sit_side_by_side(rig: WebRig) -> None:
    page = rig.page.open()
    page.wait_ready()
    fingers = page.driver.find_element(By.CSS_SELECTOR, ".panel.fingers").rect
    poses = page.driver.find_element(By.CSS_SELECTOR, ".panel.poses").rect
    assert poses["x"] > fingers["x"] + fingers["width"] - 1
    assert abs(poses["y"] - fingers["y"]) < 1
    assert page.js("return document.documentElement.scrollWidth") <= DESKTOP[0]


@pytest.fixture
def docs_rig(chromium: WebDriver) -> Iterator[WebRig]:
    """A broker of its own, so the screenshots can show the default topics (hand/hand1)."""
    broker = AmqttProcess(websockets_port=free_port())
    broker.start()
    try:
        yield from open_rig(broker, Topics("hand"), chromium)
    finally:
        broker.cleanup()


def test_screenshots(docs_rig: WebRig) -> None:
    rig = docs_rig
    page = rig.page
    page.open()
    page.wait_ready()
    page.click("rockstar")
    rig.wait_hand(BUILTIN_POSES["rockstar"])
    page.wait_reported(BUILTIN_POSES["rockstar"])
    client = rig.system.client("someone")
    try:
        client.publish(rig.system.hand_topics.pose_set, b"salute", qos=1)
    finally:
        client.stop()
    page.until(lambda: page.text("errors"), "the arbiter's error")
    page.type_into("custom-index", "90")
    page.type_into("custom-ring", "200")
    page.click("Send angles")
    page.until(lambda: page.text("custom-message"), "the validation message")
    save(page, "web-desktop.png", (DESKTOP[0], 0), mobile=False, scale=1)
    save(page, "web-phone.png", PHONE, mobile=True, scale=2)


def save(page: Page, name: str, size: tuple[int, int], *, mobile: bool, scale: float) -> None:
    path = ARTIFACTS / name
    page.screenshot(path, size, mobile=mobile, scale=scale)
    if os.environ.get("HAND_MQTT_UPDATE_DOCS") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMAGES / name)
    assert path.stat().st_size > 10_000
