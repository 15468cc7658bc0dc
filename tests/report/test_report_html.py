"""report.html: self-contained, every table and plot present, absent data skipped with a note."""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from report_fixtures import THRESHOLDS, Recorded
from trio.testing import MockClock

from loadgen.report.html import render_html, render_report
from loadgen.report.rebuild import rebuild, rebuild_summary
from loadgen.report.results import RunWriter, load_run

MakeRun = Callable[..., Awaitable[Recorded]]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOT_COUNT = 8  # latency over time x3, spectrum, rates, in flight, result codes, health
# any attribute that would make the browser fetch something
EXTERNAL_REF = re.compile(r"""(?:src|href|url)\s*[=(]\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def embedded_pngs(page: str) -> list[bytes]:
    return [
        base64.b64decode(data)
        for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


async def test_report_is_self_contained_with_every_table_and_plot(
    make_run: MakeRun, autojump_clock: MockClock
) -> None:
    recorded = await make_run()
    summary, path = rebuild(recorded.directory)
    page = path.read_text(encoding="utf-8")

    assert path == recorded.directory / "report.html"
    assert not EXTERNAL_REF.search(page)
    assert "<script" not in page
    assert "<link" not in page
    images = embedded_pngs(page)
    assert len(images) == PLOT_COUNT
    assert all(image.startswith(PNG_MAGIC) for image in images)
    assert "Not drawn" not in page
    assert path.stat().st_size < 2_000_000
    # thresholds: one row per expression, with its verdict
    for expression in THRESHOLDS:
        assert f"<code>{expression.replace('>', '&gt;').replace('<', '&lt;')}</code>" in page
    assert page.count('<td class="pass">PASS</td>') == 2
    assert page.count('<td class="fail">FAIL</td>') == 1
    assert "Thresholds (1 of 3 failed)" in page
    # operations and latency tables: intended and service twin side by side
    assert f'<td class="n">{recorded.sent:,}</td>' in page
    assert '<th colspan="6">intended</th><th class="twin" colspan="6">service time</th>' in page
    for phase in ("ack", "first_response", "complete"):
        assert f"<tr><td>{phase}</td>" in page
    assert "NOT FINISHED" not in page
    assert "GENERATOR SATURATED" not in page
    assert summary["latency_ms"]["complete"]["count"] == recorded.complete


async def test_absent_data_is_skipped_with_a_note(
    make_run: MakeRun, autojump_clock: MockClock
) -> None:
    recorded = await make_run(seconds=3, with_first_response=False)

    page = rebuild(recorded.directory)[1].read_text(encoding="utf-8")

    assert len(embedded_pngs(page)) == PLOT_COUNT - 1
    assert "Not drawn: no first_response latencies were recorded." in page


def test_empty_folder_renders_notes_and_banner(tmp_path: Path) -> None:
    RunWriter(tmp_path, 1_700_000_000.0, {"campaign": "killed-at-once"}).close()

    summary, path = rebuild(tmp_path)
    page = path.read_text(encoding="utf-8")

    assert summary["interrupted"] is True
    assert summary["operations"]["sent"] == 0
    assert embedded_pngs(page) == []
    assert page.count("Not drawn:") == PLOT_COUNT
    assert "NOT FINISHED" in page
    assert "No latencies were recorded." in page
    assert "No thresholds were set for this run." in page


async def test_saturated_generator_and_user_text_are_shown_escaped(
    make_run: MakeRun, autojump_clock: MockClock
) -> None:
    recorded = await make_run(seconds=2, run_extra={"campaign": "<b>x</b> & co"})
    run = load_run(recorded.directory)
    summary = rebuild_summary(run)
    summary["generator"].update(saturated=True, reasons=["lateness p99 80 ms > 50 ms"])

    page = render_report(run, summary, recorded.directory / "other.html").read_text("utf-8")

    assert "GENERATOR SATURATED" in page
    assert "lateness p99 80 ms &gt; 50 ms" in page
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt; &amp; co" in page


async def test_interrupted_but_finished_run_has_the_interrupted_banner(
    make_run: MakeRun, autojump_clock: MockClock
) -> None:
    recorded = await make_run(seconds=2)
    run = load_run(recorded.directory)
    summary = rebuild_summary(run)
    summary["interrupted"] = True

    page = render_html(run, summary)

    assert "INTERRUPTED: the run was stopped" in page
    assert "NOT FINISHED" not in page
