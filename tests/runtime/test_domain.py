"""The domain guard, model side: the demo bundle knows it was trained on synthetic frontal
phantoms and says so for every image it cannot vouch for.

On the real demo bundle (assets/demo/bundle) and the real sample radiographs: the real files and
crops / flips / rotations of them are out of domain by the score alone, as are generated non-chest
images; >= 95 % of the demo's own phantom test split (rendered again from its recorded recipe)
and the demo DICOM studies are in domain; a lateral, an unknown view or a CT modality is flagged;
a bundle without a domain model (format 1 as exported before) still loads and says "unknown"; a
malformed domain model is refused with a specific message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core_model.fileio import sha256_file
from core_model.imaging.preprocess import load_display
from core_model.runtime import BundleFormatError, load_bundle
from core_model.runtime.domain import (
    IN_DOMAIN,
    LATERAL,
    OUT_OF_DOMAIN,
    REASON_EMBEDDING,
    REASON_MODALITY,
    REASON_VIEW,
    UNKNOWN,
    DomainState,
    fit_domain_model,
    header_view_modality,
    ledoit_wolf,
    normalize_view,
    whitener,
)
from core_model.training.evaluate_domain import generated_non_chest_images, variants
from tests.real_data import real_file

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "assets" / "demo"
REAL = ["00000001_000.png", "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"]


@pytest.fixture(scope="module")
def demo():
    return load_bundle(DEMO / "bundle")


def _rewrite_manifest(folder: Path) -> None:
    """Re-hash a bundle folder after editing it (what an exporter of the old format wrote)."""
    m = json.loads((folder / "manifest.json").read_text())
    m["files"] = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    (folder / "manifest.json").write_text(json.dumps(m, indent=2))


# ---- the bundle knows its domain ---------------------------------------------------------------
def test_demo_bundle_records_its_synthetic_frontal_domain(demo):
    assert demo.synthetic is True
    d = demo.card["domain"]
    assert d["synthetic"] is True and d["views"] == ["AP", "PA"] and d["modalities"] == ["CR", "DX"]
    assert d["val_quantile"] == 0.99 and d["threshold"] == pytest.approx(demo.domain_model.threshold)
    assert d["image_size"]["height"][0] <= d["image_size"]["height"][1]
    assert 0.0 <= d["test_false_ood_rate"] <= 0.05 and d["test_images"] >= 100
    em = d["embedding_model"]
    assert set(em["components"]) == {"embedding", "patch_mean", "patch_quadrants", "patch_local"}
    assert em["train_images"] >= 1000 and demo.domain_model.grid == tuple(demo.config["patch_grid"])
    # the arrays are plain .npy files listed (and hashed) in the manifest, never pickles
    for rel in em["files"]:
        assert rel in demo.manifest["files"] and rel.endswith(".npy")
        np.load(DEMO / "bundle" / rel, allow_pickle=False)
    assert "synthetic phantoms" in demo.card_markdown and "false out-of-domain rate" in demo.card_markdown


# ---- out of domain -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", REAL)
def test_real_radiographs_are_out_of_domain_by_the_score(demo, name):
    path = real_file(name)
    a = demo.analyze(path, view="PA", modality="DX")  # even when the caller vouches for view and modality
    assert a.domain.status == OUT_OF_DOMAIN and a.domain.codes == (REASON_EMBEDDING,)
    assert a.domain.score > a.domain.threshold and "unlike the model's synthetic phantoms" in a.domain.reasons[0]
    assert not a.domain.ok and "out of the model's training domain" in a.domain.summary()
    # as the app analyses the file itself: the header (or its absence) decides view and modality
    plain = demo.analyze(path)
    assert plain.domain.status == OUT_OF_DOMAIN and REASON_EMBEDDING in plain.domain.codes
    assert plain.domain.score == pytest.approx(a.domain.score, rel=1e-5)


@pytest.mark.parametrize("name", REAL)
def test_crops_flips_and_rotations_of_real_radiographs_are_out_of_domain(demo, name):
    gray = load_display(real_file(name))
    vs = variants(gray)
    for (label, _), a in zip(vs, demo.analyze_batch([v for _, v in vs], view="PA", modality="DX")):
        assert a.domain.codes == (REASON_EMBEDDING,), label
        assert a.domain.score > a.domain.threshold, label


def test_generated_non_chest_images_are_out_of_domain(demo):
    gen = generated_non_chest_images()
    for (label, _), a in zip(gen, demo.analyze_batch([g for _, g in gen], view="PA")):
        assert a.domain.status == OUT_OF_DOMAIN and REASON_EMBEDDING in a.domain.codes, label
    flat = demo.analyze(np.full((300, 300), 128, np.uint8), view="PA")
    assert REASON_EMBEDDING in flat.domain.codes


# ---- in domain -----------------------------------------------------------------------------------
def test_phantom_test_split_is_in_domain(demo):
    """The demo's own test split, rendered again from the phantom recipe the card records."""
    from core_model.data.phantoms import PhantomOptions, plan_cases, render_case

    data = demo.card["domain"]["data"]
    assert data["kind"] == "phantoms"
    cases = [
        c
        for c in plan_cases(PhantomOptions(n=int(data["n"]), seed=int(data["seed"]), dicom="none"))
        if c.split == "test"
    ]
    assert len(cases) >= 100
    states = []
    for b in range(0, len(cases), 32):
        chunk = cases[b : b + 32]
        states += [
            a.domain for a in demo.analyze_batch([render_case(c).image for c in chunk], view=[c.view for c in chunk])
        ]
    rate = np.mean([s.ok for s in states])
    assert rate >= 0.95, f"only {rate:.1%} of the phantom test split is in domain"
    assert all(s.status in (IN_DOMAIN, OUT_OF_DOMAIN) and s.score is not None for s in states)
    # the runtime's states match the rate the card reports (same images, same graph)
    assert rate == pytest.approx(1 - demo.card["domain"]["test_false_ood_rate"], abs=0.02)


def test_demo_dicom_studies_are_in_domain_with_their_header_view(demo):
    index = json.loads((DEMO / "studies.json").read_text())
    paths = [DEMO / "studies" / e["file"] for e in index]
    for p, e in zip(paths, index):
        view, modality = header_view_modality(p)
        assert view == e["view"] and modality in ("CR", "DX")
    states = [a.domain for a in demo.analyze_batch(paths)]
    assert np.mean([s.ok for s in states]) >= 0.9, [s.summary() for s in states if not s.ok]
    assert all(REASON_VIEW not in s.codes and REASON_MODALITY not in s.codes for s in states)


# ---- view and modality ---------------------------------------------------------------------------
def _study_copy(tmp_path: Path, **changes) -> Path:
    import pydicom

    src = DEMO / "studies" / json.loads((DEMO / "studies.json").read_text())[1]["file"]
    ds = pydicom.dcmread(src)
    for k, v in changes.items():
        if v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)
    out = tmp_path / f"{'-'.join(changes) or 'copy'}.dcm"
    ds.save_as(out)
    return out


@pytest.mark.parametrize("code", ["LL", "RL", "LATERAL", "LLD"])
def test_a_lateral_view_is_flagged(demo, tmp_path, code):
    path = _study_copy(tmp_path, ViewPosition=code)
    assert header_view_modality(path)[0] == LATERAL
    a = demo.analyze(path)
    assert a.domain.status == OUT_OF_DOMAIN and REASON_VIEW in a.domain.codes
    assert any("lateral view" in r and "AP/PA" in r for r in a.domain.reasons)


def test_view_from_the_view_code_sequence_when_view_position_is_empty(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.CodeMeaning = "lateral"
    path = _study_copy(tmp_path, ViewPosition="", ViewCodeSequence=Sequence([item]))
    assert header_view_modality(path)[0] == LATERAL


def test_the_header_view_is_read_by_content_not_by_file_name(tmp_path):
    # what a file is comes from its bytes: a DICOM named .png still has its header view, and a
    # PNG named .dcm has none (and is no error)
    dicom = _study_copy(tmp_path, ViewPosition="LL")
    renamed = dicom.rename(tmp_path / "exported.png")
    assert header_view_modality(renamed)[0] == LATERAL
    png = tmp_path / "fake.dcm"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(png, format="PNG")
    assert header_view_modality(png) == (None, None)


def test_unknown_view_is_flagged_for_a_frontal_only_model(demo, tmp_path):
    path = _study_copy(tmp_path, ViewPosition=None)
    a = demo.analyze(path)
    assert REASON_VIEW in a.domain.codes and any("view is unknown" in r for r in a.domain.reasons)
    # a caller that knows the view (the app's library) can say so
    assert REASON_VIEW not in demo.analyze(path, view="AP").domain.codes
    # arrays and PNGs carry no view
    arr = load_display(path)
    assert REASON_VIEW in demo.analyze(arr).domain.codes
    assert REASON_VIEW in demo.analyze(arr, view="lateral").domain.codes
    assert demo.analyze(arr, view="PA").domain.codes == ()


def test_a_modality_other_than_cr_dx_is_flagged(demo, tmp_path):
    path = _study_copy(tmp_path, Modality="CT")
    a = demo.analyze(path)
    assert a.domain.codes == (REASON_MODALITY,) and "modality CT" in a.domain.reasons[0]
    assert demo.analyze(load_display(path), view="PA", modality="MR").domain.codes == (REASON_MODALITY,)
    # a non-DICOM input has no modality: not a reason by itself
    assert demo.analyze(load_display(path), view="PA").domain.ok


def test_batch_hints_one_per_image_and_states_round_trip(demo):
    gray = load_display(DEMO / "studies" / json.loads((DEMO / "studies.json").read_text())[0]["file"])
    a, b, c = demo.analyze_batch([gray, gray, gray], view=["PA", "LL", None], modality=["DX", None, "CT"])
    assert a.domain.ok and b.domain.codes == (REASON_VIEW,) and set(c.domain.codes) == {REASON_VIEW, REASON_MODALITY}
    assert a.domain.score == pytest.approx(b.domain.score)  # a prediction never depends on its batch mates
    for s in (a.domain, b.domain, c.domain):
        assert DomainState.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ValueError, match="2 view hints for 3 images"):
        demo.analyze_batch([gray, gray, gray], view=["PA", "AP"])


def test_view_names_are_normalised():
    assert [
        normalize_view(v)
        for v in (
            "pa",
            " AP ",
            "AP SUPINE",
            "postero-anterior",
            "LL",
            "rl",
            "Lateral",
            "left lateral",
            "",
            None,
            "OBLIQUE",
        )
    ] == ["PA", "AP", "AP", "PA", LATERAL, LATERAL, LATERAL, LATERAL, None, None, "OBLIQUE"]


# ---- bundles without (or with a broken) domain model --------------------------------------------
def test_a_bundle_without_a_domain_model_still_loads_and_says_unknown(tmp_path):
    dst = tmp_path / "old"
    shutil.copytree(DEMO / "bundle", dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.pop("domain")
    (dst / "config.json").write_text(json.dumps(cfg))
    card = json.loads((dst / "model_card.json").read_text())
    card.pop("domain")
    (dst / "model_card.json").write_text(json.dumps(card))
    shutil.rmtree(dst / "domain")
    _rewrite_manifest(dst)
    b = load_bundle(dst)
    assert b.domain_model is None
    a = b.analyze(real_file(REAL[0]))
    assert a.domain.status == UNKNOWN and not a.domain.ok and a.domain.score is None
    assert "records no training domain" in a.domain.summary()


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("threshold", "no numeric threshold"),
        ("unlisted", "not a file listed in manifest.json"),
        ("shape", "has arrays of shapes"),
        ("version", "this app reads version 1"),
        ("grid", "does not fit the patch_quadrants component"),
    ],
)
def test_a_malformed_domain_model_is_refused_with_the_reason(tmp_path, breakage, message):
    dst = tmp_path / breakage
    shutil.copytree(DEMO / "bundle", dst)
    cfg = json.loads((dst / "config.json").read_text())
    d = cfg["domain"]
    if breakage == "threshold":
        d["threshold"] = "high"
    elif breakage == "unlisted":
        d["files"]["embedding_mean"] = "../../etc/passwd"
    elif breakage == "grid":
        d["grid"] = [4, 4]
    elif breakage == "shape":
        np.save(dst / "domain" / "embedding_mean.npy", np.zeros(7, np.float32), allow_pickle=False)
    else:
        d["version"] = 99
    (dst / "config.json").write_text(json.dumps(cfg))
    _rewrite_manifest(dst)
    with pytest.raises(BundleFormatError, match=message):
        b = load_bundle(dst)
        b.analyze(np.full((64, 64), 100, np.uint8), view="PA")


# ---- the fit itself --------------------------------------------------------------------------------
def test_ledoit_wolf_shrinks_more_when_samples_are_few():
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(0.5, 2.0, 20))
    few = rng.multivariate_normal(np.zeros(20), cov, 15)
    many = rng.multivariate_normal(np.zeros(20), cov, 5000)
    (_, p_few, s_few), (mu, p_many, s_many) = ledoit_wolf(few), ledoit_wolf(many)
    assert 0.0 <= s_many < s_few <= 1.0
    assert np.allclose(p_few, p_few.T) and np.linalg.eigvalsh(p_few).min() > 0
    assert np.allclose(np.linalg.inv(p_many), cov, atol=0.15) and np.allclose(mu, 0, atol=0.1)


def test_fit_thresholds_on_validation_and_flags_shifted_features():
    rng = np.random.default_rng(1)

    def sample(n, shift=0.0):
        emb = rng.normal(size=(n, 16)) + shift
        pat = rng.normal(size=(n, 9, 16)) + shift
        return emb.astype(np.float32), pat.astype(np.float32)

    model, report = fit_domain_model(sample(800), sample(400), views=["PA", "ap"], synthetic=False, grid=[3, 3])
    assert model.views == ("AP", "PA") and model.frontal_only and report["val_quantile"] == 0.99
    assert set(model.scales) == {"embedding", "patch_mean", "patch_quadrants", "patch_local"}
    assert report["val_false_ood_rate"] <= 0.011
    test = model.scores(*sample(1000))
    assert np.mean(test > model.threshold) < 0.04
    assert np.all(model.scores(*sample(50, shift=1.5)) > model.threshold)
    state = model.assess(float(test[0]), view="PA", modality="DX")
    assert state.status in (IN_DOMAIN, OUT_OF_DOMAIN) and state.threshold == model.threshold


def test_scores_by_the_whitener_equal_the_mahalanobis_distance_of_the_precision():
    # the runtime scores with a factor W of each precision P (one product, W W^T = P); the
    # distances must be those of P itself, for one image (numpy's loop) and a big batch (BLAS)
    rng = np.random.default_rng(2)
    emb, pat = rng.normal(size=(300, 24)).astype(np.float32), rng.normal(size=(300, 16, 24)).astype(np.float32)
    model, _ = fit_domain_model((emb[:200], pat[:200]), (emb[200:], pat[200:]), grid=[4, 4])

    def direct(x, comp):
        xc = np.asarray(x, np.float64) - model.arrays[f"{comp}_mean"]
        return np.sqrt(np.einsum("...i,ij,...j->...", xc, model.arrays[f"{comp}_precision"].astype(np.float64), xc))

    for n in (1, 3000):  # 3000 x 16 patches x 24^2 is past the einsum limit: BLAS
        e, p = rng.normal(size=(n, 24)).astype(np.float32), rng.normal(size=(n, 16, 24)).astype(np.float32)
        d = model.distances(e, p)
        np.testing.assert_allclose(d["embedding"], direct(e, "embedding"), rtol=1e-4)
        np.testing.assert_allclose(d["patch_mean"], direct(p.mean(axis=1), "patch_mean"), rtol=1e-4)
        np.testing.assert_allclose(d["patch_local"], direct(p, "patch_local").mean(axis=1), rtol=1e-4)
    # a precision that rounding left not quite positive definite still gives its distances
    v = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    p8 = (v * np.array([1e-9, -1e-12] + [1.0] * 6)) @ v.T
    w = whitener(p8)
    x = rng.normal(size=(5, 8))
    np.testing.assert_allclose(np.sum((x @ w) ** 2, axis=1), np.einsum("bi,ij,bj->b", x, p8, x), atol=1e-5)


# ---- adaptor-train evaluate --task domain -----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_evaluate_task_domain_prints_and_records_the_separation(tmp_path):
    """The command a user runs; the phantom data is regenerated from the card's recipe when absent."""
    real = [str(real_file(n)) for n in REAL]
    cfg = tmp_path / "data.yaml"
    data = json.loads((DEMO / "bundle" / "model_card.json").read_text())["domain"]["data"]
    if not Path(data["path"]).exists():
        data = {**data, "path": str(tmp_path / "phantoms")}
    cfg.write_text(json.dumps({"data": data}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "training_cli.main",
            "evaluate",
            "--task",
            "domain",
            "--checkpoint",
            str(DEMO / "bundle"),
            "--config",
            str(cfg),
            "--ood",
            real[0],
            "--ood",
            real[1],
            "--out",
            str(tmp_path / "eval"),
            "--no-progress",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in (
        "AUROC of the domain score",
        "in domain on the test split",
        "real radiographs: 100.0 %",
        "crops/flips/rotations of them: 100.0 %",
        "generated non-chest images: 100.0 %",
        "ms per image",
        "Research use only",
    ):
        assert text in proc.stdout, text
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert m["in_domain"]["in_domain_rate"] >= 0.95 and m["auroc_score"] >= 0.99
    assert all(v["out_of_domain_rate_score_only"] == 1.0 for v in m["out_of_domain"].values())
    assert "00000001" not in proc.stdout + (tmp_path / "eval" / "report.md").read_text()  # no file names


def test_export_fits_a_domain_model_from_the_fine_tuning_splits(tiny_bundle, tmp_path):
    """`adaptor-train export` (the tiny phantom pipeline): the domain model comes from the
    classification run's own train / val / test splits, and the bundle says it is synthetic."""
    b = load_bundle(tiny_bundle, cache_root=tmp_path)
    d = b.card["domain"]
    assert b.synthetic and b.domain_model is not None and d["synthetic"] is True
    em = d["embedding_model"]
    assert em["train_images"] > em["val_images"] > 0 and d["test_images"] > 0
    assert em["val_false_ood_rate"] <= 0.1 and d["test_false_ood_rate"] is not None
    assert b.config["domain"]["threshold"] == pytest.approx(d["threshold"])
    assert all(rel in b.manifest["files"] for rel in b.config["domain"]["files"].values())
    a = b.analyze(np.full((200, 200), 128, np.uint8), view="PA")
    assert a.domain.status in (IN_DOMAIN, OUT_OF_DOMAIN) and a.domain.threshold == pytest.approx(d["threshold"])
