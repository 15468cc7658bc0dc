"""The process's file descriptor limit against the connections a run can open.

Every open connection is a descriptor (two when both of its ends live in this process, as with
sides = "both"). The soft ``RLIMIT_NOFILE`` is often 1024, or 256 under ``prlimit``, while the hard
limit usually allows far more, and any process may raise its soft limit up to the hard one. So at
start a runner calls ``raise_fd_limit`` with the most connections its config can open: the soft
limit goes up to the hard limit where allowed, and when the limit still falls short, one warning
line says so. A run short of descriptors does not fail outright: accepts fail with EMFILE (the
server then sheds idle connections, see ``loadgen.http.server``) and new connects fail; the line
tells the reader that this was the machine, not the target.
"""

from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass
from typing import Final

__all__ = ["FD_HEADROOM", "FdLimit", "fd_limit_plan", "raise_fd_limit"]

log = logging.getLogger(__name__)

FD_HEADROOM: Final = 64  # beyond the connections: listeners, epoll, results files, logs, stdio


@dataclass(frozen=True, slots=True, kw_only=True)
class FdLimit:
    """The soft limit before and after ``raise_fd_limit``, the hard limit, and the need."""

    before: int
    soft: int
    hard: int  # resource.RLIM_INFINITY when unlimited
    needed: int  # connections + FD_HEADROOM

    def __post_init__(self) -> None:
        if self.needed < 0:
            raise ValueError(f"needed: expected >= 0, got {self.needed}")

    @property
    def enough(self) -> bool:
        return self.soft == resource.RLIM_INFINITY or self.soft >= self.needed


def fd_limit_plan(soft: int, hard: int, needed: int) -> int:
    """The soft limit to ask for: the hard one, or just ``needed`` when the hard one is unlimited
    (some systems refuse an unlimited soft limit); never lower than the current one."""
    if soft == resource.RLIM_INFINITY:
        return soft
    target = hard if hard != resource.RLIM_INFINITY else needed
    return max(soft, target)


def raise_fd_limit(connections: int, *, what: str) -> FdLimit:
    """Raise the soft descriptor limit as far as allowed; warn (one line) when it stays below the
    ``connections`` that ``what`` (e.g. "the fleet") can open plus FD_HEADROOM."""
    needed = max(0, connections) + FD_HEADROOM
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = before
    target = fd_limit_plan(before, hard, needed)
    if target != before:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.debug("could not raise the descriptor limit to %d: %s", target, exc)
        else:
            soft = target
    limit = FdLimit(before=before, soft=soft, hard=hard, needed=needed)
    _grow_table(needed if soft == resource.RLIM_INFINITY else min(needed, soft))
    if not limit.enough:
        log.warning(
            "file descriptor limit is %d (hard %s), below the %d that %s can need "
            "(%d connections + %d spare): connections beyond it are refused or shed; "
            "raise it (ulimit -n %d)",
            soft,
            "unlimited" if hard == resource.RLIM_INFINITY else hard,
            needed,
            what,
            connections,
            FD_HEADROOM,
            needed,
        )
    return limit


def _grow_table(size: int) -> None:
    """Make the descriptor table hold ``size`` descriptors now (see the module docstring): a
    descriptor duplicated to number ``size - 1``, then closed; the table does not shrink."""
    top = size - 1
    if top <= 2:
        return
    try:
        os.fstat(top)
    except OSError:
        pass
    else:
        return  # in use: the table holds it already
    try:
        source = os.open(os.devnull, os.O_RDONLY)
    except OSError as exc:
        log.debug("could not grow the descriptor table to %d: %s", size, exc)
        return
    try:
        os.dup2(source, top)
        os.close(top)
    except OSError as exc:
        log.debug("could not grow the descriptor table to %d: %s", size, exc)
    finally:
        os.close(source)
