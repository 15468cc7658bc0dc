"""Flags declared once: every command-line flag is a scenario key.

A ``Flag`` names its option, the scenario key it sets and how its text becomes the value a
scenario file would hold there. ``add_flags`` puts a table on an argparse parser with the
default read from the configuration records (``--help`` never restates a default, so it cannot
drift from what runs); ``build_document`` turns the flags a user gave into a scenario document
that is validated and run exactly like a file; ``name_flags`` puts the flag back into an error
about its key (``--timeout (platform.timeouts.timeout): expected a finite number > 0``).

A flag with ``compose`` places its value itself (several flags that make one list, such as
``--rate``/``--duration``/``--stage``); composers run after the plain keys, in table order.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from loadgen.campaign.scenario import CampaignSection, OutputSection, set_key
from loadgen.device.config import FleetConfig
from loadgen.errors import ConfigError
from loadgen.north.config import NorthConfig
from loadgen.platform.config import PlatformConfig
from loadgen.units import parse_duration

__all__ = [
    "Flag",
    "add_flags",
    "build_document",
    "default_of",
    "duration",
    "integer",
    "name_flags",
    "number",
]

Compose = Callable[[dict[str, Any], Any, argparse.Namespace], None]

#: Where each top-level scenario table takes its defaults from.
_RECORDS: Final[Mapping[str, Callable[[], object]]] = {
    "devices": FleetConfig,
    "platform": PlatformConfig,
    "north": NorthConfig,
}
_SECTIONS: Final[Mapping[str, type[Any]]] = {"campaign": CampaignSection, "output": OutputSection}


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"expected a number, got {text!r}") from None
    if math.isnan(value):
        raise ConfigError(f"expected a number, got {text!r}")
    return value


def duration(text: str) -> float:
    """``3s``, ``250ms``, ``2m`` or a number of seconds, as in scenario files."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    assert isinstance(value, float)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Flag:
    """One option: ``option`` sets scenario ``key`` to ``value(text)``.

    ``switch``: takes no value and sets ``True`` (``False`` with ``invert``, as ``--insecure``
    sets ``verify = false``). ``repeat``: may be given several times; the key gets the list.
    ``shown_default`` replaces the record's default in ``--help`` where the flag's value is not
    the key's (``--rate`` feeds the stages). ``bare``: the value when the option is given
    without one (``--dashboard`` alone; ``--dashboard=HOST:PORT`` otherwise)."""

    option: str
    key: str
    help: str
    value: Callable[[str], Any] = str
    switch: bool = False
    invert: bool = False
    repeat: bool = False
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    unit: str = ""
    shown_default: str | None = None
    compose: Compose | None = None
    short: str | None = None
    bare: str | None = None

    @property
    def dest(self) -> str:
        return "flag_" + self.option.lstrip("-").replace("-", "_")


def default_of(key: str) -> Any:
    """The default of a scenario key, read from the configuration records (None: unknown)."""
    top, _, rest = key.partition(".")
    if top in _SECTIONS:
        field = _SECTIONS[top].model_fields.get(rest)
        return None if field is None else field.default
    record = _RECORDS.get(top)
    if record is None:
        return None
    node: Any = record()
    for part in rest.split("."):
        if not dataclasses.is_dataclass(node) or not hasattr(node, part):
            return None
        node = getattr(node, part)
    return node


def _shown(flag: Flag) -> str | None:
    if flag.shown_default is not None:
        return flag.shown_default
    if flag.switch:
        return None
    value = default_of(flag.key)
    if value is None or value == () or (not value and isinstance(value, Mapping)):
        return None
    if isinstance(value, Mapping):
        return ",".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items()
        )
    if dataclasses.is_dataclass(value) or isinstance(value, tuple):
        return None  # a whole record or list: its parts have flags of their own
    if isinstance(value, float) and math.isinf(value):
        return "until stopped"
    if isinstance(value, bool):
        return str(value).lower()
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} {flag.unit}".rstrip()


def add_flags(parser: argparse.ArgumentParser, title: str, flags: Iterable[Flag]) -> None:
    """Add a table of flags as one help group; absent flags stay absent from the namespace."""
    group = parser.add_argument_group(title)
    for flag in flags:
        shown = _shown(flag)
        text = (flag.help + (f" (default {shown})" if shown else "")).replace("%", "%%")
        names = [flag.option] if flag.short is None else [flag.short, flag.option]
        if flag.switch:
            group.add_argument(
                *names, dest=flag.dest, action="store_true", default=argparse.SUPPRESS, help=text
            )
            continue
        optional: dict[str, Any] = {} if flag.bare is None else {"nargs": "?", "const": flag.bare}
        group.add_argument(
            *names,
            dest=flag.dest,
            action="append" if flag.repeat else "store",
            default=argparse.SUPPRESS,
            choices=flag.choices or None,
            metavar=flag.metavar or _metavar(flag),
            help=text,
            **optional,
        )


def _metavar(flag: Flag) -> str | None:
    if flag.choices:
        return None
    if flag.value is duration:
        return "DURATION"
    if flag.value is integer:
        return "N"
    if flag.value is number:
        return "X"
    return flag.option.lstrip("-").upper().replace("-", "_")


def _value(flag: Flag, raw: Any) -> Any:
    if flag.switch:
        return not flag.invert
    try:
        if flag.repeat:
            return [flag.value(item) for item in raw]
        return flag.value(raw)
    except ConfigError as exc:
        raise ConfigError(exc.message, key=flag.option) from None


def build_document(
    base: dict[str, Any], flags: Sequence[Flag], args: argparse.Namespace
) -> dict[str, Any]:
    """``base`` with the value of every flag the user gave put at its key."""
    given = [flag for flag in flags if hasattr(args, flag.dest)]
    for flag in given:
        if flag.compose is None:
            set_key(base, flag.key, _value(flag, getattr(args, flag.dest)))
    for flag in flags:
        if flag.compose is not None:
            value = _value(flag, getattr(args, flag.dest)) if flag in given else None
            try:
                flag.compose(base, value, args)
            except ConfigError as exc:
                raise ConfigError(exc.message, key=exc.key or flag.option) from None
    return base


def name_flags(error: ConfigError, flags: Sequence[Flag], args: argparse.Namespace) -> ConfigError:
    """The error with each key that a flag the user gave sets shown as that flag."""
    given = [flag for flag in flags if hasattr(args, flag.dest)]

    def place(key: str) -> str:
        best = max(
            (
                flag
                for flag in given
                if key == flag.key or key.startswith((flag.key + ".", flag.key + "["))
            ),
            key=lambda flag: len(flag.key),
            default=None,
        )
        return key if best is None else f"{best.option} ({key})"

    problems = tuple((place(key), message) for key, message in error.problems)
    if not problems or problems == error.problems:
        return error
    if len(problems) == 1:
        [(key, message)] = problems
        return ConfigError(message, source=error.source, key=key)
    listing = "\n  ".join(f"{key}: {message}" for key, message in problems)
    return ConfigError(
        f"{len(problems)} problems:\n  {listing}", source=error.source, problems=problems
    )
