"""Provisioning: create and remove the virtual devices as entities on a real OpenGate (issue 10).

Before ``sides = "north-devices"`` can run against a real platform, every virtual device must
exist there as an entity with the address the platform reaches it at. This module does that
through the north provisioning API, from a JSON *template* (``scenarios/provision-device
.template.json``) because the entity body, the paths and even the status of "already there"
are guesses that differ between deployments (README, "Provisioning").

- ``load_template``: the template file, validated (one ``ConfigError`` naming the file and the
  key, never a traceback); ``plan``: one ``Call`` per device, placeholders filled (pure).
- ``classify``: what an answer means for the entity (pure): done, already in that state
  (``existing`` for create, ``missing`` for delete, not an error, counted apart) or failed;
  failures are grouped by status (or transport kind) with the first message.
- ``execute``: the thin trio shell: calls started at most ``rate`` a second and at most
  ``concurrency`` at once, paced from the previous *actual* start (after a stall the calls do
  not burst to catch up: a rate limit is a ceiling, not a schedule), progress every
  ``progress_every`` seconds.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote

import orjson
import trio

from loadgen.errors import ConfigError, TransportError
from loadgen.http.client import ClientLimits, Origin, open_pool

__all__ = [
    "Call",
    "Outcome",
    "Tally",
    "Template",
    "classify",
    "execute",
    "execute_over_http",
    "load_template",
    "plan",
]

Action = Literal["create", "delete"]
ACTIONS: Final = ("create", "delete")
#: Placeholders every template may use; ``variables`` in the template (and ``--var``) add more.
BUILTIN: Final = ("id", "index", "host", "port", "url")
_METHODS: Final = ("POST", "PUT", "DELETE", "PATCH")
_PLACEHOLDER: Final = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{|\}")
MESSAGE_MAX: Final = 200  # characters of a failure's first message kept


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One action's request: method, path (with placeholders) and the statuses that mean the
    entity is already in the wanted state (create: it exists; delete: it is not there)."""

    method: str
    path: str
    already: tuple[tuple[int, str | None], ...]  # (status, error code or None: any)
    send_body: bool

    def is_already(self, status: int, codes: Sequence[str]) -> bool:
        return any(s == status and (c is None or c in codes) for s, c in self.already)


@dataclass(frozen=True, slots=True, kw_only=True)
class Template:
    source: str
    create: Endpoint
    delete: Endpoint
    variables: Mapping[str, str]
    body: Any  # parsed JSON with placeholders in its strings


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One HTTP exchange to make for one device."""

    device_id: str
    method: bytes
    target: bytes
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    kind: Literal["done", "already", "failed"]
    cause: str = ""  # failed: "HTTP 500" or "transport connect"
    message: str = ""  # failed: the first message, prefixed with the device id


@dataclass(slots=True)
class Tally:
    """The counts of a run (an accumulator, filled by ``execute``)."""

    action: Action
    total: int
    done: int = 0
    already: int = 0
    failed: int = 0
    by_cause: dict[str, int] = field(default_factory=dict)
    first_message: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.done + self.already + self.failed

    def add(self, outcome: Outcome) -> None:
        if outcome.kind == "done":
            self.done += 1
        elif outcome.kind == "already":
            self.already += 1
        else:
            self.failed += 1
            self.by_cause[outcome.cause] = self.by_cause.get(outcome.cause, 0) + 1
            self.first_message.setdefault(outcome.cause, outcome.message)

    def counts(self) -> str:
        done, already = (
            ("created", "existing") if self.action == "create" else ("deleted", "missing")
        )
        return f"{done} {self.done}, {already} {self.already}, failed {self.failed}"

    def summary(self, elapsed: float) -> list[str]:
        rate = self.finished / elapsed if elapsed > 0 else 0.0
        lines = [
            f"provision {self.action}: {self.finished}/{self.total} entities in {elapsed:.1f} s "
            f"({rate:.1f}/s): {self.counts()}"
        ]
        for cause, count in sorted(self.by_cause.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  failed {cause} x{count} (first: {self.first_message[cause]})")
        return lines


# -- the template (pure) ----------------------------------------------------------------------


def _fail(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(message, source=source, key=key)


#: Create: OpenGate answers a duplicate with 400 and error code 0x010114 "Entity duplicated."
#: (opengate-js features/provision/entities/*duplicated*); 409 is the HTTP way. Delete: 404
#: for an entity that is not there is a guess (no public example).
_DEFAULT_ALREADY: Final[Mapping[str, list[Any]]] = {
    "create": [{"status": 400, "code": "0x010114"}, 409],
    "delete": [404],
}
_ALREADY_SHAPE: Final = 'expected a list of HTTP statuses or {"status": N, "code": "ERROR_CODE"}'


def _already(source: str, key: str, raw: Any) -> tuple[int, str | None]:
    def status_ok(s: Any) -> bool:
        return isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599

    if status_ok(raw):
        return raw, None
    if (
        isinstance(raw, dict)
        and set(raw) <= {"status", "code"}
        and status_ok(raw.get("status"))
        and isinstance(raw.get("code"), str | None)
    ):
        return raw["status"], raw.get("code")
    raise _fail(source, key, _ALREADY_SHAPE)


def _endpoint(source: str, raw: Any, action: Action) -> Endpoint:
    if not isinstance(raw, dict):
        raise _fail(source, action, "expected a table with method and path")
    unknown = set(raw) - {"method", "path", "already", "send_body"}
    if unknown:
        raise _fail(source, f"{action}.{sorted(unknown)[0]}", "unknown key")
    method = raw.get("method", "POST" if action == "create" else "DELETE")
    if not isinstance(method, str) or method.upper() not in _METHODS:
        raise _fail(source, f"{action}.method", f"expected one of {', '.join(_METHODS)}")
    path = raw.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise _fail(source, f"{action}.path", "expected a path starting with /")
    already = raw.get("already", _DEFAULT_ALREADY[action])
    if not isinstance(already, list):
        raise _fail(source, f"{action}.already", _ALREADY_SHAPE)
    return_already = tuple(
        _already(source, f"{action}.already[{i}]", a) for i, a in enumerate(already)
    )
    send_body = raw.get("send_body", action == "create")
    if not isinstance(send_body, bool):
        raise _fail(source, f"{action}.send_body", "expected true or false")
    return Endpoint(method=method.upper(), path=path, already=return_already, send_body=send_body)


def load_template(path: str | Path, overrides: Mapping[str, str] | None = None) -> Template:
    """Read and check a template; ``overrides`` replace its ``variables`` (``--var``)."""
    source = str(path)
    try:
        raw = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(
            f"cannot read the template: {exc.strerror or exc}", source=source
        ) from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc}", source=source) from None
    if not isinstance(raw, dict):
        raise ConfigError("expected a JSON object", source=source)
    unknown = set(raw) - {"create", "delete", "variables", "body", "_comment"}
    if unknown:
        raise _fail(
            source, sorted(unknown)[0], "unknown key (expected create, delete, variables, body)"
        )
    for key in ("create", "delete", "body"):
        if key not in raw:
            raise _fail(source, key, "missing")
    variables = raw.get("variables", {})
    if not isinstance(variables, dict) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in variables.values()
    ):
        raise _fail(source, "variables", "expected a table of strings or integers")
    clash = set(variables) & set(BUILTIN)
    if clash:
        raise _fail(source, f"variables.{sorted(clash)[0]}", "is a built-in placeholder")
    merged = {k: str(v) for k, v in variables.items()} | dict(overrides or {})
    template = Template(
        source=source,
        create=_endpoint(source, raw["create"], "create"),
        delete=_endpoint(source, raw["delete"], "delete"),
        variables=merged,
        body=raw["body"],
    )
    # Every placeholder must be known now, not at the thousandth device.
    values = _values(template, "dev-0", 0, "127.0.0.1", 1)
    for action in ACTIONS:
        _fill(template.source, getattr(template, action).path, values, f"{action}.path")
    _walk(template.source, template.body, values, "body")
    return template


def _values(template: Template, device_id: str, index: int, host: str, port: int) -> dict[str, Any]:
    url_host = f"[{host}]" if ":" in host else host
    return dict(template.variables) | {
        "id": device_id,
        "index": index,
        "host": host,
        "port": port,
        "url": f"http://{url_host}:{port}",
    }


def _fill(source: str, text: str, values: Mapping[str, Any], where: str) -> Any:
    """``text`` with its placeholders filled; a text that is one placeholder keeps its value's
    type (``"{port}"`` becomes the number 1123). ``{{`` and ``}}`` are literal braces."""
    whole = _PLACEHOLDER.fullmatch(text)
    if whole is not None and whole.group(1) is not None:
        return _lookup(source, values, whole.group(1), where)

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        if match.group(1) is None:
            raise _fail(source, where, f"unmatched brace in {text!r} (write {{{{ or }}}})")
        return str(_lookup(source, values, match.group(1), where))

    return _PLACEHOLDER.sub(one, text)


def _lookup(source: str, values: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in values:
        known = ", ".join(sorted(values))
        raise _fail(source, where, f"unknown placeholder {{{name}}} (known: {known})")
    return values[name]


def _walk(source: str, node: Any, values: Mapping[str, Any], where: str) -> Any:
    if isinstance(node, str):
        return _fill(source, node, values, where)
    if isinstance(node, list):
        return [_walk(source, item, values, f"{where}[{i}]") for i, item in enumerate(node)]
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            name = _fill(source, key, values, f"{where}.{key}")
            out[str(name)] = _walk(source, value, values, f"{where}.{key}")
        return out
    return node


def plan(
    template: Template,
    action: Action,
    device_ids: Sequence[str],
    *,
    host: str,
    port: int,
    prefix: str = "",
) -> list[Call]:
    """One call per device (``prefix``: the URL's own path, put before the template's)."""
    endpoint: Endpoint = getattr(template, action)
    calls = []
    for index, device_id in enumerate(device_ids):
        values = _values(template, device_id, index, host, port)
        # Path values are percent-encoded: an id with "/" or "?" stays one path segment.
        path_values = {k: quote(str(v), safe="") for k, v in values.items()}
        target = prefix + str(_fill(template.source, endpoint.path, path_values, f"{action}.path"))
        body = b""
        if endpoint.send_body:
            body = orjson.dumps(_walk(template.source, template.body, values, "body"))
        calls.append(
            Call(
                device_id=device_id,
                method=endpoint.method.encode(),
                target=target.encode(),
                body=body,
            )
        )
    return calls


def classify(
    template: Template, action: Action, device_id: str, status: int, body: bytes
) -> Outcome:
    """What an answer means for one entity (pure)."""
    if 200 <= status < 300:
        return Outcome(kind="done")
    endpoint: Endpoint = getattr(template, action)
    if endpoint.is_already(status, error_codes(body)):
        return Outcome(kind="already")
    return Outcome(
        kind="failed", cause=f"HTTP {status}", message=f"{device_id}: {first_message(body)}"
    )


def _errors(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def error_codes(body: bytes) -> list[str]:
    """The ``code`` of each entry of OpenGate's ``{"errors": [...]}`` (empty otherwise)."""
    data = _errors(body)
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return []
    return [str(e["code"]) for e in errors if isinstance(e, dict) and "code" in e]


def first_message(body: bytes) -> str:
    """The first error message of an answer: OpenGate's ``{"errors": [{"code", "message"}]}``
    (the shape opengate-js reads), a ``message``/``error`` field, else the text itself."""
    text = ""
    data = _errors(body)
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            text = str(first.get("message") or first.get("description") or first)
            if first.get("code") is not None:
                text = f"{first['code']}: {text}"
        elif isinstance(data.get("message") or data.get("error"), str):
            text = data.get("message") or data["error"]
    if not text:
        text = body.decode("utf-8", "replace").strip() or "(empty body)"
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 3] + "..."


# -- the shell (trio) -------------------------------------------------------------------------

#: One exchange: (method, target, body) -> (status, body); raises TransportError.
Send = Callable[[bytes, bytes, bytes], Awaitable[tuple[int, bytes]]]


async def execute(
    template: Template,
    action: Action,
    calls: Sequence[Call],
    send: Send,
    *,
    rate: float = math.inf,
    concurrency: int = 16,
    progress_every: float = 5.0,
    progress: Callable[[Tally, float], None] | None = None,
) -> Tally:
    """Make every call; never more than ``rate`` starts a second nor ``concurrency`` at once.

    Each start is at least ``1/rate`` after the previous *actual* start, so a stall (a slow
    answer holding the last free slot) does not turn into a burst afterwards."""
    if not rate > 0:
        raise ConfigError("expected a rate > 0 a second", key="--rate")
    if concurrency < 1:
        raise ConfigError("expected a concurrency >= 1", key="--concurrency")
    tally = Tally(action=action, total=len(calls))
    limiter = trio.CapacityLimiter(concurrency)
    spacing = 0.0 if math.isinf(rate) else 1.0 / rate
    t0 = trio.current_time()

    async def one(call: Call) -> None:
        try:
            status, body = await send(call.method, call.target, call.body)
            outcome = classify(template, action, call.device_id, status, body)
        except TransportError as exc:
            outcome = Outcome(
                kind="failed", cause=f"transport {exc.kind}", message=f"{call.device_id}: {exc}"
            )
        finally:
            limiter.release_on_behalf_of(call)
        tally.add(outcome)

    async def report() -> None:
        while True:
            await trio.sleep(progress_every)
            if progress is not None:
                progress(tally, trio.current_time() - t0)

    async with trio.open_nursery() as nursery:
        if progress is not None and progress_every > 0:
            nursery.start_soon(report)
        async with trio.open_nursery() as calls_nursery:
            next_start = t0
            for call in calls:
                await limiter.acquire_on_behalf_of(call)
                await trio.sleep_until(next_start)
                next_start = trio.current_time() + spacing
                calls_nursery.start_soon(one, call)
        nursery.cancel_scope.cancel()
    return tally


async def execute_over_http(
    template: Template,
    action: Action,
    calls: Sequence[Call],
    *,
    origin: Origin,
    headers: Sequence[tuple[bytes, bytes]] = (),
    ssl_context: ssl.SSLContext | None = None,
    request_timeout: float = 30.0,
    rate: float = math.inf,
    concurrency: int = 16,
    progress_every: float = 5.0,
    progress: Callable[[Tally, float], None] | None = None,
) -> Tally:
    """``execute`` over the project's keep-alive pool (``concurrency`` connections): this path
    is not hot, but the pool is trio-native, maps every failure to a ``TransportError`` kind
    (the causes in the summary) and is the one the north side already uses."""
    limits = ClientLimits(max_connections=concurrency, read_timeout=request_timeout)
    async with open_pool(limits=limits, ssl_context=ssl_context, headers=headers) as pool:

        async def send(method: bytes, target: bytes, body: bytes) -> tuple[int, bytes]:
            deadline = trio.current_time() + request_timeout
            answer = await pool.request(origin, target, body, method=method, deadline=deadline)
            return answer.status, answer.body

        return await execute(
            template, action, calls, send,
            rate=rate, concurrency=concurrency,
            progress_every=progress_every, progress=progress,
        )  # fmt: skip
