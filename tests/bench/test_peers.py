"""make bench's in-run peers (section [11]): the C target compiled and answering like a device,
the locustfile usable without Locust (and its measured window, under a stand-in Locust), and
the issue 17 figures table reading whatever the sections produced."""

from __future__ import annotations

import importlib
import runpy
import socket
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from loadgen.bench import locustfile, peersbench
from loadgen.bench.figures import ISSUE_17, figure_lines, figure_rows, lookup
from loadgen.bench.senderpeer import bench_config
from loadgen.metrics.registry import Metrics
from loadgen.platform.config import DEFAULT_ID_PATTERN, PlatformConfig
from loadgen.platform.mix import OperationMix
from loadgen.platform.runner import run_platform

needs_cc = pytest.mark.skipif(peersbench.compiler() is None, reason="no C compiler (cc/gcc)")


@pytest.fixture(scope="module")
def c_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = peersbench.compiler()
    assert cc is not None
    return peersbench.build_c_server(tmp_path_factory.mktemp("cserver"), cc)


@pytest.fixture
def c_port(c_binary: Path) -> Iterator[int]:
    with peersbench.c_server(c_binary, cpu=None) as (_, port):
        yield port


def _request(device: str, op_id: str, *, extra: str = "", name: str = "REBOOT_EQUIPMENT") -> bytes:
    body = (locustfile._BODY % (op_id, 1)).replace("REBOOT_EQUIPMENT", name).encode()
    head = (
        f"POST /south/v80/devices/{device}/operation/request HTTP/1.1\r\nHost: x\r\n"
        f"{extra}content-LENGTH: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _responses(sock: socket.socket, count: int) -> list[tuple[bytes, dict[str, Any]]]:
    """``count`` responses read off ``sock``: (status line, JSON body)."""
    data, out = b"", []
    while len(out) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(out)} responses"
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            length = next(int(v) for k, _, v in (line.partition(b":") for line in lines[1:])
                          if k.lower() == b"content-length")  # fmt: skip
            if len(rest) < length:
                break
            out.append((lines[0], orjson.loads(rest[:length])))
            data = rest[length:]
    assert data == b""
    return out


@needs_cc
def test_c_server_answers_pipelined_and_split_requests_in_order(c_port: int) -> None:
    """Two requests in one write, then a third split inside its head and its body: three
    answers in order, each a 201 echoing its request's id, name and device."""
    with socket.create_connection(("127.0.0.1", c_port), timeout=5) as sock:
        sock.sendall(_request("dev-000001", "id-1") + _request("dev-000002", "id-2", name="X"))
        third = _request("dev-000003", "id-3", extra="X-Other: y\r\n")
        sock.sendall(third[:20])
        sock.sendall(third[20:-5])
        sock.sendall(third[-5:])
        answers = _responses(sock, 3)
    assert [status for status, _ in answers] == [b"HTTP/1.1 201 Created"] * 3
    fields = [
        tuple(r["operation"]["response"][k] for k in ("id", "name", "deviceId", "resultCode"))
        for _, r in answers
    ]
    assert fields == [
        ("id-1", "REBOOT_EQUIPMENT", "dev-000001", "SUCCESSFUL"),
        ("id-2", "X", "dev-000002", "SUCCESSFUL"),
        ("id-3", "REBOOT_EQUIPMENT", "dev-000003", "SUCCESSFUL"),
    ]


@needs_cc
def test_c_server_closes_on_a_chunked_request_and_keeps_serving_others(c_port: int) -> None:
    with socket.create_connection(("127.0.0.1", c_port), timeout=5) as sock:
        sock.sendall(
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        assert sock.recv(100) == b""
    with socket.create_connection(("127.0.0.1", c_port), timeout=5) as sock:
        sock.sendall(b"GET /south/v80/devices/d/operation/pending HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, _)] = _responses(sock, 1)
    assert status == b"HTTP/1.1 201 Created"


@needs_cc
@pytest.mark.slow
async def test_the_platform_completes_every_operation_on_the_c_target(c_port: int) -> None:
    """Real time (~1 s, a real socket to a real process): the C target is a device our sender's
    ordinary path accepts, every answer fitting its operation (no device.wrong_* counter)."""
    metrics = Metrics()
    with trio.fail_after(20):
        await run_platform(bench_config(c_port, 4, 0.5), metrics)
    counters = metrics.counters
    assert counters["ops.completed"] > 0
    assert counters["ops.completed"] == counters["ops.sent"]
    assert {k: v for k, v in counters.items() if k.startswith("device.wrong") and v} == {}


def test_build_failure_is_one_line_naming_the_compiler(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"^/bin/false could not build epoll_server\.c: "):
        peersbench.build_c_server(tmp_path, "/bin/false")


def test_no_compiler_skips_the_section_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peersbench, "compiler", lambda: None)
    peers = peersbench.peer_figures(0.1)
    assert peers == {"skipped": "no C compiler (cc or gcc) on PATH: no C target, no peers"}
    assert peersbench.peer_lines(peers) == [f"  skipped: {peers['skipped']}"]


def test_locust_is_found_here_or_on_path_or_not_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peersbench.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(peersbench.shutil, "which", lambda name: None)
    assert peersbench.locust_command() is None
    monkeypatch.setattr(peersbench.shutil, "which", lambda name: f"/opt/bin/{name}")
    assert peersbench.locust_command() == ["/opt/bin/locust"]


def test_lines_with_locust_missing_say_how_to_install_it() -> None:
    sender = {"operations": 3000, "errors": 0, "ops_per_s": 1000.0, "ops_per_cpu_s": 1500.0,
              "cpu_us_per_op": 666.7, "server_us_per_request": 10.0}  # fmt: skip
    peers = {"sender": sender, "locust": {"skipped": peersbench.LOCUST_MISSING},
             "ratio_vs_locust": None, "c_server_us_per_request": 10.0, "sender_vs_limit": 66.7}  # fmt: skip
    lines = peersbench.peer_lines(peers)
    assert "Locust FastHttpUser" in lines[2]
    assert lines[2].endswith("skipped, not installed: pip install -e '.[bench]'")
    assert lines[3] == "  sender vs Locust, ops per CPU-second: n/a (target 3.5x)"
    assert lines[4:] == [
        "  the limit: the C server, 10.0 µs CPU per request (100,000 per CPU-second);",
        "  the sender spends 66.7x that per operation",
    ]
    assert max(map(len, lines)) <= 80


# -- the locustfile -------------------------------------------------------------------------


def test_locustfile_imports_without_locust_and_defines_no_user() -> None:
    """Importing it (the bench does) neither needs Locust nor imports it, even where Locust is
    installed: Locust's import monkey-patches the standard library through gevent."""
    module = importlib.reload(locustfile)
    assert not hasattr(module, "SyncOperationUser")
    code = "import sys, loadgen.bench.peersbench; print(sorted({'locust', 'gevent'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n"


def test_locust_sends_the_platforms_request_to_the_platforms_devices() -> None:
    """The same bytes as the sender's closed model: its template, its id shape, its devices."""
    template = OperationMix(PlatformConfig().mix, seed=0, timestamp_ms=0).templates[0]
    operations = locustfile.Operations(prefix="0452c061-055e-4dda-90b8-")
    sent = [operations.next(1432454277950) for _ in range(1001)]
    op_id, path, body = sent[0]
    assert op_id == "0452c061-055e-4dda-90b8-000000000001"
    assert body == template.render(op_id.encode(), 1432454277950)
    assert path == f"/south/v80/devices/{DEFAULT_ID_PATTERN.format(0)}/operation/request"
    assert sent[999][1] == f"/south/v80/devices/{DEFAULT_ID_PATTERN.format(999)}/operation/request"
    assert sent[1000][1] == path  # 1,000 devices in turn, like the sender's round robin
    assert len({op_id for op_id, _, _ in sent}) == 1001


@pytest.mark.parametrize(
    ("status", "answer", "fits"),
    [
        (201, b'{"operation":{"response":{"id":"a","resultCode":"SUCCESSFUL"}}}', True),
        (200, b'{"operation":{"response":{"id":"a","resultCode":"SUCCESSFUL"}}}', False),
        (201, b'{"operation":{"response":{"id":"b","resultCode":"SUCCESSFUL"}}}', False),
        (201, b'{"operation":{"response":{"id":"a"}}}', False),  # a partial: no result code
        (201, b"", False),
        (201, None, False),
        (201, b"not json", False),
        (201, b'{"operation":[]}', False),
        (201, b'{"operation":{"response":"a"}}', False),
    ],
)
def test_locust_counts_only_a_fitting_sync_answer(
    status: int, answer: bytes | None, fits: bool
) -> None:
    assert locustfile.fits(status, answer, "a") is fits


class _Total:
    def __init__(self) -> None:
        self.num_requests = 0
        self.num_failures = 0


def _stand_in_locust(total: _Total, quit_calls: list[bool]) -> tuple[Any, Any]:
    """Just enough of Locust and gevent for the locustfile: events, a user base, a task mark;
    gevent's sleep advances Locust's counters (100 requests, 1 failure a call)."""
    listeners: dict[str, list[Any]] = {"init": [], "spawning_complete": []}
    locust: Any = types.ModuleType("locust")
    locust.events = types.SimpleNamespace(
        **{name: types.SimpleNamespace(add_listener=found.append, fire=found)
           for name, found in listeners.items()}
    )  # fmt: skip
    locust.FastHttpUser = type("FastHttpUser", (), {})
    locust.constant = lambda seconds: ("constant", seconds)
    locust.task = lambda f: f
    gevent: Any = types.ModuleType("gevent")

    def sleep(seconds: float) -> None:
        total.num_requests += 100
        total.num_failures += 1

    gevent.sleep = sleep
    gevent.spawn = lambda f, *args: f(*args)
    locust.listeners = listeners
    locust.environment = types.SimpleNamespace(
        stats=types.SimpleNamespace(total=total),
        runner=types.SimpleNamespace(quit=lambda: quit_calls.append(True)),
    )
    return locust, gevent


def test_under_locust_the_file_defines_the_user_and_measures_one_window(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Loaded by (a stand-in) Locust: a FastHttpUser subclass with the task and no wait; once
    spawning completes, WARM, then one RESULT for the window alone, then the run is stopped."""
    total, quit_calls = _Total(), []
    locust, gevent = _stand_in_locust(total, quit_calls)
    monkeypatch.setitem(sys.modules, "locust", locust)
    monkeypatch.setitem(sys.modules, "gevent", gevent)
    monkeypatch.setenv("LOADGEN_BENCH_WARMUP", "0.5")
    monkeypatch.setenv("LOADGEN_BENCH_DURATION", "2")

    loaded = runpy.run_path(str(peersbench.LOCUSTFILE), run_name="locustfile")

    user = loaded["SyncOperationUser"]
    assert issubclass(user, locust.FastHttpUser)
    assert user.wait_time == ("constant", 0)
    assert callable(user.sync_operation)
    total.num_requests, total.num_failures = 40, 2  # the warm-up's requests: not in the window
    [init] = locust.listeners["init"]
    [spawned] = locust.listeners["spawning_complete"]
    init(environment=locust.environment, runner=None)
    spawned(user_count=64)
    spawned(user_count=64)  # again after a rebalance: still one window
    out = capsys.readouterr().out.splitlines()
    assert out[0] == locustfile.WARM_LINE
    assert out[1].startswith(locustfile.RESULT_PREFIX)
    assert len(out) == 2
    row = orjson.loads(out[1][len(locustfile.RESULT_PREFIX) :])
    assert (row["requests"], row["failures"]) == (99, 1)  # one sleep inside the window
    assert quit_calls == [True]


def test_the_user_task_marks_an_unfitting_answer_as_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    total, quit_calls = _Total(), []
    locust, gevent = _stand_in_locust(total, quit_calls)
    monkeypatch.setitem(sys.modules, "locust", locust)
    monkeypatch.setitem(sys.modules, "gevent", gevent)
    user_class = runpy.run_path(str(peersbench.LOCUSTFILE), run_name="locustfile")[
        "SyncOperationUser"
    ]
    posts: list[tuple[str, bytes, str]] = []
    failures: list[str] = []

    class Answer:
        def __init__(self, content: bytes) -> None:
            self.status_code, self.content = 201, content

        def __enter__(self) -> Answer:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def failure(self, why: str) -> None:
            failures.append(why)

    class Client:
        def post(self, path: str, *, data: bytes, headers: Any, name: str,
                 catch_response: bool) -> Answer:  # fmt: skip
            posts.append((path, data, name))
            op_id = orjson.loads(data)["operation"]["request"]["id"]
            echoed = op_id if len(posts) == 1 else "someone-else"
            return Answer(orjson.dumps({"operation": {"response": {"id": echoed,
                                                                   "resultCode": "SUCCESSFUL"}}}))  # fmt: skip

    user = user_class()
    user.client = Client()
    user.sync_operation()
    user.sync_operation()
    assert [name for _, _, name in posts] == [locustfile.NAME] * 2
    assert len(failures) == 1
    assert failures[0].startswith("not a sync answer to ")


# -- the issue 17 figures table ------------------------------------------------------------


def test_figures_table_says_not_measured_for_every_absent_key() -> None:
    rows = figure_rows({})
    assert len(rows) == len(ISSUE_17)
    assert all(row["value"] is None and not row["met"] for row in rows)
    lines = figure_lines(rows)
    assert lines[0] == "       figure" + " " * 41 + "measured  target"
    assert all(line.startswith("  --   ") and "not measured" in line for line in lines[1:])
    assert lines[1] == ("  --   sender vs Locust FastHttpUser, per core    not measured  >= 3.5x")
    assert max(map(len, lines)) <= 80


def test_figures_table_reads_present_keys_and_judges_each_comparison() -> None:
    out = {
        "peers": {"ratio_vs_locust": 2.52, "locust": {"skipped": "x"}},
        "shards": {"efficiency_core_alone": 0.93, "efficiency": None},
        "devices": {"pairs": [{"ops_per_core_s": 46_000.4}]},
        "pacing": {"at_35k": {"cpu_percent": 95.0, "lateness_p99_ms": "n/a"},
                 "overload": {"rss_bounded": True}},
        "tls": {"fleet_ratio": 0.7},
    }  # fmt: skip
    rows = {row["key"]: row for row in figure_rows(out)}
    assert (rows["peers.ratio_vs_locust"]["value"], rows["peers.ratio_vs_locust"]["met"]) == (
        2.52,
        False,
    )
    assert rows["shards.efficiency_core_alone"]["met"] is True
    assert rows["shards.efficiency"]["value"] is None  # measured as None: not measured
    assert rows["devices.pairs.0.ops_per_core_s"]["met"] is True
    assert rows["pacing.at_35k.cpu_percent"]["met"] is False  # 95 % is not < 90 %
    assert rows["pacing.at_35k.lateness_p99_ms"]["value"] is None  # not a number
    assert rows["pacing.overload.rss_bounded"]["met"] is True
    assert rows["tls.fleet_ratio"]["met"] is True  # >= is inclusive
    lines = figure_lines(list(rows.values()))
    assert lines[1] == "  MISS sender vs Locust FastHttpUser, per core           2.52x  >= 3.5x"
    assert (
        "  OK   fleet ops per core-s ([3], not to fall)    46,000 ops/s  >= 45,000 ops/s" in lines
    )
    assert "  OK   2x the ceiling, 30 s: RSS bounded                   yes  == yes" in lines
    assert "  MISS open model at 35k ops/s: CPU                        95%  < 90%" in lines
    assert max(map(len, lines)) <= 80


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("a", "b", 1, "c"), 3),
        (("a", "b", -1, "c"), 3),
        (("a", "b", 2, "c"), None),  # index out of range
        (("a", "x"), None),
        (("a", "b", "c"), None),  # a key into a list
        (("a", 0), None),  # an index into a dict
        (("a", "b", 0, "c", "d"), None),  # through a number
    ],
)
def test_lookup_walks_keys_and_indexes_or_gives_none(
    path: tuple[str | int, ...], expected: object
) -> None:
    assert lookup({"a": {"b": [{"c": 1}, {"c": 3}]}}, path) == expected


def test_the_sync_climb_reads_its_tight_ceiling_beside_the_loose_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """[10]'s ladder: the ceiling allows p99 up to 100 ms; the issue's row reads the last rung
    before the first whose complete p99 is over 10 ms (a lucky rung above a miss does not count)."""
    from loadgen.bench import asyncbench

    p99s = {8000.0: 3.0, 10000.0: 9.9, 12500.0: 14.0, 15625.0: 8.0, 19531.25: 150.0}

    def rung(flow: str, rate: float, *, duration: float, final: float) -> dict[str, object]:
        p99 = p99s[rate]
        return {"rate": rate, "complete_p99_ms": p99, "clean": p99 <= 100.0}

    monkeypatch.setattr(asyncbench, "run_rung", rung)
    climb = asyncbench._climb("sync", 8000.0, 8, 1.0, 1.0)
    assert [row["rate"] for row in climb["rungs"]] == list(p99s)  # stops at the first miss
    assert climb["ceiling_ops_per_s"] == 15625.0
    assert climb["ceiling_10ms_ops_per_s"] == 10000.0  # 12,500 missed 10 ms: 15,625 not counted
    p99s[12500.0] = 10.0
    climb = asyncbench._climb("sync", 8000.0, 8, 1.0, 1.0)
    assert climb["ceiling_10ms_ops_per_s"] == 15625.0
