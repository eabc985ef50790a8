"""Small dialogs: the model card, and non-blocking messages (errors, import summaries)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QMessageBox, QTextBrowser, QVBoxLayout, QWidget

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


def message(parent: QWidget, title: str, text: str, details: str = "",
            icon: QMessageBox.Icon = QMessageBox.Icon.Warning) -> QMessageBox:
    """A non-modal message box (never blocks the event loop, so workers keep reporting)."""
    box = QMessageBox(icon, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setWindowModality(Qt.WindowModality.NonModal)
    if details:
        box.setDetailedText(details)
    box.setAccessibleName(title)
    box.show()
    return box
