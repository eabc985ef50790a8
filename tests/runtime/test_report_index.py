"""The report index (issue 15): a bundle that ships an HNSW index over its report bank loads, uses
it, finds what exact search finds, and is refused with a clear message when the index is altered
or belongs to another bank. Real demo bundle, real hnswlib, real files; exact search is the oracle.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from core_model.export.report_index import build_report_index, exact_top, held_out_queries, recall_at_k
from core_model.runtime import BundleError, BundleFormatError, BundleIntegrityError, load_bundle
from core_model.runtime.report_index import _HEADER
from core_model.runtime.retrieval import ReportBank

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "assets" / "demo" / "bundle"

pytestmark = pytest.mark.timeout(300)


def rehash(folder: Path) -> None:
    """Recompute the manifest over every file in the folder (as export does, or a forger would)."""
    m = json.loads((folder / "manifest.json").read_text())
    m["files"] = {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    (folder / "manifest.json").write_text(json.dumps(m))


@pytest.fixture()
def indexed_bundle(tmp_path) -> Path:
    """The demo bundle with an index over its bank (a small bank, the threshold forced down)."""
    dst = tmp_path / "bundle"
    shutil.copytree(DEMO, dst)
    build_report_index(dst / "reports")
    rehash(dst)
    return dst


def clustered_bank(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(2, n // 50), dim)).astype(np.float32)
    emb = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, dim)).astype(np.float32)
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16)


def test_a_bundle_with_an_index_loads_and_searches_through_it(indexed_bundle):
    bundle = load_bundle(indexed_bundle)
    bank = bundle.bank
    assert bank.index is not None and bank.index_meta.count == len(bank)
    queries = held_out_queries(bank.embeddings, n=50)
    for q in queries:
        idx, scores = bank.top_k(q, 10)
        exact_idx, exact_scores = bank.top_k(q, 10, exact=True)
        assert len(idx) == 10 and np.all(np.diff(scores) <= 1e-6)  # best first
        # scores are exact cosines whichever path found the rows
        np.testing.assert_allclose(scores, bank.embeddings[idx] @ (q / np.linalg.norm(q)), rtol=1e-5, atol=1e-6)
        assert scores[0] == pytest.approx(exact_scores[0], abs=1e-6)
    hits = bundle.similar_reports(bundle.analyze(DEMO.parent / "studies" / "phantom-00019.dcm"), k=3)
    assert len(hits) == 3 and all(h.text for h in hits)


def test_index_recall_against_exact_search_is_high_on_a_seeded_bank(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    emb16 = clustered_bank(6000, 64)
    np.save(reports / "embeddings.npy", emb16, allow_pickle=False)
    (reports / "reports.jsonl").write_text("".join(json.dumps({"id": str(i), "text": "r"}) + "\n" for i in range(6000)))
    meta = build_report_index(reports)
    assert meta.recall_at_10 is not None and meta.recall_at_10 >= 0.98
    bank = ReportBank.load(reports, bank_sha256=hashlib.sha256((reports / "embeddings.npy").read_bytes()).hexdigest())
    assert bank.index is not None
    queries = held_out_queries(bank.embeddings, n=200, seed=7)  # other queries than export's
    found = np.stack([bank.top_k(q, 10)[0] for q in queries])
    assert recall_at_k(found, exact_top(bank.embeddings, queries, 10)) >= 0.98


def test_a_tampered_index_fails_the_bundle_check(indexed_bundle):
    path = indexed_bundle / "reports" / "index.hnsw"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"reports/index\.hnsw does not match its SHA-256"):
        load_bundle(indexed_bundle)


def test_a_forged_index_with_rehashed_manifest_is_refused_before_native_code(indexed_bundle):
    # a neighbour id past the end of the bank, the manifest recomputed: the structural check catches it
    path = indexed_bundle / "reports" / "index.hnsw"
    data = bytearray(path.read_bytes())
    per_el = _HEADER.unpack_from(data)[3]
    struct.pack_into("<I", data, _HEADER.size + 3 * per_el + 4, 10**9)
    struct.pack_into("<H", data, _HEADER.size + 3 * per_el, 1)  # at least one neighbour in use
    path.write_bytes(bytes(data))
    rehash(indexed_bundle)
    with pytest.raises(BundleFormatError, match="links to a report that does not exist"):
        load_bundle(indexed_bundle)


def test_an_index_built_for_another_bank_is_refused(indexed_bundle):
    meta = json.loads((indexed_bundle / "reports" / "index.json").read_text())
    meta["bank_sha256"] = "0" * 64
    (indexed_bundle / "reports" / "index.json").write_text(json.dumps(meta))
    rehash(indexed_bundle)
    with pytest.raises(BundleFormatError, match="built for another report bank"):
        load_bundle(indexed_bundle)


def test_an_index_over_other_vectors_is_refused(indexed_bundle):
    # the same count and dimension and the bank hash copied over, but other vectors inside
    reports = indexed_bundle / "reports"
    meta = json.loads((reports / "index.json").read_text())
    other = reports.parent.parent / "other"
    other.mkdir()
    emb = np.load(reports / "embeddings.npy")
    np.save(other / "embeddings.npy", np.roll(emb, 1, axis=0), allow_pickle=False)
    build_report_index(other)
    shutil.copy(other / "index.hnsw", reports / "index.hnsw")
    (reports / "index.json").write_text(json.dumps(meta))
    rehash(indexed_bundle)
    with pytest.raises(BundleFormatError, match="other vectors"):
        load_bundle(indexed_bundle)


def test_half_an_index_is_refused(indexed_bundle):
    (indexed_bundle / "reports" / "index.json").unlink()
    rehash(indexed_bundle)
    with pytest.raises(BundleError, match="without reports/index.json"):
        load_bundle(indexed_bundle)


@pytest.mark.slow
def test_export_builds_the_index_above_the_configured_size(tiny_pipeline, tmp_path):
    """The real CLI: ``export: {report_index_min_reports: 1}`` in the recipe ships an index."""
    import subprocess
    import sys

    recipe = tmp_path / "bundle.yaml"
    recipe.write_text((tiny_pipeline / "bundle.yaml").read_text() + "export: {report_index_min_reports: 1}\n")
    out = tmp_path / "indexed"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "training_cli.main",
            "export",
            "--config",
            str(recipe),
            "--out",
            str(out),
            "--no-progress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["report_bank"]["index"]["count"] == config["report_bank"]["count"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"reports/index.hnsw", "reports/index.json"} <= set(manifest["files"])
    bank = load_bundle(out).bank
    assert bank.index is not None
    # the default threshold (50,000) leaves the small tiny bank without one
    assert not (tiny_pipeline / "bundle" / "reports" / "index.json").exists()
