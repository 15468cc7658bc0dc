"""The dashboard's server over real loopback sockets (hypercorn), without a browser: the token
(401), the controls' bad input (400, nothing changes), a busy port (one clear line, before any
load), the event stream, and a Board whose numbers are the summary's."""

from __future__ import annotations

import functools
import gc
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from hdrh.histogram import HdrHistogram

from loadgen.dashboard.address import DEFAULT_PORT, parse_address, token_for
from loadgen.dashboard.board import Board
from loadgen.dashboard.server import Controls, open_dashboard
from loadgen.errors import ConfigError
from loadgen.metrics.hdr import new_histogram
from loadgen.metrics.intervals import Interval, run_intervals
from loadgen.metrics.registry import Metrics, PhaseRecorder
from loadgen.metrics.thresholds import parse_threshold
from loadgen.report.summary import build_summary, histograms_of

REPO = Path(__file__).resolve().parents[2]


def interval(
    index: int, totals: dict[str, int], values_us: list[int], phase: PhaseRecorder | None = None
) -> Interval:
    """The next interval of ``phase`` (of a new one by default) holding ``values_us`` (their
    halves as the service times), rolled over as the interval task does."""
    phase = phase or PhaseRecorder("complete")
    for value in values_us:
        phase.intended.record_us(value)
        phase.service.record_us(value // 2)
    return Interval(
        index, float(index), float(index + 1),
        {recorder.name: recorder.rollover() for recorder in phase.recorders()},
        {"ops.sent": len(values_us), "ops.completed": len(values_us)},
        totals,
        {"in_flight": 3, "offered_rate": 10.0, "stage": "1:hold", "phase": "load",
         "cpu_percent": 12.0},
        notes={"http.status.500": "500 b'boom'"},
        cumulative={recorder.name: recorder.total for recorder in phase.recorders()},
    )  # fmt: skip


def fed_board() -> tuple[Board, dict[str, Any]]:
    board = Board(
        title="t", sides="both", total_seconds=10, open_model=True,
        thresholds=[parse_threshold("p99(complete) < 5ms"), parse_threshold("errors == 0")],
    )  # fmt: skip
    totals = {"ops.sent": 12, "ops.completed": 11, "ops.errors": 1, "http.status.500": 1}
    phase = PhaseRecorder("complete")
    board(interval(0, {"ops.sent": 6, "ops.completed": 6}, [1000] * 6, phase))
    board(interval(1, totals, [2000, 3000, 4000, 5000, 9000], phase))
    return board, totals


def test_the_board_state_is_the_summary_of_its_intervals() -> None:
    board, totals = fed_board()
    state = board.state
    merged = new_histogram()
    for value in [1000] * 6 + [2000, 3000, 4000, 5000, 9000]:
        merged.record_value(value)
    summary = build_summary({"complete": merged}, totals, {"load_duration_s": 2.0})
    assert state["operations"]["sent"] == 12
    assert state["operations"]["errors"] == 1
    assert state["latency_ms"]["complete"] == summary["latency_ms"]["complete"]
    assert state["errors_by_cause"] == [
        {"cause": "http.status.500", "count": 1, "first": "500 b'boom'"}
    ]
    assert [(t["expression"], t["ok"]) for t in state["thresholds"]] == [
        ("p99(complete) < 5ms", False),
        ("errors == 0", False),
    ]
    assert state["rates"]["offered"] == 10.0
    assert state["time_left_s"] == 8.0
    assert [frame["latency"]["complete"][0] for frame in board.frames] == [1.0, 4.001]  # HDR
    assert (
        board.frames[1]["latency"]["complete.service"][2] == 4.503
    )  # the service twin's p99 (HDR)
    assert state["spectrum"]["complete"][-1] == [100.0, 9.007]  # max, HDR-equivalent
    assert state["by_operation"][-1]["name"] == "all"


def _histograms_held(board: Board) -> list[HdrHistogram]:
    """The histograms the board's own containers hold (not the recorders, types or modules)."""
    found: list[HdrHistogram] = []
    seen: set[int] = set()
    todo: list[object] = [vars(board)]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, HdrHistogram):
            found.append(node)
        elif isinstance(node, dict | list | tuple):
            todo.extend(gc.get_referents(node))
    return found


async def test_the_board_reads_the_recorders_totals_and_keeps_no_copy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Fed by the interval task itself: the state so far is the recorders' own totals (the
    summary's numbers), and the board holds no histogram of its own (188 kB a recorder)."""
    metrics = Metrics()
    board = Board(title="t", sides="both", total_seconds=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(run_intervals, metrics, [board], t0=trio.current_time())
        )
        for values_us in ([1000] * 6, [2000, 3000, 4000, 5000, 9000]):
            await trio.sleep(0.5)  # mid-interval: each batch is in one interval
            for value in values_us:
                metrics.phase("complete").record(value / 1e6, value / 2e6)
            metrics.single("lateness").record(0.001)
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    summary = build_summary(histograms_of(metrics), metrics.counters, {"load_duration_s": 2.0})
    assert len(board.frames) == 2
    assert board.state["latency_ms"]["complete"] == summary["latency_ms"]["complete"]
    assert board.state["latency_ms"]["complete"]["count"] == 11
    assert board.state["health"]["lateness_p99_ms"] == 1.0
    assert _histograms_held(board) == []


def test_addresses() -> None:
    assert parse_address("") == ("127.0.0.1", DEFAULT_PORT)
    assert parse_address(":0") == ("127.0.0.1", 0)
    assert parse_address("0.0.0.0:8000") == ("0.0.0.0", 8000)
    assert parse_address("[::1]:81") == ("::1", 81)
    with pytest.raises(ConfigError, match="expected HOST:PORT with a port 0-65535, got 'x:99999'"):
        parse_address("x:99999")


async def serve(board: Board, controls: Controls, **kwargs: Any) -> Any:
    return open_dashboard(board, "127.0.0.1:0", notice=lambda text: None, **kwargs)


async def test_controls_refuse_bad_input_and_change_nothing() -> None:
    board, _ = fed_board()
    rates: list[float] = []

    def change_rate(rate: float) -> dict[str, Any]:
        rates.append(rate)
        return {"kind": "rate", "at_s": 1.0, "rate": rate}

    async with open_dashboard(board, "127.0.0.1:0", notice=lambda text: None) as server:
        server.controls = Controls(change_rate=change_rate)
        base = server.url.rstrip("/")
        async with httpx.AsyncClient() as client:
            for body, status in [
                ({"rate": -1}, 400), ({"rate": "fast"}, 400), ({"rate": None}, 400),
                ({"rate": True}, 400), ({}, 400), ([1], 400),
            ]:  # fmt: skip
                answer = await client.post(base + "/api/rate", json=body)
                assert answer.status_code == status, body
                assert answer.json()["error"].startswith("expected a rate")
            answer = await client.post(base + "/api/rate", content=b"rate=5")
            assert answer.status_code == 415
            answer = await client.post(
                base + "/api/rate", json={"rate": 5}, headers={"Origin": "http://evil.example"}
            )
            assert answer.status_code == 403
            assert rates == []
            assert board.controls == []
            answer = await client.post(base + "/api/rate", json={"rate": 25})
            assert answer.status_code == 202
            assert rates == [25.0]
            assert board.controls == [{"kind": "rate", "at_s": 1.0, "rate": 25.0}]
            # Stop is not wired here: 409, saying so
            answer = await client.post(base + "/api/stop", json={})
            assert answer.status_code == 409


async def test_a_token_is_required_off_loopback_or_when_given() -> None:
    board, _ = fed_board()
    async with open_dashboard(
        board, "127.0.0.1:0", token="s3cret", notice=lambda text: None
    ) as server:
        assert server.url.endswith("/?token=s3cret")
        base = server.url.split("?")[0].rstrip("/")
        async with httpx.AsyncClient() as client:
            for path in ("/", "/api/state", "/events", "/static/dashboard.js"):
                assert (await client.get(base + path)).status_code == 401, path
            assert (await client.get(base + "/?token=wrong")).status_code == 401
            answer = await client.post(base + "/api/stop", json={})
            assert answer.status_code == 401
            page = await client.get(base + "/?token=s3cret")
            assert page.status_code == 200
            assert b"dashboard.js" in page.content
            # the cookie the page's address set lets the page's own requests through
            state = await client.get(base + "/api/state")
            assert state.status_code == 200
            assert state.json()["meta"]["title"] == "t"
        async with httpx.AsyncClient() as client:  # no cookie: a script's bearer token
            bearer = await client.get(
                base + "/api/state", headers={"Authorization": "Bearer s3cret"}
            )
            assert bearer.status_code == 200
            wrong = await client.get(base + "/api/state", headers={"Authorization": "Bearer x"})
            assert wrong.status_code == 401


def test_a_token_is_made_off_loopback_and_kept_when_given() -> None:
    assert token_for("127.0.0.1", None) is None
    assert token_for("localhost", None) is None
    assert token_for("::1", None) is None
    assert token_for("127.0.0.1", "given") == "given"
    assert token_for("0.0.0.0", "given") == "given"
    made = token_for("0.0.0.0", None)
    assert made is not None
    assert len(made) >= 20
    assert made != token_for("10.1.2.3", None)


async def test_a_busy_port_is_one_clear_line_naming_the_key() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        board, _ = fed_board()
        with pytest.raises(ConfigError) as caught:
            async with open_dashboard(board, f"127.0.0.1:{port}", notice=lambda text: None):
                raise AssertionError("the block must not run")
    assert str(caught.value) == (
        f"output.dashboard: cannot serve the dashboard on 127.0.0.1:{port}: the port is in use "
        "(choose another with --dashboard=HOST:PORT)"
    )


async def test_events_send_a_snapshot_then_an_update_per_interval() -> None:
    board, _ = fed_board()
    async with open_dashboard(board, "127.0.0.1:0", notice=lambda text: None) as server:
        port = int(server.url.rsplit(":", 1)[1].strip("/"))
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            events: list[tuple[str, dict[str, Any]]] = []
            with trio.fail_after(10):
                while len(events) < 2:
                    received += await stream.receive_some()
                    while b"\n\n" in received.partition(b"event: ")[2]:
                        _, _, rest = received.partition(b"event: ")
                        block, _, received = rest.partition(b"\n\n")
                        kind, _, data = block.partition(b"\ndata: ")
                        events.append((kind.decode(), orjson.loads(data)))
                        if len(events) == 1:
                            board(interval(2, {"ops.sent": 13}, [1000]))
    [(first, snapshot), (second, update)] = events
    assert (first, len(snapshot["frames"])) == ("snapshot", 2)
    assert second == "update"
    assert update["first"] == 2
    assert [frame["t"] for frame in update["frames"]] == [3.0]
    assert update["state"]["operations"]["sent"] == 13


async def test_the_server_ends_with_its_block_and_passes_its_error_on() -> None:
    board, _ = fed_board()
    with pytest.raises(KeyError):
        async with open_dashboard(board, "127.0.0.1:0", notice=lambda text: None):
            raise KeyError("the run's own error, not a group")
    with trio.fail_after(5):
        async with open_dashboard(board, "127.0.0.1:0", notice=lambda text: None):
            pass


def test_a_busy_dashboard_port_stops_the_command_before_the_run(tmp_path: Path) -> None:
    """Through the command line: exit 2, one line naming the flag, no results folder."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "loadgen", "run", str(REPO / "scenarios" / "smoke.toml"),
             f"--dashboard=127.0.0.1:{port}", "--results", str(tmp_path), "-q"],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"127.0.0.1:{port}: the port is in use" in lines[0]
    assert "dashboard" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no run folder, and no empty campaign folder
