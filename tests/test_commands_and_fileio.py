"""The one command loader of both CLIs and the one atomic-write helper (core_model.commands,
core_model.fileio), on real files."""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest

from core_model.commands import add_commands
from core_model.fileio import atomic_save_npy, atomic_write, atomic_write_json, atomic_write_text


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
