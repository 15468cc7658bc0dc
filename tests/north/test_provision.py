"""``loadgen provision create|delete``: template, idempotence, failures by status, pacing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import trio
import trio.testing

from loadgen.errors import ConfigError, ConnectError
from loadgen.http.client import Origin
from loadgen.http.parser import Request
from loadgen.http.server import HTTPServer, Reply
from loadgen.north.provision import (
    Action,
    Call,
    Tally,
    classify,
    execute,
    execute_over_http,
    load_template,
    plan,
)

TEMPLATE = Path(__file__).parents[2] / "scenarios" / "provision-device.template.json"
DEVICES = "/north/v80/provision/organizations/loadgen/devices"
DUPLICATED = orjson.dumps({"errors": [{"code": "0x010114", "message": "Entity duplicated."}]})


class NorthStub:
    """A north provisioning API: entities by id, OpenGate's duplicate answer, 404 for a
    missing one; ``broken`` ids answer 500 with a message."""

    def __init__(self, broken: frozenset[str] = frozenset()) -> None:
        self.entities: dict[str, dict[str, object]] = {}
        self.broken = broken
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, request: Request) -> Reply:
        method, target = request.method.decode(), request.target.decode()
        self.seen.append((method, target))
        if method == "POST" and target == DEVICES + "?flattened=true":
            body = orjson.loads(request.body)
            device = body["provision.device.identifier"]["_value"]["_current"]["value"]
            if device in self.broken:
                return Reply(500, orjson.dumps({"errors": [{"code": "X", "message": "disk full"}]}))
            if device in self.entities:
                return Reply(400, DUPLICATED)
            self.entities[device] = body
            return Reply(201, headers=((b"Location", f"{DEVICES}/{device}".encode()),))
        if method == "DELETE" and target.startswith(DEVICES + "/"):
            device = target.rsplit("/", 1)[1]
            if device in self.broken:
                return Reply(503, b"maintenance")
            if self.entities.pop(device, None) is None:
                return Reply(404, b'{"errors":[{"code":"0x010016","message":"not found"}]}')
            return Reply(200)
        return Reply(400, b'{"errors":[{"message":"unexpected"}]}')


IDS = [f"dev-{i:06d}" for i in range(5)]


async def _run(url: str, action: Action, ids: list[str] = IDS) -> Tally:
    template = load_template(TEMPLATE)
    origin, prefix = Origin.parse(url)
    calls = plan(template, action, ids, host="10.0.0.7", port=1123, prefix=prefix)
    return await execute_over_http(template, action, calls, origin=origin, concurrency=3)


async def test_create_recreate_delete_against_a_stub() -> None:
    stub = NorthStub()
    async with trio.open_nursery() as nursery:
        [(host, port), *_] = await nursery.start(HTTPServer(stub).serve, "127.0.0.1", 0)
        url = f"http://{host}:{port}"
        created = await _run(url, "create")
        assert (created.done, created.already, created.failed) == (5, 0, 0)
        assert sorted(stub.entities) == IDS
        body = stub.entities["dev-000003"]
        address = body["provision.device.communicationModules[].subscription.address"]
        assert address == [  # the placeholders, filled
            {"_index": {"value": "dev-000003-cm"},
             "_value": {"_current": {"value": {"type": "IPV4", "value": "10.0.0.7"}}}}
        ]  # fmt: skip
        again = await _run(url, "create")
        assert (again.done, again.already, again.failed) == (0, 5, 0)
        assert again.counts() == "created 0, existing 5, failed 0"
        deleted = await _run(url, "delete", IDS[:3])
        assert (deleted.done, deleted.already, deleted.failed) == (3, 0, 0)
        redeleted = await _run(url, "delete")
        assert (redeleted.done, redeleted.already, redeleted.failed) == (2, 3, 0)
        assert stub.entities == {}
        nursery.cancel_scope.cancel()


async def test_failures_are_counted_by_status_with_the_first_message() -> None:
    stub = NorthStub(broken=frozenset({"dev-000001", "dev-000003"}))
    async with trio.open_nursery() as nursery:
        [(host, port), *_] = await nursery.start(HTTPServer(stub).serve, "127.0.0.1", 0)
        tally = await _run(f"http://{host}:{port}", "create")
        nursery.cancel_scope.cancel()
    assert (tally.done, tally.failed) == (3, 2)
    assert tally.by_cause == {"HTTP 500": 2}
    assert tally.first_message["HTTP 500"] in (
        "dev-000001: X: disk full", "dev-000003: X: disk full"
    )  # fmt: skip
    [head, failed] = tally.summary(2.0)
    assert (
        head == "provision create: 5/5 entities in 2.0 s (2.5/s): created 3, existing 0, failed 2"
    )
    assert failed.startswith("  failed HTTP 500 x2 (first: dev-00000")


def test_a_400_is_a_failure_unless_it_is_the_duplicate_code() -> None:
    template = load_template(TEMPLATE)
    assert classify(template, "create", "d", 400, DUPLICATED).kind == "already"
    required = b'{"errors":[{"code":"0x010000","message":"Required field."}]}'
    outcome = classify(template, "create", "d", 400, required)
    assert (outcome.kind, outcome.cause, outcome.message) == (
        "failed", "HTTP 400", "d: 0x010000: Required field."
    )  # fmt: skip
    assert classify(template, "delete", "d", 404, b"").kind == "already"
    assert classify(template, "delete", "d", 400, DUPLICATED).kind == "failed"


def _calls(n: int) -> list[Call]:
    return [Call(device_id=f"d{i}", method=b"POST", target=b"/x", body=b"") for i in range(n)]


async def test_the_rate_limit_spaces_the_starts_exactly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    async def send(method: bytes, target: bytes, body: bytes) -> tuple[int, bytes]:
        starts.append(trio.current_time())
        await trio.sleep(0.6)  # slower than the spacing: several in flight at once
        return 201, b""

    t0 = trio.current_time()
    tally = await execute(load_template(TEMPLATE), "create", _calls(6), send, rate=4, concurrency=8)
    assert [t - t0 for t in starts] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    assert tally.done == 6


async def test_after_a_stall_the_calls_do_not_burst(autojump_clock: trio.testing.MockClock) -> None:
    """One slow answer holds the only slot; the calls after it keep the spacing from the
    actual start instead of catching up on the schedule (a limit is a ceiling)."""
    starts: list[float] = []

    async def send(method: bytes, target: bytes, body: bytes) -> tuple[int, bytes]:
        starts.append(trio.current_time())
        if len(starts) == 2:
            await trio.sleep(1.0)
        return 201, b""

    t0 = trio.current_time()
    await execute(load_template(TEMPLATE), "create", _calls(5), send, rate=4, concurrency=1)
    assert [t - t0 for t in starts] == [0.0, 0.25, 1.25, 1.5, 1.75]


async def test_progress_lines_and_transport_failures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lines: list[str] = []

    async def send(method: bytes, target: bytes, body: bytes) -> tuple[int, bytes]:
        if target == b"/x" and len(lines) == 0 and trio.current_time() < 1:
            raise ConnectError("connection refused")
        return 201, b""

    tally = await execute(
        load_template(TEMPLATE), "create", _calls(10), send, rate=2, concurrency=1,
        progress_every=2.0, progress=lambda t, at: lines.append(f"{t.finished} at {at:g}"),
    )  # fmt: skip
    assert lines == ["4 at 2", "8 at 4"]  # starts at 0, 0.5, ..., 4.5: done at once
    assert tally.by_cause == {"transport connect": 2}
    assert tally.first_message["transport connect"] == "d0: connection refused"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{", "not JSON"),
        ('{"create": {"path": "/a"}, "delete": {"path": "/b"}}', "body: missing"),
        ('{"create": {"path": "/{nope}"}, "delete": {"path": "/b"}, "body": {}}',
         "create.path: unknown placeholder {nope}"),
        ('{"create": {"path": "/a", "already": [99]}, "delete": {"path": "/b"}, "body": {}}',
         "create.already[0]: expected a list of HTTP statuses"),
        ('{"create": {"path": "/a"}, "delete": {"path": "/b"}, "body": {"x": "{id"}}',
         "body.x: unmatched brace"),
    ],
)  # fmt: skip
def test_a_bad_template_is_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_template(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_a_whole_placeholder_keeps_its_type(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(
        '{"variables": {"org": "a/b"}, "create": {"path": "/o/{org}/d?x={{1}}"},'
        ' "delete": {"path": "/o/{org}/d/{id}"},'
        ' "body": {"{id}": {"port": "{port}", "n": "{index}", "u": "{url}/x"}}}'
    )
    template = load_template(path, {"org": "acme"})
    [call] = plan(template, "create", ["dev/1"], host="::1", port=1123, prefix="/p")
    assert call.target == b"/p/o/acme/d?x={1}"
    assert orjson.loads(call.body) == {"dev/1": {"port": 1123, "n": 0, "u": "http://[::1]:1123/x"}}
    [gone] = plan(template, "delete", ["dev/1"], host="::1", port=1123)
    assert (gone.method, gone.target, gone.body) == (b"DELETE", b"/o/acme/d/dev%2F1", b"")


async def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    return await trio.run_process(
        [sys.executable, "-m", "loadgen", "provision", *args],
        capture_stdout=True, capture_stderr=True, check=False, env=env,
    )  # fmt: skip


async def test_the_command_exit_codes_and_lines() -> None:
    stub = NorthStub(broken=frozenset({"dev-000002"}))
    async with trio.open_nursery() as nursery:
        [(host, port), *_] = await nursery.start(HTTPServer(stub).serve, "127.0.0.1", 0)
        common = ("--template", str(TEMPLATE), "--url", f"http://{host}:{port}", "--count", "2")
        first = await _cli("create", *common, "--rate", "100")
        again = await _cli("create", *common)
        broken = await _cli("create", *common[:-1], "3")
        nursery.cancel_scope.cancel()
    assert first.returncode == 0, first.stderr
    assert b"created 2, existing 0, failed 0" in first.stdout
    assert again.returncode == 0
    assert b"created 0, existing 2, failed 0" in again.stdout
    assert broken.returncode == 1
    assert b"  failed HTTP 500 x1 (first: dev-000002: X: disk full)" in broken.stderr


async def test_the_command_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    result = await _cli("create", "--template", str(bad), "--url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1
    assert "expected a JSON object" in result.stderr.decode()
    unreachable = await _cli("delete", "--template", str(TEMPLATE), "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 2
    assert unreachable.stderr.decode().startswith(
        "loadgen provision: --url: cannot reach the north API at http://127.0.0.1:9"
    )
