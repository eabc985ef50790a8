"""Pretraining from a cache larger than memory: sequential shard streams (core_model/features/stream.py).

The order is checked as a pure function (rank split, windows, determinism); the reader on a real
cache written by precompute (same tensors as random access, at most two windows in memory); and
pretraining through it (deterministic, exact resume from a step checkpoint after a crash).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from core_model.errors import ConfigError, UserError
from core_model.features.precompute import PrecomputeOptions, precompute
from core_model.features.stream import ShardStream, available_memory_bytes, should_stream, stream_order
from core_model.imaging.preprocess import PreprocessSpec
from core_model.training.batches import CachedPairs, StreamingPairs
from core_model.training.config import PRETRAIN_DEFAULTS, load_config
from core_model.training.pretrain import Pretrainer

OVERRIDES = ["train.batch_size=16", "adaptor.dim=64", "adaptor.ffn_dim=128", "train.lr=2e-3", "loss.local_candidates=4"]
STREAM = ["cache.stream=on", "cache.stream_buffer_shards=1"]


@pytest.fixture(scope="module")
def cache(small_records, tiny_encoders, tmp_path_factory):
    """96 pairs in 6 shards of 16 (80 train, 16 val)."""
    vit, bert = tiny_encoders
    return precompute(
        small_records,
        tmp_path_factory.mktemp("stream_cache"),
        vit,
        bert,
        PreprocessSpec(),
        PrecomputeOptions(patch_pool=2, shard_size=16, batch_size=16, workers=0),
        progress=False,
    )


def test_each_rank_reads_only_its_shards_whole_windows_in_turn():
    train = np.array([i for i in range(1000) if i % 7], dtype=np.int64)  # 858 items in 10 shards of 100
    steps, batch, world, buffer = 13, 64, 2, 2
    order, plans = stream_order(train, 100, seed=3, epoch=1, world=world, steps=steps, batch=batch, buffer=buffer)
    assert len(order) == steps * batch
    assert sorted(plans[0] + plans[1]) == list(range(10)) and not set(plans[0]) & set(plans[1])
    steps_view = order.reshape(steps, batch)
    for r in range(world):
        mine = steps_view[:, r::world].reshape(-1)  # what the training loop gives rank r, step by step
        assert set(np.unique(mine // 100)) <= set(plans[r])
        # the stream walks its windows in order: the window index of consecutive items never goes back
        window = {s: i // buffer for i, s in enumerate(plans[r])}
        w = np.array([window[int(s)] for s in mine // 100])
        assert np.all(np.diff(w) >= 0)
        assert set(mine) <= set(train)
    # no item twice within an epoch unless a rank's shards ran short (then only its last window repeats)
    values, counts = np.unique(order, return_counts=True)
    assert counts.max() <= 2
    # deterministic for a seed, the same on every rank (a pure function), new each epoch
    again, _ = stream_order(train, 100, seed=3, epoch=1, world=world, steps=steps, batch=batch, buffer=buffer)
    other, other_plans = stream_order(train, 100, seed=3, epoch=2, world=world, steps=steps, batch=batch, buffer=buffer)
    assert np.array_equal(order, again) and not np.array_equal(order, other) and other_plans != plans


def test_one_process_epoch_is_a_permutation_and_settings_are_checked():
    train = np.arange(640, dtype=np.int64)
    order, plans = stream_order(train, 64, seed=0, epoch=0, world=1, steps=10, batch=64, buffer=3)
    assert sorted(order.tolist()) == train.tolist() and len(plans[0]) == 10
    with pytest.raises(UserError, match="divisible by the number of processes"):
        stream_order(train, 64, seed=0, epoch=0, world=3, steps=1, batch=64, buffer=1)
    with pytest.raises(UserError, match="at least one shard of training items per process"):
        stream_order(np.arange(10), 64, seed=0, epoch=0, world=2, steps=1, batch=4, buffer=1)
    with pytest.raises(ConfigError, match="cache.stream must be auto, on or off"):
        should_stream("sometimes", 1, 0.5)
    assert should_stream("auto", 3 << 30, 0.5, available=4 << 30)[0] is True
    assert should_stream("auto", 1 << 30, 0.5, available=4 << 30)[0] is False
    assert should_stream("off", 1 << 40, 0.5)[0] is False and should_stream("on", 1, 0.5)[0] is True
    assert should_stream(True, 1, 0.5)[0] is True and should_stream(False, 1 << 40, 0.5)[0] is False  # YAML on/off
    assert available_memory_bytes() > 0


def test_streamed_batches_equal_random_access_and_memory_stays_within_two_windows(cache):
    valid = np.flatnonzero(cache.valid)
    train = valid[valid % 6 != 0]
    stream = StreamingPairs(cache, train, seed=1, rank=0, world=1, steps=4, batch=16, buffer=2)
    order = stream.epoch_order(0)
    random_access = CachedPairs(cache, ram_limit_bytes=0)  # memory maps
    in_memory = CachedPairs(cache)
    most = 0
    for s in range(4):
        idx = order[s * 16 : (s + 1) * 16]
        got = stream.batch(idx)
        most = max(most, stream.stream.resident_shards())
        for ref in (random_access.batch(idx), in_memory.batch(idx)):
            assert got.keys() == ref.keys()
            for k in got:
                assert got[k].shape == ref[k].shape and got[k].dtype == ref[k].dtype, k
                assert torch.equal(got[k], ref[k]), k
    assert 0 < most <= 2 * 2  # two windows of two shards
    stream.close()


def test_shard_stream_reads_each_shard_once_per_epoch(cache):
    s = ShardStream(cache.path, ["image.pooled", "text.pooled"], buffer=2)
    s.set_plan([4, 1, 0, 5, 2, 3])
    for shard in [4, 1, 0, 5, 2, 3]:
        arrays = s.arrays([shard])[shard]
        assert np.array_equal(arrays["image.pooled"], np.load(cache.path / "shards" / f"{shard:05d}.image.pooled.npy"))
        assert s.resident_shards() <= 4
    per_shard = sum(np.load(f).nbytes for f in (cache.path / "shards").glob("*.[it]*.pooled.npy"))
    assert s.bytes_read == per_shard  # every shard read exactly once, nothing read twice
    s.close()


def _trainer(cache, records, out, extra=()):
    cfg = load_config(PRETRAIN_DEFAULTS, None, OVERRIDES + list(extra))
    return Pretrainer(
        cfg,
        out,
        cache,
        [r.report for r in records],
        [r.finding for r in records],
        [r.split for r in records],
        progress=False,
    )


def test_streamed_pretraining_is_deterministic_and_learns(cache, small_records, tmp_path):
    a = _trainer(cache, small_records, tmp_path / "a", STREAM + ["train.epochs=2", "train.threads=1"])
    assert a.train_pairs.mode == "stream"
    ma = a.run()
    mb = _trainer(cache, small_records, tmp_path / "b", STREAM + ["train.epochs=2", "train.threads=1"]).run()
    wa, wb = (
        load_file(str(tmp_path / "a" / "adaptor.safetensors")),
        load_file(str(tmp_path / "b" / "adaptor.safetensors")),
    )
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert ma["val_loss"] == mb["val_loss"]
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["cache"]["reader"] == "stream"
    hist = metrics["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    # the random path stays what it was for small caches (auto decides by size)
    assert _trainer(cache, small_records, tmp_path / "c").train_pairs.mode == "random"


class _Crash(Exception):
    pass


def test_streamed_run_resumed_after_a_crash_reaches_the_same_weights(cache, small_records, tmp_path):
    extra = STREAM + ["train.epochs=2", "train.checkpoint_every=3", "train.threads=1"]
    _trainer(cache, small_records, tmp_path / "ref", extra).run()

    victim = _trainer(cache, small_records, tmp_path / "crashed", extra)
    step = victim.train_step

    def crash_at_step_8(idx):
        if victim.step == 8:
            raise _Crash  # mid-epoch 2 (5 steps per epoch), after the checkpoint of step 6
        return step(idx)

    victim.train_step = crash_at_step_8
    with pytest.raises(_Crash):
        victim.run()
    assert not (tmp_path / "crashed" / "adaptor.safetensors").exists()

    # the checkpoint says the run streamed: a resume keeps that order even when the config now says off
    resumed = _trainer(cache, small_records, tmp_path / "crashed", ["train.epochs=2", "train.threads=1"])
    assert resumed.train_pairs.mode == "random"
    resumed.run(resume=True)
    assert resumed.train_pairs.mode == "stream"
    a = load_file(str(tmp_path / "ref" / "adaptor.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "adaptor.safetensors"))
    for k in a:
        assert np.allclose(a[k], b[k], atol=1e-6, rtol=0), k


@pytest.mark.slow
def test_two_processes_stream_their_own_shards_and_learn(small_records, tmp_path):
    """torchrun, 2 CPU processes on gloo: rank 0 decides for both, each reads its shards."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    manifest = tmp_path / "manifest.jsonl"
    with open(manifest, "w") as f:
        for r in small_records:
            row = {"id": r.id, "image": r.image_path, "report": r.report, "split": r.split, "finding": r.finding}
            f.write(json.dumps(row) + "\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data: {{kind: manifest, path: {manifest}}}\n"
        "encoders: {image: tiny-vit, text: tiny-bert}\n"
        "cache: {patch_pool: 2, shard_size: 16, batch_size: 16, workers: 0, stream: on, stream_buffer_shards: 1}\n"
        "adaptor: {dim: 64, ffn_dim: 128}\n"
        "loss: {local_candidates: 4}\n"
        "train: {epochs: 3, batch_size: 32, lr: 2.0e-3}\n"
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29537"]
    cmd += [
        "-m",
        "training_cli.main",
        "pretrain",
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "ddp"),
        "--no-progress",
    ]
    proc = subprocess.run(
        cmd, cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es), cache read as shard streams" in proc.stdout
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["cache"]["reader"] == "stream"
    hist = metrics["history"]
    assert len(hist) == 3 and hist[-1]["train_loss"] < hist[0]["train_loss"]


@pytest.mark.slow
def test_the_benchmark_runs_and_ends_with_its_target_lines(tmp_path, capsys):
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))
    from benchmarks import cache_streaming
    from benchmarks._targets import parse

    assert cache_streaming.main(["--quick", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Research use only" in out
    assert [t.name for t in parse(out)] == ["stream_vs_disk_bound", "stream_vs_random_mmap", "stream_vs_in_memory"]
    assert list(tmp_path.iterdir()) == []  # the synthetic cache is removed unless --keep
