"""Reports: references only beside comparable runs, the empty baseline and its warning, PNGs."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from core_model.metrics.classification import evaluate_classification
from core_model.metrics.references import comparability, lookup
from core_model.metrics.segmentation import SegmentationAccumulator
from core_model.results.markdown import render_report, write_metrics_json, write_report
from core_model.results.plots import pick_examples, plot_curves, plot_roc_pr, plot_segmentation_grid


@pytest.fixture(scope="module")
def binary_metrics():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.25).astype(float)
    z = rng.normal(0, 1, 400) + 2 * y
    return y, z, evaluate_classification(y, z, class_names=["pneumonia"], y_val=y, logits_val=z, n_boot=100)


def test_reference_lookup():
    refs = lookup("rsna", "auroc", "mgca-rsna-classification", 0.01)
    assert {r.method: r.value_percent for r in refs}["Adaptor, DINOv2-B"] == 84.4
    assert len(refs) == 6
    assert lookup("siim", "dice_mgca", "mgca-siim", 1.0)[0].value == pytest.approx(0.642)
    ok, why = comparability("rsna", "auroc", "grouped", 0.01)
    assert not ok and "mgca-rsna-classification" in why
    assert not comparability("rsna", "auroc", "mgca-rsna-classification", 0.05)[0]


def test_report_shows_references_only_when_protocol_matches(tmp_path, binary_metrics):
    _, _, m = binary_metrics
    kw = dict(
        title="RSNA fine-tune",
        dataset="rsna",
        fraction=0.01,
        classification=m,
        split_sizes={"train": 187, "val": 4003, "test": 4003},
    )
    same = render_report(protocol="mgca-rsna-classification", **kw)
    other = render_report(protocol="grouped", **kw)
    assert "Research use only" in same and "Research use only" in other
    assert "| Adaptor, DINOv2-B | 84.4 |" in same and "best text encoder picked per column" in same
    assert "84.4" not in other and "Not shown" in other
    assert "400 images, the published split 4,003" in same  # this test set is not the published one
    path = write_report(tmp_path / "report.md", protocol="mgca-rsna-classification", **kw)
    assert path.read_text() == same


def test_segmentation_report_has_baseline_row_and_warning():
    truth = np.zeros((10, 8, 8), bool)
    truth[:2, 2:4, 2:4] = True
    pred = np.zeros((10, 8, 8))
    pred[5:, 0, 0] = 1.0  # misses both lesions, false positives elsewhere
    acc = SegmentationAccumulator()
    acc.update(pred, truth)
    text = render_report(title="SIIM", dataset="siim", protocol="mgca-siim", fraction=1.0, segmentation=acc.result())
    assert "**Warning:** The model does not beat the all-empty predictor" in text
    assert "| all-empty baseline | 80.0 | 0.0 | 0.0 |" in text
    assert "| MGCA-R50 | 64.2 |" in text


def test_metrics_json_has_no_nan(tmp_path):
    path = write_metrics_json(tmp_path / "metrics.json", {"a": math.nan, "b": np.float32(0.5), "c": np.arange(2)})
    assert json.loads(path.read_text()) == {"a": None, "b": 0.5, "c": [0, 1]}


def test_curve_pngs(tmp_path, binary_metrics):
    y, z, m = binary_metrics
    e = m["per_class"]["pneumonia"]
    paths = plot_curves(
        y,
        1 / (1 + np.exp(-z)),
        ["pneumonia"],
        tmp_path,
        thresholds=m["thresholds"],
        cis={"pneumonia": (e["ci_low"], e["ci_high"])},
    )
    img = Image.open(paths["pneumonia"])
    assert img.format == "PNG" and img.size[0] > img.size[1] > 300
    assert np.asarray(img.convert("L")).std() > 10  # something is drawn
    assert plot_roc_pr([1, 1, 1], [0.1, 0.2, 0.3], "x", tmp_path / "none.png") is None


def test_segmentation_grid_png(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.random((5, 32, 32))
    truth = np.zeros((5, 32, 32), bool)
    truth[:3, 5:15, 5:15] = True
    pred = np.zeros((5, 32, 32))
    pred[:3, 7:17, 7:17] = 0.9
    pred[4, 20:25, 20:25] = 0.8
    inter = (truth & (pred > 0.5)).reshape(5, -1).sum(1)
    areas = ((pred > 0.5).reshape(5, -1).sum(1), truth.reshape(5, -1).sum(1))
    dice = np.where(areas[0] + areas[1] > 0, 2 * inter / np.maximum(areas[0] + areas[1], 1), 1.0)
    idx = pick_examples(dice, truth.reshape(5, -1).any(1), 4, pred_area=areas[0])
    assert 4 in idx  # the false positive on a lesion-free image is shown, not hidden
    path = plot_segmentation_grid(imgs[idx], truth[idx], pred[idx], tmp_path / "grid.png")
    w, h = Image.open(path).size
    assert h > w * 0.8  # 4 rows x 4 columns


def test_plots_do_not_touch_the_global_matplotlib_backend(tmp_path):
    code = (
        "import matplotlib, sys; matplotlib.use('svg'); import core_model.results.plots as p;"
        f"p.plot_roc_pr([0, 1, 0, 1], [.1, .9, .2, .8], 'x', {str(tmp_path / 'c.png')!r});"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["svg", "False"], out.stderr
    assert (tmp_path / "c.png").is_file()
