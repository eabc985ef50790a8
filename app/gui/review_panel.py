"""The review panel: approve or flag the shown image with a comment (saved in the library by the
main window, in a worker), and the image's review history."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from app.gui.browser import format_date


class ReviewPanel(QWidget):
    review_requested = Signal(str, str)  # status, comment

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
        buttons = QHBoxLayout()
        buttons.addWidget(self.approve)
        buttons.addWidget(self.flag)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.current)
        layout.addWidget(self.comment)
        layout.addLayout(buttons)
        layout.addWidget(QLabel("History"))
        layout.addWidget(self.history, 1)
        self.approve.clicked.connect(lambda: self._request("approved"))
        self.flag.clicked.connect(lambda: self._request("flagged"))
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
            w.setEnabled(on)

    def set_reviews(self, reviews: list[tuple[str, str, str]] | None) -> None:
        """``reviews``: (status, comment, created_at) newest first; None: no image."""
        self.history.clear()
        if reviews is None:
            self.current.setText("No image selected")
            self.set_enabled(False)
            return
        self.set_enabled(True)
        if reviews:
            status, comment, when = reviews[0]
            self.current.setText(f"Status: <b>{status}</b>")
        else:
            self.current.setText("Status: unreviewed")
        for status, comment, when in reviews:
            self.history.addItem(f"{format_date(when[:10].replace('-', ''))} {when[11:16]}  {status}"
                                 + (f": {comment}" if comment else ""))

    def clear_comment(self) -> None:
        self.comment.setPlainText("")
