"""Pretraining: determinism, exact resume after kill -9, frozen encoders untouched, outputs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from core_model.features.precompute import PrecomputeOptions, precompute
from core_model.imaging.preprocess import PreprocessSpec
from core_model.training.artifacts import load_adaptor
from core_model.training.config import PRETRAIN_DEFAULTS, load_config
from core_model.training.pretrain import Pretrainer

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["train.batch_size=16", "adaptor.dim=64", "adaptor.ffn_dim=128", "train.lr=2e-3", "loss.local_candidates=4"]


@pytest.fixture(scope="module")
def cache(small_records, tiny_encoders, tmp_path_factory):
    vit, bert = tiny_encoders
    out = tmp_path_factory.mktemp("cache")
    return precompute(
        small_records,
        out,
        vit,
        bert,
        PreprocessSpec(),
        PrecomputeOptions(patch_pool=2, shard_size=32, batch_size=16, workers=0),
        progress=False,
    )


def _train(cache, records, out, extra=(), resume=False):
    cfg = load_config(PRETRAIN_DEFAULTS, None, OVERRIDES + list(extra))
    t = Pretrainer(
        cfg,
        out,
        cache,
        [r.report for r in records],
        [r.finding for r in records],
        [r.split for r in records],
        progress=False,
        lesion_masks=[r.lesion_mask_path for r in records],
    )
    return t, t.run(resume=resume)


def test_same_seed_same_weights_and_metrics(cache, small_records, tmp_path):
    _, m1 = _train(cache, small_records, tmp_path / "a", ["train.epochs=2"])
    _, m2 = _train(cache, small_records, tmp_path / "b", ["train.epochs=2"])
    w1, w2 = (
        load_file(str(tmp_path / "a" / "adaptor.safetensors")),
        load_file(str(tmp_path / "b" / "adaptor.safetensors")),
    )
    assert all(np.array_equal(w1[k], w2[k]) for k in w1)
    assert m1["val_loss"] == m2["val_loss"]
    _, m3 = _train(cache, small_records, tmp_path / "c", ["train.epochs=2", "train.seed=7"])
    assert m3["val_loss"] != m1["val_loss"]


def test_outputs_and_learning_signal(cache, small_records, tmp_path):
    trainer, final = _train(cache, small_records, tmp_path / "run", ["train.epochs=6"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["research_use_only"] is True
    hist = metrics["history"]
    assert len(hist) == 6 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    for key in (
        "val_loss",
        "i2t_R@1",
        "i2t_R@5",
        "i2t_R@10",
        "t2i_R@1",
        "chance_R@5",
        "i2t_P@5_finding",
        "t2i_P@1_finding",
    ):
        assert key in final
    # the toy findings are easy: retrieval by finding must beat chance clearly
    assert final["i2t_P@5_finding"] > final["chance_P_finding"] + 0.2
    assert (tmp_path / "run" / "log.csv").read_text().count("\n") == 7
    adaptor, loss, meta = load_adaptor(tmp_path / "run")
    assert meta["research_use_only"] and meta["image_encoder"]["name"] == "tiny-vit"
    assert meta["adaptor"]["patch_grid"] == [8, 8]
    p = metrics["parameters"]
    assert p["trainable"] == sum(x.numel() for x in adaptor.parameters()) + 2  # + two temperatures
    assert 0 < p["trainable_share"] < 0.1


def test_frozen_encoders_are_bit_identical_after_pretraining(cache, small_records, tiny_encoders, tmp_path):
    from core_model.encoders.hub import state_dict_sha256

    vit, bert = tiny_encoders
    before = {k: v.clone() for k, v in vit.state_dict().items()}, {k: v.clone() for k, v in bert.state_dict().items()}
    _train(cache, small_records, tmp_path / "run", ["train.epochs=2"])
    for enc, saved in zip((vit, bert), before):
        now = enc.state_dict()
        assert all(now[k].equal(saved[k]) for k in saved)
    meta = json.loads((tmp_path / "run" / "adaptor.json").read_text())
    assert meta["image_encoder"]["weights_sha256"] == state_dict_sha256(vit.model)
    assert meta["text_encoder"]["weights_sha256"] == state_dict_sha256(bert.model)


RUNNER = """
import sys, json
from core_model.features.cache import FeatureCache
from core_model.training.config import PRETRAIN_DEFAULTS, load_config
from core_model.training.pretrain import Pretrainer
cache_dir, out, resume, meta = sys.argv[1], sys.argv[2], sys.argv[3] == "1", json.load(open(sys.argv[4]))
cfg = load_config(PRETRAIN_DEFAULTS, None, meta["overrides"])
Pretrainer(cfg, out, FeatureCache(cache_dir), meta["reports"], meta["findings"], meta["splits"],
           progress=False).run(resume=resume)
"""


@pytest.mark.slow
def test_resume_after_kill_9_reaches_the_same_weights(cache, small_records, tmp_path):
    overrides = OVERRIDES + ["train.epochs=4", "train.checkpoint_every=1", "train.threads=1"]
    meta = tmp_path / "meta.json"
    meta.write_text(
        json.dumps(
            {
                "overrides": overrides,
                "reports": [r.report for r in small_records],
                "findings": [r.finding for r in small_records],
                "splits": [r.split for r in small_records],
            }
        )
    )
    script = tmp_path / "run.py"
    script.write_text(RUNNER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cmd(out, resume):
        return [sys.executable, str(script), str(cache.path), str(out), "1" if resume else "0", str(meta)]

    ref = subprocess.run(cmd(tmp_path / "ref", False), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]

    victim = subprocess.Popen(
        cmd(tmp_path / "killed", False), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    pointer = tmp_path / "killed" / "checkpoint" / "last.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if pointer.exists() and json.loads(pointer.read_text())["step"] >= 5:
            break
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)  # mid-run, possibly mid-write
    victim.wait()
    assert not (tmp_path / "killed" / "adaptor.safetensors").exists()

    resumed = subprocess.run(
        cmd(tmp_path / "killed", True), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(str(tmp_path / "ref" / "adaptor.safetensors"))
    b = load_file(str(tmp_path / "killed" / "adaptor.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert np.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    ma = json.loads((tmp_path / "ref" / "metrics.json").read_text())["final"]
    mb = json.loads((tmp_path / "killed" / "metrics.json").read_text())["final"]
    for k in ("val_loss", "i2t_R@1", "i2t_P@5_finding", "t2i_R@5"):
        assert ma[k] == pytest.approx(mb[k], abs=1e-6), k


@pytest.mark.slow
def test_two_process_pretraining_on_gloo_runs_and_learns(small_records, tmp_path):
    """Distributed data parallel through torchrun (2 CPU processes, gloo): one set of outputs,
    written by rank 0, with the global batch split between the processes."""
    manifest = tmp_path / "manifest.jsonl"
    with open(manifest, "w") as f:
        for r in small_records:
            f.write(
                json.dumps(
                    {"id": r.id, "image": r.image_path, "report": r.report, "split": r.split, "finding": r.finding}
                )
                + "\n"
            )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data: {{kind: manifest, path: {manifest}}}\n"
        "encoders: {image: tiny-vit, text: tiny-bert}\n"
        "cache: {patch_pool: 2, shard_size: 32, batch_size: 16, workers: 0}\n"
        "adaptor: {dim: 64, ffn_dim: 128}\n"
        "loss: {local_candidates: 4}\n"
        "train: {epochs: 3, batch_size: 32, lr: 2.0e-3}\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "training_cli.main",
        "pretrain",
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "ddp"),
        "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    hist = metrics["history"]
    assert len(hist) == 3 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    adaptor, _, meta = load_adaptor(tmp_path / "ddp")
    assert meta["adaptor"]["dim"] == 64


def test_paper_preset_applies_or_refuses_every_adaptor_override(cache):
    from core_model.errors import ConfigError
    from core_model.training.pretrain import adaptor_config_from

    def paper(*overrides):
        return adaptor_config_from(
            load_config(PRETRAIN_DEFAULTS, None, ["adaptor.preset=paper", *overrides])["adaptor"], cache
        )

    published = paper()
    assert (published.mode, published.dim, published.heads, published.layers) == ("pooled", 768, 12, 2)
    # every key given is applied, also one that equals the tokens default (layers 1)
    applied = paper("adaptor.dim=96", "adaptor.layers=1", "adaptor.dropout=0.0")
    assert (applied.dim, applied.layers, applied.dropout, applied.heads) == (96, 1, 0.0, 12)
    assert paper("adaptor.local_mixing=0").local_mixing == 0  # a tokens-only key at its default changes nothing
    for key, value in (("local_mixing", 1), ("cross_tokens", "contextual"), ("text_pool", "first")):
        with pytest.raises(ConfigError, match=rf"adaptor\.{key} has no effect with adaptor\.preset=paper"):
            paper(f"adaptor.{key}={value}")
    with pytest.raises(ConfigError, match="adaptor.preset must be tokens, paper or none"):
        paper("adaptor.preset=giant")
    with pytest.raises(ConfigError, match="divisible"):
        paper("adaptor.dim=100")


def test_identity_preset_passes_the_frozen_features_through(cache, small_records, tmp_path):
    import torch

    from core_model.errors import ConfigError
    from core_model.training.batches import CachedPairs

    reset = ["adaptor.dim=256", "adaptor.ffn_dim=1024", "adaptor.preset=none"]
    _train(cache, small_records, tmp_path / "none", reset + ["train.epochs=0"])
    adaptor, _, meta = load_adaptor(tmp_path / "none")
    assert meta["adaptor"]["mode"] == "identity" and adaptor.num_parameters() == 0
    batch = CachedPairs(cache).batch(np.arange(4), "cpu")
    out = adaptor.encode_image(batch["image_pooled"], batch["image_tokens"])
    assert torch.equal(out.features, batch["image_pooled"]) and torch.equal(out.tokens, batch["image_tokens"])
    assert torch.allclose(out.pooled.norm(dim=-1), torch.ones(4))
    with pytest.raises(ConfigError, match="adaptor.local_mixing has no effect with adaptor.preset=none"):
        _train(cache, small_records, tmp_path / "bad", reset + ["adaptor.local_mixing=1", "train.epochs=0"])


# ---- weak grounding supervision ------------------------------------------------------------------
@pytest.fixture(scope="module")
def masked_records(small_records, tmp_path_factory):
    """The pneumonia images with a lesion mask where their consolidation is drawn."""
    from dataclasses import replace

    from PIL import Image

    root = tmp_path_factory.mktemp("lesions")
    size = 160
    yy, xx = np.mgrid[:size, :size] / size
    blob = (np.exp(-(((yy - 0.7) ** 2 + (xx - 0.3) ** 2) / 0.01)) > 0.3).astype(np.uint8) * 255
    path = root / "pneumonia-lesion.png"
    Image.fromarray(blob).save(path)
    return [replace(r, lesion_mask_path=str(path)) if r.finding == "pneumonia" else r for r in small_records]


def _heat_on_lesion(run, cache, records, idx) -> float:
    """Mean share of the report heatmap on the lesion patches, over the images ``idx``."""
    import torch

    from core_model.losses import inner_words
    from core_model.training.batches import CachedPairs
    from core_model.training.grounding import lesion_cells

    adaptor, _, _ = load_adaptor(run)
    adaptor.eval()
    pairs = CachedPairs(cache)
    spec = PreprocessSpec.from_dict(cache.manifest["image"]["preprocess"])
    rows, cols = cache.manifest["image"]["grid"]
    cells = torch.from_numpy(
        np.stack([lesion_cells(records[i].lesion_mask_path, spec, rows, cols, 0.1).reshape(-1) for i in idx])
    )
    with torch.no_grad():
        b = pairs.batch(np.array(idx), "cpu")
        image = adaptor.encode_image(b["image_pooled"], b["image_tokens"])
        text = adaptor.encode_text(b["text_pooled"], b["text_tokens"], b["text_mask"])
        heat = adaptor.heatmap(image, text, inner_words(text.mask))
    return float((heat * cells).sum(1).mean())


def test_weak_grounding_supervision_moves_held_out_heatmaps_onto_the_lesion(cache, masked_records, tmp_path):
    """Lesion masks of some training images teach where a report looks: on the images whose
    masks were not used, the report heatmap puts more of its mass on the lesion than the same run
    without weak supervision."""
    extra = ["train.epochs=4", "loss.local_weight=0"]
    plain = _train(cache, masked_records, tmp_path / "plain", extra)[0]
    assert not plain.grounding  # off by default even when masks exist
    t, _ = _train(
        cache, masked_records, tmp_path / "weak", extra + ["loss.grounding_weight=1", "loss.grounding_fraction=0.5"]
    )
    used = t.data_summary["weak_grounding_supervision"]
    n_train_masks = sum(1 for r in masked_records if r.split == "train" and r.lesion_mask_path)
    assert used["of_training_images_with_lesion_masks"] == n_train_masks
    assert used["images"] == round(0.5 * n_train_masks)
    assert all(masked_records[i].split == "train" for i in t.grounding)  # never a validation mask
    saved = json.loads((tmp_path / "weak" / "metrics.json").read_text())
    assert saved["data"]["weak_grounding_supervision"]["images"] == used["images"]
    hist = saved["history"]
    assert hist[-1]["train_grounding"] < hist[0]["train_grounding"]
    unused = [i for i, r in enumerate(masked_records) if r.lesion_mask_path and i not in t.grounding]
    assert len(unused) >= 8
    on_plain = _heat_on_lesion(tmp_path / "plain", cache, masked_records, unused)
    on_weak = _heat_on_lesion(tmp_path / "weak", cache, masked_records, unused)
    assert on_weak > on_plain + 0.1, (on_plain, on_weak)


def test_weak_grounding_without_masks_is_refused(cache, small_records, tmp_path):
    from core_model.errors import UserError

    with pytest.raises(UserError, match="no training image has a lesion mask"):
        _train(
            cache,
            small_records,
            tmp_path / "x",
            ["train.epochs=1", "loss.grounding_weight=1", "loss.grounding_fraction=0.1"],
        )


@pytest.mark.slow
def test_two_process_weak_grounding_without_the_local_term_does_not_hang(masked_records, tmp_path):
    """torchrun, 2 processes, weak grounding on and the local term off: on steps where one
    process's share of the batch holds no supervised image, its cross-attention has no gradient
    while the other's has; the processes still reduce the same tensors and the run finishes."""
    manifest = tmp_path / "manifest.jsonl"
    with open(manifest, "w") as f:
        for r in masked_records:
            row = {"id": r.id, "image": r.image_path, "report": r.report, "split": r.split, "finding": r.finding}
            if r.lesion_mask_path:
                row["lesion_mask"] = r.lesion_mask_path
            f.write(json.dumps(row) + "\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data: {{kind: manifest, path: {manifest}}}\n"
        "encoders: {image: tiny-vit, text: tiny-bert}\n"
        "cache: {patch_pool: 2, shard_size: 32, batch_size: 16, workers: 0}\n"
        "adaptor: {dim: 64, ffn_dim: 128}\n"
        "loss: {local_weight: 0, grounding_weight: 1, grounding_fraction: 0.1}\n"
        "train: {epochs: 2, batch_size: 32, lr: 2.0e-3}\n"
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534",
           "-m", "training_cli.main", "pretrain", "--config", str(cfg), "--out", str(tmp_path / "ddp"), "--no-progress"]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    n_masks = sum(1 for r in masked_records if r.split == "train" and r.lesion_mask_path)
    assert saved["data"]["weak_grounding_supervision"]["images"] == round(0.1 * n_masks)
    assert len(saved["history"]) == 2  # both epochs ran (without the agreed reduction: gloo aborts a rank)
