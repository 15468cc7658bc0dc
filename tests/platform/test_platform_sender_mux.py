"""The sender over its ``MuxClient`` (plain HTTP, the platform's common path) on real loopback:
answers go to their own operations, a dropped connection ends or retries exactly the operation
it carried, operations queue for ``max_connections`` lines and are refused at ``max_queued``.

Real sockets because the point is the mux's lines (a tiny trio device on 127.0.0.1, port 0);
every wait is bounded by ``DEADLINE``. Times are read from the operations themselves (what the
in-flight table recorded), never asserted against a speed.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Final

import orjson
import pytest
import trio
from platform_fakes import response_body

from loadgen.http.client import ClientLimits, ConnectionPool, Origin, open_pool
from loadgen.http.mux import AVAILABLE
from loadgen.metrics.registry import Metrics
from loadgen.platform.config import PlatformConfig, Targets, Timeouts
from loadgen.platform.inflight import InflightTable, Operation, State
from loadgen.platform.mix import DeviceChooser, OperationMix
from loadgen.platform.sender import MAX_QUEUED, Answer, DeviceRoute, Lane, Sender
from loadgen.platform.south import PendingQueues

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AVAILABLE, reason="the mux needs epoll (Linux)"),
]

DEADLINE: Final = 10.0  # upper bound of any wait in these tests (real seconds)


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Poll a condition the sender's tasks and the kernel make true (bounded)."""
    with trio.fail_after(DEADLINE):
        while not predicate():  # noqa: ASYNC110 (counters have no event to wait on)
            await trio.sleep(0.002)
    assert predicate(), what


@dataclass
class Device:
    """A tiny device: reads each operation request and answers it with its sync final (the
    request's own id and name; the result code ``code_of(id)``). ``hold[i]``, when set, is an
    event connection ``i`` (in accept order) waits for before each answer; connections listed
    in ``drop`` close instead of answering their request number ``drop[i]`` (0 = the first)."""

    code_of: Callable[[str], str] = lambda op_id: "SUCCESSFUL"
    hold: dict[int, trio.Event] = field(default_factory=dict)
    drop: dict[int, int] = field(default_factory=dict)
    jitter: float = 0.0
    seen: list[tuple[int, str]] = field(default_factory=list)  # (connection, operation id)
    connections: int = 0

    async def __call__(self, stream: trio.SocketStream) -> None:
        index = self.connections
        self.connections += 1
        buffer = bytearray()
        count = 0
        while True:
            while (end := buffer.find(b"\r\n\r\n")) < 0 or len(buffer) < end + 4 + _length(
                buffer[:end]
            ):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                buffer += chunk
            size = _length(buffer[:end])
            request = orjson.loads(bytes(buffer[end + 4 : end + 4 + size]))["operation"]["request"]
            del buffer[: end + 4 + size]
            self.seen.append((index, request["id"]))
            if self.drop.get(index) == count:
                await stream.aclose()  # the connection dies with the request unanswered
                return
            count += 1
            if index in self.hold:
                await self.hold[index].wait()
            if self.jitter:
                await trio.sleep(random.random() * self.jitter)
            body = response_body(request["id"], request["name"], self.code_of(request["id"]))
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )


def _length(head: bytes | bytearray) -> int:
    for line in bytes(head).lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


async def no_transport(origin: Origin, target: bytes, body: bytes, /, *, deadline: float) -> Answer:
    raise AssertionError("a plain-HTTP lane goes through the mux, never the transport")


@dataclass
class Rig:
    sender: Sender
    table: InflightTable
    metrics: Metrics
    pool: ConnectionPool
    lane: Lane
    ended: list[Operation]

    @property
    def counters(self) -> dict[str, int]:
        return self.metrics.counters

    def issue(self, count: int) -> list[bool]:
        now = trio.current_time()
        return [self.sender.issue(now, now) for _ in range(count)]

    def accounted(self) -> None:
        """Every operation issued ended exactly once; every one sent was written once."""
        c = self.counters
        assert not self.table.live
        assert c["ops.issued"] == c["ops.completed"] + c["ops.timed_out"] + c["ops.errors"]
        assert c["ops.sent"] == c["ops.issued"] - c.get("ops.timed_out_queued", 0)
        assert len({op.id for op in self.ended}) == len(self.ended) == c["ops.issued"]


@asynccontextmanager
async def rig(
    serve: Callable[[trio.SocketStream], Awaitable[None]],
    *,
    max_connections: int,
    devices: int = 1,
    max_queued: int = MAX_QUEUED,
    timeouts: Timeouts | None = None,
    muxed: bool = True,
) -> AsyncIterator[Rig]:
    """The sender over the pool; with ``muxed=False``, over the pool's held lines in worker
    tasks, as without epoll."""
    async with trio.open_nursery() as servers:
        [listener] = await servers.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        host, port = listener.socket.getsockname()[:2]
        origin = Origin("http", host, port)
        config = PlatformConfig(targets=Targets(base_url=f"http://{host}:{port}", count=devices))
        metrics = Metrics()
        ended: list[Operation] = []
        table = InflightTable(metrics, on_end=ended.append)
        lane = Lane(origin, max_connections)
        routes = [
            DeviceRoute(f"dev-{i}", lane, f"/devices/dev-{i}/operations".encode(), False)
            for i in range(devices)
        ]
        limits = ClientLimits(max_connections=max_connections, read_timeout=DEADLINE)
        async with open_pool(limits=limits) as pool, trio.open_nursery() as nursery:
            sender = Sender(
                table=table, metrics=metrics, routes=routes,
                mix=OperationMix(config.mix, seed=1, timestamp_ms=0),
                timeouts=[timeouts or config.timeouts_of(entry) for entry in config.mix],
                chooser=DeviceChooser(devices, config.device_choice, seed=1),
                transport=no_transport if muxed else pool.request,
                lines=None if muxed else pool.hold, pending=PendingQueues(), nursery=nursery,
                t0=trio.current_time(), wall0_ms=0, max_queued=max_queued,
                mux_pool=pool if muxed else None,
            )  # fmt: skip
            if muxed:
                assert sender.client is not None
                assert lane.muxed is not None  # the lane is the client's
                await nursery.start(sender.client.run)
            else:
                assert sender.client is None
            try:
                yield Rig(sender, table, metrics, pool, lane, ended)
            finally:
                nursery.cancel_scope.cancel()
        servers.cancel_scope.cancel()


async def test_each_answer_is_judged_against_its_own_operation() -> None:
    """Three devices over four lines, answers delayed at random so they come back out of order:
    each operation ends with the result code the device chose for its id, none is misfit."""
    codes = ("SUCCESSFUL", "ERROR_PROCESSING", "NOT_SUPPORTED")
    choice = random.Random(7)
    chosen: dict[str, str] = {}

    def code_of(op_id: str) -> str:
        return chosen.setdefault(op_id, choice.choice(codes))

    device = Device(code_of=code_of, jitter=0.01)
    async with rig(device, max_connections=4, devices=3) as r:
        assert all(r.issue(40))
        await wait_for(lambda: r.counters["ops.completed"] == 40, "every answer")
    assert {op.id: op.result for op in r.ended} == chosen
    assert all(op.state is State.COMPLETED for op in r.ended)
    assert not [name for name in r.counters if name.startswith("device.wrong")]
    assert r.counters["ops.sent"] == r.counters["ops.acked"] == 40
    assert device.connections == 4
    r.accounted()


async def test_a_new_connection_dropped_mid_flight_fails_its_operation_once() -> None:
    """Four operations on two lines: the first connection dies with its request unanswered.
    That one operation (and only it) ends as an error, once; the lane opens a line in its place
    for the queued operations; the other line's answer still counts."""
    release = trio.Event()
    device = Device(hold={1: release}, drop={0: 0})
    async with rig(device, max_connections=2) as r:
        assert all(r.issue(4))
        await wait_for(lambda: r.counters["ops.errors"] == 1, "the dropped one failed")
        await wait_for(lambda: r.counters["ops.completed"] == 2, "the queued two, on a new line")
        release.set()
        await wait_for(lambda: r.counters["ops.completed"] == 3, "the held one")
    [(_, dropped)] = [(conn, op_id) for conn, op_id in device.seen if conn == 0]
    [failed] = [op for op in r.ended if op.state is State.ERROR]
    assert failed.id == dropped
    assert r.counters["transport.closed"] == 1
    assert r.counters["ops.sent"] == 4
    assert device.connections == 3
    assert [op_id for _, op_id in device.seen].count(dropped) == 1  # never written again
    r.accounted()


async def test_a_reused_connection_closed_as_written_is_retried_once_on_a_new_one() -> None:
    """The keep-alive race: the device closes its connection as the second operation arrives
    on it. That operation is written once more, on a new connection (as the pool does), and
    completes: sent once, no error, one stale retry."""
    device = Device(drop={0: 1})
    async with rig(device, max_connections=1) as r:
        assert all(r.issue(1))
        await wait_for(lambda: r.counters["ops.completed"] == 1, "the first")
        assert all(r.issue(1))
        await wait_for(lambda: r.counters["ops.completed"] == 2, "the second, retried")
        assert all(r.issue(1))  # the lane goes on (a line is opened again)
        await wait_for(lambda: r.counters["ops.completed"] == 3, "the third")
    second = r.ended[1].id
    assert [conn for conn, op_id in device.seen if op_id == second] == [0, 1]
    assert r.pool.stats.stale_retries == 1
    assert r.counters["ops.sent"] == 3
    assert r.counters.get("ops.errors", 0) == 0
    r.accounted()


async def test_operations_queue_for_max_connections_lines_timed_from_their_intended_time() -> None:
    """Six operations, two lines held busy: two are written, four wait (issued, not sent).
    Released, the two lines carry all six; a queued one's latency runs from its intended time
    and includes the wait, its service time starts when it was written."""
    releases = {0: trio.Event(), 1: trio.Event()}
    device = Device(hold=releases)
    hold = 0.2
    async with rig(device, max_connections=2) as r:
        assert all(r.issue(6))
        await wait_for(lambda: r.counters["ops.sent"] == 2, "two written")
        assert r.table.queued == 4
        assert len(r.lane.backlog) == 4
        await trio.sleep(hold)
        assert r.counters["ops.sent"] == 2  # no third line
        for event in releases.values():
            event.set()
        await wait_for(lambda: r.counters["ops.completed"] == 6, "all six")
    assert device.connections == 2
    queued = [op for op in r.ended if op.t_sent is not None and op.t_sent - op.t_intended >= hold]
    assert len(queued) == 4  # written only once a line was free, at least ``hold`` late
    for op in r.ended:  # answered (sync: acked and completed at once) after it was written
        assert op.t_ack is not None
        assert op.t_sent is not None
        assert op.t_ack >= op.t_sent
    complete = r.metrics.phase("complete")
    assert complete.intended.merged().get_max_value() >= hold * 1e6
    assert complete.service.merged().get_max_value() >= hold * 1e6  # the two held ones
    r.accounted()


async def test_past_max_queued_operations_are_refused_and_counted_one_by_one_and_in_bulk() -> None:
    """One line held busy, a queue of three: of ten issued, one is written, three wait and six
    are refused; the open model's pacer then refuses twenty due at once in bulk. Every one is
    counted (``ops.rejected``, ``ops.rejected.queue_full``), the four issued complete."""
    release = trio.Event()
    device = Device(hold={0: release})
    async with rig(device, max_connections=1, max_queued=3) as r:
        assert r.issue(1) == [True]
        await wait_for(lambda: r.counters["ops.sent"] == 1, "one written")
        assert r.issue(9) == [True] * 3 + [False] * 6
        assert len(r.lane.backlog) == 3
        assert r.counters["ops.rejected"] == r.counters["ops.rejected.queue_full"] == 6
        await r.sender.run_open([0.0] * 20, trio.current_time())
        assert r.counters["ops.rejected"] == r.counters["ops.rejected.queue_full"] == 26
        assert r.counters["ops.issued"] == 4
        release.set()
        await wait_for(lambda: r.counters["ops.completed"] == 4, "the four issued")
    r.accounted()


@pytest.mark.parametrize("muxed", [True, False], ids=["mux", "workers"])
async def test_an_answer_to_an_earlier_attempt_is_superseded_not_taken(muxed: bool) -> None:
    """An async final asks for a retry while the first attempt's exchange is still open; the
    re-sent attempt goes out on a second line. The first attempt's answer, arriving next, is
    counted as abandoned; the operation completes with the second's answer. The same through
    the mux and through worker tasks (one judgement, ``Sender._answered``)."""
    first, second = trio.Event(), trio.Event()
    device = Device(hold={0: first, 1: second})
    timeouts = Timeouts(retries=1, retries_delay=0.01, retry_result_list=("ERROR_PROCESSING",))
    async with rig(device, max_connections=2, timeouts=timeouts, muxed=muxed) as r:
        assert all(r.issue(1))
        [op] = r.table.live.values()
        await wait_for(lambda: len(device.seen) == 1, "the first attempt")
        assert r.table.message(op.id, trio.current_time(), "ERROR_PROCESSING", []) == "ok"
        await trio.sleep(0.02)
        r.sender.resend(r.table.expire(trio.current_time()))
        await wait_for(lambda: len(device.seen) == 2, "the second attempt, on a new line")
        first.set()
        await wait_for(lambda: r.counters["ops.abandoned_exchanges"] == 1, "the first answer")
        assert op.state is State.SENT  # not taken: the live attempt is the second
        released = trio.current_time()
        second.set()
        await wait_for(lambda: r.counters["ops.completed"] == 1, "the second answer")
    assert [conn for conn, _ in device.seen] == [0, 1]
    assert op.result == "SUCCESSFUL"
    assert op.t_ack is not None
    assert op.t_ack >= released
    assert r.counters["ops.resent"] == r.counters["ops.retries"] == 1
    assert r.counters["ops.sent"] == 1
    r.accounted()


async def test_a_queued_operation_past_its_deadline_times_out_unsent_not_as_an_error() -> None:
    """One line, held past the deadline of the operation queued behind it: when the line frees,
    that operation is not written and not failed by the client; the in-flight table's timer
    ends it at its deadline, never sent (``ops.timed_out_queued``), with no abandoned exchange.
    """
    release = trio.Event()
    device = Device(hold={0: release})
    async with rig(device, max_connections=1) as r:
        now = trio.current_time()
        ops = [
            Operation("long-0", 0, "REBOOT", now, Timeouts(ack_timeout=DEADLINE), _body("long-0")),
            Operation("short-1", 0, "REBOOT", now, Timeouts(ack_timeout=0.05), _body("short-1")),
        ]
        for op in ops:
            r.table.open(op)
            r.sender.dispatch(op, now)
        await wait_for(lambda: len(device.seen) == 1, "the long one written")
        await trio.sleep(0.1)  # the short one's deadline passes while it waits (no timer yet)
        release.set()
        await wait_for(lambda: r.counters["ops.completed"] == 1, "the long one answered")
        assert r.lane.muxed is not None
        await wait_for(lambda: len(r.lane.muxed.idle) == 1, "the freed line kept idle")
        assert not r.lane.muxed.queue
        r.table.expire(trio.current_time())  # the timer's turn
    short = ops[1]
    assert short.state is State.TIMED_OUT
    assert short.t_sent is None
    assert [op_id for _, op_id in device.seen] == ["long-0"]
    c = r.counters
    assert c["ops.timed_out"] == c["ops.timed_out_queued"] == 1
    assert c.get("ops.abandoned_exchanges", 0) == 0
    assert c.get("ops.errors", 0) == 0
    assert not [name for name in c if name.startswith("transport.")]
    assert c["ops.sent"] == 1


def _body(op_id: str) -> bytes:
    return orjson.dumps({"operation": {"request": {"id": op_id, "name": "REBOOT"}}})


async def test_a_retry_asked_for_an_operation_still_queued_changes_nothing() -> None:
    """An async final asks for a retry of an operation still waiting for a line (a device that
    answered what it never got): it answers nothing sent, so it is counted (``south.unsent``)
    and changes nothing. The operation is written once when the line frees, completes with
    that answer, and every count adds up (before, it started a retry, and the operation was
    then never counted as sent)."""
    release = trio.Event()
    device = Device(hold={0: release})
    timeouts = Timeouts(retries=1, retries_delay=0.01, retry_result_list=("ERROR_PROCESSING",))
    async with rig(device, max_connections=1, timeouts=timeouts) as r:
        assert all(r.issue(1))
        await wait_for(lambda: len(device.seen) == 1, "the first written")
        assert all(r.issue(1))
        queued = next(op for op in r.table.live.values() if op.t_sent is None)
        assert r.table.message(queued.id, trio.current_time(), "ERROR_PROCESSING", []) == "unsent"
        await trio.sleep(0.02)
        assert r.table.expire(trio.current_time()) == []  # no re-send: nothing was asked
        release.set()
        await wait_for(lambda: r.counters["ops.completed"] == 2, "both answered")
    assert [op_id for _, op_id in device.seen].count(queued.id) == 1
    assert queued.result == "SUCCESSFUL"
    assert r.counters["south.unsent"] == 1
    assert r.counters.get("ops.retries", 0) == 0
    assert r.counters.get("ops.abandoned_exchanges", 0) == 0
    r.accounted()
