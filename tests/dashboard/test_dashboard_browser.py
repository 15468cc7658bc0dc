"""The live dashboard in a real browser: headless Chromium driven by Selenium (Debian's
``chromium`` and ``chromium-driver``; ``.ci/run`` installs them when missing).

Real time: a separate ``python -m loadgen run`` serves the page over loopback while its two sides
load each other, and a browser reads it. The test waits for three live updates, reads the
per-operation table, changes the rate (a bad value first: refused, nothing changes), presses
Stop, and checks that the run drained (exit 130) and wrote its results with the extra stage and
both controls, and that the numbers the page shows at the end are summary.json's. Screenshots at
1280x800 and 800x600 are saved in the test's temporary folder (and under ``LOADGEN_SCREENS``
when that names a folder).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

REPO: Final = Path(__file__).resolve().parents[2]
SMOKE: Final = REPO / "scenarios" / "smoke.toml"
WAIT: Final = 60.0  # an upper bound on every wait below, never reached when things work
CHROMIUM: Final = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER: Final = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium "
        "chromium-driver; .ci/run installs them)",
    ),
]


def _start(results: Path) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable, "-m", "loadgen", "run", str(SMOKE),
        "--set", 'platform.arrival.stages=[{duration="60s", rate=40}]',
        "--set", "platform.breakdown_by_name=true",
        "--threshold", "p99(complete) < 5s",
        "--results", str(results), "--progress", "lines", "--dashboard=127.0.0.1:0",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("dashboard: "):
            return process, line.split(" ", 1)[1].strip()
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"no dashboard address printed: {process.communicate()}")


def _browser(width: int, height: int) -> Any:
    selenium = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extras)")
    options = selenium.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(argument)
    return selenium.Chrome(options=options, service=selenium.ChromeService(executable_path=DRIVER))


def _until(driver: Any, what: str, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, message=what)


def _value(driver: Any, element_id: str) -> str:
    return str(driver.find_element("id", element_id).get_attribute("data-value"))


def _viewport(driver: Any, width: int, height: int) -> None:
    """The page's own size (a window's includes the browser's frame)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def _shoot(driver: Any, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    shots = os.environ.get("LOADGEN_SCREENS")
    if shots:
        shutil.copy(path, Path(shots) / path.name)
    return path


def test_follow_change_the_rate_and_stop_a_run_in_the_browser(tmp_path: Path) -> None:
    results = tmp_path / "results"
    process, url = _start(results)
    driver = None
    try:
        driver = _browser(1280, 800)
        _viewport(driver, 1280, 800)
        driver.get(url)
        frames = lambda d: int(d.find_element("tag name", "body").get_attribute("data-frames"))  # noqa: E731
        first = _until(driver, "a first interval", lambda d: frames(d) >= 1 and frames(d))
        _until(driver, "three live updates", lambda d: frames(d) >= first + 3)
        assert driver.find_element("id", "status").text == "live"
        # the per-operation table: a row per name of the mix, and the total
        rows = driver.find_elements("css selector", "#ops-table tbody tr")
        names = [row.get_attribute("data-name") for row in rows]
        assert names[-1] == "all"
        assert len(names) >= 3
        assert all(int(row.get_attribute("data-count")) > 0 for row in rows)
        assert int(_value(driver, "ops-sent")) > 0
        # the charts have drawn: one canvas per chart
        assert len(driver.find_elements("css selector", ".plot canvas")) == 4

        # a bad rate is refused with its reason, and changes nothing
        box = driver.find_element("id", "rate-input")
        box.clear()
        box.send_keys("-5")
        driver.find_element("id", "rate-set").click()
        message = driver.find_element("id", "control-message")
        _until(driver, "the refusal", lambda d: "expected a rate >= 0" in message.text)
        assert "error" in message.get_attribute("class")
        # the new rate
        box.clear()
        box.send_keys("80")
        driver.find_element("id", "rate-set").click()
        _until(driver, "the rate change", lambda d: message.text.startswith("rate 80.0 ops/s"))
        _until(
            driver,
            "the new stage on the page",
            lambda d: d.find_element("id", "stage").text == "2:rate 80/s",
        )
        _shoot(driver, tmp_path, "dashboard-1280x800")
        _viewport(driver, 800, 600)
        shown = frames(driver)
        _until(driver, "one more update", lambda d: frames(d) > shown)
        _shoot(driver, tmp_path, "dashboard-800x600")
        _viewport(driver, 1280, 800)

        driver.find_element("id", "stop").click()
        _until(
            driver,
            "the end of the run",
            lambda d: d.find_element("tag name", "body").get_attribute("data-state") == "ended",
        )
        assert process.wait(timeout=WAIT) == 130  # interrupted, as by the first Ctrl-C
        _shoot(driver, tmp_path, "dashboard-ended-1280x800")

        [folder] = [p for p in results.glob("*/*") if p.is_dir()]
        summary = orjson.loads((folder / "summary.json").read_bytes())
        assert summary["interrupted"] is True
        operations = summary["operations"]
        # every operation accounted once, and the page shows the summary's numbers
        assert (
            operations["sent"]
            == operations["completed"] + operations["timed_out"] + (operations["errors"])
        )
        for element, key in (("ops-sent", "sent"), ("ops-completed", "completed"),
                             ("ops-failed", "failed"), ("ops-timed-out", "timed_out"),
                             ("ops-errors", "errors")):  # fmt: skip
            assert int(_value(driver, element)) == operations[key], element
        assert float(_value(driver, "p99")) == summary["latency_ms"]["complete"]["p99"]
        assert float(_value(driver, "achieved")) == summary["achieved_rate"]
        assert float(_value(driver, "offered")) == summary["offered_rate"]
        total = driver.find_element("css selector", '#ops-table tr[data-name="all"]')
        assert float(total.get_attribute("data-p99")) == summary["latency_ms"]["complete"]["p99"]

        # both controls in run.json with their time; the new stage in the time series
        controls = orjson.loads((folder / "run.json").read_bytes())["controls"]
        assert [entry["kind"] for entry in controls] == ["rate", "stop"]
        assert controls[0]["rate"] == 80.0
        assert controls[0]["stage"] == "2:rate 80/s"
        assert 0 < controls[0]["at_s"] <= controls[1]["at_s"]
        with (folder / "timeseries.csv").open() as handle:
            stages = [row["stage"] for row in csv.DictReader(handle)]
        assert "1:hold" in stages
        assert "2:rate 80/s" in stages
        assert stages.index("2:rate 80/s") > stages.index("1:hold")
    finally:
        if driver is not None:
            driver.quit()
        if process.poll() is None:
            process.kill()
        process.communicate()
