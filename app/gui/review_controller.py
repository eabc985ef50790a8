"""Reviews of the shown image: approve / flag with a comment, saved through the library's queue of
reviews not saved yet (:mod:`app.library.pending`), in a worker.

:class:`ReviewController` owns the review queue, the flush task and its retry timer, the "library
busy" message and the review panel's history. A review is queued first (kept on disk, so it is
never lost), then the queue is saved in a worker (:func:`app.logic.jobs.flush_reviews_job`); when
another program holds the library the review stays queued, the panel and a message say so, and it
is saved by "Retry now" or automatically once the lock is gone. A read-only library has no queue:
the panel says so and nothing is saved. The window (:mod:`app.gui.main_window`) tells the
controller which image is shown (:meth:`show`); the reviewer's name comes from the settings
(``review/reviewer``, the login name by default).
"""

from __future__ import annotations

import getpass
import logging
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from app.gui.dialogs import retry_message
from app.logic import jobs

log = logging.getLogger(__name__)

REVIEW_LOCK_TIMEOUT_S = 2.0  # a review waits this long for another program's lock, then is queued
REVIEW_RETRY_MS = 5000  # queued reviews are retried this often (and with "Retry now")


def default_reviewer() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers): reviews are still saved, unnamed
        return ""


class ReviewController(QObject):
    """Approve / flag reviews of the shown image and their queue.

    ``window`` is the main window: its ``library``, ``runner``, ``settings``, ``review`` panel,
    ``browser``, ``current_uid``, ``read_only`` and ``status_message`` / ``show_error`` /
    ``visible_uid`` are what the controller reads and drives."""

    review_saved = Signal(str)  # uid
    error_shown = Signal(str)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.library = window.library
        self.runner = window.runner
        self.panel = window.review
        self.read_only: str | None = window.read_only
        from app.library.pending import ReviewQueue

        # reviews not saved yet (another program holds the library); none in a read-only library
        self.queue = None if self.read_only else ReviewQueue(self.library)
        self.flush_task = None  # the flush task in flight
        self._flush_again = False
        self.busy_box = None
        self.boxes: list = []
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(REVIEW_RETRY_MS)
        self.timer.timeout.connect(self.flush)
        self.panel.review_requested.connect(self.save)
        self.panel.retry_requested.connect(self.flush)
        if self.read_only:
            self.panel.set_read_only(self.read_only)

    @property
    def reviewer(self) -> str:
        name = str(self.window.settings.get("review/reviewer") or "").strip()
        return name or default_reviewer()

    def start(self) -> None:
        """Save what the last session left queued."""
        if self.queue is not None and len(self.queue):
            self.panel.set_note(f"Saving {len(self.queue)} review(s) kept from the last session…")
            self.flush()

    def stop(self) -> None:
        self.timer.stop()  # queued reviews stay in pending_reviews.json for the next start

    # -- the shown image's history ---------------------------------------------------------------
    def show(self, uid: str | None) -> None:
        """The review history of ``uid`` (None: no image, or one the filter hides: nothing to
        review, and the panel says why)."""
        if uid is None:
            self.panel.set_reviews(None)
            hidden = self.window.current_hidden_reason() if hasattr(self.window, "current_hidden_reason") else None
            if hidden:
                self.panel.current.setText(hidden)
            return
        from app.library.queries import get_instance, reviews_for

        with self.library.session() as s:
            inst = get_instance(s, uid)
            if inst is None:
                self.panel.set_reviews(None)
                return
            reviews = [(r.status, r.comment, r.created_at) for r in reviews_for(s, inst)]
        pending = [(p.status, p.comment, p.created_at) for p in self.queue.items(uid)] if self.queue is not None else []
        self.panel.set_reviews(reviews, pending)

    # -- saving ----------------------------------------------------------------------------------
    def save(self, status: str, comment: str, uid: str | None = None) -> bool:
        """Queue the review of ``uid`` (default: the image shown, if the filter shows it) and save
        the queue in a worker. False: nothing was queued (no image, read-only library)."""
        uid = uid if uid is not None else self.window.visible_uid()
        if uid is None:
            hidden = self.window.current_hidden_reason()
            if hidden:
                self.window.status_message(f"Not reviewed: {hidden}")
            return False
        if self.queue is None:
            self.window.show_error(
                "Review not saved",
                f"This library is read-only ({self.read_only}): reviews cannot "
                "be saved. Open a writable copy of the library to review.",
            )
            return False
        from app.library.pending import PendingReview

        self.queue.add(PendingReview(uid, status, comment, self.reviewer))
        self.panel.clear_comment()
        self.show(uid)
        self.panel.set_note("Saving the review…")
        self.flush()
        return True

    def flush(self) -> None:
        """Save the queued reviews in a worker (one flush at a time; a request meanwhile runs
        another flush right after)."""
        self.timer.stop()
        if self.queue is None or not len(self.queue):
            return
        if self.flush_task is not None and not self.flush_task.done:
            self._flush_again = True
            return
        self.flush_task = self.runner.start(
            "Save review",
            jobs.flush_reviews_job,
            self.queue,
            REVIEW_LOCK_TIMEOUT_S,
            on_result=self._flushed,
            on_failed=lambda msg: self._not_saved(msg, busy=False),
            on_finished=self._flush_finished,
        )

    def _flush_finished(self) -> None:
        if self._flush_again:
            self._flush_again = False
            QTimer.singleShot(0, self.flush)

    def _flushed(self, result) -> None:
        for _item, why in result.dropped:
            self.window.show_error("Review not saved", why)
        for item in result.saved:
            self.window.status_message(f"Review saved: {item.status}")
        if result.saved or result.dropped:
            self.window.browser.refresh()
        if self.window.current_uid is not None:
            self.show(self.window.visible_uid())
        if result.left:
            self._not_saved(result.error or "the library could not be written", busy=result.busy)
        else:
            self.panel.set_note(None)
            if self.busy_box is not None and _alive(self.busy_box):
                self.busy_box.close()
            self.busy_box = None
        for uid in dict.fromkeys(item.uid for item in result.saved):
            self.review_saved.emit(uid)

    def _not_saved(self, msg: str, *, busy: bool) -> None:
        n = len(self.queue) if self.queue is not None else 0
        kept = (
            f"{'The review is' if n == 1 else f'{n} reviews are'} kept and will be saved "
            "automatically when the library is free."
        )
        if busy:
            note = f"Waiting: another program is using the library. {kept}"
            text = (
                f"Another program is using the library {Path(str(self.library.db_path)).name}: it holds "
                f"the database lock (another adaptor-review, an import, or a database tool such as "
                f"sqlite3 or DB Browser).\n\n{kept} Close that program or let it finish; "
                "“Retry now” tries again at once."
            )
        else:
            note = f"Not saved yet: {msg}. {kept}"
            text = f"{msg}.\n\n{kept} “Retry now” tries again."
        if self.queue is not None and self.queue.persist_error:
            note += f" (Kept in memory only: {self.queue.persist_error}; do not quit.)"
        self.panel.set_note(note, retry=True)
        self.window.last_error = note
        self.window.status_message(note, 15000)
        if self.busy_box is None or not _alive(self.busy_box):  # one message per episode, not per retry
            self.busy_box = retry_message(self.window, "Library busy" if busy else "Review not saved", text, self.flush)
            self.window._boxes.append(self.busy_box)
            self.error_shown.emit(note)
        self.timer.start()


def _alive(obj) -> bool:
    try:
        from shiboken6 import isValid
    except ImportError:  # pragma: no cover
        return True
    return isValid(obj)
