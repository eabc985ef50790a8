"""The browser's Patient -> Study -> Series -> Image tree (Qt-free).

:func:`group_rows` turns the browser's filtered rows into plain nodes: DICOM images by patient,
study (newest first: a prior study sits below the current one), series and image; PNG / JPEG
files, which carry no patient or study, by the folder they were imported from, each named by its
file. Labels are short ("NOVAK, ANNA · PAT-A"); the full patient (name, ID, birth date, sex) is
the tooltip. Building the nodes for 10,000 images is a few tens of milliseconds; the widget
(:mod:`app.gui.study_tree`) builds only the rows it shows and runs this in a worker.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field

from app.library.queries import InstanceRow


@dataclass
class TreeNode:
    kind: str  # patient | folder | study | series | image
    label: str
    tooltip: str = ""
    uid: str | None = None  # images only
    children: list[TreeNode] = field(default_factory=list)
    images: int = 0  # images below (itself, for an image)
    sort_key: tuple = ()
    parent: TreeNode | None = field(default=None, repr=False, compare=False)
    row: int = 0  # its place among its parent's children (or the top level)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


def format_date(value: str) -> str:
    """YYYYMMDD -> YYYY-MM-DD (anything else as it is)."""
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 else (value or "")


def format_name(value: str) -> str:
    """A DICOM person name (Family^Given^Middle...) as "Family, Given Middle"."""
    parts = [p.strip() for p in (value or "").split("^")]
    family, given = (parts + ["", ""])[:2]
    rest = " ".join(p for p in parts[2:] if p)
    text = f"{family}, {given}" if family and given else (family or given)
    return f"{text} {rest}".strip()


def _date(value: str) -> str:
    return format_date(value) or "no date"


def _name(value: str) -> str:
    return format_name(value) or "(no name)"


def patient_tooltip(row: InstanceRow) -> str:
    bits = [f"Patient: {_name(row.patient_name)}", f"ID: {row.patient_id or '(none)'}"]
    if row.birth_date:
        bits.append(f"Born: {_date(row.birth_date)}")
    if row.sex:
        bits.append(f"Sex: {row.sex}")
    return "\n".join(bits)


def image_label(row: InstanceRow) -> str:
    view = row.view_position or row.source_format.upper()
    return f"{view} · {row.file_name}" if row.file_name else view


def group_rows(rows: Iterable[InstanceRow]) -> list[TreeNode]:
    """Patients (by name) and folders (PNG / JPEG, by path), each with their images below."""
    tops: dict[tuple, TreeNode] = {}
    studies: dict[tuple, TreeNode] = {}
    series: dict[tuple, TreeNode] = {}
    for row in rows:
        leaf = TreeNode(
            "image",
            image_label(row),
            f"{row.file_name}\n{row.modality or row.source_format.upper()} {row.view_position} "
            f"{row.columns} x {row.rows}\n{row.sop_instance_uid}",
            row.sop_instance_uid,
            images=1,
            sort_key=(row.instance_number if row.instance_number is not None else 1 << 30, row.file_name),
        )
        if row.source_format != "dicom":
            key = ("folder", row.folder)
            top = tops.get(key)
            if top is None:
                folder = row.folder.rsplit("/", 1)[-1] or row.folder or "(no folder)"
                top = tops[key] = TreeNode(
                    "folder", f"Folder {folder}", f"PNG / JPEG files from {row.folder}", sort_key=(1, folder.lower())
                )
            top.children.append(leaf)
            top.images += 1
            continue
        key = ("patient", row.patient_pk or row.patient_id or row.patient_name)
        top = tops.get(key)
        if top is None:
            label = _name(row.patient_name) + (f" · {row.patient_id}" if row.patient_id else "")
            top = tops[key] = TreeNode("patient", label, patient_tooltip(row), sort_key=(0, label.lower()))
        top.images += 1
        st = studies.get((key, row.study_uid))
        if st is None:
            desc = row.study_description or (f"accession {row.accession_number}" if row.accession_number else "")
            st = studies[(key, row.study_uid)] = TreeNode(
                "study",
                _date(row.study_date) + (f" · {desc}" if desc else ""),
                f"Study {row.study_uid}" + (f"\nAccession {row.accession_number}" if row.accession_number else ""),
                sort_key=(-(int(row.study_date) if row.study_date.isdigit() else 0), row.study_uid),
            )
            top.children.append(st)
        st.images += 1
        se = series.get(row.series_uid)
        if se is None:
            number = f"Series {row.series_number}" if row.series_number is not None else "Series"
            desc = row.series_description or row.view_position or row.modality
            se = series[row.series_uid] = TreeNode(
                "series",
                f"{number} · {desc}" if desc else number,
                f"{row.modality} series {row.series_uid}",
                sort_key=(row.series_number if row.series_number is not None else 1 << 30, row.series_uid),
            )
            st.children.append(se)
        se.images += 1
        se.children.append(leaf)
    out = sorted(tops.values(), key=lambda n: n.sort_key)
    for top in out:
        top.children.sort(key=lambda n: n.sort_key)
        for st in top.children:
            st.children.sort(key=lambda n: n.sort_key)
            for se in st.children:
                se.children.sort(key=lambda n: n.sort_key)
    return out


@dataclass
class Tree:
    """The top-level nodes, each node's parent and row, and the image nodes by UID."""

    nodes: list[TreeNode]
    by_uid: dict[str, TreeNode]

    @property
    def images(self) -> int:
        return sum(n.images for n in self.nodes)


def link(nodes: list[TreeNode]) -> Tree:
    by_uid: dict[str, TreeNode] = {}
    stack: list[tuple[TreeNode | None, list[TreeNode]]] = [(None, nodes)]
    while stack:
        parent, children = stack.pop()
        for i, node in enumerate(children):
            node.parent, node.row = parent, i
            if node.uid is not None:
                by_uid[node.uid] = node
            if node.children:
                stack.append((node, node.children))
    return Tree(nodes, by_uid)


def tree_rows(library, filters: dict) -> list[InstanceRow]:
    """Every row the browser's filters show (all pages)."""
    from app.library.queries import search_instances

    with library.session() as s:
        return search_instances(s, limit=None, with_total=False, **filters).rows


@contextmanager
def collector_paused():
    """No cyclic garbage collection meanwhile (it stops every thread: a full pass over a large
    app's objects, set off by the allocations of a 10,000-image tree, stalled the GUI for
    100-200 ms; measured by benchmarks/app_responsiveness.py). The parent links are cycles:
    they are collected once the tree is replaced."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def build_tree(library, filters: dict) -> Tree:
    """The browser's tree for ``filters``, ready for the widget (parents, rows, UID index)."""
    with collector_paused():
        return link(group_rows(tree_rows(library, filters)))
