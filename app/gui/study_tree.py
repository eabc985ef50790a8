"""The browser's Patient -> Study -> Series -> Image tree (nodes from :mod:`app.logic.study_tree`).

A model over the plain nodes (no item objects): a rebuild for 10,000 images costs the GUI thread
one model reset, whatever the size, because the query, the grouping and the index run in a worker
(when the browser has a task runner) and rows are only asked for when shown. Clicking an image
selects it in the browser's table; the table's current image is selected in the tree (its
patient, study and series expanded) and kept selected across rebuilds.
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractItemModel, QModelIndex, Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTreeView

from app.logic.study_tree import Tree, TreeNode


class TreeModel(QAbstractItemModel):
    HEADERS = ("Patient / study / series / image", "Images")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.tree = Tree([], {})

    def set_tree(self, tree: Tree) -> None:
        self.beginResetModel()
        self.tree = tree
        self.endResetModel()

    def node(self, index: QModelIndex) -> TreeNode | None:
        return index.internalPointer() if index.isValid() else None

    def _children(self, parent: QModelIndex) -> list[TreeNode]:
        node = self.node(parent)
        return self.tree.nodes if node is None else node.children

    def index(self, row: int, column: int, parent=QModelIndex()) -> QModelIndex:
        children = self._children(parent)
        if 0 <= row < len(children) and 0 <= column < 2:
            return self.createIndex(row, column, children[row])
        return QModelIndex()

    def parent(self, index=QModelIndex()) -> QModelIndex:  # type: ignore[override]
        node = self.node(index)
        if node is None or node.parent is None:
            return QModelIndex()
        return self.createIndex(node.parent.row, 0, node.parent)

    def rowCount(self, parent=QModelIndex()) -> int:
        if parent.isValid() and parent.column() != 0:
            return 0
        return len(self._children(parent))

    def columnCount(self, parent=QModelIndex()) -> int:
        return 2

    def hasChildren(self, parent=QModelIndex()) -> bool:
        return bool(self._children(parent)) if (not parent.isValid() or parent.column() == 0) else False

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        node = self.node(index)
        if node is None:
            return None
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.AccessibleTextRole):
            if index.column() == 0:
                return node.label
            return "" if node.kind == "image" else str(node.images)
        if role == Qt.ItemDataRole.ToolTipRole:
            return node.tooltip
        return None

    def index_of(self, node: TreeNode) -> QModelIndex:
        return self.createIndex(node.row, 0, node)


class StudyTree(QTreeView):
    image_chosen = Signal(str)  # uid

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAccessibleName("Patients, studies and series")
        self.tree_model = TreeModel(self)
        self.setModel(self.tree_model)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setUniformRowHeights(True)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Fixed)  # ResizeToContents would visit every row
        header.resizeSection(1, self.fontMetrics().horizontalAdvance("Images") + 24)
        self.current: str | None = None
        self.clicked.connect(self._clicked)
        self.activated.connect(self._clicked)

    @property
    def nodes(self) -> list[TreeNode]:
        return self.tree_model.tree.nodes

    def set_tree(self, tree: Tree) -> None:
        """Replace the tree (one model reset; rows are built when shown)."""
        self.tree_model.set_tree(tree)
        if self.current is not None:
            self.select(self.current)

    def _clicked(self, index: QModelIndex) -> None:
        node = self.tree_model.node(index)
        if node is not None and node.uid is not None:
            self.current = node.uid
            self.image_chosen.emit(node.uid)

    def index_of(self, uid: str) -> QModelIndex:
        node = self.tree_model.tree.by_uid.get(uid)
        return self.tree_model.index_of(node) if node is not None else QModelIndex()

    def select(self, uid: str | None) -> bool:
        """Select (expanding its parents) and show ``uid``'s image; False when not in the tree."""
        self.current = uid
        index = self.index_of(uid) if uid is not None else QModelIndex()
        sm = self.selectionModel()
        sm.blockSignals(True)
        try:
            if not index.isValid():
                sm.clearSelection()
                return False
            parent = index.parent()
            while parent.isValid():
                self.expand(parent)
                parent = parent.parent()
            sm.setCurrentIndex(index, sm.SelectionFlag.ClearAndSelect | sm.SelectionFlag.Rows)
            self.scrollTo(index)
        finally:
            sm.blockSignals(False)
        self.viewport().update()
        return True

    def current_label(self) -> str | None:
        index = self.currentIndex()
        return index.data() if index.isValid() else None

    def patient_labels(self) -> list[str]:
        return [n.label for n in self.nodes]
