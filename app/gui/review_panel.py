"""The review panel: approve or flag the shown image with a comment (saved in the library by the
main window, in a worker), and the image's review history. Reviews waiting to be saved (another
program holds the library) show in the history as such, with a "Retry now" button; a read-only
library says so and keeps the buttons off."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from app.gui.browser import format_date


class ReviewPanel(QWidget):
    review_requested = Signal(str, str)  # status, comment
    retry_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAccessibleName("Review panel")
        self.current = QLabel("No image selected")
        self.current.setAccessibleName("Review status")
        self.comment = QPlainTextEdit()
        self.comment.setAccessibleName("Review comment")
        self.comment.setPlaceholderText("Comment (optional; required to flag)")
        self.comment.setMaximumHeight(self.fontMetrics().height() * 4)
        self.approve = QPushButton("Approve")
        self.approve.setAccessibleName("Approve the image")
        self.flag = QPushButton("Flag")
        self.flag.setAccessibleName("Flag the image")
        self.history = QListWidget()
        self.history.setAccessibleName("Review history")
        self.note = QLabel("")  # saving / waiting for the library / read-only
        self.note.setAccessibleName("Review saving state")
        self.note.setWordWrap(True)
        self.note.setVisible(False)
        self.retry = QPushButton("Retry now")
        self.retry.setAccessibleName("Retry saving the queued reviews")
        self.retry.setVisible(False)
        self.read_only: str | None = None
        buttons = QHBoxLayout()
        buttons.addWidget(self.approve)
        buttons.addWidget(self.flag)
        buttons.addStretch(1)
        note_row = QHBoxLayout()
        note_row.addWidget(self.note, 1)
        note_row.addWidget(self.retry)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.current)
        layout.addWidget(self.comment)
        layout.addLayout(buttons)
        layout.addLayout(note_row)
        layout.addWidget(QLabel("History"))
        layout.addWidget(self.history, 1)
        self.approve.clicked.connect(lambda: self._request("approved"))
        self.flag.clicked.connect(lambda: self._request("flagged"))
        self.retry.clicked.connect(self.retry_requested.emit)
        self.set_enabled(False)

    def _request(self, status: str) -> None:
        comment = self.comment.toPlainText().strip()
        if status == "flagged" and not comment:
            self.current.setText("Say why you flag it: a comment is required.")
            self.comment.setFocus()
            return
        self.review_requested.emit(status, comment)

    def set_enabled(self, on: bool) -> None:
        for w in (self.comment, self.approve, self.flag):
            w.setEnabled(on and self.read_only is None)

    def set_read_only(self, reason: str | None) -> None:
        """A read-only library: reviews cannot be saved, and the panel says why."""
        self.read_only = reason
        self.set_note(
            f"This library is read-only ({reason}): reviews cannot be saved. Open a writable copy to review."
            if reason
            else None
        )
        self.set_enabled(reason is None)

    def set_note(self, text: str | None, *, retry: bool = False) -> None:
        self.note.setText(text or "")
        self.note.setVisible(bool(text))
        self.retry.setVisible(retry)

    def set_reviews(
        self, reviews: list[tuple[str, str, str]] | None, pending: list[tuple[str, str, str]] | None = None
    ) -> None:
        """``reviews``: (status, comment, created_at) newest first; None: no image. ``pending``:
        the same for reviews waiting to be saved (shown first, marked as such)."""
        self.history.clear()
        if reviews is None:
            self.current.setText("No image selected")
            self.set_enabled(False)
            return
        self.set_enabled(True)
        pending = sorted(pending or [], key=lambda r: r[2], reverse=True)
        if pending:
            self.current.setText(f"Status: <b>{pending[0][0]}</b> (waiting to be saved)")
        elif reviews:
            status, comment, when = reviews[0]
            self.current.setText(f"Status: <b>{status}</b>")
        else:
            self.current.setText("Status: unreviewed")
        for status, comment, when in pending:
            self.history.addItem(
                f"{format_date(when[:10].replace('-', ''))} {when[11:16]}  {status}"
                + (f": {comment}" if comment else "")
                + "  (waiting to be saved)"
            )
        for status, comment, when in reviews:
            self.history.addItem(
                f"{format_date(when[:10].replace('-', ''))} {when[11:16]}  {status}"
                + (f": {comment}" if comment else "")
            )

    def clear_comment(self) -> None:
        self.comment.setPlainText("")
