"""The dataset, metric and report modules stay importable without torch and Qt (the app uses them)."""

import json
import subprocess
import sys

MODULES = [
    "core_model.data.rle",
    "core_model.data.rsna",
    "core_model.data.siim",
    "core_model.data.covidx",
    "core_model.data.chexpert",
    "core_model.data.splits",
    "core_model.data.readers",
    "core_model.data.phantoms",
    "core_model.metrics.classification",
    "core_model.metrics.segmentation",
    "core_model.metrics.zeroshot",
    "core_model.metrics.references",
    "core_model.metrics.retrieval",
    "core_model.results.markdown",
    "core_model.results.plots",
]


def test_downstream_modules_never_import_torch_or_qt():
    code = (
        "import importlib, json, sys\n"
        f"[importlib.import_module(m) for m in {MODULES!r}]\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in loaded if m.split(".")[0] in ("torch", "transformers", "PySide6", "pyqtgraph", "pandas")]
    assert not heavy, heavy[:5]
