"""The study browser: a sortable, searchable, filterable table of the library's images, paged
from :func:`app.library.queries.search_instances` (fast over 100,000 rows), with thumbnails
made in a worker."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.library.queries import InstanceRow, search_instances
from app.logic.study_tree import format_date, format_name, patient_tooltip  # format_date: the review panel's too

THUMB = 48  # logical pixels; thumbnails are made at 96 px (device pixel ratio 2: sharp on HiDPI)

COLUMNS = [
    ("", None),
    ("Patient", "patient_name"),
    ("ID", "patient_id"),
    ("Date", "study_date"),
    ("View", "view"),
    ("Status", "review_status"),
    ("Top finding", "top_probability"),
    ("File / series", "file"),
]
STATUS_FILTERS = [("All images", None), ("Unreviewed", "unreviewed"), ("Approved", "approved"), ("Flagged", "flagged")]
UID_ROLE = Qt.ItemDataRole.UserRole + 1


def array_to_pixmap(arr: np.ndarray) -> QPixmap:
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    if arr.ndim == 2:
        img = QImage(arr.data, w, h, arr.strides[0], QImage.Format.Format_Grayscale8)
    else:
        img = QImage(arr.data, w, h, arr.strides[0], QImage.Format.Format_RGB888)
    return QPixmap.fromImage(img.copy())


class StudyTableModel(QAbstractTableModel):
    thumbnails_needed = Signal(list)  # [InstanceRow]

    def __init__(self, library, page_size: int = 200, parent=None):
        super().__init__(parent)
        self.library = library
        self.page_size = page_size
        self.rows: list[InstanceRow] = []
        self.total = 0
        self.filters: dict = {}
        self.sort_key = "study_date"
        self.descending = True
        self.thumbs: dict[str, QPixmap] = {}
        self._requested: set[str] = set()
        self._failed_thumbs: set[str] = set()

    # -- data -----------------------------------------------------------------------------
    def _query(self, offset: int):
        with self.library.session() as s:
            return search_instances(
                s, sort=self.sort_key, descending=self.descending, limit=self.page_size, offset=offset, **self.filters
            )

    def refresh(self) -> None:
        result = self._query(0)
        self.beginResetModel()
        self.rows = list(result.rows)
        self.total = result.total
        self.endResetModel()

    def canFetchMore(self, parent=QModelIndex()) -> bool:
        return not parent.isValid() and len(self.rows) < self.total

    def fetchMore(self, parent=QModelIndex()) -> None:
        if parent.isValid() or len(self.rows) >= self.total:
            return
        result = self._query(len(self.rows))
        if not result.rows:
            self.total = len(self.rows)
            return
        self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows) + len(result.rows) - 1)
        self.rows.extend(result.rows)
        self.endInsertRows()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return [
                "Thumbnail",
                "Sort by patient name",
                "Sort by patient ID",
                "Sort by study date",
                "Sort by view position",
                "Sort by review status",
                "Sort by the probability of the top finding",
                "Sort by the file imported (the series description follows the file name)",
            ][section]
        return None

    def cell_text(self, row: InstanceRow, column: int) -> str:
        if column == 1:
            if not row.patient_name and row.source_format != "dicom":  # PNG / JPEG: its folder
                return f"Folder {row.folder.rsplit('/', 1)[-1] or row.folder}"
            return format_name(row.patient_name) or "(no name)"
        if column == 2:
            return row.patient_id
        if column == 3:
            return format_date(row.study_date)
        if column == 4:
            return row.view_position or row.source_format.upper()
        if column == 5:
            return {"approved": "✓ approved", "flagged": "⚑ flagged"}.get(row.review_status or "", "–")
        if column == 6:
            if row.top_finding is None:
                return ""
            text = row.top_finding
            if row.top_probability is not None:
                text += f" {row.top_probability:.2f}"
            if row.top_domain == "out_of_domain":
                return f"⚠ out of domain ({text})"
            if row.top_domain != "in_domain":  # unknown, or not recorded (an older analysis)
                return f"{text} (domain unknown)"
            return text
        if column == 7:
            desc = row.series_description if row.source_format == "dicom" else ""
            return row.file_name + (f" · {desc}" if desc else "")
        return ""

    @staticmethod
    def finding_tooltip(row: InstanceRow) -> str:
        if row.top_finding is None:
            return "Not analysed"
        if row.top_domain == "out_of_domain":
            return "The image is unlike the model's training data: its result is not meaningful (the AI panel says why)"
        if row.top_domain == "in_domain":
            return "The latest analysis's most likely finding; the image is in the model's training domain"
        return (
            "The latest analysis's most likely finding; the model cannot say whether the image is like "
            "its training data"
        )

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        row = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self.cell_text(row, col)
        if role == UID_ROLE:
            return row.sop_instance_uid
        if role == Qt.ItemDataRole.DecorationRole and col == 0:
            pix = self.thumbs.get(row.sop_instance_uid)
            if pix is None and row.sop_instance_uid not in self._requested:
                self._requested.add(row.sop_instance_uid)
                self.thumbnails_needed.emit([row])
            return pix
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == 5:
                return row.review_status or "unreviewed"
            if col == 6:
                return self.finding_tooltip(row)
            if col in (1, 2):  # the full patient (the user's own data; never logged)
                if row.source_format != "dicom" and not row.patient_name:
                    return f"{row.source_format.upper()} file {row.file_name}\nfrom {row.folder}"
                return patient_tooltip(row)
            return (
                f"{row.modality or row.source_format.upper()} {row.view_position} {row.columns} x {row.rows}\n"
                f"Study {format_date(row.study_date)} {row.study_description}\n{row.sop_instance_uid}"
            )
        if role == Qt.ItemDataRole.AccessibleTextRole:
            if col == 5:
                return row.review_status or "unreviewed"
            return "thumbnail" if col == 0 else self.cell_text(row, col)
        if role == Qt.ItemDataRole.ForegroundRole and col == 5:
            if row.review_status == "flagged":
                return QColor(200, 60, 40)
            if row.review_status == "approved":
                return QColor(40, 140, 60)
        if role == Qt.ItemDataRole.ForegroundRole and col == 6 and row.top_finding is not None:
            if row.top_domain == "out_of_domain":
                return QColor(140, 140, 140)  # greyed: not a result to read
            if row.top_domain != "in_domain":
                return QColor(150, 110, 40)
        return None

    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        key = COLUMNS[column][1] or "study_date"
        self.sort_key = key
        self.descending = order == Qt.SortOrder.DescendingOrder
        self.refresh()

    # -- helpers --------------------------------------------------------------------------
    def row_of(self, uid: str | None) -> int | None:
        if uid is None:
            return None
        for i, row in enumerate(self.rows):
            if row.sop_instance_uid == uid:
                return i
        return None

    def set_thumbnail(self, uid: str, pixels: np.ndarray | None) -> None:
        if pixels is None:
            self._failed_thumbs.add(uid)
            return
        pix = array_to_pixmap(pixels)
        pix.setDevicePixelRatio(max(1.0, max(pixels.shape[:2]) / THUMB))
        self.thumbs[uid] = pix
        i = self.row_of(uid)
        if i is not None:
            idx = self.index(i, 0)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])

    def forget_thumbnail_requests(self, uids) -> None:
        self._requested.difference_update(uids)


class BrowserWidget(QWidget):
    current_changed = Signal(object)  # uid or None
    selection_changed = Signal()
    hidden_changed = Signal(bool)  # the shown image is (no longer) hidden by the filter
    tree_rebuilt = Signal()
    thumbnails_needed = Signal(list)

    def __init__(self, library, parent: QWidget | None = None, *, runner=None):
        super().__init__(parent)
        self.setAccessibleName("Study browser")
        self.runner = runner  # the tree is built in a worker when there is one
        self.model = StudyTableModel(library, parent=self)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search patient name or ID")
        self.search.setClearButtonEnabled(True)
        self.search.setAccessibleName("Search patients")
        self.status = QComboBox()
        self.status.setAccessibleName("Review status filter")
        for label, _ in STATUS_FILTERS:
            self.status.addItem(label)
        self.finding_on = QCheckBox("Finding ≥")
        self.finding_on.setAccessibleName("Filter on a finding above a threshold")
        self.finding = QComboBox()
        self.finding.setAccessibleName("Finding")
        self.finding.setMinimumContentsLength(10)
        self.threshold = QDoubleSpinBox()
        self.threshold.setAccessibleName("Finding threshold")
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(2)
        self.threshold.setValue(0.5)
        self.count = QLabel("")
        self.count.setAccessibleName("Number of images")
        self.table = QTableView()
        self.table.setAccessibleName("Images")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setIconSize(QSize(THUMB, THUMB))
        self.table.setWordWrap(False)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setDefaultSectionSize(THUMB + 6)
        header = self.table.horizontalHeader()
        header.setSortIndicator(3, Qt.SortOrder.DescendingOrder)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        header.setHighlightSections(False)
        self.table.setSortingEnabled(True)
        self.table.setColumnWidth(0, THUMB + 12)
        fm = self.fontMetrics()  # widths from typical contents (measuring rows would cost a query's time)
        for col, sample in (
            (1, "OKAFOR, BENJAMIN"),
            (2, "PAT-00000"),
            (3, "2024-03-01"),
            (4, "VIEW"),
            (5, "✓ approved"),
        ):
            self.table.setColumnWidth(col, fm.horizontalAdvance(sample) + 16)

        from app.gui.study_tree import StudyTree

        self.tree = StudyTree()
        self.tabs = QTabWidget()
        self.tabs.setAccessibleName("Browser views")
        self.tabs.addTab(self.table, "List")
        self.tabs.addTab(self.tree, "Patients")
        self.tabs.setDocumentMode(True)
        self._tree_dirty = True
        self._tree_generation = 0
        self._tree_task = None
        filters = QHBoxLayout()
        filters.setContentsMargins(0, 0, 0, 0)
        filters.addWidget(self.status)
        filters.addWidget(self.finding_on)
        filters.addWidget(self.finding, 1)
        filters.addWidget(self.threshold)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.search)
        layout.addLayout(filters)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.count)

        self._emitted: str | None = None
        self._hidden = False  # the shown image does not match the filters
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(250)
        self._search_timer.timeout.connect(self.apply_filters)
        self.search.textChanged.connect(lambda _t: self._search_timer.start())
        self.status.currentIndexChanged.connect(lambda _i: self.apply_filters())
        self.finding_on.toggled.connect(lambda _b: self.apply_filters())
        self.finding.currentIndexChanged.connect(lambda _i: self._finding_changed())
        self.threshold.valueChanged.connect(lambda _v: self.apply_filters() if self.finding_on.isChecked() else None)
        self.table.selectionModel().currentRowChanged.connect(self._current_row_changed)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self.selection_changed.emit())
        self.model.modelReset.connect(self._after_reset)
        self.model.thumbnails_needed.connect(self.thumbnails_needed)
        self.tree.image_chosen.connect(self._tree_chosen)
        self.tabs.currentChanged.connect(lambda _i: self._tree_dirty and self.rebuild_tree())
        self.thresholds: dict[str, float] = {}
        self.set_findings([])

    # -- filters ------------------------------------------------------------------------------
    def set_findings(self, classes: list[str], thresholds: dict[str, float] | None = None) -> None:
        """Findings to filter on (the bundle's classes, else those found in the library)."""
        if not classes:
            from sqlalchemy import select

            from app.library.models import Instance

            with self.model.library.session() as s:
                classes = sorted(x for x in s.execute(select(Instance.top_finding).distinct()).scalars() if x)
        self.thresholds = dict(thresholds or {})
        current = self.finding.currentText()
        self.finding.blockSignals(True)
        self.finding.clear()
        for c in classes:
            self.finding.addItem(c)
        if current in classes:
            self.finding.setCurrentText(current)
        else:
            abnormal = [c for c in classes if c.lower() != "normal"]
            if abnormal:
                self.finding.setCurrentText(abnormal[0])
        self.finding.blockSignals(False)
        self.finding_on.setEnabled(bool(classes))
        self._finding_changed(apply=False)

    def _finding_changed(self, apply: bool = True) -> None:
        t = self.thresholds.get(self.finding.currentText())
        if t is not None:
            self.threshold.blockSignals(True)
            self.threshold.setValue(float(t))
            self.threshold.blockSignals(False)
            self.threshold.setToolTip("The model's operating threshold for this finding")
        if apply and self.finding_on.isChecked():
            self.apply_filters()

    def current_filters(self) -> dict:
        filters: dict = {}
        text = self.search.text().strip()
        if text:
            filters["text"] = text
        status = STATUS_FILTERS[self.status.currentIndex()][1]
        if status:
            filters["review_status"] = status
        if self.finding_on.isChecked() and self.finding.currentText():
            filters["top_finding"] = self.finding.currentText()
            filters["min_probability"] = float(self.threshold.value())
        return filters

    def apply_filters(self) -> None:
        self.model.filters = self.current_filters()
        self.refresh()

    def refresh(self) -> None:
        """Query again (after an import, an analysis, a review), keeping the shown image
        selected. An image that the new filters leave out stays shown (nothing is emitted); it
        is selected again when a later filter brings it back."""
        self._restoring = set(self.selected_uids())
        self.model.refresh()

    def _after_reset(self) -> None:
        selected = getattr(self, "_restoring", set())
        self._restoring = set()
        total = self.model.total
        self.count.setText(f"{total} image{'s' if total != 1 else ''}" + (" (filtered)" if self.model.filters else ""))
        keep = self._emitted
        row = self.model.row_of(keep)
        if keep is not None and row is None:
            if self.shows(keep):  # on a later page: load pages until it is there (kept visible)
                for _ in range(50):
                    if row is not None or not self.model.canFetchMore():
                        break
                    self.model.fetchMore()
                    row = self.model.row_of(keep)
        self._set_hidden(keep is not None and row is None)
        self._tree_dirty = True
        if self.tabs.currentWidget() is self.tree:
            self.rebuild_tree()
        if row is None:
            return
        sm = self.table.selectionModel()
        sm.blockSignals(True)
        sm.setCurrentIndex(self.model.index(row, 1), sm.SelectionFlag.NoUpdate)
        for uid in selected | {keep}:
            r = self.model.row_of(uid)
            if r is not None:
                sm.select(self.model.index(r, 0), sm.SelectionFlag.Select | sm.SelectionFlag.Rows)
        sm.blockSignals(False)
        self.table.scrollTo(self.model.index(row, 1), QAbstractItemView.ScrollHint.EnsureVisible)
        self.table.viewport().update()

    # -- the tree -----------------------------------------------------------------------------
    def rebuild_tree(self):
        """Group the filtered images by patient, study and series (in a worker when there is a
        runner; a result overtaken by a newer rebuild is dropped)."""
        from app.logic import jobs

        self._tree_dirty = False
        self._tree_generation += 1
        gen, filters = self._tree_generation, dict(self.model.filters)
        if self.runner is None:
            self._tree_built((gen, jobs.study_tree_job(None, self.model.library, filters)[1]))
            return None
        self._tree_task = self.runner.start(
            "Study tree",
            lambda ctx, lib, f: (gen, jobs.study_tree_job(ctx, lib, f)[1]),
            self.model.library,
            filters,
            lane="interactive",
            on_result=self._tree_built,
        )
        return self._tree_task

    def _tree_built(self, payload) -> None:
        gen, nodes = payload
        if gen != self._tree_generation:
            return
        self.tree.current = self._emitted
        self.tree.set_tree(nodes)
        self.tree_rebuilt.emit()

    def _tree_chosen(self, uid: str) -> None:
        if not self.select_uid(uid):
            self.count.setText("That image is not in the list (filtered)")

    def shows(self, uid: str) -> bool:
        """Whether the current filters show ``uid`` (loaded in the table or not)."""
        with self.model.library.session() as s:
            return bool(search_instances(s, uids=[uid], limit=1, with_total=False, **self.model.filters).rows)

    def current_hidden(self) -> bool:
        """The image shown (the last one selected) is hidden by the filters: the viewer and the
        review panel say so, and nothing acts on it."""
        return self._hidden

    def _set_hidden(self, hidden: bool) -> None:
        if hidden != self._hidden:
            self._hidden = hidden
            self.hidden_changed.emit(hidden)

    # -- selection ----------------------------------------------------------------------------
    def _current_row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        uid = self.model.data(current, UID_ROLE) if current.isValid() else None
        if uid != self._emitted:
            self._emitted = uid
            self._set_hidden(False)
            self.tree.select(uid)
            self.current_changed.emit(uid)

    def current_uid(self) -> str | None:
        idx = self.table.selectionModel().currentIndex()
        return self.model.data(idx, UID_ROLE) if idx.isValid() else None

    def selected_uids(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.model.rows[r].sop_instance_uid for r in rows if r < len(self.model.rows)]

    def select_row(self, row: int) -> bool:
        while row >= len(self.model.rows) and self.model.canFetchMore():
            self.model.fetchMore()
        if not 0 <= row < len(self.model.rows):
            return False
        idx = self.model.index(row, 1)
        sm = self.table.selectionModel()
        sm.setCurrentIndex(idx, sm.SelectionFlag.ClearAndSelect | sm.SelectionFlag.Rows)
        self.table.scrollTo(idx)
        return True

    def select_uid(self, uid: str) -> bool:
        """Select ``uid`` (loading further pages until it is there); False: the filter hides it."""
        row = self.model.row_of(uid)
        while row is None and self.model.canFetchMore():
            self.model.fetchMore()
            row = self.model.row_of(uid)
        return False if row is None else self.select_row(row)

    def select_relative(self, step: int) -> bool:
        idx = self.table.selectionModel().currentIndex()
        row = (idx.row() + step) if idx.isValid() else 0
        return self.select_row(max(0, row))

    def visible_rows(self) -> list[InstanceRow]:
        first = self.table.rowAt(0)
        last = self.table.rowAt(self.table.viewport().height() - 1)
        if first < 0:
            return []
        last = len(self.model.rows) - 1 if last < 0 else last
        return self.model.rows[first : last + 1]

    def persistent(self, row: int) -> QPersistentModelIndex:
        return QPersistentModelIndex(self.model.index(row, 0))
