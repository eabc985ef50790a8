"""Small dialogs: the model card, non-blocking messages (errors, import summaries, "library busy"
with a retry), and the start-up dialog for a library that cannot be opened."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.gui.ai_panel import RESEARCH_NOTICE


class ModelCardDialog(QDialog):
    def __init__(self, title: str, markdown: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"Model card - {title}")
        self.setAccessibleName("Model card")
        notice = QLabel(f"<b>{RESEARCH_NOTICE}</b>")
        notice.setStyleSheet("color: #b35900;")
        self.text = QTextBrowser()
        self.text.setAccessibleName("Model card text")
        self.text.setOpenExternalLinks(False)
        self.text.setMarkdown(markdown or "_This bundle has no model card._")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        layout = QVBoxLayout(self)
        layout.addWidget(notice)
        layout.addWidget(self.text, 1)
        layout.addWidget(buttons)
        fm = self.fontMetrics()
        self.resize(fm.horizontalAdvance("M") * 60, fm.height() * 36)


def message(
    parent: QWidget, title: str, text: str, details: str = "", icon: QMessageBox.Icon = QMessageBox.Icon.Warning
) -> QMessageBox:
    """A non-modal message box (never blocks the event loop, so workers keep reporting)."""
    box = QMessageBox(icon, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setWindowModality(Qt.WindowModality.NonModal)
    if details:
        box.setDetailedText(details)
    box.setAccessibleName(title)
    box.show()
    return box


def retry_message(parent: QWidget, title: str, text: str, on_retry, details: str = "") -> QMessageBox:
    """A non-modal warning with "Retry now" and "Close" (the library is busy: the work waits)."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.NoButton, parent)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setWindowModality(Qt.WindowModality.NonModal)
    retry = box.addButton("Retry now", QMessageBox.ButtonRole.AcceptRole)
    retry.setAccessibleName("Retry now")
    box.addButton(QMessageBox.StandardButton.Close)
    if details:
        box.setDetailedText(details)
    box.setAccessibleName(title)
    box.retry_button = retry
    box.buttonClicked.connect(lambda button: on_retry() if button is retry else None)
    box.show()
    return box


def confirm_message(parent: QWidget, title: str, text: str, action: str, on_confirm) -> QMessageBox:
    """A non-modal question with ``action`` and "Cancel"; ``on_confirm()`` runs on ``action``."""
    box = QMessageBox(QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.NoButton, parent)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setWindowModality(Qt.WindowModality.NonModal)
    ok = box.addButton(action, QMessageBox.ButtonRole.DestructiveRole)
    ok.setAccessibleName(action)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.setAccessibleName(title)
    box.confirm_button = ok
    box.buttonClicked.connect(lambda button: on_confirm() if button is ok else None)
    box.show()
    return box


class LibraryProblemDialog(QDialog):
    """At start-up, when the library cannot be opened (not SQLite, a folder, another program's
    lock during an upgrade, a read-only place where none exists yet): the reason, and a way out
    (choose or create another library, or quit). ``opener(path)`` opens a library or raises
    :class:`~app.library.LibraryError`; on success ``self.library`` holds it and the dialog
    closes; on failure the new reason is shown and the dialog stays."""

    def __init__(self, failed_path, reason: str, opener, parent: QWidget | None = None):
        super().__init__(parent)
        self.opener = opener
        self.library = None
        self.failed_path = Path(failed_path)
        self.setWindowTitle("CXR Adaptor review - cannot open the library")
        self.setAccessibleName("Cannot open the library")
        self.setModal(True)
        self.heading = heading = QLabel(f"<b>The library {self.failed_path.name} cannot be opened.</b>")
        heading.setWordWrap(True)
        self.reason = QLabel(reason)
        self.reason.setAccessibleName("Why the library cannot be opened")
        self.reason.setWordWrap(True)
        self.reason.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        hint = QLabel(
            "Choose another library file: an existing library, or a new name to create an empty one. "
            "Nothing has been changed in the file above."
        )
        hint.setWordWrap(True)
        self.path = QLineEdit(str(self._suggestion()))
        self.path.setAccessibleName("Library file to open")
        self.browse = QPushButton("Browse…")
        self.browse.setAccessibleName("Browse for a library file")
        row = QHBoxLayout()
        row.addWidget(QLabel("Library file:"))
        row.addWidget(self.path, 1)
        row.addWidget(self.browse)
        self.open_button = QPushButton("Choose another library")
        self.open_button.setAccessibleName("Open the chosen library")
        self.open_button.setDefault(True)
        self.quit_button = QPushButton("Quit")
        self.quit_button.setAccessibleName("Quit")
        self.again_button = QPushButton("Try this one again")  # e.g. once another program let go of it
        self.again_button.setAccessibleName("Try to open the same library again")
        buttons = QDialogButtonBox()
        buttons.addButton(self.again_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.open_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.quit_button, QDialogButtonBox.ButtonRole.RejectRole)
        notice = QLabel(f"<i>{RESEARCH_NOTICE}</i>")
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(self.reason)
        layout.addSpacing(self.fontMetrics().height() // 2)
        layout.addWidget(hint)
        layout.addLayout(row)
        layout.addWidget(buttons)
        layout.addWidget(notice)
        self.browse.clicked.connect(self._browse)
        self.open_button.clicked.connect(self.try_open)
        self.quit_button.clicked.connect(self.reject)
        self.again_button.clicked.connect(self.try_again)
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance("M") * 60)

    def _suggestion(self) -> Path:
        from app.library.db import DB_FILENAME, default_db_path

        default = default_db_path()
        if default.expanduser().resolve() != self.failed_path.expanduser().resolve() and not default.is_dir():
            return default
        folder = self.failed_path if self.failed_path.is_dir() else self.failed_path.parent
        return folder / ("library-new.db" if (folder / DB_FILENAME).exists() else DB_FILENAME)

    def _browse(self) -> None:
        start = self.path.text().strip() or str(Path.home())
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Choose or create a library",
            start,
            "Library databases (*.db);;All files (*)",
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        if path:
            self.path.setText(path)

    def try_again(self) -> bool:
        self.path.setText(str(self.failed_path))
        return self.try_open()

    def try_open(self) -> bool:
        from core_model.errors import UserError

        text = self.path.text().strip()
        if not text:
            self.reason.setText("Give the library file to open.")
            return False
        try:
            self.library = self.opener(text)
        except UserError as exc:
            self.heading.setText(f"<b>The library {Path(text).name} cannot be opened either.</b>")
            self.reason.setText(str(exc))
            return False
        self.accept()
        return True
