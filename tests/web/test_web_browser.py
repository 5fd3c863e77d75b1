"""The control page in a real browser: Debian's headless Chromium driven by Selenium
(chromium-driver), against the running engine.

Checked where a musician notices: the engine's own values and the conditioning the
generator received (a fader dragged on the page), the page's controls (an OSC message), the
status and the bar line (a patch picked on the page), MIDI learn armed by touching a control.
The phone and tablet screenshots go to $BACKLINE_SCREENSHOTS (docs/screenshots for the
README) or the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import mido
import pytest

from control_helpers import client_socket, send, serving, wait_for
from web_helpers import Stage, stage_config

pytestmark = pytest.mark.jack
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PHONE, TABLET = (390, 844), (820, 1180)


@pytest.fixture
def browser() -> Iterator[object]:
    if not (CHROMIUM and DRIVER):
        if os.environ.get("CI"):
            raise RuntimeError("chromium and chromium-driver are not installed (.ci/setup installs them)")
        pytest.skip("no chromium/chromedriver here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={PHONE[0]},{PHONE[1]}", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(DRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser, stage: Stage) -> None:
    browser.get(stage.url)
    assert wait_for(lambda: browser.execute_script("return document.querySelector('#link').textContent") == "live", 10)
    assert wait_for(lambda: browser.execute_script(
        "return document.querySelectorAll('#sampling-faders input[type=range]').length") == 5, 5)


def element(browser, css: str):
    """The page's element at `css`, scrolled to the middle of the screen (as a thumb reaches it)."""
    from selenium.webdriver.common.by import By

    found = browser.find_element(By.CSS_SELECTOR, css)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", found)
    return found


def value_on_page(browser, path: str) -> float:
    return float(browser.execute_script(f"return document.querySelector('[data-path=\"{path}\"]').value"))


def severe(browser) -> list[dict]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_the_page_loads_clean_and_a_dragged_fader_moves_the_engine(stage: Stage, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    open_page(browser, stage)
    assert severe(browser) == []
    assert browser.execute_script("return document.querySelector('#patch-name').textContent") == "a"
    assert browser.execute_script("return location.search") == ""  # the token (if any) is off the address bar
    before = stage.temperature()
    fader = element(browser, '[data-path="sampling.temperature"]')
    width = fader.size["width"]
    ActionChains(browser).move_to_element_with_offset(fader, -width // 2 + 4, 0).click_and_hold() \
        .move_by_offset(width // 4, 0).move_by_offset(width // 4, 0).move_by_offset(width // 4 - 8, 0).release().perform()
    on_page = value_on_page(browser, "sampling.temperature")
    assert on_page > 2.5, on_page  # dragged three quarters along 0..4
    assert wait_for(lambda: stage.temperature() == pytest.approx(on_page, abs=1e-6), 5), (stage.temperature(), on_page)
    assert stage.temperature() != pytest.approx(before)
    assert wait_for(lambda: any(f.sampling.temperature == pytest.approx(on_page, abs=1e-6)
                                for f in list(stage.frames.frames)), 5), "the generator never got the dragged value"
    assert any(c[0] == "sampling.temperature" and c[2].startswith("web:") for c in stage.changes)
    assert severe(browser) == []


def test_an_osc_message_moves_the_pages_fader(stage: Stage, browser):
    open_page(browser, stage)
    with client_socket() as c:
        sent = time.perf_counter()
        send(c, stage.service.control.osc.address, "/backline/sampling/temperature", 0.35)
        assert wait_for(lambda: value_on_page(browser, "sampling.temperature") == pytest.approx(0.35, abs=1e-3), 5)
        took = time.perf_counter() - sent
        stage.knob.send(mido.Message("control_change", control=21, value=10))  # far from 0.35 with pickup: ignored
        time.sleep(0.3)
    assert value_on_page(browser, "sampling.temperature") == pytest.approx(0.35, abs=1e-3)
    assert browser.execute_script("return document.querySelector('output[data-for=\"sampling.temperature\"]').textContent") == "0.35"
    print(f"OSC -> page fader: {took * 1000:.0f} ms (polled every 10 ms through WebDriver; bench/web_bench.py measures it)")
    assert severe(browser) == []


def test_a_patch_picked_on_the_page_takes_over_at_the_next_bar(stage: Stage, browser):
    open_page(browser, stage)
    button = element(browser, '#patch-list button[data-patch="b"]')
    button.click()
    assert wait_for(lambda: any(c[0] == "patch.load" for c in stage.changes), 10)
    _, value, source, at = next(c for c in stage.changes if c[0] == "patch.load")
    assert value == "b" and source.startswith("web:")
    timeline = stage.service.engine.scheduler.timeline
    assert at == timeline.bar_start(timeline.bar_at(at))  # on a bar line's first sample
    assert wait_for(lambda: stage.service.engine.status()["patch"] == "b", 5)
    assert wait_for(lambda: browser.execute_script(
        "return document.querySelector('#patch-list button.current').dataset.patch") == "b", 5)
    assert wait_for(lambda: float(browser.execute_script("return document.querySelector('[data-path=\"tempo.bpm\"]').value")) == 200, 5)
    assert severe(browser) == []


def test_learn_on_the_page_arms_midi_learn_for_the_control_touched_next(stage: Stage, browser):
    open_page(browser, stage)
    element(browser, "#learn").click()
    pad = element(browser, '[data-path="sampling.cfg_drums"]')
    before = stage.service.engine.value_of("sampling.cfg_drums")
    pad.click()  # touched in learn mode: picked for learn, not moved
    assert wait_for(lambda: "sampling.cfg_drums" in browser.execute_script(
        "return document.querySelector('#learn-state').textContent"), 5)
    assert stage.service.engine.value_of("sampling.cfg_drums") == before
    stage.knob.send(mido.Message("control_change", control=40, value=127))
    assert wait_for(lambda: browser.execute_script("return document.querySelector('#learn-state').textContent")
                    == "sampling.cfg_drums: learned", 5)
    stage.knob.send(mido.Message("control_change", control=40, value=0))
    assert wait_for(lambda: stage.service.engine.value_of("sampling.cfg_drums") == pytest.approx(-1.0), 5)
    assert wait_for(lambda: value_on_page(browser, "sampling.cfg_drums") == pytest.approx(-1.0), 5)
    assert severe(browser) == []


def test_phone_and_tablet_screenshots(stage: Stage, browser, tmp_path: Path):
    folder = Path(os.environ.get("BACKLINE_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    for name, (width, height) in (("web-phone", PHONE), ("web-tablet", TABLET)):
        browser.set_window_size(width, height)
        open_page(browser, stage)
        assert wait_for(lambda: "look-ahead" in browser.execute_script("return document.querySelector('#health').textContent"), 5)
        overflow = browser.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name}: the page is {overflow} px wider than the screen"
        targets = browser.execute_script("return Array.from(document.querySelectorAll('button')).filter(b => b.offsetParent)"
                                         ".map(b => Math.min(b.offsetWidth, b.offsetHeight))")
        assert min(targets) >= 44, f"{name}: a button smaller than a fingertip ({min(targets)} px)"
        path = folder / f"{name}.png"
        assert browser.save_screenshot(str(path))
        size = struct.unpack(">II", path.read_bytes()[16:24])  # the PNG header's width and height
        assert size[0] > 0 and size[1] > 0
    assert severe(browser) == []


def test_the_page_warns_when_the_generator_fell_back(jack, tmp_path: Path, browser):
    """A remote generator whose server is not there: the synth fallback plays, and the page
    says so in words (and names the generator's state) until the server comes."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    config = stage_config(tmp_path, extra=f"generator: {{name: remote, options: {{url: 'ws://127.0.0.1:{dead}'}}}}\n")
    with serving(config) as service:
        browser.get(service.web.url)
        assert wait_for(lambda: "the fallback plays" in browser.execute_script(
            "return document.querySelector('#warnings').textContent"), 10)
        assert "remote connecting" in browser.execute_script("return document.querySelector('#health').textContent")
        assert service.engine.status()["fallback_frames"] > 0
    assert severe(browser) == []


def test_freeze_pressed_twice_on_the_page_freezes_then_releases(stage: Stage, browser):
    """The page's own change is not echoed to it, so its toggle follows the engine's status:
    a second press releases what the first froze, and the button shows the state."""
    open_page(browser, stage)
    freeze = element(browser, "#freeze")
    freeze.click()
    assert wait_for(lambda: stage.service.engine.status()["frozen"] is True, 5)
    assert wait_for(lambda: "on" in freeze.get_attribute("class"), 3)
    freeze.click()
    assert wait_for(lambda: stage.service.engine.status()["frozen"] is False, 5)
    assert wait_for(lambda: "on" not in freeze.get_attribute("class").split(), 3)
    assert severe(browser) == []
