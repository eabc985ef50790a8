"""Work off the GUI thread: QRunnable tasks on QThreadPools, with progress, cancel and errors
delivered as signals.

A task runs a plain (Qt-free) function ``fn(ctx, *args)``; ``ctx.progress(done, total, text)``
reports progress and ``ctx.cancelled()`` says whether the user cancelled (a ``threading.Event``,
so library code that takes ``cancel=`` gets ``ctx.cancel_event``). The function's return value
arrives on the GUI thread through ``result``; a :class:`~core_model.errors.UserError` arrives
as its message through ``failed``; any other exception as a one-line "unexpected error" message
(the traceback goes to the debug log, never to the console), so errors reach the user as
messages. ``finished`` always comes last.

Tasks run in *lanes*, one thread pool each, so a long import never delays loading the image the
user clicked: ``background`` (import, analyse all), ``interactive`` (image loading, analysis
of the shown image, heatmaps, retrieval, reviews) and ``thumbnails``.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from core_model.errors import UserError

log = logging.getLogger(__name__)

LANES = {"background": 2, "interactive": 2, "thumbnails": 1}
WORKER_NICENESS = 5  # Linux: worker threads yield the CPU to the GUI thread under contention
_niced: set[int] = set()


def _lower_thread_priority() -> None:
    """On Linux each thread has its own nice value: raise this worker thread's (once), so on a
    busy machine the scheduler runs the GUI thread first. Elsewhere (or if refused) nothing."""
    if not hasattr(os, "setpriority") or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    if tid in _niced:
        return
    _niced.add(tid)
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICENESS))
    except OSError:
        pass


class TaskSignals(QObject):
    progress = Signal(int, int, str)
    result = Signal(object)
    failed = Signal(str)
    finished = Signal()


class TaskContext:
    """What a task function gets: progress reporting and the cancel flag."""

    def __init__(self, signals: TaskSignals, cancel_event: threading.Event, min_interval: float = 0.05):
        self._signals = signals
        self.cancel_event = cancel_event
        self._last = 0.0
        self._min_interval = min_interval

    def progress(self, done: int, total: int, text: str = "") -> None:
        now = time.monotonic()
        if now - self._last >= self._min_interval or (total and done >= total):
            self._last = now
            self._signals.progress.emit(int(done), int(total), str(text))

    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


def user_message(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, MemoryError):
        return "not enough memory for this operation"
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"unexpected error ({type(exc).__name__}{': ' + first if first else ''}); please report it"


class Task(QRunnable):
    _ids = itertools.count(1)

    def __init__(self, name: str, fn: Callable[..., Any], *args, lane: str = "interactive", **kwargs):
        super().__init__()
        self.setAutoDelete(False)  # the runner keeps the reference until ``finished``
        self.id = next(self._ids)
        self.name = name
        self.lane = lane
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.signals = TaskSignals()
        self.cancel_event = threading.Event()
        self.done = False
        self.error: str | None = None
        self.value: Any = None

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def run(self) -> None:  # worker thread
        _lower_thread_priority()
        ctx = TaskContext(self.signals, self.cancel_event)
        try:
            value = self.fn(ctx, *self.args, **self.kwargs)
        except BaseException as exc:
            if not isinstance(exc, UserError):
                log.debug("task %s failed", self.name, exc_info=True)
            self.error = user_message(exc)
            if self.cancel_event.is_set():
                log.debug("%s stopped after cancel: %s", self.name, self.error)
            else:
                log.warning("%s failed: %s", self.name, self.error)
            self.signals.failed.emit(self.error)
        else:
            self.value = value
            self.signals.result.emit(value)
        finally:
            self.signals.finished.emit()


class TaskRunner(QObject):
    """Starts tasks in their lane, keeps them alive until they finish, cancels them all on exit."""

    task_started = Signal(object)
    task_finished = Signal(object)

    def __init__(self, parent: QObject | None = None, lanes: dict[str, int] | None = None):
        super().__init__(parent)
        self.pools: dict[str, QThreadPool] = {}
        for lane, threads in (lanes or LANES).items():
            pool = QThreadPool(self)
            pool.setMaxThreadCount(threads)
            pool.setExpiryTimeout(30000)
            self.pools[lane] = pool
        self.active: dict[int, Task] = {}
        self.closed = False  # after shutdown: late signals of finished tasks are ignored

    def start(
        self,
        name: str,
        fn: Callable[..., Any],
        *args,
        lane: str = "interactive",
        on_result: Callable[[Any], None] | None = None,
        on_failed: Callable[[str], None] | None = None,
        on_progress: Callable[[int, int, str], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        priority: int = 0,
        **kwargs,
    ) -> Task:
        if self.closed:  # the window is closing: nothing new starts
            log.debug("not starting %s: shut down", name)
            return None  # type: ignore[return-value]
        task = Task(name, fn, *args, lane=lane, **kwargs)
        for signal, callback in (
            (task.signals.progress, on_progress),
            (task.signals.result, on_result),
            (task.signals.failed, on_failed),
            (task.signals.finished, on_finished),
        ):
            if callback is not None:
                signal.connect(self._guard(callback))
        task.signals.finished.connect(lambda t=task: self._finished(t))
        self.active[task.id] = task
        self.task_started.emit(task)
        self.pools[lane].start(task, priority)
        return task

    def _guard(self, callback: Callable) -> Callable:
        """Callbacks never run after shutdown (their widgets may be gone)."""

        def call(*args):
            if not self.closed:
                callback(*args)

        return call

    def _finished(self, task: Task) -> None:
        if self.closed:
            return
        task.done = True
        self.active.pop(task.id, None)
        self.task_finished.emit(task)

    def running(self, lane: str | None = None) -> list[Task]:
        return [t for t in self.active.values() if lane is None or t.lane == lane]

    def cancel(self, task: Task | None) -> None:
        if task is None or task.done:
            return
        task.cancel()
        if task.id in self.active and self.pools[task.lane].tryTake(task):
            task.signals.finished.emit()

    def cancel_all(self, lane: str | None = None) -> None:
        """Cancel running tasks (they stop at their next check) and drop queued ones (those
        still get ``finished``, from here)."""
        for task in list(self.active.values()):
            if lane is not None and task.lane != lane:
                continue
            self.cancel(task)

    def wait(self, timeout_ms: int = 10000) -> bool:
        deadline = time.monotonic() + timeout_ms / 1000.0
        ok = True
        for pool in self.pools.values():
            left = max(0, int((deadline - time.monotonic()) * 1000))
            ok = pool.waitForDone(left) and ok
        return ok

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        self.cancel_all()
        ok = self.wait(timeout_ms)
        self.closed = True
        return ok
