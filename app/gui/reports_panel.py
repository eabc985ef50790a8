"""The reports panel: the study's own report and the most similar reports of the bundle's report
bank with their scores, sentence by sentence; clicking a sentence asks for its heatmap."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QLabel, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from app.logic.report_text import split_sentences

PHRASE_ROLE = Qt.ItemDataRole.UserRole + 2


class ReportsPanel(QWidget):
    sentence_clicked = Signal(str, str)  # phrase, where it comes from

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAccessibleName("Reports panel")
        self.hint = QLabel("Click a sentence to see where the model finds it in the image.")
        self.hint.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setAccessibleName("Reports")
        self.tree.setHeaderHidden(True)
        self.tree.setWordWrap(True)
        self.tree.setUniformRowHeights(False)
        self.tree.setIndentation(12)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideNone)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.hint)
        layout.addWidget(self.tree, 1)
        self.own = QTreeWidgetItem(["This study's report"])
        self.similar = QTreeWidgetItem(["Similar reports (model's report bank)"])
        bold = QFont(self.font())
        bold.setBold(True)
        for item in (self.own, self.similar):
            item.setFont(0, bold)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.tree.addTopLevelItem(item)
        self.tree.itemClicked.connect(self._clicked)
        self.tree.itemActivated.connect(self._clicked)
        self.set_own([])
        self.set_similar(None, "No model loaded")

    def _add_sentences(self, parent: QTreeWidgetItem, text: str, source: str) -> None:
        for sentence in split_sentences(text):
            item = QTreeWidgetItem([sentence.text])
            if sentence.heading:
                f = QFont(self.font())
                f.setItalic(True)
                item.setFont(0, f)
                item.setFlags(Qt.ItemFlag.ItemIsEnabled)
            else:
                item.setData(0, PHRASE_ROLE, (sentence.phrase, source))
                item.setToolTip(0, "Click to show this sentence's heatmap")
            parent.addChild(item)

    def _note(self, parent: QTreeWidgetItem, text: str) -> None:
        item = QTreeWidgetItem([text])
        f = QFont(self.font())
        f.setItalic(True)
        item.setFont(0, f)
        item.setFlags(Qt.ItemFlag.ItemIsEnabled)
        parent.addChild(item)

    def set_own(self, texts: list[str]) -> None:
        self.own.takeChildren()
        if not texts:
            self._note(self.own, "No report in the library for this image")
        for i, text in enumerate(texts):
            self._add_sentences(self.own, text, "this study's report" if len(texts) == 1 else f"report {i + 1}")
        self.own.setExpanded(True)

    def set_similar(self, hits, note: str | None = None) -> None:
        """``hits``: [Hit(id, text, score)] best first, or None with a ``note``."""
        self.similar.takeChildren()
        if hits is None or not hits:
            self._note(self.similar, note or "No similar reports")
        else:
            for rank, hit in enumerate(hits, 1):
                head = QTreeWidgetItem([f"#{rank}  score {hit.score:.3f}  ({hit.id})"])
                head.setFlags(Qt.ItemFlag.ItemIsEnabled)
                f = QFont(self.font())
                f.setBold(True)
                head.setFont(0, f)
                head.setData(0, Qt.ItemDataRole.AccessibleTextRole, f"Similar report {rank}, score {hit.score:.3f}")
                self._add_sentences(head, hit.text, f"similar report #{rank}")
                self.similar.addChild(head)
                head.setExpanded(rank <= 3)
        self.similar.setExpanded(True)

    def sentences(self) -> list[QTreeWidgetItem]:
        """Every clickable sentence item (tests, keyboard users)."""
        out = []

        def walk(item: QTreeWidgetItem) -> None:
            for i in range(item.childCount()):
                child = item.child(i)
                if child.data(0, PHRASE_ROLE):
                    out.append(child)
                walk(child)

        for i in range(self.tree.topLevelItemCount()):
            walk(self.tree.topLevelItem(i))
        return out

    def _clicked(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        data = item.data(0, PHRASE_ROLE)
        if data:
            phrase, source = data
            self.sentence_clicked.emit(phrase, source)
