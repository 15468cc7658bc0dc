"""``loadgen provision create|delete``: the virtual devices as entities on a real OpenGate.

Not a load run (nothing is measured, no results folder): it prepares one, so it does not go
through ``run_campaign``. The north API and fleet flags are the ``north`` and ``devices`` flags
of the run commands (same rows, same defaults), so the ids provisioned are the ids a
``north-devices`` run with the same flags plays. The work is in ``loadgen.north.provision``.

Exit codes: 0 every entity is in the wanted state (created or already there / deleted or
already gone), 1 at least one failed (listed by status with its first message), 2 bad input
(one line: a flag, the template or an unreachable URL).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Final

from loadgen.commands.flags import (
    Flag,
    add_flags,
    default_of,
    duration,
    integer,
    name_flags,
    number,
)
from loadgen.commands.tables import DEVICE_FLAGS, NORTH_FLAGS
from loadgen.device.config import FleetConfig
from loadgen.errors import ConfigError, key_prefix

__all__ = ["provision_main", "register"]

EXIT_FAILED: Final = 1

_NORTH: Final = tuple(
    f for f in NORTH_FLAGS if f.option in ("--url", "--api-key", "--insecure", "--ca-file")
)
_FLEET: Final = tuple(
    f
    for f in DEVICE_FLAGS
    if f.option in ("--count", "--id-pattern", "--first-index", "--http-port")
)


def _given(flag: Flag, args: argparse.Namespace) -> Any:
    if not hasattr(args, flag.dest):
        return default_of(flag.key)
    if flag.switch:
        return not flag.invert
    try:
        return flag.value(getattr(args, flag.dest))
    except ConfigError as exc:
        raise ConfigError(exc.message, key=flag.option) from None


def _value(option: str, args: argparse.Namespace) -> Any:
    [flag] = [f for f in (*_NORTH, *_FLEET) if f.option == option]
    return _given(flag, args)


def _vars(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"expected NAME=VALUE, got {item!r}", key="--var")
        out[name.strip()] = value
    return out


def _fleet(args: argparse.Namespace) -> FleetConfig:
    """The fleet the flags describe, judged by ``FleetConfig`` itself (the verdict a
    ``north-devices`` run with the same flags gets), plus what entities need: a device, and
    the one port they name."""
    port = _value("--http-port", args)
    if port in (0, "off"):
        raise ConfigError(
            "expected the port the devices listen on (1..65535): an entity names it",
            key="--http-port",
        )
    fields = {flag.key.removeprefix("devices."): _given(flag, args) for flag in _FLEET}
    try:
        with key_prefix("devices"):
            fleet = FleetConfig(**fields)
    except ConfigError as exc:
        raise name_flags(exc, _FLEET, args) from None
    if fleet.count < 1:
        raise ConfigError("expected at least 1 device", key="--count")
    return fleet


def provision_main(args: argparse.Namespace) -> int:
    import trio

    from loadgen.http.client import Origin
    from loadgen.http.tls import client_context
    from loadgen.north.provision import Tally, execute_over_http, load_template, plan
    from loadgen.north.runner import reach

    action = args.action
    url = _value("--url", args)
    if not url:
        raise ConfigError("expected the north API's URL (https://host[:port])", key="--url")
    origin, prefix = Origin.parse(url)
    fleet = _fleet(args)
    assert fleet.http_port is not None
    template = load_template(args.template, _vars(args.var))
    ids = [fleet.device_id(index) for index in range(fleet.count)]
    calls = plan(template, action, ids, host=args.address, port=fleet.http_port, prefix=prefix)
    api_key = _value("--api-key", args)
    headers = [(b"X-ApiKey", api_key.encode())] if api_key else []
    ssl_context = None
    if origin.scheme == "https":
        ssl_context = client_context(
            verify=_value("--insecure", args), ca_file=_value("--ca-file", args)
        )

    def progress(tally: Tally, elapsed: float) -> None:
        print(
            f"provision {action}: {tally.finished}/{tally.total} ({tally.counts()}) "
            f"after {elapsed:.0f} s",
            flush=True,
        )

    async def main() -> tuple[Tally, float]:
        try:
            await reach(origin, url)
        except ConfigError as exc:
            raise ConfigError(exc.message, key="--url") from None
        start = trio.current_time()
        tally = await execute_over_http(
            template, action, calls,
            origin=origin, headers=headers, ssl_context=ssl_context, request_timeout=args.timeout,
            rate=args.rate, concurrency=args.concurrency,
            progress_every=args.progress_every, progress=progress,
        )  # fmt: skip
        return tally, trio.current_time() - start

    print(f"provision {action}: {len(calls)} entities at {origin} from {args.template}", flush=True)
    tally, elapsed = trio.run(main)
    for line in tally.summary(elapsed):
        print(line, file=sys.stdout if not tally.failed else sys.stderr)
    return EXIT_FAILED if tally.failed else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "provision",
        help="create or delete the virtual devices as entities on a real OpenGate",
        description="Create (or delete) one entity per virtual device through the north "
        "provisioning API, from a JSON template with placeholders {id} {index} {host} {port} "
        "{url} and the template's variables. Idempotent: an entity that already exists "
        "(create) or is already gone (delete) is counted apart, not as an error. Exit 0 when "
        "every entity is in the wanted state, 1 when some failed, 2 for bad input.",
    )
    parser.add_argument("action", choices=("create", "delete"))
    parser.add_argument(
        "--template", required=True, metavar="FILE",
        help="the entity template (see scenarios/provision-device.template.json)",
    )  # fmt: skip
    parser.add_argument(
        "--var", action="append", metavar="NAME=VALUE",
        help="set a template variable (e.g. organization=acme); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--address", default=default_of("devices.host"), metavar="HOST",
        help="the devices' address as the platform reaches them ({host}; default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=_typed(number, "--rate", "a number", above=0), default=20.0,
        metavar="N/S", help="at most this many requests a second (default %(default)g)",
    )  # fmt: skip
    parser.add_argument(
        "--concurrency", type=_typed(integer, "--concurrency", "an integer", at_least=1),
        default=8, metavar="N", help="requests at once (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=_typed(duration, "--timeout", "a duration", above=0), default=30.0,
        metavar="DURATION", help="per request (default %(default)gs)",
    )  # fmt: skip
    parser.add_argument(
        "--progress-every", type=_typed(duration, "--progress-every", "a duration", at_least=0),
        default=5.0, metavar="DURATION",
        help="a progress line this often (default %(default)gs; 0: none)",
    )  # fmt: skip
    add_flags(parser, "north API", _NORTH)
    add_flags(parser, "devices (the ids and port a north-devices run uses)", _FLEET)
    parser.set_defaults(func=provision_main)


def _typed(
    convert: Any, option: str, what: str, *, above: float | None = None, at_least: float = 0
) -> Any:
    """argparse type: the value, ``> above`` (when given) or else ``>= at_least``; a bad one is
    argparse's one-line usage error naming the option, before anything is contacted."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"expected {what} > {above:g}, got {text}")
        if above is None and not value >= at_least:
            raise argparse.ArgumentTypeError(f"expected {what} >= {at_least:g}, got {text}")
        return value

    parse.__name__ = option
    return parse
