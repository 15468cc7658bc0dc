"""The per-test timeout (``timeout`` in pyproject.toml), made safe for trio tests.

pytest-timeout's "signal" method raises ``Failed`` from a SIGALRM handler wherever the main thread
happens to be. In a trio test that is usually inside trio's own run loop (waiting in epoll), and
an exception there leaves the run half torn down: the next trio test of the session then fails
with "Attempted to call run() from inside a run()". So while a trio run is active the handler
does not raise; it asks the run (``TrioToken.run_sync_soon``, safe from a signal handler) to start
a system task that notes where every task is waiting and fails. Trio then cancels every task and
unwinds the run cleanly (reporting a ``TrioInternalError``, which ``pytest_pyfunc_call`` below
turns back into the timeout with the task stacks). The test fails, the session goes on.

A test stuck without ever yielding to trio (a CPU loop, a blocking call) never lets that task
run; ``_FALLBACK_S`` later the handler raises directly, as pytest-timeout would.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Final

import pytest
import pytest_trio
import trio
from pytest_timeout import PYTEST_FAILURE_MESSAGE, timeout_sigalrm

_FALLBACK_S: Final = 5.0
_TIMED_OUT: Final = pytest.StashKey[str]()


def _trio_token() -> trio.lowlevel.TrioToken | None:
    try:
        return trio.lowlevel.current_trio_token()
    except RuntimeError:  # no trio run in this thread
        return None


_LIBRARY_DIRS: Final = (str(Path(trio.__file__).parent), str(Path(pytest_trio.__file__).parent))


def _task_lines(task: trio.lowlevel.Task, depth: int = 0) -> Iterator[str]:
    """Each task of the tree and where it waits (our frames only), innermost frame last."""
    yield f"{'  ' * depth}task {task.name}"
    for frame, lineno in task.iter_await_frames():
        code = frame.f_code
        if not code.co_filename.startswith(_LIBRARY_DIRS):
            yield f"{'  ' * depth}  {code.co_filename}:{lineno} in {code.co_name}"
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _task_lines(child, depth + 1)


class _Alarm:
    """The SIGALRM handler of one test (see the module docstring)."""

    def __init__(self, item: pytest.Item, settings: Any) -> None:
        self.item = item
        self.settings = settings
        self.message = PYTEST_FAILURE_MESSAGE % settings.timeout
        self.asked = False  # the trio run was asked to fail
        self.raised = False  # the fallback raised in the main thread

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True
        token = _trio_token()
        if token is None or self.asked:
            self.raised = True
            timeout_sigalrm(self.item, self.settings)  # dumps the stacks and raises Failed
            return
        self.asked = True
        token.run_sync_soon(self._fail_soon)
        signal.setitimer(signal.ITIMER_REAL, _FALLBACK_S)

    def _fail_soon(self) -> None:
        if self.raised:  # the test task already failed with the timeout
            return
        root = trio.lowlevel.current_root_task()
        tree = "\n".join(_task_lines(root)) if root is not None else ""
        self.item.stash[_TIMED_OUT] = f"{self.message}\ntrio tasks when it expired:\n{tree}"
        message = self.message

        async def fail() -> None:
            pytest.fail(message)

        trio.lowlevel.spawn_system_task(fail)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None  # pytest-timeout's own timer thread

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # read by pytest-timeout
    signal.signal(signal.SIGALRM, _Alarm(item, settings))
    signal.setitimer(signal.ITIMER_REAL, settings.timeout)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    try:
        return (yield)
    except trio.TrioInternalError:
        timed_out = pyfuncitem.stash.get(_TIMED_OUT, None)
        if timed_out is None:
            raise
        raise pytest.fail.Exception(timed_out, pytrace=False) from None
