"""``run_north``: the application side's whole run, from the callback receiver to the drain.

Start sequence (what a campaign does)::

    tracker = JobTracker(metrics, device_ids, dispatch_timeout=config.dispatch_timeout)
    ... start the fleet with ``observer=tracker`` (the devices report each request and answer)
    info = await nursery.start(partial(run_north, config, metrics, tracker, url=north_url))
    ... the load runs; ``info.stop_load()`` ends it early (Ctrl-C), ``info.cut_drain()`` cuts
    the drain (a second Ctrl-C)

1. **ready**: the callback receiver listens (``close_by = "callback"``), the north API is
   reached once (a TCP connection) so that an unreachable URL is one clear error before any
   load, not thousands of counted failures;
2. **load**: one issuing task follows the schedule (``loadgen.platform.schedule``: stages, ramps,
   Poisson) and, at each intended time, takes ``targets_per_job`` free devices, opens the job in
   the tracker and writes its N1 at once on an idle keep-alive connection, or queues it until
   one is free (at most ``max_connections``; ``loadgen.http.muxclient``: no task per request,
   one task reads every answer), each one's service time starting as it is written;
3. **drain**: jobs still live get up to ``config.grace`` to close; the deadlines keep firing;
4. **cut-off**: what is left is recorded timed out at its own deadline (``tracker.drain``), so
   ``jobs.created == jobs.closed + jobs.timed_out + jobs.errors`` when ``run_north`` returns.

An N1 answer other than 2xx counts as ``north.status.<code>`` (first message noted), a transport
failure as ``north.transport.<kind>``, an answer without a job id as ``north.no_job_id``; each
ends its job as an error. Scheduler lateness is recorded as on the platform side
(``lateness``, ``jobs.late_sends``).
"""

from __future__ import annotations

import math
import ssl
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson
import trio

from loadgen.errors import ConfigError, ProtocolError, TransportError
from loadgen.http.client import ClientLimits, ConnectionPool, Origin, open_pool
from loadgen.http.muxclient import MuxClient
from loadgen.http.parser import Request, Response
from loadgen.http.server import HTTPServer, Reply, awaiting
from loadgen.http.tls import client_context
from loadgen.metrics.collector import quiet_collector
from loadgen.metrics.health import p99_ms, saturation_reasons
from loadgen.metrics.registry import Metrics
from loadgen.north.config import NorthConfig
from loadgen.north.jobs import JobTracker, NorthJob, State
from loadgen.platform.alarm import Alarm
from loadgen.platform.mix import OperationMix
from loadgen.platform.schedule import Schedule
from loadgen.platform.sender import BATCH_WINDOW, pace
from loadgen.protocol.north import (
    JobRequest,
    NorthPaths,
    OperationParameters,
    decode_callback,
    decode_job_status,
    encode_job_request,
    job_id_from,
)
from loadgen.seeds import resolve_seed

__all__ = ["NorthInfo", "NorthResult", "run_north"]

Phase = Literal["waiting", "load", "drain", "done"]
#: A send more than this after its intended time counts in ``jobs.late_sends`` (as the sender).
LATE_SEND: Final = 0.002
#: How long the reachability check of the north API may take.
REACH_TIMEOUT: Final = 5.0
#: The timer task looks at least this often (deadlines are recorded at their value anyway).
TIMER_PERIOD: Final = 0.05
POLL_CONCURRENCY: Final = 32
_SENTINEL: Final = "@@loadgen-entities@@"
_NO_CONTENT: Final = Reply(204)


@dataclass(frozen=True, slots=True, kw_only=True)
class NorthResult:
    started_at: float
    load_duration_s: float
    duration_s: float
    offered_rate: float
    counters: dict[str, int]
    peak_live: int
    cut_off: int
    saturated: bool
    reasons: tuple[str, ...]
    correlation: str
    close_by: str
    seed: int
    generator: dict[str, Any] = field(default_factory=dict)

    def run_info(self) -> dict[str, Any]:
        """The ``run`` mapping of ``build_summary`` (rates are jobs per second)."""
        return {
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "load_duration_s": round(self.load_duration_s, 3),
            "offered_rate": round(self.offered_rate, 3),
            "cut_by_grace": self.cut_off,
            "generator": {
                **self.generator,
                "saturated": self.saturated,
                "reasons": list(self.reasons),
            },
        }


class NorthInfo:
    """Handed out by ``task_status.started``: where callbacks go, and the load's controls."""

    def __init__(
        self, *, tracker: JobTracker, schedule: Schedule, callback_url: str | None
    ) -> None:
        self.tracker = tracker
        self.schedule = schedule
        self.callback_url = callback_url
        self.phase: Phase = "waiting"
        self.t0: float | None = None
        self._load_scope = trio.CancelScope()
        self._drain_scope = trio.CancelScope()

    def __repr__(self) -> str:
        return f"<NorthInfo {self.phase} live={len(self.tracker)}>"

    def stop_load(self) -> None:
        self._load_scope.cancel()

    def cut_drain(self) -> None:
        self._load_scope.cancel()
        self._drain_scope.cancel()

    @property
    def elapsed(self) -> float:
        return 0.0 if self.t0 is None else trio.current_time() - self.t0


class _Templates:
    """One pre-rendered N1 body per mix entry, with a hole for the target devices."""

    def __init__(self, config: NorthConfig, mix: OperationMix, callback: str | None) -> None:
        self.parts: list[tuple[bytes, bytes]] = []
        hole = orjson.dumps([_SENTINEL])
        for entry, template in zip(config.mix, mix.templates, strict=True):
            t = config.timeouts_of(entry)
            body = encode_job_request(
                JobRequest(
                    name=entry.name,
                    entities=(_SENTINEL,),
                    parameters=template.parameters,
                    operation_parameters=OperationParameters(
                        timeout=t.timeout,
                        ack_timeout=t.ack_timeout,
                        retries=t.retries,
                        retries_delay=t.retries_delay,
                        retry_result_list=t.retry_result_list,
                    ),
                    callback=callback,
                    stop_delay=config.stop_delay,
                )
            )
            head, tail = body.split(hole)
            self.parts.append((head, tail))

    def render(self, entry: int, devices: tuple[str, ...]) -> bytes:
        head, tail = self.parts[entry]
        return head + orjson.dumps(devices) + tail


async def reach(origin: Origin, url: str) -> None:
    """One TCP connection to the north API: an unreachable URL is one clear error, now."""
    try:
        with trio.fail_after(REACH_TIMEOUT):
            stream = await trio.open_tcp_stream(origin.host, origin.port)
    except (OSError, trio.TooSlowError) as exc:
        reason = (
            "no answer in 5 s" if isinstance(exc, trio.TooSlowError) else (exc.strerror or str(exc))
        )
        raise ConfigError(
            f"cannot reach the north API at {url}: {reason}", key="north.url"
        ) from None
    await stream.aclose()


def _client_ssl(config: NorthConfig, url: str) -> ssl.SSLContext | None:
    if not url.startswith("https:"):
        return None
    return client_context(verify=config.verify, ca_file=config.ca_file)


async def run_north(
    config: NorthConfig,
    metrics: Metrics,
    tracker: JobTracker,
    *,
    url: str | None = None,
    task_status: trio.TaskStatus[NorthInfo] = trio.TASK_STATUS_IGNORED,
) -> NorthResult:
    """Run the application side once (see the module docstring). ``url`` replaces
    ``config.url`` (the stand-in's address, known once it listens)."""
    url = url or config.url
    if url is None:
        raise ConfigError("expected the north API's URL", key="north.url")
    seed = resolve_seed(config.seed)
    schedule = Schedule(config.arrival.stages)
    origin, prefix = Origin.parse(url)
    paths = NorthPaths(prefix + config.base_path)
    metrics.single("lateness")
    await reach(origin, url)
    headers = [(b"X-ApiKey", config.api_key.encode())] if config.api_key else []
    limits = ClientLimits(
        max_connections=config.max_connections,
        keep_alive=config.keep_alive,
        connect_timeout=min(10.0, config.dispatch_timeout),
        read_timeout=max(config.close_timeout(e) for e in config.mix),
    )
    async with trio.open_nursery() as nursery:
        callback_url = None
        if config.close_by == "callback":
            callback_url = await nursery.start(_serve_callbacks, config, tracker, metrics)
        info = NorthInfo(tracker=tracker, schedule=schedule, callback_url=callback_url)
        async with open_pool(
            limits=limits, ssl_context=_client_ssl(config, url), headers=headers
        ) as pool:
            nursery.start_soon(_timer, tracker)
            task_status.started(info)
            with quiet_collector():
                result = await _load(config, metrics, tracker, info, pool, origin, paths, seed)
        nursery.cancel_scope.cancel()
    return result


async def _serve_callbacks(
    config: NorthConfig,
    tracker: JobTracker,
    metrics: Metrics,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The callback receiver: every finished operation's record, answered 204 (even for a job
    nobody knows, counted); a body that is no record is 400 (``north.callback.malformed``)."""
    counters = metrics.counters
    path = config.callback_path.encode()

    def handler(request: Request) -> Reply:
        if request.target.split(b"?", 1)[0] != path:
            counters["north.callback.not_found"] += 1
            return Reply(404, b'{"errors":[{"code":404,"message":"no such resource"}]}')
        if request.method != b"POST":
            counters["north.callback.bad_method"] += 1
            return Reply(405, b'{"errors":[{"code":405,"message":"use POST"}]}')
        now = trio.current_time()
        try:
            records = decode_callback(request.body)
        except ProtocolError as exc:
            counters["north.callback.malformed"] += 1
            metrics.note("north.callback.malformed", str(exc))
            return Reply(400, orjson.dumps({"errors": [{"code": 400, "message": str(exc)}]}))
        for record in records:
            tracker.notified(record, now)
        return _NO_CONTENT

    server = HTTPServer(awaiting(handler), now=handler)
    async with trio.open_nursery() as nursery:
        [(host, port), *_] = await nursery.start(
            lambda task_status: server.serve(
                config.callback_host, config.callback_port, task_status=task_status
            )
        )
        shown = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
        if ":" in shown:
            shown = f"[{shown}]"
        task_status.started(config.callback_url or f"http://{shown}:{port}{config.callback_path}")


async def _timer(tracker: JobTracker) -> None:
    """Fires the tracker's deadlines (each recorded at its own value, however late the wake)."""
    while True:
        now = trio.current_time()
        await trio.sleep_until(min(tracker.next_deadline, now + TIMER_PERIOD))
        tracker.expire(trio.current_time())


async def _load(
    config: NorthConfig,
    metrics: Metrics,
    tracker: JobTracker,
    info: NorthInfo,
    pool: ConnectionPool,
    origin: Origin,
    paths: NorthPaths,
    seed: int,
) -> NorthResult:
    counters = metrics.counters
    started_at = time.time()
    t0 = trio.current_time()
    mix = OperationMix(config.mix, seed=seed, timestamp_ms=int(started_at * 1000))
    templates = _Templates(config, mix, info.callback_url)
    close_timeouts = [config.close_timeout(entry) for entry in config.mix]
    target = paths.jobs.encode()
    key_path = config.key_path
    lateness = metrics.single("lateness")
    pollable: deque[NorthJob] = deque()
    polling = config.close_by == "poll"
    current_time = trio.lowlevel.current_clock().current_time

    def written(job: NorthJob, now: float) -> None:
        tracker.sending(job, now)

    def answered(job: NorthJob, answer: Response, now: float) -> None:
        # ``now``: as read, before the freed line's next write (muxclient)
        status = answer.status
        if not 200 <= status < 300:
            cause = f"north.status.{status}"
            metrics.note(cause, f"{status} {answer.body[:160]!r}")
            tracker.refused(job, now, cause, maybe_created=False)
            return
        try:
            job_id = job_id_from(answer.header(b"location"), answer.body, key_path)
        except ProtocolError as exc:
            metrics.note("north.no_job_id", str(exc))
            tracker.refused(job, now, "north.no_job_id", maybe_created=True)
            return
        tracker.accepted(job, job_id, now)
        if polling and job.state not in (State.CLOSED, State.TIMED_OUT, State.ERROR):
            pollable.append(job)

    def failed(job: NorthJob, exc: TransportError) -> None:
        cause = "north.transport." + exc.kind
        metrics.note(cause, f"{exc} ({origin})")
        tracker.refused(job, current_time(), cause, maybe_created=True)

    # a queued N1 whose job timed out before a connection was free is not written at all
    client = MuxClient(
        pool, answered, failed, on_written=written, wanted=lambda job: job.state is State.SENT
    )

    async with trio.open_nursery() as tasks:
        await tasks.start(client.run)

        def issue(intended: float, now: float) -> None:
            devices = tracker.take_devices(config.targets_per_job)
            if devices is None:
                return
            entry = mix.choose()
            job = tracker.open(devices, intended, close_timeouts[entry])
            late = now - intended
            lateness.record(late)
            if late > LATE_SEND:
                counters["jobs.late_sends"] += 1
            client.send(origin, target, templates.render(entry, devices), job.deadline, job)

        if polling:
            tasks.start_soon(_poll, config, metrics, tracker, pool, origin, paths, pollable)
        info.t0 = t0
        info.phase = "load"
        cpu0, wall0 = time.process_time(), time.perf_counter()
        end = t0 + config.arrival.duration
        with info._load_scope:
            # as the platform's sender does: wake at most every BATCH_WINDOW, on time (timerfd)
            alarm = Alarm()
            try:
                await pace(
                    schedule_times(info.schedule, config, seed), t0, end, issue,
                    window=BATCH_WINDOW, sleep_until=alarm.sleep_until,
                )  # fmt: skip
            finally:
                alarm.close()
        cpu1, wall1 = time.process_time(), time.perf_counter()
        load_end = trio.current_time()
        info.phase = "drain"
        if len(tracker):
            drained = trio.Event()
            tracker.on_empty = drained.set
            with info._drain_scope:
                info._drain_scope.deadline = trio.current_time() + config.grace
                await drained.wait()
            tracker.on_empty = None
        cut_off = tracker.drain()
        tasks.cancel_scope.cancel()
    info.phase = "done"
    window_end = min(load_end, end)
    load_s = max(window_end - t0, 1e-9)
    offered = info.schedule.count_until(window_end - t0) / load_s
    cpu = 100.0 * (cpu1 - cpu0) / (wall1 - wall0) if wall1 > wall0 else 0.0
    lateness_p99 = p99_ms(lateness.merged()) or 0.0
    lag = metrics.singles.get("loop_lag")
    lag_p99 = (p99_ms(lag.merged()) or 0.0) if lag is not None else 0.0
    reasons = saturation_reasons(
        config.health, lateness_p99_ms=lateness_p99, loop_lag_p99_ms=lag_p99, cpu_percent=cpu
    )
    generator = {
        "lateness_p99_ms": lateness_p99,
        "loop_lag_p99_ms": lag_p99,
        "cpu_percent": round(cpu, 1),
        "late_sends": int(counters.get("jobs.late_sends", 0)),
        "fell_behind": bool(counters.get("jobs.late_sends", 0)),
        "correlation": config.correlation,
        "close_by": config.close_by,
    }
    return NorthResult(
        started_at=started_at,
        load_duration_s=load_s,
        duration_s=trio.current_time() - t0,
        offered_rate=offered,
        counters=dict(counters),
        peak_live=tracker.peak,
        cut_off=cut_off,
        saturated=bool(reasons),
        reasons=tuple(reasons),
        correlation=config.correlation,
        close_by=config.close_by,
        seed=seed,
        generator={
            k: v for k, v in generator.items() if not isinstance(v, float) or math.isfinite(v)
        },
    )


def schedule_times(schedule: Schedule, config: NorthConfig, seed: int) -> Iterable[float]:
    return schedule.times(config.arrival.model, seed)


async def _poll(
    config: NorthConfig,
    metrics: Metrics,
    tracker: JobTracker,
    pool: ConnectionPool,
    origin: Origin,
    paths: NorthPaths,
    pollable: deque[NorthJob],
) -> None:
    """Read N2 of the accepted live jobs in turn, never more than ``max_polls_per_s`` a second
    (all jobs together): slot ``k`` is at ``t0 + k / max_polls_per_s``; a slot whose poll cannot
    start (``POLL_CONCURRENCY`` in progress, or nothing to poll) is skipped, not made up."""
    counters = metrics.counters
    period = 1.0 / config.max_polls_per_s
    limiter = trio.CapacityLimiter(POLL_CONCURRENCY)
    ended = (State.CLOSED, State.TIMED_OUT, State.ERROR)

    async def one(job: NorthJob) -> None:
        async with limiter:
            assert job.job_id is not None
            counters["north.poll.sent"] += 1
            try:
                answer = await pool.request(
                    origin, paths.job(job.job_id).encode(), method=b"GET",
                    deadline=min(job.deadline, trio.current_time() + 5.0),
                )  # fmt: skip
            except TransportError as exc:
                counters["north.poll.transport." + exc.kind] += 1
                answer = None
            now = trio.current_time()
            if answer is not None and 200 <= answer.status < 300:
                try:
                    if tracker.polled(job, decode_job_status(answer.body), now):
                        return
                except ProtocolError as exc:
                    counters["north.poll.malformed"] += 1
                    metrics.note("north.poll.malformed", str(exc))
            elif answer is not None:
                counters[f"north.poll.status.{answer.status}"] += 1
            if job.state not in ended:
                pollable.append(job)

    async with trio.open_nursery() as polls:
        slot = trio.current_time()
        while True:
            slot += period
            await trio.sleep_until(slot)
            while pollable and pollable[0].state in ended:
                pollable.popleft()
            if not pollable:
                continue
            if limiter.available_tokens == 0:
                counters["north.poll.skipped_slots"] += 1  # polls are slower than the rate
                continue
            polls.start_soon(one, pollable.popleft())
