"""`dualscope view` in a real headless browser (Debian's chromium, driven through its chromedriver by Selenium).

A keyed campaign runs in its own process; two views follow it, one with an operator's key and one
with an observer's. The operator's page updates as rows arrive, shows the model's map, and its Pause
button pauses the campaign (recorded under the key's name); the observer's page has no buttons.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.storage import read_run
from instruments.auth import KeyPair
from tests.engine.cli.test_cli import DUALSCOPE, ROOT, _cli, _running, _wait, _write_config

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

# every element under document.body, through Bokeh's shadow roots, that matches a CSS selector
_DEEP = """
const want = arguments[0], found = [];
function walk(node) {
  if (node.matches && node.matches(want)) found.push(node);
  if (node.shadowRoot) for (const k of node.shadowRoot.children) walk(k);
  for (const k of node.children) walk(k);
}
walk(document.body);
return found;
"""
# the text a reader sees, through the shadow roots
_TEXT = """
function text(node) {
  let s = node.shadowRoot ? text(node.shadowRoot) : "";
  for (const k of node.childNodes) s += k.nodeType === 3 ? k.textContent : text(k);
  return s;
}
return text(document.body);
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless chromium on this machine (no download: the browser and driver come from Debian's packages)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("the browser test needs Debian's chromium: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1200",
                 f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def _view(run_path: Path, key: Path) -> tuple[subprocess.Popen[str], str]:
    """`dualscope view RUN --port 0 --key KEY` in a child process, and the URL it serves."""
    proc = subprocess.Popen([*DUALSCOPE, "view", str(run_path), "--port", "0", "--key", str(key)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+/", line)
    assert found, line + proc.stderr.read() if proc.stderr else line
    return proc, found.group(0)


def _until(condition: Any, timeout_s: float = 180.0) -> None:
    """Wait for ``condition`` on the page, asking five times a second (a browser is not a file to poll hard)."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout_s, "timed out"
        time.sleep(0.2)


def _count(driver: Any) -> int:
    """The spectra count the page shows."""
    found = re.search(r"(\d+) spectra", driver.execute_script(_TEXT))
    return int(found.group(1)) if found else -1


def test_the_live_view_follows_a_campaign_and_its_pause_button_pauses_it(tmp_path: Path, browser: Any) -> None:
    keys = tmp_path / "keys"
    for name, role in (("campaign", "operator"), ("ann", "operator"), ("obs", "observer")):
        KeyPair.new(name, role).save(keys)
    listed = [KeyPair.load(keys / f"{n}.key_secret").authorised_line() for n in ("ann", "obs")]
    (keys / "operators").write_text("\n".join(listed) + "\n")
    policy = (
        'name = "gp-position"\ntraining = "inline"\ninitial = 3\nscalariser = { kind = "band", low = 1.0, high = 2.0 }'
    )
    cfg = _write_config(tmp_path, policy)
    cfg.write_text(
        cfg.read_text()
        + f'[operator]\nauthorised_keys = "{keys / "operators"}"\nkey = "{keys / "campaign.key_secret"}"\n'
    )
    ann, obs = keys / "ann.key_secret", keys / "obs.key_secret"
    views: list[subprocess.Popen[str]] = []
    with _running(cfg, "--key", str(ann)) as (proc, run_path):
        try:
            operator_view, operator_url = _view(run_path, ann)
            observer_view, observer_url = _view(run_path, obs)
            views += [operator_view, observer_view]

            browser.get(operator_url)
            _until(lambda: "you are operator" in browser.execute_script(_TEXT), 180)
            first = _count(browser)
            _until(lambda: _count(browser) > max(first + 2, 25))  # the page follows the rows as they arrive
            _until(lambda: browser.execute_script(  # the model's map over the candidates has reached the page
                "return Bokeh.documents[0].get_model_by_name('map').data.mean.length"))  # fmt: skip
            labels = [b.text for b in browser.execute_script(_DEEP, "button")]
            assert labels == ["Pause", "Resume", "Stop", "Approve", "Veto"], labels
            pause = next(b for b in browser.execute_script(_DEEP, "button") if b.text == "Pause")
            pause.click()
            _wait(lambda: [a["action"] for a in read_run(run_path).attrs.get("operator_actions", [])] == ["pause"])
            _until(lambda: ": paused; you are" in browser.execute_script(_TEXT))  # the pause took effect, and it shows
            held = _count(browser)
            newest = re.search(r"record \(ms\)\s*(\d+)", browser.execute_script(_TEXT))
            assert newest and int(newest.group(1)) == held - 1  # the decision table shows the latest row too
            assert "status: campaign paused" in _cli("ctl", str(run_path), "status", "--key", str(ann)).stdout

            browser.get(observer_url)
            _until(lambda: "you are observer" in browser.execute_script(_TEXT))
            assert _count(browser) == held  # still paused: nothing measured since
            assert browser.execute_script(_DEEP, "button") == []  # an observer gets no buttons at all

            stopped = _cli("ctl", str(run_path), "stop", "--key", str(ann))
            assert stopped.returncode == 0, stopped.stderr
            out, err = proc.communicate(timeout=120)
        finally:
            for view in views:
                view.terminate()
                view.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    actions = [(a["action"], a["who"]) for a in read_run(run_path).attrs["operator_actions"]]
    assert actions == [("pause", "ann"), ("stop", "ann")]


def test_the_browser_is_debians() -> None:
    """The browser test runs on the packaged chromium, never on one a tool downloaded."""
    assert shutil.which("chromium") in (None, str(CHROMIUM))
