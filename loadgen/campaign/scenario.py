"""Scenario files: TOML in, a validated ``Scenario`` out, every error naming file, key and expectation.

Pipeline (``load_scenario``):

1. read the TOML (a syntax error names the file, line and column);
2. apply ``--set key.path=value`` overrides (values are TOML: ``--set devices.count=50``,
   ``--set 'campaign.name="x"'``; a value that is not valid TOML is taken as a string);
3. substitute ``${NAME}`` / ``${NAME:-default}`` in every string from the environment, so URLs and
   API keys stay out of files (a variable that is not set is an error naming the key);
4. validate with pydantic, straight into the configuration dataclasses of the two sides
   (``loadgen.device.config.FleetConfig``, ``loadgen.platform.config.PlatformConfig``): unknown
   keys, wrong types and their own ``__post_init__`` checks are all reported together, each as
   ``scenario.toml: devices.default.delays.ack.p99: expected ...``;
5. parse every threshold expression (an unknown metric fails here, before any load).

The scenario saved with the results is the document after step 2: overrides applied, ``${...}``
left as written, so secrets never land in a results folder.
"""

from __future__ import annotations

import itertools
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loadgen.dashboard.address import parse_address
from loadgen.device.config import ASYNC_ONLY_FAULTS, FleetConfig
from loadgen.errors import ConfigError
from loadgen.metrics.thresholds import Threshold, parse_threshold
from loadgen.north.config import NorthConfig
from loadgen.platform.config import PlatformConfig
from loadgen.units import Seconds

__all__ = [
    "CampaignSection",
    "LoadedScenario",
    "OutputSection",
    "Scenario",
    "apply_override",
    "load_scenario",
    "read_document",
    "set_key",
    "validate_document",
]

#: In a campaign with both sides, the fleet POSTs to the platform's south API, whose port is only
#: known once it is bound: validation uses this stand-in, the runner puts the real URL in its place.
SOUTH_PLACEHOLDER = "http://127.0.0.1:9"
#: ``loadgen validate`` checks a scenario whose secrets are not in this shell: a missing variable is
#: replaced by this, and reported, instead of failing.
ENV_PLACEHOLDER = "placeholder"

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PATH_PART_RE = re.compile(r"^([A-Za-z0-9_-]+)((?:\[\d+\])*)$")


class CampaignSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    # "north": the application (north), the OpenGate stand-in (platform) and the devices, all
    # here on loopback; "north-devices": the application and the devices against a real OpenGate
    sides: Literal["both", "devices", "platform", "north", "north-devices"] = "both"
    # How long a devices-only run serves (with a platform side, the stages set the length).
    duration: Seconds | None = Field(default=None, gt=0)
    interval: Seconds = Field(default=1.0, gt=0)
    shards: int | Literal["auto"] = 1

    @field_validator("shards")
    @classmethod
    def _shards(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError('expected a number of shards >= 1 or "auto"')
        return value


class OutputSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    results: str = "results"
    html: bool = True
    progress: Literal["auto", "bar", "lines", "quiet"] = "auto"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)  # Prometheus text endpoint
    metrics_host: str = Field(default="127.0.0.1", min_length=1)  # 0.0.0.0 in a pod
    dashboard: str | None = None  # HOST:PORT of the live web dashboard (None: none)
    dashboard_token: str | None = None  # required of its visitors (one is made off loopback)

    @field_validator("dashboard")
    @classmethod
    def _dashboard(cls, value: str | None) -> str | None:
        if value is not None:
            parse_address(value, key="dashboard")
        return value


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    campaign: CampaignSection
    devices: FleetConfig | None = None
    platform: PlatformConfig | None = None
    north: NorthConfig | None = None
    thresholds: tuple[str, ...] = ()
    abort_on_fail: bool = False
    output: OutputSection = OutputSection()

    @field_validator("devices", mode="before")
    @classmethod
    def _listener_off(cls, value: object) -> object:
        """``http_port = "off"`` (TOML has no null; the flag writes it too): that listener off."""
        if isinstance(value, dict):
            off = {
                key: None
                for key in ("http_port", "https_port")
                if isinstance(value.get(key), str) and value[key].strip().lower() in ("off", "none")
            }
            if off:
                return {**value, **off}
        return value

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, expression in enumerate(value):
            parse_threshold(expression, key=f"[{index}]")
        return value

    @model_validator(mode="after")
    def _sides(self) -> Scenario:
        sides = self.campaign.sides
        if sides in ("both", "devices") and self.devices is None:
            raise ValueError(f"campaign.sides = {sides!r} needs a [devices] table")
        if sides in ("both", "platform") and self.platform is None:
            raise ValueError(f"campaign.sides = {sides!r} needs a [platform] table")
        if sides == "devices" and self.campaign.duration is None:
            raise ValueError("a devices-only campaign needs campaign.duration")
        if sides in ("north", "north-devices"):
            if self.north is None:
                raise ValueError(f"campaign.sides = {sides!r} needs a [north] table")
            if self.devices is None:
                raise ValueError(
                    f"campaign.sides = {sides!r} needs a [devices] table (the fleet whose "
                    "requests tell which operation is which job's)"
                )
            if sides == "north-devices" and self.north.url is None:
                raise ValueError("campaign.sides = 'north-devices' needs north.url (the real API)")
        return self

    def warnings(self) -> list[str]:
        """What is valid but probably not meant (printed before the run, never fatal)."""
        out: list[str] = []
        devices = self.devices
        if devices is not None:
            flows = [devices.default, *devices.profiles.values()]
            if not any(profile.is_async for profile in flows):
                out.extend(
                    f"devices.faults.{name}: only asynchronous flows can have it, and every "
                    "flow here is sync: it will never happen"
                    for name in sorted(ASYNC_ONLY_FAULTS)
                    if getattr(devices.faults, name) > 0
                )
        return out

    def parsed_thresholds(self) -> list[Threshold]:
        return [
            parse_threshold(text, key=f"thresholds[{i}]") for i, text in enumerate(self.thresholds)
        ]

    @property
    def load_seconds(self) -> float:
        """The length of the load window: the stages, or the devices-only duration."""
        if self.north is not None and self.campaign.sides.startswith("north"):
            return sum(stage.duration for stage in self.north.arrival.stages)
        if self.platform is not None and self.campaign.sides != "devices":
            return sum(stage.duration for stage in self.platform.arrival.stages)
        return float(self.campaign.duration or 0.0)


class LoadedScenario:
    """A validated scenario, where it came from, and the document to save with the results."""

    __slots__ = ("document", "scenario", "source")

    def __init__(self, scenario: Scenario, document: dict[str, Any], source: str) -> None:
        self.scenario = scenario
        self.document = document
        self.source = source

    def __repr__(self) -> str:
        return f"<LoadedScenario {self.scenario.campaign.name} from {self.source}>"

    def save(self, path: Path) -> Path:
        path.write_text(tomli_w.dumps(self.document), encoding="utf-8")
        return path


def _parse_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in path.split("."):
        match = _PATH_PART_RE.match(piece)
        if not match:
            raise ConfigError(f"expected a key path like a.b[0].c, got {path!r}")
        parts.append(match[1])
        parts.extend(int(index) for index in re.findall(r"\[(\d+)\]", match[2]))
    return parts


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_key(document: dict[str, Any], path: str, value: Any) -> None:
    """Put ``value`` at ``key.path[0].x`` in a scenario document, making tables on the way."""
    parts = _parse_path(path)
    node: Any = document
    for here, following in itertools.pairwise(parts):
        if isinstance(here, int):
            if not isinstance(node, list) or here >= len(node):
                raise ConfigError(f"{path}: no element [{here}] to set")
            node = node[here]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: {here!r} is not inside a table")
        if here not in node:
            node[here] = [] if isinstance(following, int) else {}
        node = node[here]
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last > len(node):
            raise ConfigError(f"{path}: no element [{last}] to set")
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"{path}: {last!r} is not inside a table")


def apply_override(document: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.path=value`` (the value in TOML) to a scenario document, in place."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path.strip():
        raise ConfigError(f"expected key.path=value, got {assignment!r}", key="--set")
    try:
        set_key(document, path.strip(), _parse_value(raw.strip()))
    except ConfigError as exc:
        raise ConfigError(exc.message, key="--set") from None


def _substitute(
    node: Any, key: str, environ: Mapping[str, str], missing: list[str] | None = None
) -> Any:
    """``${NAME}`` / ``${NAME:-default}`` from ``environ``; with ``missing``, unset names are
    collected there and replaced by ``ENV_PLACEHOLDER`` instead of raising."""
    if isinstance(node, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match[1], match[2]
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            if missing is not None:
                missing.append(name)
                return ENV_PLACEHOLDER
            raise ConfigError(
                f"environment variable {name} is not set (write ${{{name}:-default}} "
                "for a default)",
                key=key,
            )

        return _ENV_RE.sub(replace, node)
    if isinstance(node, dict):
        return {
            k: _substitute(v, f"{key}.{k}" if key else k, environ, missing) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_substitute(v, f"{key}[{i}]", environ, missing) for i, v in enumerate(node)]
    return node


def _location(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    """(key path, what was expected) for each error pydantic found."""
    out = []
    for item in error.errors():
        # Unions of "a table or nothing" report the table branch; drop pydantic's branch names.
        loc = [p for p in item["loc"] if p not in ("FleetConfig", "PlatformConfig", "NorthConfig")]
        where = _location(loc)
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigError):  # a record's own check: it knows its key
            inner = cause.key or ""
            if inner:
                where = f"{where}.{inner}" if where and not inner.startswith("[") else where + inner
            message = cause.message
        elif item["type"] == "value_error":
            message = str(item["msg"]).removeprefix("Value error, ")
        elif item["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            message = "unknown key"
        elif item["type"] in ("missing", "missing_keyword_argument"):
            message = "required key is missing"
        else:
            message = f"{item['msg']}, got {_show(item.get('input'))}"
        out.append((where or "(top level)", message))
    return out


def _prepare(resolved: dict[str, Any], source: str) -> dict[str, Any]:
    """What the file format adds over the configuration records: a targets file, and the
    south API stand-in for a fleet whose platform runs in the same campaign."""
    campaign = resolved.get("campaign")
    sides = campaign.get("sides", "both") if isinstance(campaign, dict) else "both"
    devices = resolved.get("devices")
    if sides in ("both", "north") and isinstance(devices, dict):
        responder = devices.setdefault("responder", {})
        if isinstance(responder, dict):
            responder.setdefault("platform_url", SOUTH_PLACEHOLDER)
    if sides == "north":  # the stand-in: a platform serving the north API (jobs only)
        standin = resolved.setdefault("platform", {})
        if isinstance(standin, dict):
            standin.setdefault("north", {})
    platform = resolved.get("platform")
    targets = platform.get("targets") if isinstance(platform, dict) else None
    if isinstance(targets, dict) and "file" in targets:
        from loadgen.platform.config import load_targets_file

        where = Path(source).parent / str(targets.pop("file"))
        try:
            loaded = load_targets_file(where)
        except ConfigError as exc:
            raise ConfigError(str(exc), source=source, key="platform.targets.file") from None
        targets["devices"] = [
            {"device_id": target.device_id, "url": target.url} for target in loaded.devices
        ]
    return resolved


def validate_document(
    document: dict[str, Any], source: str, *, missing: list[str] | None = None
) -> Scenario:
    try:
        resolved = _prepare(_substitute(document, "", os.environ, missing), source)
    except ConfigError as exc:
        raise (exc if exc.source else exc.at(source=source)) from None
    try:
        return Scenario.model_validate(resolved)
    except ValidationError as exc:
        problems = _problems(exc)
        if len(problems) == 1:
            [(key, message)] = problems
            raise ConfigError(message, source=source, key=key) from None
        listing = "\n  ".join(f"{key}: {message}" for key, message in problems)
        raise ConfigError(
            f"{len(problems)} problems:\n  {listing}", source=source, problems=tuple(problems)
        ) from None


def read_document(path: str | Path) -> dict[str, Any]:
    """The TOML document of a scenario file; ``ConfigError`` naming the file otherwise."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such scenario file", source=source) from None
    except IsADirectoryError:
        raise ConfigError("is a folder; expected a scenario file (.toml)", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the scenario file: {exc}", source=source) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=source) from None


def load_scenario(
    path: str | Path, overrides: Sequence[str] = (), *, missing: list[str] | None = None
) -> LoadedScenario:
    """Read, override, substitute and validate a scenario file; ``ConfigError`` on any problem.

    With ``missing`` (``loadgen validate``), unset environment variables are listed there and
    stood in for, so the structure is still checked."""
    document = read_document(path)
    for assignment in overrides:
        apply_override(document, assignment)
    source = str(path)
    return LoadedScenario(validate_document(document, source, missing=missing), document, source)
