"""Crash-safe checkpoints: safetensors for tensors, JSON for everything else, never pickle.

Each save writes ``ckpt-<step>.safetensors`` and ``ckpt-<step>.json`` (temp files, fsync,
rename), then atomically repoints ``last.json`` at them and removes older ones. A kill at any
moment leaves ``last.json`` naming a complete checkpoint whose hash it records.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from core_model.errors import UserError
from core_model.fileio import atomic_path, atomic_write_json, sha256_file


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> str:
    """Atomic safetensors write; returns the file's SHA-256."""
    with atomic_path(path) as tmp:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
            str(tmp),
            metadata={k: str(v) for k, v in (metadata or {}).items()},
        )
    return sha256_file(path)


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"optim.{pid}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    groups = []
    for g in sd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    return tensors, groups


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


class CheckpointDir:
    def __init__(self, path: str | Path, keep: int = 2):
        self.path = Path(path)
        self.keep = keep

    @property
    def pointer(self) -> Path:
        return self.path / "last.json"

    def exists(self) -> bool:
        return self.pointer.exists()

    def save(self, step: int, tensors: dict[str, torch.Tensor], state: dict) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{step:08d}"
        digest = save_tensors(self.path / f"{name}.safetensors", tensors)
        atomic_write_json(self.path / f"{name}.json", {**state, "step": step, "weights_sha256": digest})
        atomic_write_json(self.pointer, {"name": name, "step": step, "weights_sha256": digest})
        for old in sorted(self.path.glob("ckpt-*.json"))[: -self.keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".safetensors").unlink(missing_ok=True)
        for part in self.path.glob("*.part"):
            part.unlink(missing_ok=True)
        return self.path / f"{name}.safetensors"

    def load(self) -> tuple[dict[str, torch.Tensor], dict]:
        if not self.exists():
            raise UserError(f"no checkpoint to resume from in {self.path}")
        pointer = json.loads(self.pointer.read_text())
        weights = self.path / f"{pointer['name']}.safetensors"
        meta = self.path / f"{pointer['name']}.json"
        if not weights.exists() or not meta.exists():
            raise UserError(f"checkpoint {pointer['name']} named by {self.pointer} is missing its files")
        if sha256_file(weights) != pointer["weights_sha256"]:
            raise UserError(f"checkpoint {weights} does not match its recorded SHA-256 (corrupt or altered)")
        return load_file(str(weights)), json.loads(meta.read_text())
