"""Debian's Chromium, headless, driven by Selenium: the page as a person uses it.

Selenium is given the browser and the driver explicitly, so it never tries to download one, and
Chromium runs with the flags that keep it off the network.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from hand_mqtt import FINGERS
from harness.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",  # we run as root
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
)
DESKTOP = (1280, 900)
PHONE = (390, 844)

T = TypeVar("T")


def chromium_available() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def start_chromium() -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ARGUMENTS:
        options.add_argument(argument)
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


class Page:
    """The hand-mqtt page in the browser, read and clicked through what a person sees."""

    def __init__(self, driver: WebDriver, url: str) -> None:
        self.driver = driver
        self.url = url

    def open(self, query: str = "") -> Page:
        self.driver.get(self.url + query)
        return self

    def leave(self) -> None:
        self.driver.get("about:blank")

    def js(self, script: str, *args: object) -> Any:
        return self.driver.execute_script(script, *args)

    def until(self, predicate: Callable[[], T], what: str, timeout: float = 20.0) -> T:
        found: list[T] = []

        def check() -> bool:
            try:
                value = predicate()
            except (StaleElementReferenceException, WebDriverException):
                return False
            if value:
                found.append(value)
                return True
            return False

        try:
            wait_until(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\npage: {self.summary()}") from None
        return found[-1]

    # -- reading ---------------------------------------------------------------------------

    def text(self, element_id: str) -> str:
        return str(self.js("return document.getElementById(arguments[0]).textContent", element_id))

    def mode(self) -> str:
        return str(self.js("return document.body.dataset.mode"))

    def status(self) -> dict[str, str]:
        found = self.js(
            "const s = {}; for (const k of ['broker', 'arbiter', 'device', 'link'])"
            " s[k] = document.getElementById('status-' + k + '-text').textContent; return s"
        )
        return dict(found)

    def desired(self) -> dict[str, str]:
        return {f: self.text(f"desired-{f}") for f in FINGERS}

    def reported(self) -> dict[str, str]:
        return {f: self.text(f"reported-{f}") for f in FINGERS}

    def sliders(self) -> dict[str, int]:
        return {
            f: int(self.js("return document.getElementById(arguments[0]).value", f"slider-{f}"))
            for f in FINGERS
        }

    def summary(self) -> str:
        try:
            return json.dumps(
                {
                    "mode": self.mode(),
                    "status": self.status(),
                    "desired": self.desired(),
                    "message": self.text("message"),
                    "readonly": self.text("readonly"),
                }
            )
        except WebDriverException as exc:
            return f"(unreadable: {exc.msg})"

    def console(self) -> list[str]:
        entries = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return [str(entry.get("message", "")) for entry in entries]

    # -- waiting ---------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Connected, the arbiter online, and commands allowed."""
        self.until(lambda: self.mode() == "control", "the page ready for commands", timeout)

    def wait_desired(self, angles: tuple[int, ...], timeout: float = 20.0) -> None:
        expected = {f: f"{a}\u00b0" for f, a in zip(FINGERS, angles, strict=True)}
        self.until(lambda: self.desired() == expected, f"desired {angles} on the page", timeout)

    def wait_reported(self, angles: tuple[int, ...], timeout: float = 20.0) -> None:
        expected = {f: f"{a}\u00b0" for f, a in zip(FINGERS, angles, strict=True)}
        self.until(lambda: self.reported() == expected, f"reported {angles} on the page", timeout)

    # -- acting ----------------------------------------------------------------------------

    def control(self, name: str) -> WebElement:
        """The control on screen named ``name`` by its aria-label, its text or its label (what a
        screen reader announces; the layout test checks the browser's own computed names)."""
        assert '"' not in name
        xpath = (
            "//*[(self::button or self::input or self::select) and "
            f'(@aria-label="{name}" or (not(@aria-label) and normalize-space(.)="{name}") '
            f'or (not(@aria-label) and @id=//label[normalize-space(.)="{name}"]/@for))]'
        )
        found = [e for e in self.driver.find_elements(By.XPATH, xpath) if e.is_displayed()]
        if len(found) != 1:
            raise AssertionError(f"{len(found)} controls named {name!r} on the page")
        return found[0]

    def click(self, name: str) -> None:
        """Click the control named ``name`` (found again if the page redrew it)."""
        self.until(lambda: self.control(name).is_enabled(), f"{name!r} enabled")
        for _ in range(5):
            try:
                self.control(name).click()
                return
            except StaleElementReferenceException:
                continue
        raise AssertionError(f"could not click {name!r}")

    def pose_button(self, name: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, f'#pose-list [data-pose="{name}"]')

    def type_into(self, element_id: str, text: str) -> None:
        box = self.driver.find_element(By.ID, element_id)
        box.clear()
        if text:
            box.send_keys(text)

    # -- the screen ------------------------------------------------------------------------

    def emulate(self, size: tuple[int, int], *, mobile: bool, scale: float = 1.0) -> None:
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": size[0], "height": size[1], "deviceScaleFactor": scale, "mobile": mobile},
        )

    def stop_emulating(self) -> None:
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def screenshot(self, path: Path, size: tuple[int, int], *, mobile: bool, scale: float) -> None:
        """A PNG of the page at ``size``; a height of 0 takes the whole page in one screen (so a
        sticky bar stays at the top)."""
        width, height = size
        self.emulate((width, height or 200), mobile=mobile, scale=scale)
        if not height:
            height = int(self.js("return document.documentElement.scrollHeight"))
            self.emulate((width, height), mobile=mobile, scale=scale)
        self.js("window.scrollTo(0, 0); document.activeElement && document.activeElement.blur()")
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
