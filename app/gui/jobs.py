"""Progress of long jobs (import, analyse all, exports) in the status bar: one row per job with a
progress bar and a Cancel button."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from app.gui.workers import Task, TaskRunner


class JobRow(QWidget):
    def __init__(self, task: Task, title: str, runner: TaskRunner, parent=None):
        super().__init__(parent)
        self.task = task
        self.title = title
        self.label = QLabel(title)
        self.bar = QProgressBar()
        self.bar.setAccessibleName(f"{title} progress")
        self.bar.setRange(0, 0)  # busy until the first report
        self.bar.setMaximumWidth(self.fontMetrics().horizontalAdvance("M") * 14)
        self.bar.setTextVisible(True)
        self.cancel = QPushButton("Cancel")
        self.cancel.setAccessibleName(f"Cancel {title.lower()}")
        self.cancel.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.bar.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel)
        self.cancel.clicked.connect(lambda: self._cancel(runner))
        task.signals.progress.connect(self.on_progress)

    def _cancel(self, runner: TaskRunner) -> None:
        runner.cancel(self.task)
        self.cancel.setEnabled(False)
        self.label.setText(f"{self.title}: cancelling…")

    def on_progress(self, done: int, total: int, text: str) -> None:
        if total > 0:
            self.bar.setRange(0, total)
            self.bar.setValue(min(done, total))
            self.bar.setFormat(f"{done}/{total}")
        if text and self.cancel.isEnabled():
            self.label.setText(f"{self.title}: {text}")


class JobsWidget(QWidget):
    def __init__(self, runner: TaskRunner, parent=None):
        super().__init__(parent)
        self.setAccessibleName("Running jobs")
        self.runner = runner
        self.rows: dict[int, JobRow] = {}
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.setSpacing(0)
        self.setVisible(False)

    def add(self, task: Task, title: str) -> JobRow:
        row = JobRow(task, title, self.runner, self)
        self.rows[task.id] = row
        self.layout_.addWidget(row)
        task.signals.finished.connect(lambda t=task: self.remove(t))
        self.setVisible(True)
        return row

    def remove(self, task: Task) -> None:
        row = self.rows.pop(task.id, None)
        if row is not None:
            row.setParent(None)
            row.deleteLater()
        self.setVisible(bool(self.rows))
