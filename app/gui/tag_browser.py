"""The DICOM tag browser of the active image: every element of the file's header (pixel data
left out), sequences expandable item by item, and a search over tag, name and value that keeps
the matches' sequences open. Patient tags are shown (the user owns the data); nothing here is
ever logged."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QLabel, QLineEdit, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

MAX_VALUE_CHARS = 200


def value_text(elem) -> str:
    """A short, readable value (binary as its length)."""
    if elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") or isinstance(elem.value, (bytes, bytearray)):
        n = len(elem.value) if elem.value is not None else 0
        return f"<{n} bytes>"
    try:
        text = str(elem.value) if not elem.VM or elem.VM <= 1 else "\\".join(str(v) for v in elem.value)
    except Exception:  # a value pydicom cannot convert: its raw repr
        text = repr(elem.value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


class TagBrowser(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAccessibleName("DICOM tags")
        self.search = QLineEdit()
        self.search.setAccessibleName("Search tags")
        self.search.setPlaceholderText("Search tag, name or value (e.g. 0018,5101 or ViewPosition)")
        self.search.setClearButtonEnabled(True)
        self.note = QLabel("No image")
        self.note.setAccessibleName("Tags note")
        self.note.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setAccessibleName("Tags")
        self.tree.setHeaderLabels(["Tag", "Name", "VR", "Value"])
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        fm = self.fontMetrics()
        self.tree.setColumnWidth(0, fm.horizontalAdvance("(0000,0000)") + 30)
        self.tree.setColumnWidth(1, fm.horizontalAdvance("M") * 16)
        self.tree.setColumnWidth(2, fm.horizontalAdvance("VRW"))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.search)
        layout.addWidget(self.note)
        layout.addWidget(self.tree, 1)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self.apply_search)
        self.search.textChanged.connect(lambda _t: self._timer.start())
        self.dataset = None

    def set_dataset(self, dataset, source: str = "") -> None:
        """``dataset``: a pydicom Dataset (None: a PNG / JPEG or no image)."""
        self.dataset = dataset
        self.tree.clear()
        if dataset is None:
            self.note.setText(f"{source}: a PNG / JPEG file has no DICOM tags" if source else "No image")
            return
        self.tree.addTopLevelItems(self._items(dataset))
        count = self.tree.topLevelItemCount()
        self.note.setText(f"{source}: {count} elements (pixel data not shown)" if source else f"{count} elements")
        if self.search.text().strip():
            self.apply_search()

    def _items(self, dataset) -> list[QTreeWidgetItem]:
        items = []
        for elem in dataset:
            if elem.tag == 0x7FE00010:  # pixel data
                continue
            tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
            name = elem.keyword or elem.name
            if elem.VR == "SQ":
                item = QTreeWidgetItem([tag, name, "SQ", f"{len(elem.value)} item(s)"])
                for k, sub in enumerate(elem.value, 1):
                    child = QTreeWidgetItem(["", f"Item {k}", "", f"{len(sub)} element(s)"])
                    child.addChildren(self._items(sub))
                    item.addChild(child)
            else:
                item = QTreeWidgetItem([tag, name, str(elem.VR), value_text(elem)])
            item.setToolTip(3, item.text(3))
            items.append(item)
        return items

    # -- search -----------------------------------------------------------------------------------
    def apply_search(self) -> int:
        """Show the matching elements (with their sequences); returns how many match."""
        term = self.search.text().strip().lower().replace(" ", "")
        hits = 0

        def visit(item: QTreeWidgetItem) -> bool:
            nonlocal hits
            own = bool(term) and any(term in item.text(c).lower().replace(" ", "") for c in range(4))
            hits += int(own)
            below = False
            for i in range(item.childCount()):
                below |= visit(item.child(i))
            show = not term or own or below
            item.setHidden(not show)
            if term and below:
                item.setExpanded(True)
            return own or below

        for i in range(self.tree.topLevelItemCount()):
            visit(self.tree.topLevelItem(i))
        return hits

    def visible_names(self) -> list[str]:
        out = []

        def walk(item):
            if not item.isHidden():
                out.append(item.text(1))
                for i in range(item.childCount()):
                    walk(item.child(i))

        for i in range(self.tree.topLevelItemCount()):
            walk(self.tree.topLevelItem(i))
        return out

    def item_named(self, name: str) -> QTreeWidgetItem | None:
        found = self.tree.findItems(name, Qt.MatchFlag.MatchExactly | Qt.MatchFlag.MatchRecursive, 1)
        return found[0] if found else None
