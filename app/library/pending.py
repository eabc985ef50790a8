"""Reviews waiting to be saved (Qt-free).

When another program holds the library's write lock, a review the user made is not lost: it is
kept here, in memory and in ``<db stem>_files/pending_reviews.json`` (written atomically, so it
survives closing the app or a crash), and saved once the library is free, in the order it was
made. Saving is idempotent (:func:`app.library.queries.add_review` with the review's own
``created_at``), so a crash between saving a review and forgetting it never records it twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field

from app.library.db import Library, LibraryBusyError, LibraryError
from app.library.models import utcnow
from core_model.errors import UserError
from core_model.fileio import atomic_write_json

log = logging.getLogger(__name__)

PENDING_FILENAME = "pending_reviews.json"


@dataclass(frozen=True)
class PendingReview:
    uid: str
    status: str
    comment: str = ""
    reviewer: str = ""
    created_at: str = field(default_factory=utcnow)


@dataclass
class FlushResult:
    saved: list[PendingReview] = field(default_factory=list)
    dropped: list[tuple[PendingReview, str]] = field(default_factory=list)  # cannot ever be saved: why
    busy: bool = False  # another program still holds the lock
    error: str | None = None  # why the rest is still queued
    left: int = 0


class ReviewQueue:
    """The library's queue of reviews not saved yet. ``add`` on any thread, ``flush`` in a worker."""

    def __init__(self, library: Library):
        self.library = library
        self.path = library.data_dir / PENDING_FILENAME
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self.persist_error: str | None = None
        self._items: list[PendingReview] = self._load()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def items(self, uid: str | None = None) -> list[PendingReview]:
        with self._lock:
            return [i for i in self._items if uid is None or i.uid == uid]

    def add(self, item: PendingReview) -> None:
        with self._lock:
            self._items.append(item)
            self._persist()

    def flush(self, *, lock_timeout: float | None = None) -> FlushResult:
        """Save the queued reviews in order; stop at the first one that cannot be saved now."""
        result = FlushResult()
        from app.library.queries import add_review

        with self._flushing:
            for item in self.items():
                try:
                    add_review(
                        self.library,
                        item.uid,
                        item.status,
                        item.comment,
                        item.reviewer,
                        created_at=item.created_at,
                        lock_timeout=lock_timeout,
                    )
                except LibraryBusyError as exc:
                    result.busy, result.error = True, str(exc)
                    break
                except LibraryError as exc:  # full disk, read-only: keep it, say why
                    result.error = str(exc)
                    break
                except UserError as exc:  # e.g. the image was removed from the library meanwhile
                    log.warning("queued review of %s dropped: %s", item.uid, exc)
                    result.dropped.append((item, str(exc)))
                else:
                    result.saved.append(item)
                self._forget(item)
        result.left = len(self)
        return result

    # -- the file -------------------------------------------------------------------------------
    def _forget(self, item: PendingReview) -> None:
        with self._lock:
            if item in self._items:
                self._items.remove(item)
            self._persist()

    def _persist(self) -> None:  # with self._lock held
        try:
            if self._items:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(self.path, {"pending_reviews": [asdict(i) for i in self._items]})
            elif self.path.exists():
                self.path.unlink()
            self.persist_error = None
        except OSError as exc:  # still kept in memory until saved
            self.persist_error = f"cannot write {self.path.name} ({exc.strerror or exc})"
            log.warning("queued reviews kept in memory only: %s", self.persist_error)

    def _load(self) -> list[PendingReview]:
        if not self.path.exists():
            return []
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            items = [
                PendingReview(**{k: str(v) for k, v in entry.items() if k in PendingReview.__dataclass_fields__})
                for entry in raw["pending_reviews"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(self.path.name + ".unreadable")
            log.warning("%s is unreadable (%s); moved aside to %s", self.path.name, exc, aside.name)
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            return []
        if items:
            log.info("%d queued review(s) from the last session to save", len(items))
        return items
