"""The start barrier (``loadgen.scale.barrier``): its rules as a pure function, the file shell
under the mock clock (exact virtual instants), late and stalled shards, and the runner awaiting
it only once the sides' ports are bound."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import orjson
import pytest
import trio

from loadgen.campaign.runner import run_campaign
from loadgen.campaign.scenario import load_scenario
from loadgen.errors import ConfigError
from loadgen.scale.barrier import Arrival, FileBarrier, decide, read_arrivals

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.toml"


def _arrivals(*ready_at: float, count: int | None = None) -> list[Arrival]:
    total = len(ready_at) if count is None else count
    return [Arrival(index=i, count=total, ready_at=t) for i, t in enumerate(ready_at)]


# --- the rules ------------------------------------------------------------------------------


def test_all_ready_go_at_the_last_arrival_plus_the_lead() -> None:
    verdict = decide(_arrivals(100.0, 103.0, 101.5), count=3, now=103.2, timeout=60, lead=1.0)
    assert (verdict.state, verdict.at, verdict.ready) == ("go", 104.0, 3)


def test_the_verdict_does_not_depend_on_who_reads_or_when() -> None:
    """Every shard computes the same instant from the same files, at any time it reads them."""
    files = _arrivals(10.0, 12.5, 11.0, 12.0)
    verdicts = {
        decide(files, count=4, now=now, timeout=30, lead=2.0).at for now in (12.5, 13.0, 99.0)
    }
    assert verdicts == {14.5}


def test_missing_shards_wait_then_fail_past_timeout_plus_lead() -> None:
    files = _arrivals(0.0, 4.0, count=4)
    assert decide(files, count=4, now=11.0, timeout=10, lead=1.0).state == "wait"
    verdict = decide(files, count=4, now=11.01, timeout=10, lead=1.0)
    assert verdict.state == "failed"
    assert verdict.reason == "2 of 4 shards ready after 10 s; missing shard 2, 3"


def test_a_shard_joining_after_the_timeout_fails_everyone() -> None:
    """Even the late one itself: it sees all N files but the last came too long after the first."""
    verdict = decide(_arrivals(0.0, 2.0, 10.5), count=3, now=10.6, timeout=10, lead=1.0)
    assert verdict.state == "failed"
    assert verdict.reason == "shard 2/3 joined 10.5 s after the first; the barrier waits 10 s"


def test_a_shard_that_failed_fails_everyone_at_once() -> None:
    files = [*_arrivals(0.0, count=3), Arrival(index=2, count=3, ready_at=0.0, failed="port")]
    verdict = decide(files, count=3, now=0.1, timeout=60, lead=1.0)
    assert (verdict.state, verdict.reason) == ("failed", "shard 2/3 could not get ready: port")


def test_files_of_another_shard_count_fail() -> None:
    files = [*_arrivals(0.0, 1.0), Arrival(index=0, count=3, ready_at=0.5)]
    verdict = decide(files, count=2, now=1.0, timeout=10, lead=1.0)
    assert verdict.state == "failed"
    assert "shards of 3 and of 2" in verdict.reason


def test_nobody_yet_waits() -> None:
    assert decide([], count=2, now=1e9, timeout=1, lead=1).state == "wait"


def test_unreadable_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "ready-0.json").write_bytes(b'{"index": 0, "count": 2, "ready_at": 5.0}')
    (tmp_path / "ready-1.json").write_bytes(b"{half")
    (tmp_path / "ready-2.json").write_bytes(b'{"index": "x"}')
    assert read_arrivals(tmp_path) == [Arrival(index=0, count=2, ready_at=5.0)]
    assert read_arrivals(tmp_path / "missing") == []


# --- the file shell under the mock clock ----------------------------------------------------


def _barrier(folder: Path, index: int, count: int, **options: float) -> FileBarrier:
    return FileBarrier(folder, index=index, count=count, clock=trio.current_time, **options)


async def test_shards_joining_apart_start_at_one_instant(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Joining at 0, 1.5 and 3 s (virtual), all three return at 3 + lead exactly."""
    t0 = trio.current_time()
    returned: dict[int, tuple[float, float]] = {}

    async def shard(index: int, delay: float) -> None:
        await trio.sleep(delay)
        at = await _barrier(tmp_path, index, 3, lead=0.5, poll=0.1, timeout=10).wait()
        returned[index] = (at - t0, trio.current_time() - t0)

    async with trio.open_nursery() as nursery:
        for index, delay in enumerate((0.0, 1.5, 3.0)):
            nursery.start_soon(shard, index, delay)
    assert returned == {i: (3.5, 3.5) for i in range(3)}


async def test_a_shard_that_sees_the_files_late_starts_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A volume slower than the lead (here: a poll of 5 s for a lead of 1 s): the late reader
    is told the common instant, starts when it sees it (not 5 s of sleep more), and says so."""
    t0 = trio.current_time()
    notices: list[str] = []
    slow = FileBarrier(
        tmp_path, index=0, count=2, clock=trio.current_time, lead=1.0, poll=5.0,
        notice=notices.append,
    )  # fmt: skip
    fast = _barrier(tmp_path, 1, 2, lead=1.0, poll=0.1)
    results: dict[str, tuple[float, float]] = {}

    async def run(name: str, barrier: FileBarrier, delay: float) -> None:
        await trio.sleep(delay)
        at = await barrier.wait()
        results[name] = (at - t0, trio.current_time() - t0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "slow", slow, 0.0)
        nursery.start_soon(run, "fast", fast, 0.2)
    assert results == {"fast": (1.2, 1.2), "slow": (1.2, 5.0)}
    assert notices[-1] == "barrier: released 3.800 s late; a longer --barrier-lead avoids it"


async def test_a_missing_shard_fails_every_waiting_shard_at_the_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    t0 = trio.current_time()
    failures: dict[int, tuple[float, str]] = {}

    async def shard(index: int) -> None:
        try:
            await _barrier(tmp_path, index, 3, timeout=10, lead=1.0, poll=0.5).wait()
        except ConfigError as exc:
            failures[index] = (trio.current_time() - t0, str(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(shard, 0)
        nursery.start_soon(shard, 1)
    message = f"--barrier: 2 of 3 shards ready after 10 s; missing shard 2 (in {tmp_path})"
    assert failures == {0: (11.5, message), 1: (11.5, message)}  # first poll past 0 + 10 + 1


async def test_a_shard_that_gives_up_releases_the_others_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Shard 1 fails to bind its port at 1.8 s: shard 0 fails at its next poll (2 s), not at
    61 s (between two polls, so that the order of wake-ups at one instant does not matter)."""
    t0 = trio.current_time()
    failures: list[tuple[float, str]] = []

    async def waiting() -> None:
        with pytest.raises(ConfigError) as caught:
            await _barrier(tmp_path, 0, 2, timeout=60, lead=1.0, poll=0.5).wait()
        failures.append((trio.current_time() - t0, str(caught.value)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiting)
        await trio.sleep(1.8)
        broken = _barrier(tmp_path, 1, 2)
        broken.abandon("devices.http_port: cannot listen on 127.0.0.1:9\nmore")
    assert failures == [
        (
            2.0,
            "--barrier: shard 1/2 could not get ready: devices.http_port: cannot listen on "
            f"127.0.0.1:9 (in {tmp_path})",
        )
    ]


def test_a_released_shard_does_not_abandon(tmp_path: Path) -> None:
    """A crash during the load must not be read as a failed start by anyone still reading."""
    barrier = FileBarrier(tmp_path, index=0, count=1)
    barrier.released = True
    barrier.abandon("crashed mid-run")
    assert list(tmp_path.iterdir()) == []


def test_a_second_process_of_the_same_index_is_refused(tmp_path: Path) -> None:
    FileBarrier(tmp_path, index=0, count=2).announce()
    with pytest.raises(ConfigError, match=r"--barrier: shard 0/2 has already joined"):
        FileBarrier(tmp_path, index=0, count=2).announce()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ready-0.json"]  # no temporary left


# --- the runner awaits it after the sides are up --------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.slow
async def test_the_runner_waits_at_the_barrier_with_its_ports_bound(tmp_path: Path) -> None:
    """Real time (sockets): the fleet's fixed port accepts a connection while the runner waits,
    and the results' clock starts when the wait ends (run.json's started_at), ~2 s."""
    port = _free_port()
    loaded = load_scenario(
        SMOKE,
        [
            f"devices.http_port={port}",
            "devices.count=5",
            'platform.arrival.stages=[{duration="0.5s", rate=10}]',
            "output.html=false",
            'output.progress="quiet"',
        ],
    )

    async def wait_to_start() -> float:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass  # bound and listening before the barrier
        assert not (tmp_path / "run" / "run.json").exists()  # the results' clock not started
        await trio.sleep(0.3)
        return time.time()

    outcome = await run_campaign(loaded, directory=tmp_path / "run", wait_to_start=wait_to_start)
    run = orjson.loads((tmp_path / "run" / "run.json").read_bytes())
    assert run["start_at"] <= run["started_at"] < run["start_at"] + 0.05
    assert outcome.summary["operations"]["sent"] == 5
