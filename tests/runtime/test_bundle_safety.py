"""Bundles are verified before use: tampering, missing files, unknown versions, unsafe zips."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core_model.runtime import BundleError, BundleFormatError, BundleIntegrityError, UnsafeArchiveError, load_bundle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def copy(tiny_bundle, tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_a_good_bundle_loads_with_its_card(tiny_bundle, tmp_path):
    b = load_bundle(tiny_bundle, cache_root=tmp_path)
    assert b.classes == ["normal", "pneumonia", "covid19"] and b.mask_label == "pneumothorax"
    assert "Research use only" in b.card["intended_use"] and "Research use only" in b.card_markdown
    assert set(b.thresholds) == set(b.classes)
    assert len(b.bank) > 50


def test_a_tampered_file_is_refused(copy):
    onnx = copy / "image.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="image.onnx does not match its SHA-256"):
        load_bundle(copy)


def test_a_missing_file_is_named(copy):
    (copy / "reports" / "embeddings.npy").unlink()
    with pytest.raises(BundleIntegrityError, match="reports/embeddings.npy is missing"):
        load_bundle(copy)


def test_unknown_format_version_is_refused(copy):
    m = json.loads((copy / "manifest.json").read_text())
    m["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleFormatError, match="version 99 is not supported"):
        load_bundle(copy)


def test_not_a_bundle(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(BundleFormatError, match="no manifest.json"):
        load_bundle(tmp_path / "x")
    (tmp_path / "y.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(BundleError):
        load_bundle(tmp_path / "y.zip")
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nothing")


def _zip_bundle(src: Path, dst: Path, extra=None) -> Path:
    with zipfile.ZipFile(dst, "w") as z:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(src).as_posix())
        if extra:
            extra(z)
    return dst


def test_zipped_bundle_loads(tiny_bundle, tmp_path):
    zpath = _zip_bundle(tiny_bundle, tmp_path / "b.zip")
    b = load_bundle(zpath, cache_root=tmp_path / "cache")
    assert b.classes == ["normal", "pneumonia", "covid19"]


def test_zip_with_path_traversal_is_refused(tiny_bundle, tmp_path):
    zpath = _zip_bundle(tiny_bundle, tmp_path / "evil.zip", lambda z: z.writestr("../../outside.txt", "x"))
    with pytest.raises(UnsafeArchiveError, match="leaves its folder"):
        load_bundle(zpath, cache_root=tmp_path / "cache")
    assert not (tmp_path / "outside.txt").exists()


def test_zip_with_absolute_path_or_link_is_refused(tiny_bundle, tmp_path):
    zpath = _zip_bundle(tiny_bundle, tmp_path / "abs.zip", lambda z: z.writestr("/etc/cron.d/x", "x"))
    with pytest.raises(UnsafeArchiveError, match="absolute path"):
        load_bundle(zpath, cache_root=tmp_path / "cache")

    def add_link(z):
        info = zipfile.ZipInfo("tokenizer/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")

    zpath = _zip_bundle(tiny_bundle, tmp_path / "link.zip", add_link)
    with pytest.raises(UnsafeArchiveError, match="link"):
        load_bundle(zpath, cache_root=tmp_path / "cache")


def test_runtime_never_imports_torch(tiny_bundle, tiny_pipeline, tmp_path):
    image = sorted((tiny_pipeline / "phantoms" / "images").glob("*.png"))[0]
    code = (
        "import sys\n"
        "from core_model.runtime import load_bundle\n"
        f"b = load_bundle({str(tiny_bundle)!r})\n"
        f"a = b.analyze({str(image)!r})\n"
        "b.heatmap(a, 'left pneumothorax'); b.similar_reports(a, 3); b.similar_reports('no pneumothorax', 3)\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_predict_command_json(tiny_bundle, tiny_pipeline, tmp_path):
    images = sorted((tiny_pipeline / "phantoms" / "images").glob("*.png"))[:2]
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"garbage")
    cmd = [
        sys.executable,
        "-m",
        "app.main",
        "predict",
        *map(str, images),
        str(bad),
        "--bundle",
        str(tiny_bundle),
        "--json",
        "--heatmap",
        "right lower lobe consolidation",
        "--out-dir",
        str(tmp_path / "heat"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["research_use_only"] is True
    ok = [r for r in doc["results"] if "error" not in r]
    assert len(ok) == 2 and "error" in doc["results"][2]
    for r in ok:
        assert set(r["probabilities"]) == {"normal", "pneumonia", "covid19"}
        assert 0.0 <= r["mask"]["area_fraction"] <= 1.0
        assert len(r["similar_reports"]) == 3
        assert Path(r["heatmap_png"]).stat().st_size > 1000
