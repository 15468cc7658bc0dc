"""The start barrier of sharded runs: every shard says it is ready, all start at one instant.

Why a folder and not a starter pod (k6-operator's way): the shards already share a volume, since
their results must meet there to be merged, so a folder costs no extra pod, Service, RBAC role or
network path between pods; it is the same thing for ``--shards N`` on one machine (a folder in
the run's results) as for an Indexed Job (a folder on the results claim), so the local runs test
the cluster's protocol; and the protocol is a pure function of the files present and the time,
tested under the mock clock. What it asks of the volume: a file written by one pod must be
visible to the others within the lead (a network volume that caches directory listings for
longer needs a longer ``--barrier-lead``).

Rules (``decide`` applies them; every shard reads the same files, so every shard reaches the
same verdict without talking to the others):

1. A shard joins once it is ready to load (sockets bound, fleet built, scenario validated): it
   writes ``ready-<index>.json`` = {index, count, ready_at} once (a second writer of the same
   index is refused: two pods believing they are the same shard). A shard that fails before it
   is ready (a port in use) writes ``failed-<index>.json`` = {index, count, reason} instead.
2. Any shard failed: failed, for all, at once (rather than everyone waiting for the timeout).
3. All ``count`` shards present, the last one within ``timeout`` of the first: go at
   ``last ready_at + lead``, the same instant for all.
4. All present but the last joined more than ``timeout`` after the first: failed, for all.
5. Not all present and ``now`` past the first ``ready_at + timeout + lead``: failed. The extra
   lead is the margin rule 3 relies on too: a file written just in time is seen in time.
6. Files of another shard count in the same folder: failed (two renderings share the folder).
7. Otherwise wait and read again.

``FileBarrier`` is the I/O shell: it writes its file, polls the folder, sleeps until the instant.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import orjson
import trio

from loadgen.errors import ConfigError

__all__ = ["Arrival", "FileBarrier", "Verdict", "decide", "read_arrivals"]

DEFAULT_TIMEOUT: Final = 60.0
DEFAULT_LEAD: Final = 1.0
DEFAULT_POLL: Final = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class Arrival:
    """One shard's ready file."""

    index: int
    count: int
    ready_at: float  # epoch seconds
    failed: str = ""  # why it could not get ready (a failed-<index>.json), "" when ready


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    state: Literal["wait", "go", "failed"]
    at: float | None = None  # go: the common start, epoch seconds
    reason: str = ""  # failed: why, one line
    ready: int = 0  # how many shards have joined


def _indices(indices: Iterable[int]) -> str:
    return ", ".join(str(index) for index in sorted(indices))


def decide(
    arrivals: Iterable[Arrival], *, count: int, now: float, timeout: float, lead: float
) -> Verdict:
    """The barrier's verdict from the ready files seen at ``now`` (module docstring, rules)."""
    arrivals = list(arrivals)
    others = sorted({a.count for a in arrivals if a.count != count})
    if others:
        return Verdict(
            state="failed",
            reason=f"the folder holds shards of {others[0]} and of {count}; "
            "give each run its own barrier folder",
        )
    failed = sorted((a for a in arrivals if a.failed), key=lambda a: a.index)
    if failed:
        return Verdict(
            state="failed",
            reason=f"shard {failed[0].index}/{count} could not get ready: {failed[0].failed}",
        )
    seen = {a.index: a for a in arrivals if 0 <= a.index < count}
    if not seen:
        return Verdict(state="wait")
    first = min(a.ready_at for a in seen.values())
    if len(seen) == count:
        last = max(seen.values(), key=lambda a: a.ready_at)
        if last.ready_at - first > timeout:
            return Verdict(
                state="failed",
                ready=count,
                reason=f"shard {last.index}/{count} joined {last.ready_at - first:.1f} s after "
                f"the first; the barrier waits {timeout:g} s",
            )
        return Verdict(state="go", at=last.ready_at + lead, ready=count)
    if now > first + timeout + lead:
        missing = set(range(count)) - set(seen)
        return Verdict(
            state="failed",
            ready=len(seen),
            reason=f"{len(seen)} of {count} shards ready after {timeout:g} s; "
            f"missing shard {_indices(missing)}",
        )
    return Verdict(state="wait", ready=len(seen))


def read_arrivals(folder: Path) -> list[Arrival]:
    """The ready files in ``folder`` (one being written is not there yet: it appears whole)."""
    out = []
    try:
        paths = [*folder.glob("ready-*.json"), *folder.glob("failed-*.json")]
    except OSError:
        return []
    for path in paths:
        try:
            record = orjson.loads(path.read_bytes())
            out.append(
                Arrival(
                    index=int(record["index"]),
                    count=int(record["count"]),
                    ready_at=float(record.get("ready_at", 0.0)),
                    failed=str(record.get("reason", "")) if path.name.startswith("failed") else "",
                )
            )
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # not one of ours; the verdict goes on without it
    return out


class FileBarrier:
    """Shard ``index`` of ``count`` at the barrier in ``folder`` (module docstring)."""

    def __init__(
        self,
        folder: Path,
        *,
        index: int,
        count: int,
        timeout: float = DEFAULT_TIMEOUT,
        lead: float = DEFAULT_LEAD,
        poll: float = DEFAULT_POLL,
        clock: Callable[[], float] | None = None,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.folder = folder
        self.index = index
        self.count = count
        self.timeout = timeout
        self.lead = lead
        self.poll = poll
        self.clock = clock or time.time
        self.notice = notice or (lambda text: None)
        self.released = False

    def __repr__(self) -> str:
        return f"<FileBarrier {self.index}/{self.count} {self.folder}>"

    def announce(self) -> float:
        """Write this shard's ready file (atomically: a reader sees all of it or nothing)."""
        ready_at = self.clock()
        self._write("ready", {"index": self.index, "count": self.count, "ready_at": ready_at})
        return ready_at

    def abandon(self, reason: str) -> None:
        """This shard cannot get ready: the others fail at once instead of at the timeout.
        Nothing is written once the barrier has released (the others are running)."""
        if self.released:
            return
        record = {"index": self.index, "count": self.count, "reason": reason.splitlines()[0]}
        # if even this fails, the others fail at the timeout, with their own line
        with contextlib.suppress(OSError, ConfigError):
            self._write("failed", record)

    def _write(self, kind: str, record: dict[str, object]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{kind}-{self.index}.json"
        temporary = self.folder / f".{kind}-{self.index}.{os.getpid()}.tmp"
        temporary.write_bytes(orjson.dumps(record))
        try:
            os.link(temporary, final)  # fails if the file exists, unlike a rename
        except FileExistsError:
            raise ConfigError(
                f"shard {self.index}/{self.count} has already joined the barrier in {self.folder} "
                "(a second process with the same index, or a folder left by an earlier run)",
                key="--barrier",
            ) from None
        finally:
            temporary.unlink(missing_ok=True)

    async def wait(self) -> float:
        """Join, wait for the others, sleep until the common instant; returns it (epoch).
        Raises ``ConfigError`` (one line, key ``--barrier``) when the barrier fails."""
        self.announce()
        shown = -1
        while True:
            verdict = decide(
                read_arrivals(self.folder),
                count=self.count,
                now=self.clock(),
                timeout=self.timeout,
                lead=self.lead,
            )
            if verdict.state == "failed":
                raise ConfigError(f"{verdict.reason} (in {self.folder})", key="--barrier")
            if verdict.state == "go":
                break
            if verdict.ready != shown:
                shown = verdict.ready
                self.notice(
                    f"barrier: shard {self.index}/{self.count} ready, "
                    f"{verdict.ready} of {self.count} joined"
                )
            await trio.sleep(self.poll)
        assert verdict.at is not None
        self.released = True
        late = self.clock() - verdict.at
        if late > 0:
            # seen after the instant (a volume slower than the lead): start now, and say so
            self.notice(f"barrier: released {late:.3f} s late; a longer --barrier-lead avoids it")
        else:
            self.notice(f"barrier: all {self.count} shards ready; load starts in {-late:.3f} s")
            await trio.sleep(-late)
        return verdict.at
