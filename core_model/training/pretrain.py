"""Adaptor pretraining on cached frozen-encoder features.

Deterministic on CPU for a given seed: each epoch's order comes from ``seed + epoch`` and each
step's randomness (dropout, local-loss candidates) from ``seed`` and the global step, so a run
resumed from any checkpoint reaches the same weights as an uninterrupted one. A cache larger than
memory is read as sequential shard streams (:class:`~core_model.training.batches.StreamingPairs`,
:mod:`core_model.features.stream`); the checkpoint keeps which reader the run started with.

This module is the training loop; the saved Adaptor's I/O is in :mod:`.artifacts`, the DDP
helpers in :mod:`.distributed`, the LR schedule in :mod:`.scheduler`, and building a run from a
config (records, cache, then this loop) in :mod:`.pipeline`.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from core_model.adaptor import Adaptor, AdaptorConfig, make_config
from core_model.errors import ConfigError, UserError
from core_model.features.cache import FeatureCache
from core_model.fileio import atomic_write_bytes, atomic_write_json, jsonable
from core_model.losses import AdaptorLoss
from core_model.metrics.retrieval import retrieval_metrics
from core_model.training.artifacts import adaptor_metadata, load_state, save_adaptor, state_tensors
from core_model.training.batches import CachedPairs, report_groups, training_pairs
from core_model.training.checkpoint import CheckpointDir, optimizer_from_tensors, optimizer_to_tensors
from core_model.training.config import LossConfig, PretrainTrainConfig, config_to_dict
from core_model.training.distributed import average_gradients, dist_info, gather
from core_model.training.scheduler import linear_warmup_decay
from core_model.training.tracking import tracker_for

log = logging.getLogger(__name__)


# ---- model construction ----------------------------------------------------------------------
def adaptor_config_from(cfg_adaptor: dict, cache: FeatureCache) -> AdaptorConfig:
    if not (cache.has_image and cache.has_text):
        raise UserError("pretraining needs a cache with both image and report features")
    image_dim = int(cache.manifest["image"]["dim"])
    text_dim = int(cache.manifest["text"]["dim"])
    opts = {k: v for k, v in cfg_adaptor.items() if k != "preset"}
    preset = cfg_adaptor.get("preset", "tokens")
    if preset == "tokens":
        if not (cache.manifest["image"].get("tokens") and cache.manifest["text"].get("tokens")):
            raise UserError("the tokens Adaptor needs token features: precompute with image_tokens and text_tokens on")
        opts["patch_grid"] = tuple(cache.manifest["image"]["grid"])
        if opts.get("paper_released_code"):
            raise ConfigError(
                "adaptor.paper_released_code needs adaptor.preset=paper (the released code's pooled Adaptor)"
            )
        return make_config("tokens", image_dim, text_dim, **opts)
    if preset not in PRESET_KEYS:
        raise ConfigError(f"adaptor.preset must be tokens, paper or none, not {preset!r}")
    chosen = preset_overrides(preset, cfg_adaptor)
    if preset == "none":
        grid = cache.manifest["image"].get("grid") if cache.manifest["image"].get("tokens") else None
        return make_config("none", image_dim, text_dim, patch_grid=tuple(grid) if grid else None)
    try:
        return make_config("paper", image_dim, text_dim, **chosen)
    except ValueError as exc:
        raise ConfigError(f"adaptor.preset=paper with {chosen}: {exc}") from None


#: adaptor keys each non-default preset applies when set (every other key must keep its default)
PRESET_KEYS = {
    "paper": ("dim", "heads", "layers", "ffn_dim", "dropout", "share_layers", "paper_released_code"),
    "none": (),
}


def preset_overrides(preset: str, cfg_adaptor: dict) -> dict:
    """The ``adaptor.*`` values the ``paper`` / ``none`` preset applies: every key of the preset
    that the config file or a ``--set`` gave (``Section.explicit`` of the loaded config; for a
    plain mapping, the keys whose value differs from the tokens defaults). A key the preset has
    no use for is refused (ConfigError naming it) when its value would have changed anything
    (differs from the tokens default), never silently dropped."""
    from core_model.training.config import PRETRAIN_DEFAULTS

    defaults = PRETRAIN_DEFAULTS["adaptor"]
    explicit = getattr(cfg_adaptor, "explicit", None)
    chosen = {}
    for key, value in cfg_adaptor.items():
        if key == "preset":
            continue
        given = key in explicit if explicit is not None else value != defaults.get(key)
        if not given:
            continue
        if key in PRESET_KEYS[preset]:
            chosen[key] = value
            continue
        if value != defaults.get(key):
            usable = ", ".join(PRESET_KEYS[preset]) or "none"
            raise ConfigError(
                f"adaptor.{key} has no effect with adaptor.preset={preset} (keys it applies: {usable}); remove it"
            )
    return chosen


def _param_groups(modules, weight_decay: float):
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "log_scale" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---- evaluation ------------------------------------------------------------------------------
@torch.no_grad()
def embed(
    adaptor: Adaptor, pairs: CachedPairs, indices: np.ndarray, batch_size: int, device
) -> tuple[np.ndarray, np.ndarray]:
    adaptor.eval()
    imgs, txts = [], []
    for b in range(0, len(indices), batch_size):
        batch = pairs.batch(indices[b : b + batch_size], device)
        io_ = adaptor.encode_image(batch["image_pooled"], batch.get("image_tokens"))
        to_ = adaptor.encode_text(batch["text_pooled"], batch.get("text_tokens"), batch.get("text_mask"))
        imgs.append(io_.pooled.float().cpu().numpy())
        txts.append(to_.pooled.float().cpu().numpy())
    return np.concatenate(imgs), np.concatenate(txts)


@torch.no_grad()
def validation_loss(adaptor, loss_fn, pairs, indices, groups, batch_size, device, seed) -> float:
    adaptor.eval()
    total, count = 0.0, 0
    gen = torch.Generator().manual_seed(seed)
    for b in range(0, len(indices), batch_size):
        idx = indices[b : b + batch_size]
        if len(idx) < 2:
            continue
        batch = pairs.batch(idx, device)
        io_ = adaptor.encode_image(batch["image_pooled"], batch.get("image_tokens"))
        to_ = adaptor.encode_text(batch["text_pooled"], batch.get("text_tokens"), batch.get("text_mask"))
        g = torch.from_numpy(groups[idx]).to(device)
        value, _ = loss_fn(adaptor, io_, to_, g, generator=gen)
        total += float(value) * len(idx)
        count += len(idx)
    return total / max(count, 1)


# ---- the run ---------------------------------------------------------------------------------
class Pretrainer:
    """One pretraining run writing into ``out_dir``."""

    def __init__(
        self,
        cfg: dict,
        out_dir: str | Path,
        cache: FeatureCache,
        reports: list[str | None],
        findings: list[str | None],
        splits: list[str | None],
        *,
        progress: bool = True,
        data_summary: dict | None = None,
        lesion_masks: list[str | None] | None = None,
    ):
        self.cfg = cfg
        self.train_cfg: PretrainTrainConfig = cfg["train"]
        self.out = Path(out_dir)
        self.cache = cache
        self.progress = progress
        self.data_summary = data_summary or {}
        t = self.train_cfg
        self.seed = t.seed
        self.rank, self.world = dist_info()
        if t.threads:
            torch.set_num_threads(t.threads)
        dev = t.device
        if dev == "auto":
            dev = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(dev)
        self.amp = self.device.type == "cuda"
        if self.device.type == "cpu":
            # CPU runs are bit-repeatable for a seed (some CPU kernels, e.g. attention backward,
            # otherwise reduce in a thread-dependent order)
            torch.use_deterministic_algorithms(True, warn_only=True)

        valid = cache.valid.copy()
        self.groups = report_groups(reports)
        self.findings = np.array([f if f else "" for f in findings], dtype=object)
        split = np.array([s or "" for s in splits], dtype=object)
        train_idx = np.flatnonzero(valid & (split == "train"))
        val_idx = np.flatnonzero(valid & (split == "val"))
        if len(train_idx) < 2:
            raise UserError(f"only {len(train_idx)} usable training pairs; pretraining needs more")
        if len(val_idx) < 2:
            raise UserError("no validation pairs: give the data a 'val' split (or set data.val_fraction)")
        self.train_idx, self.val_idx = train_idx, val_idx
        self.pairs = CachedPairs(cache, ram_limit_bytes=float(t.ram_limit_gb) * 1e9)

        torch.manual_seed(self.seed)
        self.adaptor = Adaptor(adaptor_config_from(cfg["adaptor"], cache)).to(self.device)
        lc: LossConfig = cfg["loss"]
        self.loss_fn = AdaptorLoss(
            temperature=lc.temperature,
            min_temperature=lc.min_temperature,
            max_temperature=lc.max_temperature,
            image_to_text_weight=lc.image_to_text_weight,
            local_weight=lc.local_weight if self.adaptor.cross is not None else 0.0,
            local_candidates=lc.local_candidates,
            grounding_weight=lc.grounding_weight if self.adaptor.cross is not None else 0.0,
        ).to(self.device)
        self.grounding = self._grounding_targets(lc, lesion_masks)
        self.params = [p for m in (self.adaptor, self.loss_fn) for p in m.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(_param_groups([self.adaptor, self.loss_fn], t.weight_decay), lr=t.lr)
        self.batch_size = t.batch_size
        if self.batch_size % self.world:
            raise UserError(
                f"train.batch_size {self.batch_size} must be divisible by the number of processes {self.world}"
            )
        global_batch = min(self.batch_size, len(train_idx))
        self.steps_per_epoch = max(1, len(train_idx) // global_batch)
        self.global_batch = global_batch
        self.total_steps = self.steps_per_epoch * t.epochs
        self.train_pairs = self._training_pairs()
        warmup = int(round(float(t.warmup) * self.total_steps))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, linear_warmup_decay(self.total_steps, warmup))
        self.ckpt = CheckpointDir(self.out / "checkpoint")
        self.history: list[dict] = []
        self.step = 0

    def _grounding_targets(self, lc: LossConfig, lesion_masks) -> dict[int, np.ndarray]:
        """Weak grounding supervision: item -> lesion patches, for a seeded share of the training
        images with a lesion mask (empty when off). Recorded in the run's data summary."""
        if not (self.loss_fn.grounding_weight > 0 and lc.grounding_fraction > 0):
            return {}
        from core_model.imaging.preprocess import PreprocessSpec
        from core_model.training.grounding import weak_grounding_targets

        if not lesion_masks or not any(lesion_masks[i] for i in self.train_idx):
            raise UserError(
                "loss.grounding_weight is set but no training image has a lesion mask "
                "(a 'lesion_mask' column, e.g. phantoms); set loss.grounding_weight=0"
            )
        spec = PreprocessSpec.from_dict(self.cache.manifest["image"]["preprocess"])
        rows, cols = tuple(self.cache.manifest["image"]["grid"])
        targets = weak_grounding_targets(
            lesion_masks, self.train_idx, lc.grounding_fraction, self.seed, spec, rows, cols
        )
        with_mask = sum(1 for i in self.train_idx if lesion_masks[i])
        self.data_summary = {
            **self.data_summary,
            "weak_grounding_supervision": {
                "images": len(targets),
                "of_training_images_with_lesion_masks": with_mask,
                "fraction": lc.grounding_fraction,
                "weight": lc.grounding_weight,
                "what": "the report heatmap of these training images is asked to fall on their lesion mask",
            },
        }
        return targets

    def _grounding_batch(self, local: np.ndarray):
        rows = [k for k, i in enumerate(local) if int(i) in self.grounding]
        if not rows:
            return None
        target = np.stack([self.grounding[int(local[k])] for k in rows])
        return torch.tensor(rows, device=self.device), torch.from_numpy(target).to(self.device)

    # -- parameter accounting
    def parameter_summary(self) -> dict:
        trainable = sum(p.numel() for p in self.params)
        frozen = sum(int(self.cache.manifest[k]["encoder"].get("parameters", 0)) for k in ("image", "text"))
        return {
            "trainable": trainable,
            "frozen_encoders": frozen,
            "trainable_share": trainable / max(trainable + frozen, 1),
        }

    def _training_pairs(self, state: dict | None = None) -> CachedPairs:
        """Random access (``self.pairs``) or shard streams for a cache larger than memory."""
        return training_pairs(
            self.pairs,
            self.cfg["cache"],
            self.train_idx,
            seed=self.seed,
            rank=self.rank,
            world=self.world,
            steps=self.steps_per_epoch,
            batch=self.global_batch,
            state=state,
        )

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self.train_pairs is not self.pairs:  # streaming: shard order, shuffled within a buffer
            return self.train_pairs.epoch_order(epoch)
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        perm = torch.randperm(len(self.train_idx), generator=g).numpy()
        return self.train_idx[perm]

    def _save_checkpoint(self, epoch: int, step_in_epoch: int) -> None:
        if self.rank != 0:
            return
        tensors = state_tensors(self.adaptor, self.loss_fn)
        opt_tensors, groups = optimizer_to_tensors(self.opt)
        tensors.update(opt_tensors)
        self.ckpt.save(
            self.step,
            tensors,
            {
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "optimizer_groups": groups,
                "scheduler": self.sched.state_dict(),
                "history": self.history,
                "reader": self.train_pairs.reader_state(),
            },
        )

    def _resume(self) -> tuple[int, int]:
        tensors, state = self.ckpt.load()
        load_state(self.adaptor, self.loss_fn, {k: v.to(self.device) for k, v in tensors.items()})
        optimizer_from_tensors(self.opt, {k: v.to(self.device) for k, v in tensors.items()}, state["optimizer_groups"])
        self.sched.load_state_dict(state["scheduler"])
        self.history = state["history"]
        self.step = int(state["step"])
        reader = state.get("reader", {"mode": "random"})
        if reader != self.train_pairs.reader_state():  # keep the order the run started with
            self.train_pairs = self._training_pairs(reader)
        log.info("resumed from step %d (epoch %d)", self.step, state["epoch"] + 1)
        return int(state["epoch"]), int(state["step_in_epoch"])

    def train_step(self, idx: np.ndarray) -> dict:
        self.adaptor.train()
        torch.manual_seed(self.seed * 1_000_003 + self.step)  # dropout of this step
        gen = torch.Generator().manual_seed(self.seed * 7_919 + self.step)  # local-loss candidates
        local = idx[self.rank :: self.world]
        batch = self.train_pairs.batch(local, self.device)
        gathered = np.concatenate([idx[r :: self.world] for r in range(self.world)])  # all_gather order
        groups = torch.from_numpy(self.groups[gathered]).to(self.device)
        local_groups = torch.from_numpy(self.groups[local]).to(self.device)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            io_ = self.adaptor.encode_image(batch["image_pooled"], batch.get("image_tokens"))
            to_ = self.adaptor.encode_text(batch["text_pooled"], batch.get("text_tokens"), batch.get("text_mask"))
            global_sim = None
            if self.world > 1:  # negatives from every process's share of the batch
                global_sim = gather(io_.pooled.float()) @ gather(to_.pooled.float()).t()
            loss, parts = self.loss_fn(
                self.adaptor,
                io_,
                to_,
                local_groups,
                generator=gen,
                global_sim=global_sim,
                global_groups=groups,
                grounding=self._grounding_batch(local) if self.grounding else None,
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.params)
        if self.train_cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, float(self.train_cfg.grad_clip))
        self.opt.step()
        self.sched.step()
        self.step += 1
        return {"loss": float(loss.detach()), **parts}

    def evaluate(self) -> dict:
        vl = validation_loss(
            self.adaptor, self.loss_fn, self.pairs, self.val_idx, self.groups, self.global_batch, self.device, self.seed
        )
        img, txt = embed(self.adaptor, self.pairs, self.val_idx, 256, self.device)
        labels = self.findings[self.val_idx]
        has_labels = any(bool(x) for x in labels)
        metrics = retrieval_metrics(img, txt, labels=labels if has_labels else None)
        return {"val_loss": vl, **metrics}

    def run(self, resume: bool = False) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        t = self.train_cfg
        start_epoch, skip = 0, 0
        if resume and self.ckpt.exists():
            start_epoch, skip = self._resume()
        elif resume:
            log.warning("--resume given but %s has no checkpoint; starting from the beginning", self.ckpt.path)
        ps = self.parameter_summary()
        if self.rank == 0:
            print(
                f"Adaptor ({self.adaptor.config.mode}): {ps['trainable']:,} trainable parameters = "
                f"{100 * ps['trainable_share']:.2f} % of all {ps['trainable'] + ps['frozen_encoders']:,} "
                f"(frozen encoders {ps['frozen_encoders']:,})"
            )
            print(
                f"pairs: {len(self.train_idx)} train, {len(self.val_idx)} val; "
                f"{self.steps_per_epoch} steps/epoch x {t.epochs} epochs, global batch {self.global_batch}, "
                f"device {self.device}{' bf16' if self.amp else ''}, {self.world} process(es)"
                + (", cache read as shard streams" if self.train_pairs.mode == "stream" else "")
            )
        every = t.checkpoint_every or 0
        tracker = tracker_for(t, self.out, "pretrain", config_to_dict(self.cfg), enabled=self.rank == 0)
        bar = None
        if self.progress and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, unit="step", desc="pretrain", dynamic_ncols=True)
        for epoch in range(start_epoch, t.epochs):
            order = self._epoch_order(epoch)
            t0 = time.perf_counter()
            losses = []
            part_sums: dict[str, list[float]] = {}
            first = skip if epoch == start_epoch else 0
            for s in range(first, self.steps_per_epoch):
                idx = order[s * self.global_batch : (s + 1) * self.global_batch]
                out = self.train_step(idx)
                losses.append(out["loss"])
                for k, v in out.items():
                    if k != "loss":
                        part_sums.setdefault(k, []).append(v)
                if bar is not None:
                    rate = (s + 1 - first) * self.global_batch / max(time.perf_counter() - t0, 1e-9)
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{out['loss']:.3f}", pairs_s=f"{rate:.0f}")
                if every and self.step % every == 0 and s + 1 < self.steps_per_epoch:
                    self._save_checkpoint(epoch, s + 1)
            seconds = time.perf_counter() - t0
            row = {
                "epoch": epoch + 1,
                "step": self.step,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                **{f"train_{k}": float(np.mean(v)) for k, v in part_sums.items()},
                "lr": self.sched.get_last_lr()[0],
                "temperature": self.loss_fn.global_nce.temperature,
                "pairs_per_s": (self.steps_per_epoch - first) * self.global_batch / max(seconds, 1e-9),
                "epoch_seconds": seconds,
            }
            if self.rank == 0:
                row.update(self.evaluate())
                self.history.append(row)
                self._write_logs()
                tracker.log(self.step, row, "pretrain/")  # TensorBoard / W&B when asked (the CSV stays)
                if bar is not None:
                    bar.write(_epoch_line(row))
                else:
                    print(_epoch_line(row))
            self._save_checkpoint(epoch + 1, 0)
        if bar is not None:
            bar.close()
        tracker.close()
        final = self.history[-1] if self.history else {}
        if self.rank == 0:
            self._write_final(final, ps)
        return final

    def _write_logs(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        for row in self.history:
            w.writerow(row)
        atomic_write_bytes(self.out / "log.csv", buf.getvalue().encode())

    def _write_final(self, final: dict, params: dict) -> None:
        meta = adaptor_metadata(self.adaptor, self.loss_fn, self.cache, self.cfg, final, self.data_summary)
        save_adaptor(self.out / "adaptor.safetensors", self.adaptor, self.loss_fn, meta)
        metrics = {
            "command": "pretrain",
            "research_use_only": True,
            "final": final,
            "history": self.history,
            "parameters": params,
            "data": self.data_summary,
            "cache": {
                "path": str(self.cache.path),
                "bytes_per_item": self.cache.manifest.get("bytes_per_item"),
                "reader": self.train_pairs.mode,
            },
        }
        atomic_write_json(self.out / "metrics.json", jsonable(metrics))


def _epoch_line(row: dict) -> str:
    parts = [f"epoch {row['epoch']}", f"loss {row['train_loss']:.3f}", f"val {row.get('val_loss', float('nan')):.3f}"]
    for k in ("i2t_R@1", "i2t_R@5", "t2i_R@5", "i2t_P@5_finding", "t2i_P@5_finding"):
        if k in row:
            parts.append(f"{k} {row[k]:.3f}")
    if "chance_R@5" in row:
        parts.append(
            f"(chance R@5 {row['chance_R@5']:.3f}"
            + (f", P {row['chance_P_finding']:.3f})" if "chance_P_finding" in row else ")")
        )
    parts.append(f"{row['pairs_per_s']:.0f} pairs/s")
    return " | ".join(parts)
