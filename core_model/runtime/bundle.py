"""The model bundle: :class:`Bundle` (analyse images, phrase heatmaps, similar reports) and
:func:`load_bundle`, torch-free. What is checked before a bundle is built is in
:mod:`core_model.runtime.verify` (zip, manifest, hashes) and :mod:`core_model.runtime.checks`
(config vs graphs, smoke inference)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from core_model.imaging.preprocess import from_square, prepare_input_with_shape
from core_model.runtime.domain import (
    DomainModel,
    DomainState,
    header_view_modality,
    normalize_modality,
    normalize_view,
    unknown,
)
from core_model.runtime.retrieval import ReportBank, ReportHit
from core_model.runtime.verify import BundleError, BundleFormatError, discard_unpacked, one_line, open_bundle_folder

ImageLike = str | os.PathLike | np.ndarray


@dataclass
class Analysis:
    probabilities: dict[str, float]
    mask: np.ndarray | None  # float32 (H, W) probabilities on the original image grid
    mask_threshold: float | None
    mask_area_fraction: float | None
    embedding: np.ndarray  # (d,) L2-normalised
    image_shape: tuple[int, int]
    patch_tokens: np.ndarray | None = field(repr=False, default=None)  # (P, d), for heatmaps
    mask_square: np.ndarray | None = field(repr=False, default=None)  # (S, S) model-space probabilities
    domain: DomainState = field(default_factory=unknown)  # see core_model.runtime.domain

    def above_threshold(self, thresholds: dict[str, float]) -> dict[str, bool]:
        return {k: v >= thresholds.get(k, 0.5) for k, v in self.probabilities.items()}


class SessionSet:
    """One onnxruntime session per graph, created on first use (thread-safe)."""

    def __init__(self, folder: Path, graphs: Mapping[str, str | None], threads: int = 0):
        self.folder = folder
        self.graphs = graphs
        self.threads = threads
        self._sessions: dict = {}
        self._lock = threading.Lock()

    def get(self, name: str):
        s = self._sessions.get(name)
        if s is not None:
            return s
        with self._lock:
            if name not in self._sessions:
                import onnxruntime as ort

                file = self.graphs.get(name)
                if not file:
                    raise BundleError(f"this bundle has no {name} graph")
                opts = session_options(ort, self.threads)
                try:
                    self._sessions[name] = ort.InferenceSession(
                        str(self.folder / file), sess_options=opts, providers=["CPUExecutionProvider"]
                    )
                except Exception as exc:  # onnxruntime raises its own exception types
                    why = one_line(exc, 400).replace(str(self.folder / file), file)
                    raise BundleFormatError(
                        f"the {name} graph ({file}) cannot be loaded: it is damaged or not an ONNX model ({why[:200]})"
                    ) from exc
            return self._sessions[name]


def session_options(ort, threads: int = 0):
    """The options of every bundle session: all graph optimisations, one graph node at a time
    (sequential; the graphs are chains), memory pattern planning, ``threads`` intra-op threads
    (0: onnxruntime's default, one per physical core), and threads that sleep between runs
    instead of spinning: a spinning pool holds the cores that the analysis' own numpy work
    (decode, domain guard, mask) and the app need right after each run."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_mem_pattern = True
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


@dataclass(frozen=True)
class GroundingVerdict:
    """Whether a finding's heatmap is vouched for by the model card, and why (for the UI)."""

    finding: str
    validated: bool
    reason: str
    prompt: str | None = None  # the phrase whose heatmap was validated (the card's), when known

    def message(self) -> str:
        if self.validated:
            return f"heatmap validated for {self.finding}: {self.reason}"
        return f"The model has no reliable heatmap for {self.finding or 'this finding'}: {self.reason}."


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class Bundle:
    """See docs/DESIGN.md, "Runtime API". Methods are safe to call from worker threads."""

    def __init__(self, folder: Path, manifest: dict, *, threads: int = 0):
        """``folder`` and ``manifest`` as :func:`core_model.runtime.verify.verify_folder` returned
        them. Reads only manifest-listed files (JSON with size and depth limits), checks config.json
        against every graph's inputs and outputs and runs the smoke inference
        (:mod:`core_model.runtime.checks`); BundleError says what is wrong."""
        from core_model.fileio import sha256_file
        from core_model.runtime import checks
        from core_model.runtime.format import MAX_MARKDOWN_BYTES, MAX_TOKENIZER_BYTES
        from core_model.runtime.verify import read_json, read_limited

        self.folder = folder
        self.manifest = manifest
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict):
            raise BundleFormatError(f"{folder}: manifest.json lists no files")
        self._content_hash = sha256_file(folder / "manifest.json")
        self.config = read_json(folder / "config.json")
        self.card = read_json(folder / "model_card.json")
        if not isinstance(self.card, dict):
            raise BundleFormatError(f"{folder}: model_card.json is not an object")
        cfg = checks.read_config(self.config, files)
        md = folder / "MODEL_CARD.md"
        self.card_markdown = (
            read_limited(md, "MODEL_CARD.md", MAX_MARKDOWN_BYTES).decode("utf-8", "replace")
            if "MODEL_CARD.md" in files
            else json.dumps(self.card, indent=2)
        )
        self.id = str(manifest.get("id", folder.name))
        self.version = str(manifest.get("version", ""))
        self.classes: list[str] = cfg.classes
        self.thresholds: dict[str, float] = cfg.thresholds
        self.mask_label: str | None = cfg.mask_label
        self.mask_threshold = cfg.mask_threshold
        self.preprocess = cfg.preprocess
        self.patch_grid = cfg.patch_grid
        self.sessions = SessionSet(folder, cfg.graphs, threads)
        self._tok_lock = threading.Lock()
        from tokenizers import Tokenizer

        tok_path = folder / "tokenizer" / "tokenizer.json"
        if tok_path.stat().st_size > MAX_TOKENIZER_BYTES:
            raise BundleFormatError(
                f"{folder}: tokenizer/tokenizer.json is larger than {MAX_TOKENIZER_BYTES >> 20} MiB"
            )
        try:
            self.tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as exc:  # tokenizers raises plain Exceptions
            raise BundleFormatError(f"{folder}: the tokenizer cannot be loaded ({one_line(exc)})") from exc
        self.max_length = cfg.max_length
        self.special_ids = set(cfg.special_ids)
        self.pad_id = cfg.pad_id
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self.bank = ReportBank.load(folder / "reports", bank_sha256=manifest["files"]["reports/embeddings.npy"])
        checks.check_graph_io(self.sessions, cfg, self.bank.embeddings.shape[1] if len(self.bank) else None)
        self.smoke_ms = checks.smoke_test(self, cfg)  # the load-time inference on the built-in test image

    @property
    def research_use_only(self) -> bool:
        return True

    @property
    def content_hash(self) -> str:
        """SHA-256 of manifest.json, which lists the SHA-256 of every file: two bundles with the same
        content hash hold the same graphs, config and report bank. Cached results are keyed by it."""
        return self._content_hash

    @property
    def synthetic(self) -> bool:
        """True when the model was trained on synthetic data (the demo's phantoms): its output means
        nothing for real images."""
        d = self.card.get("domain") if isinstance(self.card, dict) else None
        if isinstance(d, dict) and "synthetic" in d:
            return bool(d["synthetic"])
        return bool(self.config.get("synthetic", False))

    def grounding(self, finding: str | None) -> GroundingVerdict:
        """Whether the card vouches for ``finding``'s heatmap: its pointing game on validation beat
        the positional prior (see :mod:`core_model.export.grounding`). Bundles exported without
        a grounding evaluation vouch for none."""
        g = self.card.get("grounding") if isinstance(self.card, dict) else None
        name = (finding or "").strip()
        if not self.has_heatmaps():
            return GroundingVerdict(name, False, "this model has no heatmaps")
        if not isinstance(g, dict) or not g.get("evaluated"):
            return GroundingVerdict(
                name, False, "the model card has no grounding evaluation, so no heatmap is vouched for"
            )
        e = (g.get("per_finding") or {}).get(name) or (g.get("per_finding") or {}).get(name.lower())
        if not isinstance(e, dict):
            return GroundingVerdict(name, False, f"grounding of {name or 'this finding'} was not evaluated")
        pg, prior = e.get("pointing_game"), e.get("positional_prior")
        figures = ""
        if isinstance(pg, (int, float)) and isinstance(prior, (int, float)):
            figures = f"pointing game {100 * pg:.0f} % vs positional prior {100 * prior:.0f} % on validation"
        raw_prompt = e.get("prompt")
        prompt = raw_prompt if isinstance(raw_prompt, str) and raw_prompt.strip() else None
        if e.get("validated"):
            return GroundingVerdict(name, True, figures, prompt)
        return GroundingVerdict(
            name, False, f"its heatmap did not beat the positional prior ({figures})" if figures else "not validated"
        )

    def validated_heatmap_findings(self) -> list[str]:
        g = self.card.get("grounding") if isinstance(self.card, dict) else None
        per = g.get("per_finding") if isinstance(g, dict) else None
        return sorted(f for f in (per if isinstance(per, dict) else {}) if self.grounding(f).validated)

    # ---- image ------------------------------------------------------------------------------
    def _image_session(self):
        session = self.sessions.get("image")
        shape = session.get_inputs()[0].shape  # [batch, 3, S, S]
        size = self.preprocess.size
        if len(shape) != 4 or any(
            isinstance(d, int) and d != want for d, want in zip(shape[1:], (self.preprocess.channels, size, size))
        ):
            raise BundleFormatError(
                f"the bundle's image graph takes input {shape} but its preprocessing makes "
                f"{self.preprocess.channels}x{size}x{size} images; the bundle is inconsistent, re-export it"
            )
        return session

    def _run_image(self, batch: np.ndarray):
        return self._image_session().run(None, {"pixel_values": batch.astype(np.float32, copy=False)})

    @property
    def domain_model(self) -> DomainModel | None:
        """The training domain recorded at export (None for bundles exported without one: their
        analyses carry the ``unknown`` domain state). Read once, on first use."""
        if not hasattr(self, "_domain_model"):
            with self._tok_lock:
                if not hasattr(self, "_domain_model"):
                    self._domain_model = DomainModel.load(
                        self.folder,
                        self.config.get("domain"),
                        set(self.manifest.get("files") or {}),
                        dim=int(self.config["embedding_dim"]) if self.config.get("embedding_dim") else None,
                    )
        return self._domain_model

    def analyze(self, image: ImageLike, *, view: str | None = None, modality: str | None = None) -> Analysis:
        """``view`` / ``modality``: what the caller knows of the image (e.g. from its library);
        otherwise a DICOM's header is read (ViewPosition, Modality); for other inputs they are unknown."""
        return self.analyze_batch([image], view=view, modality=modality)[0]

    def analyze_batch(self, images: list[ImageLike], *, view=None, modality=None) -> list[Analysis]:
        """``view`` / ``modality``: None, one value for all images, or one value (or None) per image."""
        views, modalities = _per_image(view, len(images), "view"), _per_image(modality, len(images), "modality")
        prepared = [prepare_input_with_shape(im, self.preprocess) for im in images]
        x = np.stack([p[0] for p in prepared])
        probs, _logits, mask_logits, patches, emb = self._run_image(x)
        domains = self._domain_states(images, emb, patches, views, modalities)
        out = []
        for i, (_, shape) in enumerate(prepared):
            mask = mask_sq = area = None
            if self.mask_label:
                mask_sq = _sigmoid(mask_logits[i, 0]).astype(np.float32)
                mask = from_square(mask_sq, shape[0], shape[1], self.preprocess).astype(np.float32, copy=False)
                area = np.count_nonzero(mask >= self.mask_threshold) / mask.size
            out.append(
                Analysis(
                    probabilities={c: float(probs[i, k]) for k, c in enumerate(self.classes)},
                    mask=mask,
                    mask_threshold=self.mask_threshold if self.mask_label else None,
                    mask_area_fraction=area,
                    embedding=emb[i].astype(np.float32),
                    image_shape=shape,
                    patch_tokens=patches[i],
                    mask_square=mask_sq,
                    domain=domains[i],
                )
            )
        return out

    def _domain_states(self, images, emb, patches, views, modalities) -> list[DomainState]:
        dm = self.domain_model
        if dm is None:
            return [unknown() for _ in images]
        try:
            scores = dm.scores(emb, patches)
        except ValueError as exc:
            raise BundleFormatError(
                f"the bundle's domain model does not fit its image graph ({exc}); re-export the bundle"
            ) from exc
        states = []
        for i, im in enumerate(images):
            view, modality = normalize_view(views[i]), normalize_modality(modalities[i])
            if view is None or modality is None:
                h_view, h_modality = header_view_modality(im)
                view, modality = view or h_view, modality or h_modality
            states.append(dm.assess(float(scores[i]), view=view, modality=modality))
        return states

    # ---- text -------------------------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[str]]]:
        """-> token embeddings (B, T, d), word weights (B, T), pooled embeddings (B, d), tokens."""
        with self._tok_lock:
            encs = [self.tokenizer.encode(t if t.strip() else ".") for t in texts]
        t_max = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), t_max), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), t_max), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        tokens, pooled = self.sessions.get("text").run(None, {"input_ids": ids, "attention_mask": mask})
        weights = np.array(
            [
                [1.0 if (m and tid not in self.special_ids) else 0.0 for tid, m in zip(row, mrow)]
                for row, mrow in zip(ids, mask)
            ],
            dtype=np.float32,
        )
        for i in range(len(encs)):  # only special tokens: use them all
            if weights[i].sum() == 0:
                weights[i] = mask[i]
        return tokens, weights, pooled, [e.tokens for e in encs]

    # ---- heatmaps ---------------------------------------------------------------------------
    def has_heatmaps(self) -> bool:
        return bool((self.config.get("graphs") or {}).get("heatmap"))

    def patch_heatmap(self, analysis: Analysis, phrase: str) -> np.ndarray:
        """Attention of the phrase's words over the image patches: (rows, cols), sums to 1."""
        if not self.has_heatmaps():
            raise BundleError("this bundle has no heatmap graph (the paper-preset Adaptor has no patch tokens)")
        tokens, weights, _, _ = self.encode_text([phrase])
        patches = analysis.patch_tokens
        assert patches is not None  # predict() keeps them for every analysis
        heat = self.sessions.get("heatmap").run(
            None,
            {
                "token_embeddings": tokens.astype(np.float32),
                "word_weights": weights,
                "patch_tokens": patches[None].astype(np.float32),
            },
        )[0][0]
        rows, cols = self.patch_grid or (int(round(len(heat) ** 0.5)),) * 2
        return heat.reshape(rows, cols).astype(np.float32)

    def heatmap_square(self, analysis: Analysis, phrase: str) -> np.ndarray:
        """The patch heatmap upsampled to the model's square input grid (S, S)."""
        grid = self.patch_heatmap(analysis, phrase)
        size = self.preprocess.size
        return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BILINEAR))

    def heatmap(self, image_or_analysis: ImageLike | Analysis, phrase: str) -> np.ndarray:
        """Where the model looks for ``phrase``: float32 (H, W) on the original grid, stretched
        min-max to [0, 1] over the image (attention is relative: the raw map sums to 1 over the
        patches, see :meth:`patch_heatmap`). Padding outside the image is 0."""
        a = image_or_analysis if isinstance(image_or_analysis, Analysis) else self.analyze(image_or_analysis)
        return self.heatmap_from_patches(a, self.patch_heatmap(a, phrase))

    def heatmap_from_patches(self, a: Analysis, grid: np.ndarray) -> np.ndarray:
        """:meth:`heatmap` from a :meth:`patch_heatmap` result already computed (the text and
        heatmap graphs run once when both the raw map and the image-grid map are wanted)."""
        lo, hi = float(grid.min()), float(grid.max())
        unit = (grid - lo) / (hi - lo) if hi > lo else np.zeros_like(grid)
        size = self.preprocess.size
        sq = np.asarray(
            Image.fromarray(unit.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR)
        )
        h = from_square(sq, a.image_shape[0], a.image_shape[1], self.preprocess).astype(np.float32, copy=False)
        return np.clip(h, 0.0, 1.0, out=h)

    # ---- retrieval --------------------------------------------------------------------------
    def similar_reports(self, query: Analysis | ImageLike, k: int = 5) -> list[ReportHit]:
        if isinstance(query, Analysis):
            q = query.embedding
        elif isinstance(query, np.ndarray) or _looks_like_path(query):
            q = self.analyze(query).embedding
        else:
            q = self.encode_text([str(query)])[2][0]
        return self.bank.search(q, k)


def _per_image(value, n: int, what: str) -> list:
    if value is None or isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{len(values)} {what} hints for {n} images")
    return values


def _looks_like_path(q) -> bool:
    if isinstance(q, os.PathLike):
        return True
    s = str(q)
    return "\n" not in s and len(s) < 4096 and os.path.exists(s)


def load_bundle(path: str | os.PathLike, *, threads: int = 0, cache_root: Path | None = None) -> Bundle:
    """Open a bundle folder or .zip, verifying it completely (see :mod:`core_model.runtime.verify`):
    a closed set of hashed files, config consistent with the graphs, and a passing smoke inference.
    A .zip unpacked for a bundle that is refused is removed from the cache again."""
    source = Path(path).expanduser()
    folder, manifest = open_bundle_folder(source, cache_root)
    try:
        return Bundle(folder, manifest, threads=threads)
    except BaseException as exc:
        if folder != source:  # unpacked from a .zip into the cache
            discard_unpacked(folder)
        if isinstance(exc, BundleError) and str(folder) not in str(exc) and source.name not in str(exc):
            raise type(exc)(f"{source}: {exc}") from exc
        raise
