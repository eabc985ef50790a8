"""Load-time checks of a bundle's config against its graphs, and the smoke inference (torch-free).

:class:`core_model.runtime.Bundle` runs these after the manifest and every hash were verified
(:func:`core_model.runtime.verify.verify_folder`): a bundle whose files are intact can still be
inconsistent (a config declaring other classes than the graph outputs, a graph swapped for
another one, a graph that loads but cannot run). Each problem raises a
:class:`~core_model.runtime.verify.BundleFormatError` with a one-line message naming it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import NoReturn

import numpy as np

from core_model.imaging.preprocess import PreprocessSpec, prepare_input_with_shape
from core_model.runtime.format import DEFAULT_GRAPHS, GRAPH_IO, MAX_INPUT_SIZE, REQUIRED_GRAPHS
from core_model.runtime.verify import BundleFormatError, one_line

SMOKE_PHRASE = "small left pleural effusion"
_REEXPORT = "the bundle is inconsistent; re-export it"


def _fail(msg: str) -> NoReturn:
    raise BundleFormatError(msg)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


@dataclass(frozen=True)
class BundleConfig:
    """The validated fields of config.json the runtime uses."""

    classes: list[str]
    thresholds: dict[str, float]
    mask_label: str | None
    mask_threshold: float
    preprocess: PreprocessSpec
    patch_grid: tuple[int, int] | None
    embedding_dim: int | None
    graphs: dict[str, str]
    max_length: int
    special_ids: frozenset[int]
    pad_id: int


def _graph_files(graphs, files) -> dict[str, str]:
    if graphs is None:
        graphs = dict(DEFAULT_GRAPHS)
    if not isinstance(graphs, dict):
        _fail("config.json: 'graphs' is not an object of graph name -> file")
    out = {}
    for name, rel in graphs.items():
        if name not in GRAPH_IO:
            _fail(
                f"config.json names a graph {str(name)[:40]!r} this app does not know "
                f"(known: {', '.join(GRAPH_IO)}); update the app or re-export"
            )
        if rel is None and name not in REQUIRED_GRAPHS:
            continue
        if not isinstance(rel, str) or not rel:
            _fail(f"config.json gives the {name} graph no file name")
        parts = rel.replace("\\", "/").split("/")
        if (
            rel.startswith(("/", "\\"))
            or (len(rel) > 1 and rel[1] == ":")
            or ".." in parts
            or PurePosixPath(rel).is_absolute()
        ):
            _fail(f"config.json points the {name} graph outside the bundle ({rel[:80]!r}); refusing it")
        if rel not in files:
            _fail(
                f"config.json names {rel[:80]!r} as the {name} graph, but manifest.json does not list it; "
                f"a bundle runs only files its manifest lists"
            )
        out[name] = rel
    for name in REQUIRED_GRAPHS:
        if name not in out:
            _fail(f"config.json names no {name} graph")
    return out


def _preprocess(d) -> PreprocessSpec:
    if not isinstance(d, dict):
        _fail("config.json has no 'preprocess' object (input size, normalisation)")
    size = d.get("size", 224)
    if not _is_int(size) or not 8 <= size <= MAX_INPUT_SIZE:
        _fail(
            f"config.json: preprocess.size must be a whole number of pixels from 8 to {MAX_INPUT_SIZE} "
            f"(got {str(size)[:20]})"
        )
    channels = d.get("channels", 3)
    if not _is_int(channels) or channels not in (1, 3):
        _fail(f"config.json: preprocess.channels must be 1 or 3 (got {str(channels)[:20]})")
    for key in ("mean", "std"):
        if key in d and not _is_number(d[key]):
            _fail(f"config.json: preprocess.{key} must be a finite number")
    if "std" in d and d["std"] <= 0:
        _fail("config.json: preprocess.std must be positive")
    rt = d.get("resize_to")
    if rt is not None and (not _is_int(rt) or not size <= rt <= 4 * MAX_INPUT_SIZE):
        _fail("config.json: preprocess.resize_to must be empty or a whole number of pixels at least the input size")
    try:
        return PreprocessSpec.from_dict(d)
    except (TypeError, ValueError) as exc:
        _fail(f"config.json: preprocess is not usable ({one_line(exc)})")


def read_config(c, files) -> BundleConfig:
    """Validate config.json (already parsed) against the manifest's file list."""
    if not isinstance(c, dict):
        _fail("config.json is not an object")
    classes = c.get("classes") or []
    if not isinstance(classes, list) or not all(isinstance(x, str) and x for x in classes):
        _fail("config.json: 'classes' must be a list of class names")
    if len(set(classes)) != len(classes):
        _fail("config.json names a class twice")
    thresholds = c.get("thresholds") or {}
    if not isinstance(thresholds, dict):
        _fail("config.json: 'thresholds' must be an object of class -> threshold")
    for k, v in thresholds.items():
        if k not in classes:
            _fail(f"config.json gives a threshold for {k[:40]!r}, which is not one of its classes")
        if not _is_number(v) or not 0.0 <= v <= 1.0:
            _fail(f"config.json: the threshold of {k[:40]!r} must be a number from 0 to 1")
    mask_label = c.get("mask_label")
    if mask_label is not None and (not isinstance(mask_label, str) or not mask_label):
        _fail("config.json: 'mask_label' must be a name or empty")
    mt = c.get("mask_threshold")
    if mt is not None and (not _is_number(mt) or not 0.0 < mt < 1.0):
        _fail("config.json: 'mask_threshold' must be a number between 0 and 1")
    grid = c.get("patch_grid")
    if grid is not None:
        if not isinstance(grid, list) or len(grid) != 2 or not all(_is_int(g) and 0 < g <= 1024 for g in grid):
            _fail("config.json: 'patch_grid' must be [rows, cols]")
        grid = (grid[0], grid[1])
    dim = c.get("embedding_dim")
    if dim is not None and (not _is_int(dim) or not 0 < dim <= 1 << 16):
        _fail("config.json: 'embedding_dim' must be a positive whole number")
    t = c.get("text") or {}
    if not isinstance(t, dict):
        _fail("config.json: 'text' must be an object")
    max_length = t.get("max_length", 112)
    if not _is_int(max_length) or not 2 <= max_length <= 8192:
        _fail("config.json: text.max_length must be a whole number from 2 to 8192")
    special = t.get("special_ids", [])
    if not isinstance(special, list) or not all(_is_int(i) and i >= 0 for i in special):
        _fail("config.json: text.special_ids must be a list of token ids")
    pad_id = t.get("pad_id", 0)
    if not _is_int(pad_id) or pad_id < 0:
        _fail("config.json: text.pad_id must be a token id")
    return BundleConfig(
        classes=list(classes),
        thresholds={k: float(v) for k, v in thresholds.items()},
        mask_label=mask_label,
        mask_threshold=float(mt or 0.5),
        preprocess=_preprocess(c.get("preprocess")),
        patch_grid=grid,
        embedding_dim=dim,
        graphs=_graph_files(c.get("graphs"), files),
        max_length=max_length,
        special_ids=frozenset(special),
        pad_id=pad_id,
    )


# ---- graph signatures --------------------------------------------------------------------------
def _static(dim):
    return dim if _is_int(dim) else None


def check_graph_io(sessions, cfg: BundleConfig, bank_dim: int | None) -> None:
    """Input/output names, element types and static dimensions of every graph against the config."""
    dims: dict[str, int] = {}  # where -> embedding width, to compare
    if cfg.embedding_dim is not None:
        dims["config.json embedding_dim"] = cfg.embedding_dim
    if bank_dim is not None:
        dims["the report bank"] = bank_dim
    patches: dict[str, int] = {}
    if cfg.patch_grid and "heatmap" in cfg.graphs:
        patches["config.json patch_grid"] = cfg.patch_grid[0] * cfg.patch_grid[1]
    shapes = {}
    for name, file in cfg.graphs.items():
        s = sessions.get(name)
        want_in, want_out = GRAPH_IO[name]
        got_in = [i.name for i in s.get_inputs()]
        got_out = [o.name for o in s.get_outputs()]
        if got_in != list(want_in):
            _fail(
                f"the {name} graph ({file}) takes inputs {', '.join(got_in) or 'none'}, but a {name} graph takes "
                f"{', '.join(want_in)}; a graph was swapped or {_REEXPORT}"
            )
        if got_out[: len(want_out)] != list(want_out):
            _fail(
                f"the {name} graph ({file}) gives outputs {', '.join(got_out[:8]) or 'none'}, but a {name} graph "
                f"gives {', '.join(want_out)}; a graph was swapped or {_REEXPORT}"
            )
        for io in list(s.get_inputs()) + list(s.get_outputs()):
            shapes[(name, io.name)] = (list(io.shape or []), io.type)
    want_types = {
        ("image", "pixel_values"): "tensor(float)",
        ("text", "input_ids"): "tensor(int64)",
        ("text", "attention_mask"): "tensor(int64)",
        ("heatmap", "token_embeddings"): "tensor(float)",
        ("heatmap", "word_weights"): "tensor(float)",
        ("heatmap", "patch_tokens"): "tensor(float)",
    }
    for (g, io), t in want_types.items():
        if (g, io) in shapes and shapes[(g, io)][1] != t:
            _fail(f"the {g} graph's input {io} is {shapes[(g, io)][1]}, not {t}; {_REEXPORT}")

    def shape(g, io, rank):
        sh = shapes[(g, io)][0]
        if len(sh) != rank:
            _fail(f"the {g} graph's {io} has {len(sh)} dimensions, not {rank}; {_REEXPORT}")
        return [_static(d) for d in sh]

    pre = cfg.preprocess
    px = shape("image", "pixel_values", 4)
    if px[0] is not None:
        _fail(f"the image graph takes a fixed batch of {px[0]} images (the app sends any number); {_REEXPORT}")
    for got, want, what in zip(px[1:], (pre.channels, pre.size, pre.size), ("channels", "height", "width")):
        if got is not None and got != want:
            _fail(
                f"the bundle's image graph takes input {shapes[('image', 'pixel_values')][0]} but its preprocessing "
                f"makes {pre.channels}x{pre.size}x{pre.size} images ({what} differs); {_REEXPORT}"
            )
    n = len(cfg.classes)
    for io in ("probabilities", "logits"):
        width = shape("image", io, 2)[1]
        if width is not None and width != n:
            _fail(
                f"config.json declares {n} class{'es' if n != 1 else ''}"
                f"{' (' + ', '.join(cfg.classes) + ')' if n else ''} but the image graph outputs {width} {io}; "
                f"the labels would not match the outputs, {_REEXPORT}"
            )
    shape("image", "mask_logits", 4)
    pt = shape("image", "patch_tokens", 3)
    emb = shape("image", "embedding", 2)
    tok = shape("text", "token_embeddings", 3)
    temb = shape("text", "embedding", 2)
    shape("text", "input_ids", 2)
    shape("text", "attention_mask", 2)
    for where, d in (
        ("the image graph's embedding", emb[1]),
        ("the image graph's patch_tokens", pt[2]),
        ("the text graph's embedding", temb[1]),
        ("the text graph's token_embeddings", tok[2]),
    ):
        if d is not None:
            dims[where] = d
    if "heatmap" in cfg.graphs:
        ht = shape("heatmap", "token_embeddings", 3)
        shape("heatmap", "word_weights", 2)
        hp = shape("heatmap", "patch_tokens", 3)
        ho = shape("heatmap", "heatmap", 2)
        for where, d in (("the heatmap graph's token_embeddings", ht[2]), ("the heatmap graph's patch_tokens", hp[2])):
            if d is not None:
                dims[where] = d
        for where, p in (
            ("the heatmap graph's patch_tokens", hp[1]),
            ("the heatmap graph's heatmap", ho[1]),
            ("the image graph's patch_tokens", pt[1]),
        ):
            if p is not None:
                patches[where] = p
    if len(set(dims.values())) > 1:
        _fail("the embedding widths disagree (" + ", ".join(f"{w}: {d}" for w, d in dims.items()) + f"); {_REEXPORT}")
    if len(set(patches.values())) > 1:
        _fail("the patch counts disagree (" + ", ".join(f"{w}: {p}" for w, p in patches.items()) + f"); {_REEXPORT}")


# ---- smoke inference ---------------------------------------------------------------------------
def reference_image(height: int = 288, width: int = 256) -> np.ndarray:
    """The built-in test image: a deterministic chest-radiograph-like phantom (8-bit, H x W)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height / 2, width / 2
    img = 200.0 - 60.0 * ((xx - cx) / width) ** 2 - 40.0 * (yy / height)
    for sx in (-1, 1):  # two darker lung fields
        inside = ((xx - cx - sx * width * 0.2) / (width * 0.16)) ** 2 + ((yy - cy) / (height * 0.33)) ** 2 <= 1.0
        img[inside] -= 110.0
    img += 12.0 * np.sin(yy / 9.0)  # ribs
    return np.clip(img, 0, 255).astype(np.uint8)


def _run(session, name: str, feed: dict) -> dict[str, np.ndarray]:
    try:
        outs = session.run(None, feed)
    except Exception as exc:  # onnxruntime raises its own exception types
        _fail(f"the {name} graph fails on the built-in test image ({one_line(exc, 160)}); the bundle cannot run")
    got = {o.name: np.asarray(v) for o, v in zip(session.get_outputs(), outs)}
    for io in GRAPH_IO[name][1]:
        v = got[io]
        if v.dtype.kind not in "fiu":
            _fail(f"the {name} graph's {io} is not numeric ({v.dtype}); {_REEXPORT}")
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            _fail(
                f"the {name} graph gives non-finite {io} (NaN or infinity) on the built-in test image; "
                f"the bundle is damaged, re-export it"
            )
    return got


def _want(name: str, io: str, arr: np.ndarray, shape: tuple) -> None:
    if arr.ndim != len(shape) or any(w is not None and a != w for a, w in zip(arr.shape, shape)):
        want = "x".join("?" if w is None else str(w) for w in shape)
        _fail(
            f"the {name} graph's {io} has shape {'x'.join(map(str, arr.shape))} on the built-in test image, "
            f"expected {want}; {_REEXPORT}"
        )


def smoke_test(bundle, cfg: BundleConfig) -> float:
    """Run every graph once on the built-in test image and a fixed phrase; -> milliseconds taken."""
    t0 = time.perf_counter()
    pre = cfg.preprocess
    x, _ = prepare_input_with_shape(reference_image(), pre)
    image = _run(bundle.sessions.get("image"), "image", {"pixel_values": x[None].astype(np.float32)})
    n = len(cfg.classes)
    _want("image", "probabilities", image["probabilities"], (1, n))
    _want("image", "logits", image["logits"], (1, n))
    probs = image["probabilities"]
    if probs.size and (probs.min() < 0.0 or probs.max() > 1.0):
        _fail("the image graph's probabilities are outside 0..1 on the built-in test image; " + _REEXPORT)
    if cfg.mask_label:
        _want("image", "mask_logits", image["mask_logits"], (1, 1, pre.size, pre.size))
    d = image["embedding"].shape[-1] if image["embedding"].ndim == 2 else None
    _want("image", "embedding", image["embedding"], (1, cfg.embedding_dim or d))
    p = cfg.patch_grid[0] * cfg.patch_grid[1] if cfg.patch_grid and "heatmap" in cfg.graphs else None
    _want("image", "patch_tokens", image["patch_tokens"], (1, p, d))
    try:  # read now, so a broken domain model refuses the load instead of failing the first analysis
        domain = getattr(bundle, "domain_model", None)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        _fail(f"config.json's domain section is not usable ({one_line(exc)}); {_REEXPORT}")
    if domain is not None and hasattr(domain, "scores"):
        try:
            scores = np.asarray(domain.scores(image["embedding"], image["patch_tokens"]), dtype=np.float64)
        except (ValueError, TypeError, IndexError) as exc:
            _fail(f"the domain model does not fit the image graph's outputs ({one_line(exc)}); {_REEXPORT}")
        if not np.isfinite(scores).all():
            _fail("the domain model gives a non-finite score on the built-in test image; " + _REEXPORT)

    with bundle._tok_lock:
        ids = list(bundle.tokenizer.encode(SMOKE_PHRASE).ids)
    if not ids:
        _fail("the tokenizer turns a test phrase into no tokens; " + _REEXPORT)
    ids_arr = np.array([ids], dtype=np.int64)
    text = _run(bundle.sessions.get("text"), "text", {"input_ids": ids_arr, "attention_mask": np.ones_like(ids_arr)})
    _want("text", "token_embeddings", text["token_embeddings"], (1, len(ids), d))
    _want("text", "embedding", text["embedding"], (1, d))

    if "heatmap" in cfg.graphs:
        weights = np.array([[0.0 if t in cfg.special_ids else 1.0 for t in ids]], dtype=np.float32)
        if weights.sum() == 0:
            weights[:] = 1.0
        heat = _run(
            bundle.sessions.get("heatmap"),
            "heatmap",
            {
                "token_embeddings": text["token_embeddings"].astype(np.float32),
                "word_weights": weights,
                "patch_tokens": image["patch_tokens"].astype(np.float32),
            },
        )["heatmap"]
        _want("heatmap", "heatmap", heat, (1, image["patch_tokens"].shape[1]))
        if heat.min() < -1e-4 or abs(float(heat.sum()) - 1.0) > 1e-2:
            _fail(
                "the heatmap graph's attention does not sum to 1 over the patches on the built-in test image; "
                + _REEXPORT
            )
    return (time.perf_counter() - t0) * 1000.0
