"""`precompute` from WebDataset tar shards: the same features as from the same images as files,
each torchrun rank its own tars, and a damaged shard is one line on the command line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core_model.data.readers import read_dataset
from core_model.data.records import Record
from core_model.features.precompute import PrecomputeOptions, precompute, shard_owners
from core_model.imaging.preprocess import PreprocessSpec

ROOT = Path(__file__).resolve().parents[2]


def _tars(records, out: Path, per_tar: int) -> list[Path]:
    paths = []
    for k in range(0, len(records), per_tar):
        path = out / f"cxr-{k // per_tar:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for r in records[k : k + per_tar]:
                for name, data in (
                    (f"{r.id}.png", Path(r.image_path).read_bytes()),
                    (f"{r.id}.txt", r.report.encode()),
                    (f"{r.id}.json", json.dumps({"split": r.split, "patient_id": r.patient_id}).encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def test_tar_shards_give_the_same_features_as_the_image_files(small_records, tiny_encoders, tmp_path):
    records = small_records[:40]
    _tars(records, tmp_path, per_tar=16)
    wds = read_dataset({"kind": "webdataset", "path": str(tmp_path / "cxr-{000000..000002}.tar")}).records
    assert [r.id.split("/")[1] for r in wds] == [r.id for r in records]
    assert [r.split for r in wds] == [r.split for r in records]
    vit, bert = tiny_encoders
    opts = PrecomputeOptions(patch_pool=2, shard_size=8, batch_size=8, workers=0)
    from_files = precompute(records, tmp_path / "files", vit, bert, PreprocessSpec(), opts, progress=False)
    from_tars = precompute(wds, tmp_path / "tars", vit, bert, PreprocessSpec(), opts, progress=False)
    assert from_tars.valid.all()
    for part in ("image.pooled", "image.tokens", "text.pooled", "text.tokens", "text.ids", "text.offsets"):
        for s in range(from_files.num_shards):
            a = np.load(from_files.path / "shards" / f"{s:05d}.{part}.npy")
            b = np.load(from_tars.path / "shards" / f"{s:05d}.{part}.npy")
            assert np.array_equal(a, b), (part, s)


def test_each_rank_encodes_the_cache_shards_of_its_own_tars(tmp_path):
    def rec(tar: str, i: int) -> Record:
        return Record(id=f"{tar}/{i}", image_path=f"/d/{tar}.tar::{512 * (i + 1)}:10:{i}.jpg", report="r")

    records = [rec("a", i) for i in range(8)] + [rec("b", i) for i in range(8)] + [rec("c", i) for i in range(4)]
    # cache shards of 4: a a | b b | c
    assert shard_owners(records, 4, 2) == [0, 0, 1, 1, 0]
    assert shard_owners(records, 4, 3) == [0, 0, 1, 1, 2]
    # files keep the round-robin of shards
    plain = [Record(id=str(i), image_path=f"/d/{i}.png", report="r") for i in range(20)]
    assert shard_owners(plain, 4, 2) == [0, 1, 0, 1, 0]


def test_a_damaged_shard_is_one_line_naming_it(tmp_path):
    good = tmp_path / "cxr-000000.tar"
    with tarfile.open(good, "w") as tar:
        buf = io.BytesIO()
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(buf, format="PNG")
        for name, data in (("a.png", buf.getvalue()), ("a.txt", b"Clear lungs.")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "cxr-000001.tar").write_bytes(good.read_bytes()[:700])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data: {{kind: webdataset, path: '{tmp_path}/cxr-{{000000..000001}}.tar'}}\n"
        "encoders: {image: tiny-vit, text: tiny-bert}\n"
        "cache: {workers: 0}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "training_cli.main", "precompute", "--config", str(cfg), "--out", str(tmp_path / "c")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adaptor-train precompute: error: cxr-000001.tar "), lines
    assert "truncated" in lines[0] or "damaged" in lines[0]
    assert not (tmp_path / "c" / "manifest.json").exists()


@pytest.mark.slow
def test_two_ranks_precompute_tar_shards_like_one(small_records, tmp_path):
    """torchrun with 2 CPU processes on gloo over 3 tar shards: the same cache as one process."""
    _tars(small_records[:48], tmp_path, per_tar=16)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data: {{kind: webdataset, path: '{tmp_path}'}}\n"
        "encoders: {image: tiny-vit, text: tiny-bert}\n"
        "cache: {patch_pool: 2, shard_size: 8, batch_size: 8, workers: 0}\n"
    )
    base = [sys.executable, "-m", "training_cli.main", "precompute", "--config", str(cfg), "--no-progress"]
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541"]
    one = subprocess.run(base + ["--out", str(tmp_path / "one")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        ddp + base[1:] + ["--out", str(tmp_path / "two")], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert two.returncode == 0, two.stderr[-3000:]
    for f in sorted((tmp_path / "one" / "shards").glob("*.npy")):
        assert np.array_equal(np.load(f), np.load(tmp_path / "two" / "shards" / f.name)), f.name
