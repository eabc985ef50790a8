"""The reader-study panel: per finding of the loaded model (and free findings) the reader's
verdict on "the finding is present" (agree / disagree / uncertain), an optional confidence 1-5,
a comment for the case; the worklist's progress ("37 of 120 reviewed"), the reviewer's name,
blinded mode, the reading order's seed and auto-advance. The panel only shows and collects:
:class:`app.gui.reader_controller.ReaderStudyController` saves, moves and blinds."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.logic.reader_study import VERDICTS, Label


class FindingRow:
    """One finding's widgets: name, three verdict buttons, confidence."""

    def __init__(self, panel: ReaderPanel, finding: str, free: bool):
        self.finding, self.free = finding, free
        self.name = QLabel(finding + (" (free)" if free else ""))
        self.name.setAccessibleName(f"Finding {finding}")
        self.group = QButtonGroup(panel)
        self.group.setExclusive(True)
        self.buttons: dict[str, QRadioButton] = {}
        for verdict in VERDICTS:
            b = QRadioButton(verdict)
            b.setAccessibleName(f"{finding}: {verdict}")
            b.setToolTip(f"{finding} is present: {verdict}")
            self.group.addButton(b)
            self.buttons[verdict] = b
        self.confidence = QComboBox()
        self.confidence.setAccessibleName(f"{finding}: confidence")
        self.confidence.addItems(["–", "1", "2", "3", "4", "5"])
        self.confidence.setToolTip("Confidence, 1 (guess) to 5 (certain); optional")

    def widgets(self) -> list[QWidget]:
        return [self.name, *self.buttons.values(), self.confidence]

    def verdict(self) -> str | None:
        for v, b in self.buttons.items():
            if b.isChecked():
                return v
        return None

    def set_verdict(self, verdict: str | None, confidence: int | None = None) -> None:
        self.group.setExclusive(False)
        for v, b in self.buttons.items():
            b.setChecked(v == verdict)
        self.group.setExclusive(True)
        self.confidence.setCurrentIndex(int(confidence) if confidence else 0)

    def label(self, comment: str) -> Label | None:
        v = self.verdict()
        if v is None:
            return None
        c = self.confidence.currentIndex()
        return Label(self.finding, v, c or None, comment, self.free)


class ReaderPanel(QWidget):
    save_requested = Signal()
    start_requested = Signal()
    blinded_toggled = Signal(bool)
    reviewer_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAccessibleName("Reader study panel")
        self.progress = QLabel("No worklist: “Start worklist” takes the browser's images")
        self.progress.setAccessibleName("Reader study progress")
        self.progress.setWordWrap(True)
        self.reviewer = QLineEdit()
        self.reviewer.setAccessibleName("Reviewer name")
        self.reviewer.setPlaceholderText("Reviewer name")
        self.blinded = QCheckBox("Blinded")
        self.blinded.setAccessibleName("Blinded mode")
        self.blinded.setToolTip("AI results stay hidden until you have labelled the case, then they are revealed")
        self.shuffle = QCheckBox("Random order, seed")
        self.shuffle.setAccessibleName("Randomise the order")
        self.seed = QSpinBox()
        self.seed.setAccessibleName("Order seed")
        self.seed.setRange(0, 999_999)
        self.seed.setValue(1)
        self.auto_advance = QCheckBox("Auto-advance")
        self.auto_advance.setAccessibleName("Go to the next unreviewed case after saving")
        self.auto_advance.setChecked(True)
        self.start = QPushButton("Start worklist")
        self.start.setAccessibleName("Start the worklist from the browser's images")
        self.case = QLabel("No image selected")
        self.case.setAccessibleName("Reader study case")
        self.case.setWordWrap(True)
        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(6)
        self.free_name = QLineEdit()
        self.free_name.setAccessibleName("Free finding name")
        self.free_name.setPlaceholderText("Free finding (e.g. nodule)")
        self.add_free = QPushButton("Add")
        self.add_free.setAccessibleName("Add a free finding")
        self.comment = QPlainTextEdit()
        self.comment.setAccessibleName("Label comment")
        self.comment.setPlaceholderText("Comment on the case (optional)")
        self.comment.setMaximumHeight(self.fontMetrics().height() * 3)
        self.save = QPushButton("Save labels")
        self.save.setAccessibleName("Save the labels")
        self.save.setToolTip("Ctrl+Return; each label is committed to the library at once")
        self.note = QLabel("")
        self.note.setAccessibleName("Reader study note")
        self.note.setWordWrap(True)
        self.history = QListWidget()
        self.history.setAccessibleName("Labels of this case")

        top = QHBoxLayout()
        top.addWidget(QLabel("Reviewer"))
        top.addWidget(self.reviewer, 1)
        opts = QHBoxLayout()
        for w in (self.blinded, self.shuffle, self.seed, self.auto_advance):
            opts.addWidget(w)
        opts.addStretch(1)
        free = QHBoxLayout()
        free.addWidget(self.free_name, 1)
        free.addWidget(self.add_free)
        buttons = QHBoxLayout()
        buttons.addWidget(self.save)
        buttons.addWidget(self.start)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.progress)
        layout.addLayout(top)
        layout.addLayout(opts)
        layout.addWidget(self.case)
        layout.addLayout(self.grid)
        layout.addLayout(free)
        layout.addWidget(self.comment)
        layout.addLayout(buttons)
        layout.addWidget(self.note)
        layout.addWidget(QLabel("Saved labels"))
        layout.addWidget(self.history, 1)

        self.rows: list[FindingRow] = []
        self.save.clicked.connect(self.save_requested.emit)
        self.start.clicked.connect(self.start_requested.emit)
        self.blinded.toggled.connect(self.blinded_toggled.emit)
        self.reviewer.editingFinished.connect(lambda: self.reviewer_changed.emit(self.reviewer.text().strip()))
        self.add_free.clicked.connect(self._add_free)
        self.free_name.returnPressed.connect(self._add_free)
        self.set_enabled(False)

    # -- findings ---------------------------------------------------------------------------------
    def set_findings(self, findings: list[str], free: list[str] = ()) -> None:
        """One row per model finding, then the free findings (e.g. those labelled before)."""
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.rows = []
        for name in findings:
            self._add_row(name, False)
        for name in free:
            if name not in findings:
                self._add_row(name, True)

    def _add_row(self, finding: str, free: bool) -> FindingRow:
        row = FindingRow(self, finding, free)
        r = len(self.rows)
        for c, w in enumerate(row.widgets()):
            self.grid.addWidget(w, r, c)
            w.setEnabled(self.save.isEnabled())
        self.rows.append(row)
        return row

    def _add_free(self) -> None:
        name = " ".join(self.free_name.text().split())
        if not name:
            return
        if name in [r.finding for r in self.rows]:
            self.note.setText(f"“{name}” is already in the list")
            return
        self._add_row(name, True)
        self.free_name.clear()

    def row(self, finding: str) -> FindingRow | None:
        return next((r for r in self.rows if r.finding == finding), None)

    def labels(self) -> list[Label]:
        comment = self.comment.toPlainText().strip()
        return [lab for lab in (r.label(comment) for r in self.rows) if lab is not None]

    def clear_entries(self) -> None:
        for r in self.rows:
            r.set_verdict(None)
        self.comment.setPlainText("")

    # -- state ------------------------------------------------------------------------------------
    def set_enabled(self, on: bool) -> None:
        for w in (self.save, self.comment, self.free_name, self.add_free):
            w.setEnabled(on)
        for r in self.rows:
            for w in r.widgets():
                w.setEnabled(on)

    def set_history(self, labels: list[tuple[str, str, int | None, str, str]]) -> None:
        """(finding, verdict, confidence, comment, created_at) newest first."""
        self.history.clear()
        for finding, verdict, confidence, comment, when in labels:
            conf = f" ({confidence}/5)" if confidence else ""
            self.history.addItem(
                f"{when[:10]} {when[11:16]}  {finding}: {verdict}{conf}" + (f" – {comment}" if comment else "")
            )
