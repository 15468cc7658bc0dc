"""Seeds: a run draws a fresh one unless it is given one, and says which it used.

Every random choice of a run (the Poisson arrivals, the operation mix and device choice of the
platform, the device fleet's delays, results, faults and sleepy devices) comes from a seeded
``random.Random``. A configuration's ``seed`` of ``None`` (the default) means "draw one": two
runs are then not identical by accident (a fixed default would replay the very same arrival
sequence and choices every time), and the seed drawn is recorded with the run so that giving it
back (``--seed``, ``seed = ...``) reproduces the run's choices.
"""

from __future__ import annotations

import secrets
from typing import Final

__all__ = ["SEED_BITS", "resolve_seed"]

# 32 bits: short enough to type back on a command line, and the chance that two runs draw the
# same seed (one in four billion) is no accident worth guarding against.
SEED_BITS: Final = 32


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or a fresh one from the operating system's randomness when None."""
    if seed is None:
        return secrets.randbits(SEED_BITS)
    return seed
