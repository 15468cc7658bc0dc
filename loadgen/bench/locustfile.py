"""Locust's side of the peers benchmark: the sender's closed-model operation, done by Locust.

    LOADGEN_BENCH_WARMUP=1 LOADGEN_BENCH_DURATION=3 locust -f loadgen/bench/locustfile.py \\
        --headless -u 64 -r 640 --run-time 30s --host http://127.0.0.1:PORT --only-summary

Each of the ``-u`` users is a ``FastHttpUser`` (Locust's fastest client, one keep-alive
connection per user) in a closed loop with no wait: it renders the operation request the
virtual platform sends (``REBOOT_EQUIPMENT``, a fresh id and timestamp, devices
``dev-000000`` ... ``dev-000999`` in turn), POSTs it, and counts the answer as a failure unless
it is a 201 whose response JSON carries the same id and a result code, which is what the
platform checks before it completes an operation.

Once every user is running and ``LOADGEN_BENCH_WARMUP`` seconds have passed, the file prints
``LOCUST WARM``; ``LOADGEN_BENCH_DURATION`` seconds later it prints ``LOCUST RESULT {json}``
(requests, failures, process CPU seconds and wall seconds of that window, from Locust's own
counters) and stops the run. ``peersbench`` reads those two lines.

The file is self-contained (the standard library and Locust) because the Locust that runs it
may be installed in another environment than loadgen. Importing it does not import Locust
(which monkey-patches the standard library through gevent as it is imported): the user class is
defined only when Locust itself is loading the file.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import sys
import time
import types
import uuid
from typing import Any

__all__ = ["RESULT_PREFIX", "WARM_LINE", "Operations", "fits"]

DEVICES = 1000
PATH = "/south/v80/devices/dev-{:06d}/operation/request"
# Locust keeps statistics per name: one name for all devices, as a Locust user would write it.
NAME = "/south/v80/devices/[id]/operation/request"
HEADERS = {"Content-Type": "application/json"}
WARM_LINE = "LOCUST WARM"
RESULT_PREFIX = "LOCUST RESULT "
_BODY = (
    '{"operation":{"request":{"id":"%s","timestamp":%d,"name":"REBOOT_EQUIPMENT",'
    '"parameters":{"type":"HARDWARE"}}}}'
)


class Operations:
    """Operation requests as the platform renders them: ids (a per-run prefix and a counter,
    like ``platform.mix.OperationIds``), the body, and the next device's path in turn."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix if prefix is not None else str(uuid.uuid4())[:24]
        self._counter = itertools.count()

    def __repr__(self) -> str:
        return f"Operations({self._prefix}...)"

    def next(self, timestamp_ms: int) -> tuple[str, str, bytes]:
        """(operation id, request path, request body) of the next operation."""
        n = next(self._counter)
        op_id = f"{self._prefix}{(n + 1) & 0xFFFFFFFFFFFF:012x}"
        body = (_BODY % (op_id, timestamp_ms)).encode()
        return op_id, PATH.format(n % DEVICES), body


def fits(status: int, answer: bytes | None, op_id: str) -> bool:
    """A synchronous answer that completes the operation ``op_id``: 201, and a response JSON
    with that id and a result code."""
    if status != 201 or not answer:
        return False
    try:
        response = json.loads(answer)["operation"]["response"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(response, dict) and response.get("id") == op_id and "resultCode" in response


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _define_user() -> None:
    """The Locust user class and the measured window, defined only under Locust."""
    locust: Any = importlib.import_module("locust")
    gevent: Any = importlib.import_module("gevent")
    operations = Operations()
    warmup = _seconds("LOADGEN_BENCH_WARMUP", 1.0)
    duration = _seconds("LOADGEN_BENCH_DURATION", 3.0)

    def sync_operation(user: Any) -> None:
        op_id, path, body = operations.next(int(time.time() * 1000))
        with user.client.post(
            path, data=body, headers=HEADERS, name=NAME, catch_response=True
        ) as answer:
            if not fits(answer.status_code, answer.content, op_id):
                answer.failure(f"not a sync answer to {op_id}: {answer.status_code}")

    def window(environment: Any) -> None:
        gevent.sleep(warmup)
        total = environment.stats.total
        count0, failed0 = total.num_requests, total.num_failures
        cpu0, wall0 = time.process_time(), time.perf_counter()
        print(WARM_LINE, flush=True)
        gevent.sleep(duration)
        count, failed = total.num_requests - count0, total.num_failures - failed0
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        row = {"requests": count - failed, "failures": failed, "cpu_s": cpu, "wall_s": wall}
        print(RESULT_PREFIX + json.dumps(row), flush=True)
        environment.runner.quit()

    state: dict[str, Any] = {}

    def initialised(environment: Any, **_: Any) -> None:
        state["environment"] = environment

    def spawned(user_count: int, **_: Any) -> None:
        if "window" not in state:  # once: spawning completes again after a rebalance
            state["window"] = gevent.spawn(window, state["environment"])

    locust.events.init.add_listener(initialised)
    locust.events.spawning_complete.add_listener(spawned)

    def members(namespace: dict[str, Any]) -> None:
        namespace.update(
            __module__=__name__,
            wait_time=locust.constant(0),
            sync_operation=locust.task(sync_operation),
        )

    globals()["SyncOperationUser"] = types.new_class(
        "SyncOperationUser", (locust.FastHttpUser,), {}, members
    )


if "locust" in sys.modules and __name__ != "loadgen.bench.locustfile":
    _define_user()
