"""Service under descriptor pressure: when accept fails for lack of file descriptors (EMFILE), the
server sheds its oldest idle keep-alive connections so that new clients are served.

The descriptor limit is lowered inside the test process (``resource.setrlimit``, restored after)
and the table filled so that exactly ROOM more descriptors can be opened. Every client socket is
created before that, so only the server's accepted sockets compete for the room. Real loopback
sockets and real time (the limit is the kernel's), every wait bounded.
"""

from __future__ import annotations

import logging
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import pytest
import trio
from conftest import StartServer, split_responses, wait_for

from loadgen.device.config import FleetConfig
from loadgen.device.runner import run_fleet
from loadgen.http.client import Origin
from loadgen.http.parser import Request
from loadgen.http.server import Reply
from loadgen.http.stream import SHED_BATCH, CapacityLog
from loadgen.metrics import Metrics

pytestmark = pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="needs /dev/fd")

ROOM: Final = 12  # descriptor numbers left free below the lowered limit
HOLDERS: Final = ROOM + 10  # idle keep-alive clients: more than the room
NEWCOMERS: Final = 5
REQUEST: Final = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
ANSWER_WAIT: Final = 2.0  # real seconds for one answer (served at once when it is served at all)


@contextmanager
def descriptor_room(room: int) -> Iterator[None]:
    """Lower the soft RLIMIT_NOFILE and fill the descriptor table so that exactly ``room``
    descriptors can still be opened; restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spare = os.open(os.devnull, os.O_RDONLY)
    fillers: list[int] = []
    in_use = len(os.listdir("/dev/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + room + 16, hard))
    try:
        while True:
            try:
                fillers.append(os.dup(spare))
            except OSError:
                break
        for _ in range(room):
            os.close(fillers.pop())
        yield
    finally:
        for fd in [*fillers, spare]:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _ask(sock: trio.socket.SocketType, request: bytes = REQUEST) -> int:
    """One request on ``sock``: the status of its answer, 0 when none came within ANSWER_WAIT."""
    await sock.send(request)
    received = b""
    with trio.move_on_after(ANSWER_WAIT):
        while True:
            chunk = await sock.recv(65536)
            if not chunk:
                return 0
            received += chunk
            head, sep, body = received.partition(b"\r\n\r\n")
            length = [v for k, _, v in _header_lines(head) if k == b"content-length"]
            if sep and len(body) >= int(length[0] if length else 0):
                [(status, _, _)] = split_responses(received)
                return status
    return 0


def _header_lines(head: bytes) -> list[tuple[bytes, bytes, bytes]]:
    return [
        (name.strip().lower(), sep, value.strip())
        for name, sep, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    ]


def _closed_by_server(sock: trio.socket.SocketType) -> bool:
    try:
        return sock._sock.recv(1) == b""  # non-blocking: EOF when the server closed it
    except BlockingIOError:
        return False


async def _connect(sock: trio.socket.SocketType, origin: Origin) -> None:
    with trio.fail_after(ANSWER_WAIT):
        await sock.connect((origin.host, origin.port))


async def test_new_clients_are_served_by_shedding_the_oldest_idle(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Fails before the fix: the 13th client gets no answer while the 12 idle ones stay."""
    full = (-1, -1)
    srv, origin = await start_server()
    holders = [trio.socket.socket() for _ in range(HOLDERS)]
    newcomers = [trio.socket.socket() for _ in range(NEWCOMERS)]
    held: list[int] = []
    new: list[int] = [0] * NEWCOMERS
    caplog.set_level(logging.WARNING, logger="loadgen.http.stream")
    try:
        with descriptor_room(ROOM):
            for i, sock in enumerate(holders):  # one at a time: their order is their age
                await _connect(sock, origin)
                held.append(await _ask(sock))
                if i == ROOM - 1:  # the table is full, and nobody waits: nothing to shed
                    full = (srv.stats.shed_idle, srv.stats.accept_failures)
            async with trio.open_nursery() as nursery:  # a burst of new clients

                async def newcomer(i: int) -> None:
                    await _connect(newcomers[i], origin)
                    new[i] = await _ask(newcomers[i])

                for i in range(NEWCOMERS):
                    nursery.start_soon(newcomer, i)
            closed = [i for i, sock in enumerate(holders) if _closed_by_server(sock)]
            kept = [i for i in range(HOLDERS) if i not in closed]
            again = [await _ask(holders[i]) for i in kept]  # the survivors still work
    finally:
        for sock in holders + newcomers:
            sock.close()
    assert held == [200] * HOLDERS
    assert full == (0, 0)
    assert new == [200] * NEWCOMERS
    # ROOM connections fit; each failed accept sheds a batch of the oldest idle ones.
    needed = HOLDERS + NEWCOMERS - ROOM
    shed = -(-needed // SHED_BATCH) * SHED_BATCH
    assert srv.stats.shed_idle == shed
    assert closed == list(range(shed))  # the oldest, and only they
    assert again == [200] * len(kept)
    assert srv.stats.accept_failures == shed // SHED_BATCH
    assert srv.stats.idle_closed == 0
    assert srv.stats.peer_resets == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "loadgen.http.stream"]
    assert len(lines) == 1, lines  # one line per CAPACITY_LOG_INTERVAL, not one per failure
    assert "Too many open files" in lines[0]
    assert f"shed {SHED_BATCH} idle" in lines[0]


async def test_with_nothing_idle_the_server_waits_and_serves_once_descriptors_free(
    start_server: StartServer,
) -> None:
    """Every connection busy: nothing to shed; accept is retried every ACCEPT_RETRY_DELAY and the
    newcomer is served once a busy connection has answered and its client has closed it."""
    release = trio.Event()

    async def busy(request: Request) -> Reply:
        if request.target == b"/busy":
            await release.wait()
        return Reply(200, request.body)

    srv, origin = await start_server(busy)
    workers = [trio.socket.socket() for _ in range(ROOM)]
    newcomer = trio.socket.socket()
    try:
        with descriptor_room(ROOM):
            for sock in workers:
                await _connect(sock, origin)
                await sock.send(
                    REQUEST.replace(b"/echo", b"/busy").replace(
                        b"Host: t", b"Host: t\r\nConnection: close"
                    )
                )
            await wait_for(lambda: srv.stats.requests_fast == ROOM, "all workers are busy")
            await _connect(newcomer, origin)
            await wait_for(lambda: srv.stats.accept_failures >= 2, "accept fails, retried")
            release.set()
            with trio.fail_after(ANSWER_WAIT):
                first = await workers[0].recv(65536)
                while await workers[0].recv(65536):
                    pass  # until the server's FIN (it lingers for our close)
            workers[0].close()
            answered = await _ask(newcomer)
    finally:
        for sock in [*workers, newcomer]:
            sock.close()
    assert first.startswith(b"HTTP/1.1 200 ")
    assert answered == 200
    assert srv.stats.shed_idle == 0


DEVICE_BODY: Final = (
    b'{"operation":{"request":{"id":"op-%d","timestamp":1,"name":"REBOOT_EQUIPMENT"}}}'
)


def _device_request(i: int) -> bytes:
    body = DEVICE_BODY % i
    return (
        b"POST /south/v80/devices/dev-000001/operation/request HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )


async def test_fleet_under_descriptor_pressure_serves_new_clients() -> None:
    """The issue's case at a small scale: a fleet whose descriptors are held by idle keep-alive
    clients still answers new ones, and says so in ``server.shed_idle`` and
    ``device.server.shed_idle``."""
    metrics = Metrics()
    holders = [trio.socket.socket() for _ in range(HOLDERS)]
    newcomers = [trio.socket.socket() for _ in range(NEWCOMERS)]
    async with trio.open_nursery() as nursery:
        info = await nursery.start(run_fleet, FleetConfig(count=4, http_port=0), metrics)
        origin = Origin("http", *info.http[0])
        try:
            with descriptor_room(ROOM):
                held = []
                for i, sock in enumerate(holders):
                    await _connect(sock, origin)
                    held.append(await _ask(sock, _device_request(i)))
                new = []
                for i, sock in enumerate(newcomers):
                    await _connect(sock, origin)
                    new.append(await _ask(sock, _device_request(100 + i)))
                statistics = info.handle.statistics()
        finally:
            for sock in holders + newcomers:
                sock.close()
        info.handle.shutdown()
    shed = -(-(HOLDERS + NEWCOMERS - ROOM) // SHED_BATCH) * SHED_BATCH
    assert (held, new) == ([201] * HOLDERS, [201] * NEWCOMERS)
    assert statistics["server.shed_idle"] == shed
    assert statistics["device.server.shed_idle"] == shed
    assert metrics.counters["device.server.accept_failures"] == shed // SHED_BATCH


def test_capacity_log_says_one_line_per_interval_with_counts() -> None:
    log = CapacityLog(interval=5.0)
    assert log.note(10.0, shed=8) == (1, 8)  # the first failure at once
    assert log.note(11.0, shed=8) is None
    assert log.note(14.9, shed=0) is None
    assert log.note(15.0, shed=8) == (3, 16)  # everything since the last line
    assert log.note(15.1, shed=0) is None
    assert log.note(40.0, shed=0) == (2, 0)
