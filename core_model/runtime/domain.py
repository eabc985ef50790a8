"""Whether the model can vouch for an image: the domain guard (torch-free).

CONTRACT (shared by the runtime, the exporter and the app; keep these names):

- ``DomainState``: frozen dataclass returned with every analysis as ``Analysis.domain``.
  ``status`` is one of ``IN_DOMAIN``, ``OUT_OF_DOMAIN``, ``UNKNOWN`` (the bundle records no
  training domain, so nothing can be said). ``score`` / ``threshold``: the embedding distance
  score and the operating threshold it is compared with (higher score = further from the
  training images), None when not computed. ``reasons``: one human-readable sentence per reason
  (empty when in domain); ``codes``: the matching machine codes (see ``REASON_*``).
- ``DomainState.ok`` is True only for ``IN_DOMAIN``; the app shows any other state as a result the
  model cannot vouch for.

The implementation (domain model fitted at export, scoring at analysis) lives in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

IN_DOMAIN = "in_domain"
OUT_OF_DOMAIN = "out_of_domain"
UNKNOWN = "unknown"

REASON_EMBEDDING = "embedding"  # pooled embedding far from the training images
REASON_VIEW = "view"  # view not among the training views (lateral, or unknown for a frontal-only model)
REASON_MODALITY = "modality"  # DICOM modality not CR/DX (or not among the training modalities)
REASON_NO_DOMAIN = "no_domain_model"  # the bundle records no training domain


@dataclass(frozen=True)
class DomainState:
    status: str
    score: float | None = None
    threshold: float | None = None
    reasons: tuple[str, ...] = field(default_factory=tuple)
    codes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.status == IN_DOMAIN

    def summary(self) -> str:
        """One line for panels, CSVs and legends."""
        if self.status == IN_DOMAIN:
            return "in the model's training domain"
        if self.status == UNKNOWN:
            return "domain unknown: " + ("; ".join(self.reasons) or "the bundle records no training domain")
        return "out of the model's training domain: " + "; ".join(self.reasons)

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "score": self.score,
            "threshold": self.threshold,
            "reasons": list(self.reasons),
            "codes": list(self.codes),
        }

    @classmethod
    def from_dict(cls, d: dict | None) -> DomainState:
        if not isinstance(d, dict) or d.get("status") not in (IN_DOMAIN, OUT_OF_DOMAIN, UNKNOWN):
            return unknown("no domain state was recorded for this result")
        score = d.get("score")
        thr = d.get("threshold")
        return cls(
            status=d["status"],
            score=None if score is None else float(score),
            threshold=None if thr is None else float(thr),
            reasons=tuple(str(r) for r in d.get("reasons") or ()),
            codes=tuple(str(c) for c in d.get("codes") or ()),
        )


def unknown(reason: str = "the bundle records no training domain") -> DomainState:
    return DomainState(status=UNKNOWN, reasons=(reason,), codes=(REASON_NO_DOMAIN,))


# ---- views and modalities ----------------------------------------------------------------------
FRONTAL_VIEWS = ("AP", "PA")
LATERAL = "LATERAL"
RADIOGRAPH_MODALITIES = ("CR", "DX")  # computed / digital radiography
_LATERAL_CODES = {
    "LL",
    "RL",
    "LLD",
    "RLD",
    "LAT",
    "LATERAL",
    "LEFT LATERAL",
    "RIGHT LATERAL",
    "LATERO-MEDIAL",
    "MEDIO-LATERAL",
    "XTABLE LATERAL",
    "X-TABLE LATERAL",
    "CROSS-TABLE LATERAL",
}
_VIEW_WORDS = {
    "POSTERO-ANTERIOR": "PA",
    "POSTEROANTERIOR": "PA",
    "POSTERIOR-ANTERIOR": "PA",
    "ANTERO-POSTERIOR": "AP",
    "ANTEROPOSTERIOR": "AP",
    "ANTERIOR-POSTERIOR": "AP",
}


def normalize_view(value) -> str | None:
    """A ViewPosition-like value -> "PA", "AP", "LATERAL", another upper-case code, or None (unknown)."""
    if value is None:
        return None
    v = " ".join(str(value).strip().upper().replace("_", " ").split())
    if not v:
        return None
    if v in _VIEW_WORDS:
        return _VIEW_WORDS[v]
    if v in _LATERAL_CODES or "LATERAL" in v.split() or v.endswith(" LATERAL"):
        return LATERAL
    head = v.split()[0]
    if head in FRONTAL_VIEWS:  # "AP SUPINE", "PA ERECT", ...
        return head
    return v


def normalize_modality(value) -> str | None:
    if value is None:
        return None
    v = str(value).strip().upper()
    return v or None


def header_view_modality(source) -> tuple[str | None, str | None]:
    """(view, modality) from a DICOM file's header (ViewPosition, else the View Code Sequence;
    Modality). (None, None) for arrays, PNG/JPEG files and anything that is not a readable DICOM."""
    import os
    from pathlib import Path

    if not isinstance(source, (str, os.PathLike)):
        return None, None
    from core_model.imaging.dicom import read_dataset
    from core_model.imaging.errors import ImageReadError
    from core_model.imaging.sniff import image_kind

    path = Path(source)
    try:  # what the file is comes from its bytes (the one sniffer), never from its name
        if not path.is_file() or image_kind(path) != "dicom":
            return None, None
        ds = read_dataset(path, header_only=True)
    except (ImageReadError, OSError):
        return None, None
    view = normalize_view(ds.get("ViewPosition", None))
    if view is None:
        try:
            seq = ds.get("ViewCodeSequence", None)
            if seq:
                view = normalize_view(seq[0].get("CodeMeaning", None))
        except (AttributeError, IndexError, TypeError, KeyError):
            view = None
    return view, normalize_modality(ds.get("Modality", None))


# ---- the domain model: fitted at export, scored at analysis -------------------------------------
# Distances of the image graph's own outputs to the training images' (no second model):
#   embedding    Mahalanobis distance of the pooled embedding (B, d)
#   patch_mean   Mahalanobis distance of the mean patch token (B, d)
#   patch_quadrants  Mahalanobis distance of the four quadrants' mean patch tokens, concatenated
#                (B, 4d): the coarse layout of the image
#   patch_local  mean over the patch grid of each patch token's Mahalanobis distance to the
#                training mean at its position (shared covariance of the residuals)
# Each covariance is shrunk towards a scaled identity (Ledoit-Wolf). Each distance is divided by
# its ``val_quantile`` (99th percentile) on the validation split, so that the heavier-tailed
# components do not dominate; the score is the largest of these ratios, and the operating threshold
# is the score's own ``val_quantile`` on the validation split. (On the demo bundle the pooled
# embedding alone barely separates real radiographs from phantoms; the patch-token statistics do.)
DOMAIN_MODEL_VERSION = 1
COMPONENTS = ("embedding", "patch_mean", "patch_quadrants", "patch_local")
DOMAIN_FOLDER = "domain"


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """-> (mean, precision, shrinkage) of the rows of ``x`` (n, p), Ledoit-Wolf shrunk covariance."""
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    if n < 2:
        raise ValueError("a domain model needs at least two training images")
    mu = x.mean(0)
    xc = x - mu
    s = xc.T @ xc / n
    m = float(np.trace(s)) / p
    d2 = float(np.sum((s - m * np.eye(p)) ** 2))
    sq = np.sum(xc * xc, axis=1)
    b2 = float((np.sum(sq**2) - 2.0 * np.einsum("ij,jk,ik->", xc, s, xc) + n * np.sum(s * s)) / n**2)
    shrink = 1.0 if d2 <= 0 else min(max(b2, 0.0), d2) / d2
    cov = shrink * m * np.eye(p) + (1.0 - shrink) * s
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, max(float(w.max()), 1e-12) * 1e-6)
    return mu, (v / w) @ v.T, shrink


def whitener(precision: np.ndarray) -> np.ndarray:
    """A matrix ``W`` with ``W @ W.T == precision`` (its Cholesky factor; eigenvectors scaled by
    the square roots of the eigenvalues when rounding made it not positive definite), so that a
    Mahalanobis distance is the norm of one product ``xc @ W``. float32."""
    p = np.asarray(precision, dtype=np.float64)
    p = (p + p.T) / 2.0
    try:
        return np.linalg.cholesky(p).astype(np.float32)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(p)
        return (v * np.sqrt(np.maximum(w, 0.0))).astype(np.float32)


def _maha(xc: np.ndarray, white: np.ndarray) -> np.ndarray:
    """Mahalanobis distances of the rows of ``xc`` (..., d) given the whitener of the precision.

    For an analysis (a few images) the product runs in ``np.einsum`` (numpy's own single-threaded
    loop, about 20 GFLOP/s), not ``@``: OpenBLAS threads started for such small products fight
    onnxruntime's threads for the cores (34 ms instead of 0.2 ms right after an image graph run
    on 2 cores). Large batches (fitting at export) go to BLAS."""
    xc = np.asarray(xc, dtype=np.float32)
    d = white.shape[0]
    small = xc.size * d <= _EINSUM_MAX_MACS
    z = np.einsum("...i,ij->...j", xc, white) if small else xc @ white
    return np.sqrt(np.einsum("...j,...j->...", z, z))


_EINSUM_MAX_MACS = 64_000_000  # about 3 ms in np.einsum


def quadrant_means(patch_tokens: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(B, P, d) patch tokens on a rows x cols grid -> (B, 4d): the mean token of each quadrant
    (top-left, top-right, bottom-left, bottom-right)."""
    b, n, d = patch_tokens.shape
    rows, cols = grid
    g = patch_tokens.reshape(b, rows, cols, d)
    hr, hc = rows // 2, cols // 2
    parts = (g[:, :hr, :hc], g[:, :hr, hc:], g[:, hr:, :hc], g[:, hr:, hc:])
    return np.concatenate([q.mean(axis=(1, 2)) for q in parts], axis=1)


def _usable_grid(grid, n_patches: int) -> tuple[int, int] | None:
    if not grid or len(grid) != 2:
        return None
    rows, cols = int(grid[0]), int(grid[1])
    return (rows, cols) if rows >= 2 and cols >= 2 and rows * cols == n_patches else None


@dataclass
class DomainModel:
    """The training images' statistics in the image graph's output space, and the rules of
    :meth:`assess`. Built by :func:`fit_domain_model` at export, read by :meth:`load`."""

    arrays: dict  # name -> float32 array: <component>_mean, <component>_precision
    scales: dict  # component -> validation 99th percentile of its distance
    threshold: float
    views: tuple[str, ...] = ()
    modalities: tuple[str, ...] = RADIOGRAPH_MODALITIES
    synthetic: bool = False
    grid: tuple[int, int] | None = None  # the patch grid (rows, cols), for patch_quadrants
    _white: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # ---- scoring ----------------------------------------------------------------------------
    def _whitener(self, comp: str) -> np.ndarray:
        """The whitener of a component's precision, computed once (the bundle stores precisions)."""
        w = self._white.get(comp)
        if w is None:
            w = self._white[comp] = whitener(self.arrays[f"{comp}_precision"])
        return w

    def distances(self, embedding: np.ndarray, patch_tokens: np.ndarray | None) -> dict[str, np.ndarray]:
        """Raw distances (B,) of each component the model has (all of ``scales``)."""
        a = self.arrays
        w = self._whitener
        out = {}
        e = np.asarray(embedding, dtype=np.float32)
        p = None if patch_tokens is None else np.asarray(patch_tokens, dtype=np.float32)
        for comp in self.scales:
            if comp == "embedding":
                out[comp] = _maha(e - a["embedding_mean"], w("embedding"))
                continue
            if p is None or p.ndim != 3 or p.shape[2] != e.shape[-1]:
                raise ValueError(f"the {comp} component needs the image graph's patch tokens (B, P, d)")
            if comp == "patch_mean":
                out[comp] = _maha(p.mean(axis=1) - a["patch_mean_mean"], w("patch_mean"))
            elif comp == "patch_quadrants":
                if self.grid is None or self.grid[0] * self.grid[1] != p.shape[1]:
                    raise ValueError(f"{p.shape[1]} patch tokens do not fill the domain model's grid {self.grid}")
                out[comp] = _maha(quadrant_means(p, self.grid) - a["patch_quadrants_mean"], w("patch_quadrants"))
            elif comp == "patch_local":
                if p.shape[1:] != a["patch_local_mean"].shape:
                    raise ValueError(
                        f"{p.shape[1]} patch tokens, but the domain model has "
                        f"{a['patch_local_mean'].shape[0]} positions"
                    )
                out[comp] = _maha(p - a["patch_local_mean"], w("patch_local")).mean(axis=1)
        return out

    def scores(self, embedding: np.ndarray, patch_tokens: np.ndarray | None) -> np.ndarray:
        """The domain score of each image (B,): higher = further from the training images."""
        d = self.distances(embedding, patch_tokens)
        return np.max(np.stack([d[k] / self.scales[k] for k in d]), axis=0).astype(np.float64)

    @property
    def frontal_only(self) -> bool:
        return bool(self.views) and set(self.views) <= set(FRONTAL_VIEWS)

    def assess(self, score: float | None, *, view: str | None = None, modality: str | None = None) -> DomainState:
        """The domain state of one image from its score and (normalised) view and modality."""
        reasons: list[str] = []
        codes: list[str] = []
        if score is not None and not (score <= self.threshold):  # NaN counts as out of domain
            kind = "synthetic phantoms" if self.synthetic else "training images"
            reasons.append(
                f"the image is unlike the model's {kind} (domain score {score:.2f} above the "
                f"threshold {self.threshold:.2f}): it may not be a chest radiograph of the kind "
                f"the model was trained on"
            )
            codes.append(REASON_EMBEDDING)
        if self.views:
            trained = "/".join(self.views)
            if view is None and self.frontal_only:
                reasons.append(
                    f"the view is unknown (not recorded with the image); the model was trained on {trained} views only"
                )
                codes.append(REASON_VIEW)
            elif view is not None and view not in self.views:
                shown = "a lateral view" if view == LATERAL else f"view {view[:16]}"
                reasons.append(f"{shown}; the model was trained on {trained} views only")
                codes.append(REASON_VIEW)
        if modality is not None and self.modalities and modality not in self.modalities:
            reasons.append(
                f"modality {modality[:16]}, not a radiograph ({'/'.join(self.modalities)}) like the training images"
            )
            codes.append(REASON_MODALITY)
        return DomainState(
            status=OUT_OF_DOMAIN if codes else IN_DOMAIN,
            score=None if score is None else float(score),
            threshold=float(self.threshold),
            reasons=tuple(reasons),
            codes=tuple(codes),
        )

    # ---- storage ----------------------------------------------------------------------------
    def config_section(self, files: dict[str, str]) -> dict:
        return {
            "version": DOMAIN_MODEL_VERSION,
            "files": dict(files),
            "scales": dict(self.scales),
            "threshold": float(self.threshold),
            "views": list(self.views),
            "modalities": list(self.modalities),
            "synthetic": bool(self.synthetic),
            "grid": list(self.grid) if self.grid else None,
        }

    def save(self, folder) -> dict:
        """Write the arrays as plain .npy files under ``folder/domain``; -> the config section."""
        from pathlib import Path

        from core_model.fileio import atomic_save_npy

        root = Path(folder) / DOMAIN_FOLDER
        root.mkdir(parents=True, exist_ok=True)
        files = {}
        for name, arr in sorted(self.arrays.items()):
            rel = f"{DOMAIN_FOLDER}/{name}.npy"
            atomic_save_npy(Path(folder) / rel, np.ascontiguousarray(arr, dtype=np.float32))
            files[name] = rel
        return self.config_section(files)

    @classmethod
    def load(cls, folder, section, listed=None, *, dim: int | None = None) -> DomainModel | None:
        """Read the ``domain`` section of a bundle's config.json (None: the bundle has none, e.g.
        one exported before domain models existed). ``listed``: the manifest's file names; every
        array file must be one of them. Raises ``BundleFormatError`` on a malformed section."""
        from pathlib import Path

        from core_model.runtime.verify import BundleFormatError, load_npy

        if section is None:
            return None

        def bad(why: str):
            return BundleFormatError(f"the bundle's domain model is malformed ({why}); re-export the bundle")

        if not isinstance(section, dict):
            raise bad("config.json 'domain' is not an object")
        if section.get("version") != DOMAIN_MODEL_VERSION:
            raise bad(f"version {str(section.get('version'))[:12]!r}, this app reads version {DOMAIN_MODEL_VERSION}")
        files, scales = section.get("files"), section.get("scales")
        if not isinstance(files, dict) or not isinstance(scales, dict):
            raise bad("no files or scales")
        arrays = {}
        for name, rel in files.items():
            if not isinstance(rel, str) or (listed is not None and rel not in listed):
                raise bad(f"{str(rel)[:80]!r} is not a file listed in manifest.json")
            arr = load_npy(Path(folder) / rel)
            if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)):
                raise bad(f"{rel} is not a finite floating-point array")
            arrays[str(name)] = arr.astype(np.float32)
        try:
            threshold = float(section["threshold"])
            scales = {str(k): float(v) for k, v in scales.items()}
        except (KeyError, TypeError, ValueError):
            raise bad("no numeric threshold or scales") from None
        if not np.isfinite(threshold) or not scales or any(not (np.isfinite(v) and v > 0) for v in scales.values()):
            raise bad("threshold or scales not positive finite numbers")
        for comp in scales:
            if comp not in COMPONENTS:
                raise bad(f"unknown component {comp[:40]!r}")
            mean, prec = arrays.get(f"{comp}_mean"), arrays.get(f"{comp}_precision")
            if mean is None or prec is None:
                raise bad(f"component {comp} lacks its mean or precision array")
            d = mean.shape[-1]
            want = None if dim is None else (4 * dim if comp == "patch_quadrants" else dim)
            if (
                prec.shape != (d, d)
                or (want is not None and d != want)
                or mean.ndim != (2 if comp == "patch_local" else 1)
            ):
                raise bad(f"component {comp} has arrays of shapes {mean.shape} and {prec.shape}")
        if "embedding" not in scales:
            raise bad("no embedding component")
        grid: Any = section.get("grid")
        if "patch_quadrants" in scales:
            ok = isinstance(grid, list) and len(grid) == 2 and all(isinstance(g, int) and g >= 2 for g in grid)
            if not ok or ("patch_local" in scales and grid[0] * grid[1] != arrays["patch_local_mean"].shape[0]):
                raise bad(f"patch grid {str(grid)[:40]} does not fit the patch_quadrants component")
            grid = (int(grid[0]), int(grid[1]))
        else:
            grid = None
        views = tuple(v for v in (normalize_view(x) for x in section.get("views") or ()) if v)
        mods = tuple(m for m in (normalize_modality(x) for x in section.get("modalities") or ()) if m)
        return cls(
            arrays=arrays,
            scales=scales,
            threshold=threshold,
            views=views,
            modalities=mods or RADIOGRAPH_MODALITIES,
            synthetic=bool(section.get("synthetic", False)),
            grid=grid,
        )


def fit_domain_model(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    views=(),
    modalities=RADIOGRAPH_MODALITIES,
    synthetic: bool = False,
    grid=None,
    val_quantile: float = 0.99,
    max_patch_rows: int = 200_000,
    seed: int = 0,
) -> tuple[DomainModel, dict]:
    """Fit on the training split's (embeddings (N, d), patch tokens (N, P, d)); scales and the
    threshold on the validation split only. ``grid``: the patch grid (rows, cols), for the
    quadrant component. -> (model, fit report for the model card)."""
    emb, pat = (np.asarray(a, dtype=np.float64) for a in train)
    if len(emb) < 2 or len(val[0]) < 1:
        raise ValueError("a domain model needs at least two training images and one validation image")
    arrays, shrink = {}, {}
    mu, prec, shrink["embedding"] = ledoit_wolf(emb)
    arrays["embedding_mean"], arrays["embedding_precision"] = mu, prec
    if pat is not None and pat.ndim == 3 and pat.shape[1] > 0:
        mu, prec, shrink["patch_mean"] = ledoit_wolf(pat.mean(axis=1))
        arrays["patch_mean_mean"], arrays["patch_mean_precision"] = mu, prec
        grid = _usable_grid(grid, pat.shape[1])
        if grid:
            mu, prec, shrink["patch_quadrants"] = ledoit_wolf(quadrant_means(pat, grid))
            arrays["patch_quadrants_mean"], arrays["patch_quadrants_precision"] = mu, prec
        pos_mean = pat.mean(axis=0)  # (P, d)
        resid = (pat - pos_mean).reshape(-1, pat.shape[2])
        if len(resid) > max_patch_rows:
            resid = resid[np.random.default_rng(seed).choice(len(resid), max_patch_rows, replace=False)]
        _, prec, shrink["patch_local"] = ledoit_wolf(resid)
        arrays["patch_local_mean"], arrays["patch_local_precision"] = pos_mean, prec
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    comps = [c for c in COMPONENTS if f"{c}_mean" in arrays]
    model = DomainModel(
        arrays=arrays,
        scales={c: 1.0 for c in comps},
        threshold=1.0,
        views=tuple(sorted({v for v in (normalize_view(x) for x in views) if v})),
        modalities=tuple(modalities),
        synthetic=bool(synthetic),
        grid=grid if "patch_quadrants_mean" in arrays else None,
    )
    raw = model.distances(*val)
    model.scales = {c: float(max(np.quantile(raw[c], val_quantile), 1e-6)) for c in comps}
    val_scores = model.scores(*val)
    model.threshold = float(np.quantile(val_scores, val_quantile))
    report = {
        "kind": "mahalanobis",
        "covariance": "Ledoit-Wolf shrinkage towards a scaled identity",
        "components": {
            c: {
                "shrinkage": float(shrink[c]),
                "validation_quantile": model.scales[c],
                "dim": int(arrays[f"{c}_mean"].shape[-1]),
            }
            for c in comps
        },
        "score": "largest component distance divided by its validation 99th percentile",
        "train_images": int(len(emb)),
        "val_images": int(len(val[0])),
        "val_quantile": float(val_quantile),
        "threshold": model.threshold,
        "val_false_ood_rate": float(np.mean(val_scores > model.threshold)),
    }
    return model, report
