"""Durations as people write them in scenario files and on the command line.

``Seconds`` is a float annotated for pydantic: a number is seconds, a string carries its unit
(``"250ms"``, ``"1.5s"``, ``"2m"``, ``"1h"``, ``"500us"``). Configuration dataclasses annotate their
time fields with it, so ``timeout = "90s"`` and ``timeout = 90`` mean the same in a scenario.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Final

from pydantic import BeforeValidator

__all__ = ["Seconds", "parse_duration"]

_DURATION_RE: Final = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs|ms|s|m|h)\s*$"
)
_FACTORS: Final = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> object:
    """Seconds from ``"250ms"``-style text; other values pass through for the type check."""
    if isinstance(value, str):
        text = value.strip()
        if text in ("inf", "infinity"):
            return math.inf
        match = _DURATION_RE.match(text)
        if not match:
            raise ValueError(
                f"expected a duration such as 250ms, 1.5s, 2m or a number of seconds, got {value!r}"
            )
        return float(match[1]) * _FACTORS[match[2]]
    return value


Seconds = Annotated[float, BeforeValidator(parse_duration)]
