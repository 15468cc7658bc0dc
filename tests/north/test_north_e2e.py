"""Issue 10's judging criteria, end to end on loopback (real clock, marked ``slow``: the three
sides talk over real sockets, which the mock clock cannot drive):

- with a device delay of D ms, ``device_done - dispatch`` (the per-job device-work hop) is D
  within 2 ms at p50, measured;
- the summary has ``latency_ms.job_accepted``, ``dispatch``, ``device_done``, ``closed`` and the
  jobs add up: created == closed + timed_out + errors;
- the north side works against a north API that answers the job id only in ``Location``;
- an unreachable north URL is one clear line and exit 2.
"""

from __future__ import annotations

import socket
from pathlib import Path

import orjson
import pytest
import trio

from loadgen.cli import main
from loadgen.http.client import Origin, open_pool
from loadgen.http.parser import Request
from loadgen.http.server import HTTPServer, Reply
from loadgen.metrics.registry import Metrics
from loadgen.north.config import NorthConfig
from loadgen.north.jobs import JobTracker
from loadgen.north.runner import run_north
from loadgen.platform.config import Arrival, Stage
from loadgen.protocol.north import OperationRecord, decode_job_request, encode_operation_record

pytestmark = pytest.mark.slow

DELAY_MS = 20.0


def _summary(root: Path) -> dict[str, object]:
    [run] = [p for p in root.glob("*/*") if p.is_dir()]
    summary: dict[str, object] = orjson.loads((run / "summary.json").read_bytes())
    return summary


def test_device_delay_shows_as_the_device_work_hop_and_counts_add_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([
        "north", "--rate", "100", "--duration", "2s", "--devices", "100",
        "--device-delay", f"{DELAY_MS / 1000}", "--seed", "3", "--results", str(tmp_path), "-q",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr()
    summary = _summary(tmp_path)
    latency = summary["latency_ms"]
    assert isinstance(latency, dict)
    for phase in ("job_accepted", "dispatch", "device_done", "closed"):
        assert latency[phase]["count"] == 200, phase
    hops = summary["hops_ms"]
    assert isinstance(hops, dict)
    assert hops["device_work"]["p50"] == pytest.approx(DELAY_MS, abs=2.0)
    # the same gap read off the two phases' medians
    gap = latency["device_done"]["p50"] - latency["dispatch"]["p50"]
    assert gap == pytest.approx(DELAY_MS, abs=2.0)
    jobs = summary["jobs"]
    assert isinstance(jobs, dict)
    assert jobs["created"] == 200
    assert jobs["created"] == jobs["closed"] + jobs["timed_out"] + jobs["errors"]
    assert summary["extra"]["north"]["correlation"] == "device"  # type: ignore[index]
    # the per-hop plot and table are in the report
    [run] = [p for p in tmp_path.glob("*/*") if p.is_dir()]
    html = (run / "report.html").read_text(encoding="utf-8")
    plot = html.index("Per hop: where a job")
    assert html[plot:].split("<h3>", 1)[0].count("data:image/png;base64,") == 1
    assert "<h3>Per hop (ms)</h3>" in html


def test_unreachable_north_url_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main([
        "north", "--url", f"http://127.0.0.1:{port}", "--platform-url", "http://127.0.0.1:9",
        "--rate", "10", "--duration", "1s", "--results", str(tmp_path), "-q",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert f"cannot reach the north API at http://127.0.0.1:{port}" in err
    assert "Traceback" not in err


async def test_job_id_only_in_location() -> None:
    """A stub north API: 201 with the job id only in ``Location`` (empty body), and it calls the
    job's callback with a record that names the job by that id alone (its operation id was
    never seen by a device here): every job is closed, so the id was read from the header."""
    metrics = Metrics()
    tracker = JobTracker(metrics, [f"d{i}" for i in range(20)], dispatch_timeout=5.0)
    created: list[str] = []

    async with trio.open_nursery() as nursery, open_pool() as pool:

        async def stub(request: Request) -> Reply:
            job = decode_job_request(request.body)
            job_id = f"job-{len(created)}"
            created.append(job_id)
            record = OperationRecord(
                job_id=job_id, entity_id=job.entities[0], operation_id=f"op-{job_id}",
                name=job.name, status="FINISHED", result="SUCCESSFUL",
            )  # fmt: skip
            assert job.callback is not None
            origin, path = Origin.parse(job.callback)

            async def call_back() -> None:
                await trio.sleep(0.005)  # after the N1 answer has gone out
                await pool.request(origin, path.encode(), encode_operation_record(record))

            nursery.start_soon(call_back)
            return Reply(
                201, b"", headers=((b"Location", f"/north/v80/operation/jobs/{job_id}".encode()),)
            )

        server = HTTPServer(stub)
        [(host, port), *_] = await nursery.start(server.serve, "127.0.0.1", 0)
        config = NorthConfig(
            url=f"http://{host}:{port}",
            arrival=Arrival(stages=(Stage(duration=0.5, rate=20.0),)),
            seed=1,
        )
        result = await run_north(config, metrics, tracker)
        nursery.cancel_scope.cancel()

    counters = result.counters
    assert counters["jobs.created"] == len(created) == 10
    assert counters["jobs.accepted"] == 10
    assert counters["jobs.closed"] == 10
    assert counters["north.callback.ok"] == 10
    assert metrics.phase("closed").intended.count == 10
    assert counters["jobs.created"] == (
        counters["jobs.closed"] + counters.get("jobs.timed_out", 0) + counters.get("jobs.errors", 0)
    )
