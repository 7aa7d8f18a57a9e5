"""Scenario 6: the web page in Debian's headless Chromium, on a broker's websockets listener.

- page load → ready for commands (connected, rights checked, arbiter online), median of N loads;
- a pose button clicked through WebDriver (pointer events, as a person) → the command at an MQTT
  subscriber, and → the hand reporting the pose; and clicked by a script in the page, which
  leaves out WebDriver's own cost;
- a slider dragged with the pointer for a few seconds, in small steps every 10 ms: commands per
  second of drag and the most in any one second (the page promises at most 20), and whether the
  last command carries the slider's final value.
"""

from __future__ import annotations

import itertools
import json
import statistics
import threading
import time
from typing import Any

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from bench.common import Summary, Watcher, wait_until
from bench.system import HandSystem
from hand_mqtt import BUILTIN_POSES, FINGERS, Message, Reported, WebServer
from harness.browser import Page, chromium_available, start_chromium


def web_page(url: str, ws_url: str, loads: int, clicks: int, drag_seconds: float) -> dict[str, Any]:
    if not chromium_available():
        raise RuntimeError("Debian's chromium and chromium-driver are not installed")
    system = HandSystem(url)
    hand = system.hand
    server = WebServer(ws_url, port=0, base=system.topics.base)
    server.start()
    commands: list[tuple[float, dict[str, Any]]] = []
    lock = threading.Lock()

    def keep(message: Message) -> None:
        if message.topic.endswith("/set"):
            with lock:
                commands.append((time.perf_counter(), json.loads(message.payload)))

    watcher = Watcher(url, hand.set, f"{hand.root}/+/set")
    watcher.hooks.append(keep)
    driver = start_chromium()
    page = Page(driver, server.url)
    try:
        return {
            "load_ms": _loads(page, loads),
            **_clicks(page, system, commands, lock, clicks),
            **_drag(page, commands, lock, drag_seconds),
        }
    finally:
        page.leave()
        driver.quit()
        watcher.close()
        server.stop()
        system.stop()


def _ready(page: Page) -> bool:
    return bool(page.js("return document.body.dataset.mode === 'control'"))


def _loads(page: Page, loads: int) -> float:
    times = []
    for n in range(loads + 1):
        start = time.perf_counter()
        page.open()
        wait_until(lambda: _ready(page), 30, "the page ready")
        if n:  # the first load fills the browser's cache
            times.append((time.perf_counter() - start) * 1e3)
        page.leave()
    return statistics.median(times)


def _clicks(
    page: Page,
    system: HandSystem,
    commands: list[tuple[float, dict[str, Any]]],
    lock: threading.Lock,
    clicks: int,
) -> dict[str, Summary]:
    page.open()
    wait_until(lambda: _ready(page), 30, "the page ready")
    to_broker, to_hand, script_to_broker = [], [], []
    for n, name in enumerate(itertools.islice(itertools.cycle(["fist", "open"]), clicks * 2)):
        button = page.driver.find_element(By.CSS_SELECTOR, f'#pose-list [data-pose="{name}"]')
        with lock:
            seen = len(commands)
        by_script = n % 2 == 1  # every other click from a script in the page: no pointer events
        start = time.perf_counter()
        if by_script:
            page.js("arguments[0].click()", button)
        else:
            button.click()

        def arrived(seen: int = seen, name: str = name) -> bool:
            with lock:
                return any(body.get("pose") == name for _t, body in commands[seen:])

        wait_until(arrived, 10, f"pose {name} at the broker")
        with lock:
            at = next(t for t, body in commands[seen:] if body.get("pose") == name)
        (script_to_broker if by_script else to_broker).append((at - start) * 1e3)
        wait_until(lambda name=name: _reported(system) == BUILTIN_POSES[name], 10, "the hand")
        if not by_script:
            to_hand.append((time.perf_counter() - start) * 1e3)
    return {
        "click_to_broker_ms": Summary.of(to_broker),
        "script_click_to_broker_ms": Summary.of(script_to_broker),
        "click_to_hand_ms": Summary.of(to_hand),
    }


def _reported(system: HandSystem) -> tuple[int | None, ...] | None:
    payload = system.watcher.latest.get(system.hand.reported)
    return Reported.model_validate_json(payload).angles if payload else None


def _drag(
    page: Page, commands: list[tuple[float, dict[str, Any]]], lock: threading.Lock, seconds: float
) -> dict[str, Any]:
    slider = page.driver.find_element(By.ID, f"slider-{FINGERS[0]}")
    page.js("arguments[0].scrollIntoView({block: 'center'})", slider)
    width = slider.size["width"]
    steps = int(seconds / 0.01)
    drag = ActionChains(page.driver, duration=0).move_to_element(slider).click_and_hold()
    for n in range(steps):
        # Back and forth over the middle half of the slider, 3 px every 10 ms.
        drag = drag.move_by_offset(3 if (n // (width // 6)) % 2 == 0 else -3, 0).pause(0.01)
    with lock:
        seen = len(commands)
    start = time.perf_counter()
    drag.release().perform()
    released = time.perf_counter()
    final = page.sliders()[FINGERS[0]]

    def settled() -> bool:
        with lock:
            sent = commands[seen:]
        return bool(sent) and sent[-1][1].get(FINGERS[0]) == final

    try:
        wait_until(settled, 10, "the final value at the broker")
        final_sent = True
    except TimeoutError:
        final_sent = False
    with lock:
        stream = [t for t, body in commands[seen:] if FINGERS[0] in body]
        stream_values = [body[FINGERS[0]] for _t, body in commands[seen:] if FINGERS[0] in body]
    busiest = max(sum(1 for u in stream if t <= u < t + 1.0) for t in stream)
    return {
        "drag_seconds": released - start,
        "drag_commands": len(stream),
        "drag_rate": len(stream) / (released - start),
        "drag_busiest_second": busiest,
        "drag_final_sent": final_sent,
        "drag_final_value": final,
        "drag_last_sent": stream_values[-1] if stream_values else None,
    }
