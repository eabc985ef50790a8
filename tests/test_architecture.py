"""The two architecture contracts, checked on the real import graph at run time (import-linter
checks the static graph in `make lint`):

1. nothing under app/ and nothing in the torch-free runtime (core_model.imaging,
   core_model.runtime) imports torch, directly or through a dependency;
2. nothing outside app/ imports Qt, and neither do app.cli, app.logic and app.library.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TORCH_FREE = ["app", "core_model.imaging", "core_model.runtime", "core_model.dicom_results"]
QT_FREE = ["core_model", "training_cli"]
HEAVY = ("torch", "transformers", "timm", "sentence_transformers")
QT = ("PySide6", "pyqtgraph", "PyQt5", "PyQt6", "PySide2")


def _modules(package: str) -> list[str]:
    path = ROOT / package.replace(".", "/")
    if not path.exists():
        return []
    names = [package]
    for info in pkgutil.walk_packages([str(path)], prefix=package + "."):
        if ".migrations.versions" in info.name or info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


def _import_and_report(modules: list[str]) -> dict:
    code = (
        "import importlib, json, sys\n"
        f"mods = {modules!r}\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        "print(json.dumps(sorted(k for k in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_app_and_runtime_never_import_torch():
    modules = [m for pkg in TORCH_FREE for m in _modules(pkg)]
    assert modules, "no torch-free modules found"
    loaded = _import_and_report(modules)
    leaked = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not leaked, f"torch-free modules pulled in: {leaked[:10]}"


def test_core_and_training_never_import_qt():
    modules = [m for pkg in QT_FREE for m in _modules(pkg)]
    loaded = _import_and_report(modules)
    leaked = sorted(m for m in loaded if m.split(".")[0] in QT)
    assert not leaked, f"Qt imported outside app/: {leaked[:10]}"


def test_headless_app_parts_never_import_qt():
    """app.cli (the headless commands), app.logic and app.library run on servers without Qt."""
    modules = [m for pkg in ("app.cli", "app.logic", "app.library") for m in _modules(pkg)]
    assert "app.logic.jobs" in modules and "app.cli.common" in modules
    loaded = _import_and_report(modules)
    leaked = sorted(m for m in loaded if m.split(".")[0] in (*QT, "shiboken6") or m.startswith("app.gui"))
    assert not leaked, f"Qt imported by the headless app: {leaked[:10]}"
