"""Feature cache: contents, resume after an interruption, refusal to mix, 2 processes == 1."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core_model.errors import UserError
from core_model.features.cache import CacheMismatchError, FeatureCache
from core_model.features.precompute import PrecomputeOptions, precompute
from core_model.imaging.preprocess import PreprocessSpec

ROOT = Path(__file__).resolve().parents[2]
OPTS = dict(patch_pool=2, shard_size=16, batch_size=8, workers=0)


def test_cache_holds_pooled_and_unpadded_token_features(small_records, tiny_encoders, tmp_path):
    vit, bert = tiny_encoders
    recs = small_records[:40]
    cache = precompute(recs, tmp_path / "c", vit, bert, PreprocessSpec(), PrecomputeOptions(**OPTS), progress=False)
    assert cache.n == 40 and cache.valid.all()
    assert cache.manifest["image"]["grid"] == [8, 8]  # 16x16 patches pooled 2x2
    assert cache.image_tokens([0, 39]).shape == (2, 64, 192)
    assert cache.image_tokens([0]).dtype == np.float16
    tokens, ids = cache.text_tokens(3)
    expected = bert.tokenize([recs[3].report])["input_ids"][0].numpy()
    assert np.array_equal(ids, expected)  # only real tokens, no padding
    assert tokens.shape == (len(expected), 128)
    bpi = cache.manifest["bytes_per_item"]
    assert bpi["image.tokens"] > 64 * 192 * 2 and bpi["total"] == pytest.approx(cache.nbytes() / 40, rel=0.01)


def test_unreadable_images_and_empty_reports_are_skipped_with_reasons(small_records, tiny_encoders, tmp_path):
    import dataclasses

    vit, bert = tiny_encoders
    recs = [dataclasses.replace(r) for r in small_records[:10]]
    recs[2].image_path = str(tmp_path / "gone.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    recs[4].image_path = str(tmp_path / "junk.png")
    recs[6].report = "   "
    cache = precompute(recs, tmp_path / "c", vit, bert, PreprocessSpec(), PrecomputeOptions(**OPTS), progress=False)
    assert list(np.flatnonzero(~cache.valid)) == [2, 4, 6]
    reasons = {s["id"]: s["reason"] for s in cache.manifest["skipped"]}
    assert reasons == {recs[2].id: "missing", recs[4].id: "not_dicom", recs[6].id: "empty_report"}


def test_interrupted_precompute_resumes_and_matches(small_records, tiny_encoders, tmp_path):
    vit, bert = tiny_encoders
    recs = small_records[:48]
    full = precompute(recs, tmp_path / "full", vit, bert, PreprocessSpec(), PrecomputeOptions(**OPTS), progress=False)

    class Stop(Exception):
        pass

    def stop_after_first(shard):
        raise Stop

    with pytest.raises(Stop):
        precompute(
            recs,
            tmp_path / "part",
            vit,
            bert,
            PreprocessSpec(),
            PrecomputeOptions(**OPTS),
            progress=False,
            on_shard=stop_after_first,
        )
    with pytest.raises(UserError, match="incomplete"):
        FeatureCache(tmp_path / "part")
    done = []
    resumed = precompute(
        recs,
        tmp_path / "part",
        vit,
        bert,
        PreprocessSpec(),
        PrecomputeOptions(**OPTS),
        progress=False,
        on_shard=done.append,
    )
    assert done == [1, 2]  # shard 0 was kept, not recomputed
    a, b = full.load_all(), resumed.load_all()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_refuses_to_mix_encoders_or_preprocessing(small_records, tiny_encoders, tmp_path):
    from core_model.encoders import create_image_encoder

    vit, bert = tiny_encoders
    recs = small_records[:16]
    precompute(recs, tmp_path / "c", vit, bert, PreprocessSpec(), PrecomputeOptions(**OPTS), progress=False)
    other_vit = create_image_encoder("tiny-vit", seed=1)
    with pytest.raises(CacheMismatchError, match="weights_sha256|encoder"):
        precompute(recs, tmp_path / "c", other_vit, bert, PreprocessSpec(), PrecomputeOptions(**OPTS), progress=False)
    with pytest.raises(CacheMismatchError, match="preprocess"):
        precompute(recs, tmp_path / "c", vit, bert, PreprocessSpec(size=112), PrecomputeOptions(**OPTS), progress=False)


@pytest.mark.slow
def test_two_processes_on_gloo_write_the_same_cache_as_one(small_records, tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    with open(manifest, "w") as f:
        for r in small_records[:40]:
            f.write(json.dumps({"id": r.id, "image": r.image_path, "report": r.report, "split": r.split}) + "\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data: {{kind: manifest, path: {manifest}}}\n"
        "encoders: {image: tiny-vit, text: tiny-bert}\n"
        "cache: {patch_pool: 2, shard_size: 8, batch_size: 4, workers: 0}\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = [
        sys.executable,
        "-m",
        "training_cli.main",
        "precompute",
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "one"),
        "--no-progress",
    ]
    two = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29531",
        "-m",
        "training_cli.main",
        "precompute",
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "two"),
        "--no-progress",
    ]
    for cmd in (one, two):
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = FeatureCache(tmp_path / "one"), FeatureCache(tmp_path / "two")
    assert a.ids == b.ids
    files_a = sorted(p.name for p in (tmp_path / "one" / "shards").glob("*.npy"))
    files_b = sorted(p.name for p in (tmp_path / "two" / "shards").glob("*.npy"))
    assert files_a == files_b and len(files_a) == 5 * 7
    for name in files_a:
        assert (tmp_path / "one" / "shards" / name).read_bytes() == (tmp_path / "two" / "shards" / name).read_bytes(), (
            name
        )
