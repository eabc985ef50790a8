"""The one command loader of both CLIs and the one atomic-write helper (core_model.commands,
core_model.fileio), on real files."""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest

from core_model.commands import add_commands
from core_model.fileio import (
    atomic_path,
    atomic_save_npy,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    jsonable,
    publish_dir,
)


@pytest.mark.parametrize("module", ["app.main", "training_cli.main"])
def test_every_listed_command_is_there(module):
    import importlib

    main = importlib.import_module(module)
    parser = main.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) == len(main.COMMANDS)  # none silently skipped


def test_a_missing_command_module_is_an_error_not_a_missing_command():
    sub = argparse.ArgumentParser().add_subparsers()
    with pytest.raises(ModuleNotFoundError):
        add_commands(sub, "app.cli", ["no_such_command"])


def test_atomic_write_forms(tmp_path):
    assert atomic_write(tmp_path / "a" / "t.txt", "é\r\n", mkdir=True) == 4
    assert (tmp_path / "a" / "t.txt").read_bytes() == "é\r\n".encode()  # newlines unchanged
    src = io.BytesIO(bytes(range(256)) * 5000)
    staging = tmp_path / "staging"
    staging.mkdir()
    assert atomic_write(tmp_path / "copy.bin", src, fsync=False, staging=staging) == 256 * 5000
    assert (tmp_path / "copy.bin").read_bytes() == bytes(range(256)) * 5000 and not list(staging.iterdir())
    atomic_write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1, 2], "b": 1}
    atomic_save_npy(tmp_path / "x.npy", np.arange(6, dtype=np.float32))
    assert np.array_equal(np.load(tmp_path / "x.npy"), np.arange(6, dtype=np.float32))
    assert (
        atomic_write_text(tmp_path / "r.md", "# Research use only\n", fsync=False).read_text()
        == "# Research use only\n"
    )


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def half_then_fail(f):
        f.write(b"half a fi")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    with pytest.raises(FileNotFoundError):  # no folder made unless asked
        atomic_write(tmp_path / "missing" / "x.txt", "x")
    assert not (tmp_path / "missing").exists()


def test_writers_that_need_a_file_name_go_through_the_same_helper(tmp_path):
    """safetensors, onnx and Qt write to a name: atomic_path gives one and renames it on success;
    a writer that fails (or writes nothing) leaves the old file and no temporary file."""
    from safetensors.numpy import load_file, save_file

    target = tmp_path / "w.safetensors"
    with atomic_path(target) as tmp:
        save_file({"w": np.ones(3, dtype=np.float32)}, str(tmp))
    assert np.array_equal(load_file(str(target))["w"], np.ones(3, dtype=np.float32))
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="writer crashed"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    with pytest.raises(OSError, match="nothing was written"):
        with atomic_path(target):
            pass  # e.g. an image writer that returned False without writing
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_a_folder_is_published_whole_over_the_old_one(tmp_path):
    old = tmp_path / "bundle"
    old.mkdir()
    (old / "stale.onnx").write_text("old")
    new = tmp_path / ".bundle.new"
    new.mkdir()
    (new / "image.onnx").write_text("new")
    publish_dir(new, old)
    assert sorted(p.name for p in old.iterdir()) == ["image.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # nothing left aside


def test_one_json_conversion_for_metrics_and_configs():
    from pathlib import Path

    from core_model.training.config import LossConfig

    out = jsonable(
        {
            1: np.float32(0.5),
            "nan": float("nan"),
            "arr": np.arange(2),
            "t": (np.int64(3),),
            "p": Path("/x"),
            "loss": LossConfig(),
        }
    )
    assert out["1"] == 0.5 and out["nan"] is None and out["arr"] == [0, 1] and out["t"] == [3] and out["p"] == "/x"
    assert out["loss"]["temperature"] == 0.07
    json.dumps(out, allow_nan=False)  # strict JSON
