"""The reading room's GUI stalls (used by benchmarks/app_responsiveness.py). Research use only.

- ``pan-2x2-linked``: a 2 x 2 hanging of four 2048 x 2048 DICOMs (current frontal + lateral, the
  prior's two) with window/level, zoom and pan linked; pane 0 is panned in 150 steps of a
  simulated drag (one step per event-loop pass every 16 ms), each step moving the three linked
  panes too. Baseline: the same drag in a 1 x 1 layout (one pane, nothing linked): what
  linking costs on top of panning one image.
- ``tree-rebuild-10k``: the browser's Patient -> Study -> Series -> Image tree rebuilt for 10,000
  instances (2,000 patients, 4,000 studies; rows inserted in bulk as in library_import.py).
  Ours: the query and the grouping in a worker, the top level built on the GUI thread, the rest
  on expand. Baseline: the same query and grouping on the GUI thread and every tree item built
  at once.

Stall: the longest gap between two beats of a 10 ms heartbeat on the GUI thread.
"""

from __future__ import annotations

from pathlib import Path


def _write_chest_studies(folder: Path, size: int) -> None:
    import numpy as np

    from core_model.imaging.dicom_write import DicomSpec, write_dicom

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    base = 2600 - 1500 * (
        np.exp(-(((xx - 0.3) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2))
        + np.exp(-(((xx - 0.7) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    )
    for study, date in (("1.2.826.0.1.3680043.8.498.8001", "20240315"), ("1.2.826.0.1.3680043.8.498.8000", "20230310")):
        for k, view in enumerate(("PA", "LL")):
            img = np.clip(base + rng.normal(0, 40, base.shape), 0, 4095).astype(np.uint16)
            write_dicom(
                folder / f"{date}_{view}.dcm",
                img,
                DicomSpec(
                    patient_name="BENCH^PATIENT",
                    patient_id="BENCH-1",
                    study_uid=study,
                    study_date=date,
                    view_position=view,
                    series_number=k + 1,
                    windows=[(1800, 2400)],
                ),
            )


def _pan(app, window, hb, wait_for, steps: int = 150) -> float:
    from PySide6.QtCore import QTimer

    pane = window.hanging.panes[0]
    pane.zoom(2.0)
    state = {"n": 0}
    timer = QTimer()
    timer.setInterval(16)

    def step():
        if state["n"] >= steps:
            timer.stop()
            state["done"] = True
            return
        dx = 4.0 if (state["n"] // 50) % 2 == 0 else -4.0
        pane.view.translateBy(x=dx, y=dx / 2)
        pane.view.sigRangeChangedManually.emit(pane.view.state["mouseEnabled"])
        state["n"] += 1

    timer.timeout.connect(step)
    hb.start()
    timer.start()
    wait_for(app, lambda: state.get("done"), 600)
    return hb.stop()


def measure(work: Path, hb, wait_for, *, size: int = 2048, tree_instances: int = 10000) -> list[dict]:
    """The two targets, as dicts for print_target (name, ours, baseline in ms, goal, met)."""
    from PySide6.QtWidgets import QApplication

    from app.gui.main_window import MainWindow
    from app.library import open_library
    from app.library.importer import Importer
    from app.library.queries import search_instances
    from app.logic.study_tree import group_rows
    from benchmarks.library_import import fill_synthetic

    out = []
    # -- pan a linked 2 x 2 --
    source = work / "room"
    _write_chest_studies(source, size)
    lib = open_library(work / "room-lib" / "library.db")
    Importer(lib, mode="link").run([str(source)])
    window = MainWindow(lib, restore_layout=False, select_first=False)
    window.resize(1366, 768)
    window.show()
    app = QApplication.instance()
    with lib.session() as s:
        pa = next(
            r.sop_instance_uid
            for r in search_instances(s, limit=None).rows
            if r.study_date == "20240315" and r.view_position == "PA"
        )
    window.browser.select_uid(pa)
    wait_for(app, window.is_idle, 600)
    window.act_layouts["1x1"].setChecked(True)
    wait_for(app, window.is_idle, 600)
    base = _pan(app, window, hb, wait_for)
    window.act_layouts["2x2"].setChecked(True)
    window.act_link_window.setChecked(True)
    window.act_link_view.setChecked(True)
    wait_for(app, lambda: window.is_idle() and all(p.image is not None for p in window.hanging.panes), 600)
    ours = _pan(app, window, hb, wait_for)
    out.append(dict(name="pan-2x2-linked", ours=ours, baseline=base))
    window.close()
    lib.close()

    # -- rebuild the tree for 10,000 images --
    db = work / "tree-lib" / "library.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    fill_synthetic(db, tree_instances)
    lib = open_library(db)
    window = MainWindow(lib, restore_layout=False)
    window.show()
    wait_for(app, window.is_idle, 600)
    browser = window.browser
    done = {}
    browser.tree_rebuilt.connect(lambda: done.setdefault("tree", True))
    browser.tabs.setCurrentWidget(browser.tree)
    wait_for(app, lambda: "tree" in done, 600)
    best = []
    for _ in range(3):
        done.clear()
        hb.start()
        browser.rebuild_tree()
        wait_for(app, lambda: "tree" in done, 600)
        best.append(hb.stop())
    assert sum(n.images for n in browser.tree.nodes) == tree_instances

    def eager():
        from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem

        with lib.session() as s:
            nodes = group_rows(search_instances(s, limit=None, with_total=False).rows)
        tree = QTreeWidget()

        def build(node):
            item = QTreeWidgetItem([node.label, str(node.images)])
            item.addChildren([build(c) for c in node.children])
            return item

        tree.addTopLevelItems([build(n) for n in nodes])
        return tree

    from PySide6.QtCore import QTimer

    box = {}

    def go():
        box["tree"] = eager()
        box["done"] = True

    hb.start()
    QTimer.singleShot(0, go)
    wait_for(app, lambda: box.get("done"), 600)
    baseline = hb.stop()
    out.append(dict(name="tree-rebuild-10k", ours=sorted(best)[1], baseline=baseline))
    window.close()
    lib.close()
    return out


def report(results: list[dict], goal_ms: float) -> bool:
    from benchmarks._targets import print_target

    ok = True
    for r in results:
        ok &= print_target(
            r["name"],
            r["ours"],
            "ms",
            baseline=r["baseline"],
            goal=f"<={goal_ms:.0f} ms",
            met=r["ours"] <= goal_ms,
        )
    return ok


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit("run benchmarks/app_responsiveness.py --reading-room-only")
