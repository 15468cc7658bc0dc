"""A sleep until an absolute trio time that wakes on time to the microsecond (Linux timerfd).

Why: trio's ``sleep_until`` ends in ``epoll_wait``, whose timeout is a whole number of
milliseconds, rounded up; when nothing else wakes the loop, a sleep of 0.3 ms lasts 1 ms. The
open model's pacer wakes at most every ``sender.BATCH_WINDOW`` (half a millisecond) to send what
is due in batches, and that window only holds if the wake-up is on time. A ``timerfd`` armed at
the absolute time on ``CLOCK_MONOTONIC`` (trio's ``SystemClock`` is ``perf_counter`` plus an
offset, and ``perf_counter`` is that clock on Linux) becomes readable exactly then, and the
pacer waits on it like on a socket.

Elsewhere (another OS, or a clock of the tests' own such as ``MockClock``) ``Alarm.sleep_until``
is ``trio.sleep_until``.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import time
from typing import Final

import trio

__all__ = ["Alarm"]

_CLOCK_MONOTONIC: Final = 1
_TFD_NONBLOCK: Final = os.O_NONBLOCK
_TFD_CLOEXEC: Final = 0o2000000
_TFD_TIMER_ABSTIME: Final = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p,
        ]  # fmt: skip
    except (OSError, AttributeError):
        return None
    return libc


_LIBC: Final = _libc()


class Alarm:
    """``sleep_until(t)`` on the current trio clock, on time where a timerfd can be had.
    Create it inside ``trio.run``; ``close`` it when done."""

    __slots__ = ("_clock", "_fd", "_offset", "_ref", "_settime", "_spec")

    def __init__(self) -> None:
        clock = trio.lowlevel.current_clock()
        self._clock = clock
        self._fd = -1
        self._offset = 0.0
        self._spec = _Itimerspec()
        self._ref = ctypes.byref(self._spec)  # made once: a wake-up per half millisecond
        self._settime = _LIBC.timerfd_settime if _LIBC is not None else None
        offset = getattr(clock, "offset", None)
        perf = time.get_clock_info("perf_counter").implementation
        if (
            _LIBC is not None
            and type(clock).__name__ == "SystemClock"
            and isinstance(offset, float)
            and "CLOCK_MONOTONIC" in perf
        ):
            fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                self._offset = offset

    def __repr__(self) -> str:
        return f"<Alarm {'timerfd' if self._fd >= 0 else 'trio.sleep_until'}>"

    @property
    def precise(self) -> bool:
        """Whether wake-ups use the timerfd (else ``trio.sleep_until``)."""
        return self._fd >= 0

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until the trio clock reads ``deadline`` (a checkpoint even when it has)."""
        fd = self._fd
        if fd < 0:
            await trio.sleep_until(deadline)
            return
        current_time = self._clock.current_time
        if deadline <= current_time():
            await trio.lowlevel.checkpoint()
            return
        value = self._spec.it_value
        # nanoseconds rounded up: the timer never fires before ``deadline``
        value.tv_sec, value.tv_nsec = divmod(
            math.ceil((deadline - self._offset) * 1e9), 1_000_000_000
        )
        settime = self._settime
        assert settime is not None
        while True:  # arming resets the timer's count: readable only once it has fired
            if settime(fd, _TFD_TIMER_ABSTIME, self._ref, None):
                await trio.sleep_until(deadline)  # not expected; never a wrong wake-up
                return
            await trio.lowlevel.wait_readable(fd)
            try:
                os.read(fd, 8)
            except BlockingIOError:
                continue  # woken without an expiry: arm again
            return

    def close(self) -> None:
        if self._fd >= 0:
            trio.lowlevel.notify_closing(self._fd)
            os.close(self._fd)
            self._fd = -1
