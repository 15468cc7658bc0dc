"""The flag tables of the run commands: which flag is which scenario key.

``RUN_FLAGS`` belong to every command that runs (``run``, ``devices``, ``platform``) and set the
``campaign``/``output`` tables and the thresholds; ``DEVICE_FLAGS`` set ``[devices]`` and
``PLATFORM_FLAGS`` set ``[platform]``. Flags whose value is not one key compose it
(``--stage``, ``--op``, ``--fault``, ...). The defaults shown in ``--help`` come from the
records (``loadgen.commands.flags.default_of``).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Final

import orjson

from loadgen.commands.flags import Flag, duration, integer, number
from loadgen.dashboard.address import DEFAULT_HOST, DEFAULT_PORT, parse_address
from loadgen.device.config import FAULT_NAMES, Delay, address_range
from loadgen.errors import ConfigError
from loadgen.platform.config import MAX_DEFAULT_GRACE, Arrival

__all__ = ["DEVICE_FLAGS", "NORTH_FLAGS", "PLATFORM_FLAGS", "RUN_FLAGS"]


def _pairs(text: str) -> dict[str, str]:
    """``A=1,B=2`` (a flag may also be repeated: the pairs are merged by the caller)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"expected NAME=VALUE, got {part!r}")
        out[name.strip()] = value.strip()
    return out


def _merged(items: list[dict[str, str]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        out.update(item)
    return out


def _delay(text: str) -> dict[str, Any]:
    """A delay as a scenario table: the fields that differ from a zero delay."""
    parsed, zero = Delay.parse(text), Delay()
    return {
        f.name: getattr(parsed, f.name)
        for f in dataclasses.fields(Delay)
        if f.name == "kind" or getattr(parsed, f.name) != getattr(zero, f.name)
    }


def _port(text: str) -> int | str:
    return "off" if text.strip().lower() in ("off", "none") else integer(text)


def _dashboard(text: str) -> str:
    """``HOST:PORT`` of the dashboard; a scenario file here means the flag took the scenario."""
    if text.endswith(".toml"):
        raise ConfigError(
            f"expected HOST:PORT, got the scenario {text!r}: write --dashboard=HOST:PORT, or put "
            "--dashboard after the scenario"
        )
    parse_address(text)
    return text


def _addresses(text: str) -> list[str]:
    """``127.1.0.1+100`` (a range) or ``127.1.0.1,127.1.0.2`` (a list)."""
    first, plus, count = text.partition("+")
    if plus:
        return list(address_range(first.strip(), integer(count)))
    return [part.strip() for part in text.split(",") if part.strip()]


def _words(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _table(document: dict[str, Any], *path: str) -> dict[str, Any]:
    node = document
    for part in path:
        node = node.setdefault(part, {})
    return node


# --- composers: flags whose value is not one key -----------------------------------------------


def _result_mix(document: dict[str, Any], value: Any, args: argparse.Namespace) -> None:
    if value:
        weights = {name: number(weight) for name, weight in _merged(value).items()}
        _table(document, "devices", "default")["results"] = weights


def _faults(document: dict[str, Any], value: Any, args: argparse.Namespace) -> None:
    if not value:
        return
    faults = _table(document, "devices", "faults")
    for name, probability in _merged(value).items():
        if name not in FAULT_NAMES:
            raise ConfigError(f"unknown fault {name!r}; expected one of {', '.join(FAULT_NAMES)}")
        faults[name] = number(probability)


def _op_flows(document: dict[str, Any], value: Any, args: argparse.Namespace) -> None:
    """``--op UPDATE=async-multi``: UPDATE gets the default profile with a flow of its own."""
    if not value:
        return
    default = _table(document, "devices", "default")
    profiles = _table(document, "devices", "profiles")
    for name, flow in _merged(value).items():
        profiles[name] = {**default, "flow": flow}


def _stages(document: dict[str, Any], value: Any, args: argparse.Namespace) -> None:
    """``--stage SECONDS:RATE[:ramp]`` (repeated), else one stage of ``--duration`` at ``--rate``."""
    rate = getattr(args, "flag_rate", None)
    length = getattr(args, "flag_duration", None)
    if value:
        if rate is not None or length is not None:
            raise ConfigError("give --stage, or --rate and --duration, not both")
        stages = []
        for text in value:
            parts = text.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "ramp"):
                raise ConfigError(f"expected SECONDS:RATE[:ramp], got {text!r}")
            stage: dict[str, Any] = {"duration": duration(parts[0]), "rate": number(parts[1])}
            if len(parts) == 3:
                stage["ramp"] = True
            stages.append(stage)
        _table(document, "platform", "arrival")["stages"] = stages
    elif rate is not None or length is not None:
        [default] = Arrival().stages
        stage = {
            "duration": default.duration if length is None else duration(length),
            "rate": default.rate if rate is None else number(rate),
        }
        _table(document, "platform", "arrival")["stages"] = [stage]


def _keep(document: dict[str, Any], value: Any, args: argparse.Namespace) -> None:
    """``--rate`` and ``--duration`` are read by ``_stages``."""


def _mix(document: dict[str, Any], value: Any, args: argparse.Namespace) -> None:
    """``--op NAME[:WEIGHT]`` (repeated) and ``--params NAME=JSON``."""
    raw_params = getattr(args, "flag_params", None) or []
    params: dict[str, Any] = {}
    for text in raw_params:
        name, eq, raw = text.partition("=")
        try:
            parsed = orjson.loads(raw) if eq else None
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"not JSON: {exc}", key="--params") from None
        if not isinstance(parsed, dict):
            raise ConfigError("expected NAME={...} (a JSON object)", key="--params")
        params[name.strip()] = parsed
    if not value and not params:
        return
    entries = []
    for text in value or [default_name()]:
        name, _, weight = text.partition(":")
        entry: dict[str, Any] = {"name": name.strip()}
        if weight:
            entry["weight"] = number(weight)
        if name.strip() in params:
            entry["parameters"] = params.pop(name.strip())
        entries.append(entry)
    if params:
        raise ConfigError(f"parameters for {sorted(params)[0]!r}, not in the mix", key="--params")
    _table(document, "platform")["mix"] = entries


def default_name() -> str:
    from loadgen.platform.config import PlatformConfig

    return PlatformConfig().mix[0].name


def _thresholds(document: dict[str, Any], value: Any, args: argparse.Namespace) -> None:
    if value:
        document["thresholds"] = [*document.get("thresholds", ()), *value]


def _quiet(document: dict[str, Any], value: Any, args: argparse.Namespace) -> None:
    if value:
        _table(document, "output")["progress"] = "quiet"


# --- the tables ----------------------------------------------------------------------------

RUN_FLAGS: Final = (
    Flag(option="--results", key="output.results", metavar="DIR", help="results root folder"),
    Flag(option="--name", key="campaign.name", help="campaign name (the results subfolder)"),
    Flag(option="--interval", key="campaign.interval", value=duration, unit="s",
         help="reporting interval"),
    Flag(option="--threshold", key="thresholds", repeat=True, metavar="EXPR", compose=_thresholds,
         help="pass/fail expression, e.g. 'p99(complete) < 250ms' (repeatable)"),
    Flag(option="--progress", key="output.progress", choices=("auto", "bar", "lines", "quiet"),
         help="live display"),
    Flag(option="--quiet", short="-q", key="output.progress", switch=True, compose=_quiet,
         help="no live display and no summary table"),
    Flag(option="--no-html", key="output.html", switch=True, invert=True,
         help="skip report.html"),
    Flag(option="--metrics-port", key="output.metrics_port", value=integer, metavar="PORT",
         help="serve live Prometheus metrics on PORT (of --metrics-host)"),
    Flag(option="--metrics-host", key="output.metrics_host", metavar="ADDR",
         help="address of the metrics endpoint (0.0.0.0: all interfaces, as in a pod)"),
    Flag(option="--dashboard", key="output.dashboard", bare=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
         value=_dashboard,
         metavar="HOST:PORT", help=f"serve the live web dashboard (alone: on {DEFAULT_HOST}:"
         f"{DEFAULT_PORT}; off loopback a token is required)"),
    Flag(option="--dashboard-token", key="output.dashboard_token", metavar="TOKEN",
         help="the dashboard's token (default: one is made and printed when not on loopback)"),
)  # fmt: skip

DEVICE_FLAGS: Final = (
    # fleet and listeners
    Flag(option="--count", key="devices.count", value=integer, help="devices"),
    Flag(option="--id-pattern", key="devices.id_pattern", help="str.format of the index"),
    Flag(option="--first-index", key="devices.first_index", value=integer, help="first index"),
    Flag(option="--host", key="devices.host", help="bind address"),
    Flag(option="--http-port", key="devices.http_port", value=_port, metavar="PORT",
         help="HTTP port, 0 for any free one, or 'off'"),
    Flag(option="--https-port", key="devices.https_port", value=_port, metavar="PORT",
         help="HTTPS port (e.g. 11235)"),
    Flag(option="--tls-cert", key="devices.tls_cert", metavar="FILE",
         help="certificate (default: self-signed)"),
    Flag(option="--tls-key", key="devices.tls_key", metavar="FILE", help="its key"),
    Flag(option="--base-path", key="devices.base_path", help="path prefix of the device API"),
    Flag(option="--api-key", key="devices.api_key", help="require this X-ApiKey on requests"),
    Flag(option="--addresses", key="devices.addresses", value=_addresses,
         metavar="IP+N|IP,IP", help="address mode: 127.1.0.1+N or a comma list"),
    Flag(option="--seed", key="devices.seed", value=integer, help="random seed"),
    Flag(option="--backlog", key="devices.backlog", value=integer,
         help="listen backlog (the kernel caps it at net.core.somaxconn)"),
    # behaviour of the default profile
    Flag(option="--flow", key="devices.default.flow", choices=("sync", "async", "async-multi"),
         help="how devices answer"),
    Flag(option="--steps", key="devices.default.steps", value=_words, metavar="A,B",
         help="step names (default: the catalogue's)"),
    Flag(option="--steps-mode", key="devices.default.steps_mode",
         choices=("together", "partials"), help="steps in one message or one partial each"),
    *(
        Flag(option=f"--{name}-delay", key=f"devices.default.delays.{name}", value=_delay,
             metavar="DELAY",
             help=f"{name} delay: 0.2 | uniform:0.1,0.3 | exponential:0.2 | lognormal:MEDIAN,P99")
        for name in ("sync", "ack", "step", "final")
    ),
    Flag(option="--result-mix", key="devices.default.results", repeat=True, value=_pairs,
         metavar="CODE=W,...", compose=_result_mix,
         help="result codes and weights, e.g. SUCCESSFUL=98,ERROR_PROCESSING=2"),
    Flag(option="--sync-status", key="devices.default.sync_status", value=integer,
         choices=("200", "201", "202", "204"), help="HTTP status of a sync answer"),
    Flag(option="--ack-status", key="devices.default.ack_status", value=integer,
         choices=("200", "201", "202", "204"), help="HTTP status of an acknowledgement"),
    Flag(option="--response-version", key="devices.default.version", help="response version"),
    Flag(option="--concurrency", key="devices.default.concurrency", value=integer,
         help="operations a device runs at once"),
    Flag(option="--when-busy", key="devices.default.when_busy", choices=("queue", "reject"),
         help="above the concurrency"),
    Flag(option="--queue-limit", key="devices.default.queue_limit", value=integer,
         help="operations queued per device"),
    Flag(option="--op", key="devices.profiles", repeat=True, value=_pairs, metavar="NAME=FLOW",
         compose=_op_flows, help="a flow of its own for one operation (e.g. UPDATE=async-multi)"),
    # faults
    Flag(option="--fault", key="devices.faults", repeat=True, value=_pairs, metavar="NAME=P",
         compose=_faults, help="probability of a fault: " + ", ".join(FAULT_NAMES)),
    Flag(option="--drip-bytes", key="devices.faults.drip_bytes", value=integer,
         help="bytes per write of a dripped answer"),
    Flag(option="--drip-interval", key="devices.faults.drip_interval", value=duration, unit="s",
         help="pause between dripped writes"),
    # where async answers go
    Flag(option="--platform-url", key="devices.responder.platform_url", metavar="URL",
         help="http(s)://host:port of the platform's south API"),
    Flag(option="--platform-api-key", key="devices.responder.api_key",
         help="X-ApiKey sent to the platform"),
    Flag(option="--platform-base-path", key="devices.responder.base_path",
         help="path prefix of the south API"),
    Flag(option="--retries", key="devices.responder.retries", value=integer,
         help="re-sends of a POST the platform did not take"),
    Flag(option="--backoff-base", key="devices.responder.backoff_base", value=duration, unit="s",
         help="first retry delay"),
    Flag(option="--backoff-max", key="devices.responder.backoff_max", value=duration, unit="s",
         help="longest retry delay"),
    Flag(option="--max-connections", key="devices.responder.max_connections", value=integer,
         help="connections to the platform"),
    Flag(option="--insecure", key="devices.responder.verify_tls", switch=True, invert=True,
         help="do not verify the platform's TLS certificate"),
    Flag(option="--ca-file", key="devices.responder.ca_file", metavar="FILE",
         help="CA of the platform's certificate"),
    Flag(option="--sleepy-share", key="devices.sleepy.share", value=number,
         help="share of devices that poll for pending operations"),
    Flag(option="--poll-period", key="devices.sleepy.poll_period", value=duration, unit="s",
         help="polling period of sleepy devices"),
    Flag(option="--poll-jitter", key="devices.sleepy.jitter", value=number,
         help="relative jitter of the period"),
    Flag(option="--collect-after-refresh", key="devices.sleepy.collect_after_refresh",
         switch=True, help="collect pending operations after a refresh"),
    Flag(option="--duration", key="campaign.duration", value=duration, unit="s",
         shown_default="until Ctrl-C", help="how long the fleet serves"),
)  # fmt: skip

PLATFORM_FLAGS: Final = (
    # targets
    Flag(option="--url", key="platform.targets.base_url", help="devices' base URL"),
    Flag(option="--devices", key="platform.targets.count", value=integer,
         help="device ids to address"),
    Flag(option="--id-pattern", key="platform.targets.id_pattern",
         help="str.format of the index"),
    Flag(option="--first-index", key="platform.targets.first_index", value=integer,
         help="first index"),
    Flag(option="--targets-file", key="platform.targets.file", metavar="FILE",
         help="CSV or JSON lines of device id, URL (replaces --url/--devices)"),
    Flag(option="--api-key", key="platform.api_key", help="X-ApiKey sent with every request"),
    Flag(option="--insecure", key="platform.verify", switch=True, invert=True,
         help="do not verify devices' HTTPS certificates"),
    Flag(option="--ca-file", key="platform.ca_file", metavar="FILE",
         help="CA bundle to verify HTTPS devices"),
    Flag(option="--new-connection", key="platform.keep_alive", switch=True, invert=True,
         help="a new connection per operation"),
    Flag(option="--max-connections", key="platform.max_connections", value=integer,
         help="connections per device address"),
    Flag(option="--base-path", key="platform.base_path", help="path prefix of the device API"),
    Flag(option="--plural-requests", key="platform.plural_requests", switch=True,
         help="send to .../operation/requests"),
    # arrival
    Flag(option="--rate", key="platform.arrival.stages", compose=_keep, metavar="OPS/S",
         shown_default=f"{Arrival().stages[0].rate:g}/s", help="operations per second"),
    Flag(option="--duration", key="platform.arrival.stages", compose=_keep, metavar="DURATION",
         shown_default=f"{Arrival().stages[0].duration:g} s", help="length of the load"),
    Flag(option="--stage", key="platform.arrival.stages", repeat=True, compose=_stages,
         metavar="SECONDS:RATE[:ramp]", help="a stage (repeat; instead of --rate/--duration)"),
    Flag(option="--model", key="platform.arrival.model", choices=("open", "poisson", "closed"),
         help="arrival model"),
    Flag(option="--concurrency", key="platform.arrival.concurrency", value=integer,
         help="closed model: operations in flight"),
    Flag(option="--per-device", key="platform.arrival.per_device", switch=True,
         help="closed model: one in flight per device"),
    Flag(option="--max-in-flight", key="platform.max_in_flight", value=integer,
         help="refuse (and count) operations beyond this"),
    Flag(option="--max-queued", key="platform.max_queued", value=integer,
         help="operations one device address may hold waiting for a connection; "
              "beyond, refused and counted (the run is flagged saturated)"),
    # mix
    Flag(option="--op", key="platform.mix", repeat=True, compose=_mix, metavar="NAME[:WEIGHT]",
         shown_default=default_name(), help="an operation of the mix (repeat)"),
    Flag(option="--params", key="platform.mix", repeat=True, compose=_keep, metavar="NAME=JSON",
         help="parameters of operation NAME"),
    Flag(option="--device-choice", key="platform.device_choice",
         choices=("uniform", "round-robin", "zipf"), help="which device gets an operation"),
    Flag(option="--zipf-s", key="platform.zipf_s", value=number, help="zipf exponent"),
    Flag(option="--seed", key="platform.seed", value=integer, help="random seed"),
    Flag(option="--sleepy-share", key="platform.sleepy_share", value=number,
         help="share of devices that poll (operations wait for them)"),
    Flag(option="--breakdown", key="platform.breakdown_by_name", switch=True,
         help="latency per operation name"),
    # timeouts
    Flag(option="--ack-timeout", key="platform.timeouts.ack_timeout", value=duration, unit="s",
         help="wait for the HTTP answer"),
    Flag(option="--timeout", key="platform.timeouts.timeout", value=duration, unit="s",
         help="wait for the final response"),
    Flag(option="--retries", key="platform.timeouts.retries", value=integer,
         help="re-sends on a result in --retry-on"),
    Flag(option="--retries-delay", key="platform.timeouts.retries_delay", value=duration,
         unit="s", help="wait before a re-send"),
    Flag(option="--retry-on", key="platform.timeouts.retry_result_list", repeat=True,
         metavar="RESULT_CODE", help="result code that is retried (repeat)"),
    Flag(option="--grace", key="platform.drain_grace", value=duration, unit="s",
         shown_default=f"min(timeout, {MAX_DEFAULT_GRACE:g} s)", help="drain after the load"),
    # south API
    Flag(option="--south-host", key="platform.south.host", help="south API bind address"),
    Flag(option="--south-port", key="platform.south.port", value=integer,
         help="south API port (0: any free one)"),
    Flag(option="--advertise-host", key="platform.south.advertise_host",
         help="host devices use to reach the south API"),
    Flag(option="--south-api-key", key="platform.south.api_key",
         help="require this X-ApiKey from devices"),
    Flag(option="--south-tls", key="platform.south.tls", switch=True,
         help="serve HTTPS (self-signed)"),
    Flag(option="--south-backlog", key="platform.south.backlog", value=integer,
         help="south API listen backlog (the kernel caps it at net.core.somaxconn)"),
    # north API (the OpenGate stand-in: applications create jobs there)
    Flag(option="--north-port", key="platform.north.port", value=integer,
         help="serve the north API (jobs) on this port (0: any free one)"),
    Flag(option="--north-host", key="platform.north.host", help="north API bind address"),
    Flag(option="--north-api-key", key="platform.north.api_key",
         help="require this X-ApiKey from applications"),
    Flag(option="--north-keep", key="platform.north.keep_finished", value=integer,
         help="finished jobs kept for N2/N3"),
    # generator health
    Flag(option="--max-lateness-ms", key="platform.health.lateness_p99_ms", value=number,
         unit="ms", help="send lateness p99 above which the generator is saturated"),
    Flag(option="--max-cpu", key="platform.health.cpu_percent", value=number, unit="%",
         help="CPU of one core above which the generator is saturated"),
)  # fmt: skip


def _as_north(compose: Any) -> Any:
    """A ``[platform]`` composer (stages, mix) writing into ``[north]`` instead."""

    def composed(document: dict[str, Any], value: Any, args: argparse.Namespace) -> None:
        scratch: dict[str, Any] = {}
        compose(scratch, value, args)
        for key, moved in scratch.get("platform", {}).items():
            _table(document, "north")[key] = moved

    return composed


NORTH_FLAGS: Final = (
    # the north API (none: the stand-in, with the devices, all here on loopback)
    Flag(option="--url", key="north.url", metavar="URL",
         help="a real north API (https://host[:port]); default: loadgen's stand-in"),
    Flag(option="--api-key", key="north.api_key", help="X-ApiKey sent with every request"),
    Flag(option="--insecure", key="north.verify", switch=True, invert=True,
         help="do not verify the north API's certificate"),
    Flag(option="--ca-file", key="north.ca_file", metavar="FILE", help="CA of its certificate"),
    Flag(option="--max-connections", key="north.max_connections", value=integer,
         help="connections to the north API"),
    # jobs
    Flag(option="--rate", key="north.arrival.stages", compose=_keep, metavar="JOBS/S",
         shown_default=f"{Arrival().stages[0].rate:g}/s", help="jobs per second"),
    Flag(option="--duration", key="north.arrival.stages", compose=_keep, metavar="DURATION",
         shown_default=f"{Arrival().stages[0].duration:g} s", help="length of the load"),
    Flag(option="--stage", key="north.arrival.stages", repeat=True, compose=_as_north(_stages),
         metavar="SECONDS:RATE[:ramp]", help="a stage (repeat; instead of --rate/--duration)"),
    Flag(option="--model", key="north.arrival.model", choices=("open", "poisson"),
         help="arrival model"),
    Flag(option="--op", key="north.mix", repeat=True, compose=_as_north(_mix),
         metavar="NAME[:WEIGHT]", shown_default=default_name(), help="an operation of the mix"),
    Flag(option="--params", key="north.mix", repeat=True, compose=_keep, metavar="NAME=JSON",
         help="parameters of operation NAME"),
    Flag(option="--targets-per-job", key="north.targets_per_job", value=integer,
         help="devices each job targets"),
    Flag(option="--timeout", key="north.timeouts.timeout", value=duration, unit="s",
         help="operationParameters.timeout"),
    Flag(option="--ack-timeout", key="north.timeouts.ack_timeout", value=duration, unit="s",
         help="operationParameters.ackTimeout"),
    Flag(option="--retries", key="north.timeouts.retries", value=integer,
         help="operationParameters.retries"),
    Flag(option="--dispatch-timeout", key="north.dispatch_timeout", value=duration, unit="s",
         help="a job not dispatched by then ends timed out"),
    Flag(option="--close-by", key="north.close_by", choices=("callback", "poll"),
         help="how the close is learned"),
    Flag(option="--max-polls-per-s", key="north.max_polls_per_s", value=number,
         help="N2 polls per second, all jobs together"),
    Flag(option="--callback-port", key="north.callback_port", value=integer,
         help="port of loadgen's callback receiver (0: any free one)"),
    Flag(option="--callback-url", key="north.callback_url", metavar="URL",
         help="the callback URL as the platform reaches it"),
    Flag(option="--job-id-key", key="north.job_id_key",
         help="body key path of the job id when N1 has no Location"),
    Flag(option="--seed", key="north.seed", value=integer, help="random seed"),
    # the devices that run the operations (in this process)
    Flag(option="--devices", key="devices.count", value=integer, help="virtual devices"),
    Flag(option="--device-delay", key="devices.default.delays.sync", value=_delay,
         metavar="DELAY", shown_default="0", help="the devices' sync answer delay"),
    Flag(option="--platform-url", key="devices.responder.platform_url", metavar="URL",
         help="the real platform's south API (with --url)"),
)  # fmt: skip
