"""Running a model bundle on library instances, and the analysis cache policy (Qt-free).

Cache policy
------------
An instance's analysis is reused when the library holds one made by a bundle with the *same
content hash* (``Bundle.content_hash``, the SHA-256 of its manifest, which lists the SHA-256 of
every file); otherwise (no analysis, or one from another bundle, version or re-export, or a row
stored before the library recorded hashes) the model runs and the result is stored with
:func:`app.library.queries.add_analysis` (probabilities, the domain state, the mask
probabilities as an 8-bit PNG, the default heatmap as float32 ``.npy``), so reopening a study is
instant, shows the same domain state, and the browser can sort and filter on the top finding.
The rest (mask threshold and area, the thresholds and classes of the bundle, the default
heatmap's phrase and peak-to-mean ratio, the pooled embedding and the similar reports) is stored
with the same row, as JSON in ``analyses.extras`` (Alembic revision 0003, which also read in the
``derived/<instance id>/analysis-<analysis id>.json`` files older versions wrote beside the
mask); extras that are not recorded only mean the bundle's facts are taken and the rest is
recomputed on demand. Within one process an image
is analysed by one bundle at a time: the shown image's analysis and "analyze all" run in
different threads, and the later request for an image in flight waits and reuses what the first
stored (:func:`analyze_instance`), so no image is analysed and stored twice.

The default heatmap is the one for the most likely finding other than "normal" *at or above
its operating threshold* (its phrase is :func:`finding_phrase`), so opening an abnormal study
shows where the model looks for what it found; when no finding reaches its threshold there is
no default heatmap (a min-max stretched attention map always has a hot spot, which would look
like a finding), and none either when the bundle's model card does not vouch for that
finding's heatmap (its pointing game on validation did not beat the positional prior, see
:meth:`Bundle.grounding`): ``heatmap_withheld`` then says why. Every heatmap comes with the peak-to-mean ratio of the runtime's raw patch
attention (:func:`heatmap_contrast`: 1.0 for a flat map), so the display can say how much the
relative stretch exaggerated. Heatmaps for other phrases (typed by the user, or a sentence of a
report) are computed on demand and kept in memory by the app, not stored.

Domain
------
Every result carries the runtime's :class:`core_model.runtime.domain.DomainState` (in domain,
out of domain with the reasons, or unknown when the bundle records no training domain); the
library's view position and modality are passed to ``bundle.analyze`` as its ``view`` and
``modality`` hints. The runtime is imported lazily (starting the app does not load onnxruntime).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core_model.errors import UserError

if TYPE_CHECKING:  # the runtime is imported lazily: it loads onnxruntime
    from core_model.runtime import Analysis as RuntimeAnalysis
    from core_model.runtime import Bundle
    from core_model.runtime.domain import DomainState

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]

SIMILAR_K = 5
DEFAULT_THRESHOLD = 0.5  # a class without an operating threshold in its bundle
LOW_CONTRAST_PEAK_TO_MEAN = 1.5  # below this the raw attention map is nearly flat
_PHRASES = {"covid19": "covid-19 pneumonia", "covid-19": "covid-19 pneumonia"}


class AnalysisCancelled(UserError):
    """The user cancelled; nothing was stored for the image being analysed."""

    def __init__(self, message: str = "analysis cancelled"):
        super().__init__(message)


@dataclass(frozen=True)
class Hit:
    id: str
    text: str
    score: float


def no_domain_state() -> DomainState:
    from core_model.runtime.domain import DomainState

    return DomainState.from_dict(None)  # unknown: "no domain state was recorded for this result"


def domain_from_dict(d: dict | None) -> DomainState:
    from core_model.runtime.domain import DomainState

    return DomainState.from_dict(d)


@dataclass
class AnalysisResult:
    """What the AI panel, the reports panel and the CSV show for one instance."""

    uid: str
    bundle_id: str
    bundle_version: str
    probabilities: dict[str, float]
    thresholds: dict[str, float] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    mask: np.ndarray | None = None  # float32 probabilities on the image grid
    mask_threshold: float = 0.5
    mask_area_fraction: float | None = None
    mask_label: str | None = None
    heatmap: np.ndarray | None = None
    heatmap_phrase: str | None = None
    similar: list[Hit] | None = None
    embedding: np.ndarray | None = None
    analysis_id: int | None = None
    created_at: str = ""
    from_cache: bool = False
    elapsed_s: float = 0.0
    bundle_hash: str | None = None  # the bundle's content hash (None: a row stored before hashes)
    domain: DomainState = field(default_factory=no_domain_state)
    heatmap_peak_to_mean: float | None = None  # of the default heatmap's raw attention map
    # why no default heatmap is drawn for the finding above its threshold: the model card does
    # not vouch for that finding's heatmap (its grounding did not beat the positional prior)
    heatmap_withheld: str | None = None
    runtime: RuntimeAnalysis | None = None  # the runtime's Analysis (reused for phrase heatmaps); never stored

    @property
    def top_finding(self) -> tuple[str | None, float | None]:
        if not self.probabilities:
            return None, None
        name = max(self.probabilities, key=lambda k: (self.probabilities[k], k))
        return name, self.probabilities[name]

    def above_threshold(self, name: str) -> bool | None:
        t = self.thresholds.get(name)
        p = self.probabilities.get(name)
        if t is None or p is None:
            return None
        return p >= t

    @property
    def in_domain(self) -> bool:
        return self.domain.ok


def finding_phrase(name: str | None) -> str | None:
    """The phrase whose heatmap is shown by default for a finding ("normal" has none)."""
    if not name or name.lower() == "normal":
        return None
    return _PHRASES.get(name.lower(), name.replace("_", " "))


def default_heatmap_finding(probabilities: dict[str, float], thresholds: dict[str, float] | None = None) -> str | None:
    """The finding of the default heatmap: the most likely one other than "normal" among those at
    or above their operating threshold (``thresholds``; a class without one uses
    :data:`DEFAULT_THRESHOLD`), or None when no finding reaches its threshold. Without
    ``thresholds`` at all: the most likely abnormal finding (what the model looks at most)."""
    abnormal = {k: v for k, v in probabilities.items() if k.lower() != "normal" and v is not None}
    if thresholds is not None:
        abnormal = {k: v for k, v in abnormal.items() if v >= float(thresholds.get(k, DEFAULT_THRESHOLD))}
    if not abnormal:
        return None
    return max(abnormal, key=lambda k: (abnormal[k], k))


def default_heatmap_phrase(probabilities: dict[str, float], thresholds: dict[str, float] | None = None) -> str | None:
    """The phrase of the default heatmap (:func:`default_heatmap_finding`'s finding)."""
    return finding_phrase(default_heatmap_finding(probabilities, thresholds))


def grounding_caveat(bundle: Bundle) -> str:
    """What the model card vouches for, said beside a heatmap the user asked for (a typed phrase
    or a report sentence: not checked against any finding's grounding)."""
    g = bundle.card.get("grounding") if isinstance(bundle.card, dict) else None
    per = g.get("per_finding") if isinstance(g, dict) else None
    if not isinstance(per, dict) or not per:
        return "the model card vouches for no heatmap"
    ok = bundle.validated_heatmap_findings()
    rest = sorted(f for f in per if f not in ok)
    if not ok:
        return "no finding's heatmap beat the positional prior on validation"
    return "heatmaps validated for " + ", ".join(ok) + (f"; not for {', '.join(rest)}" if rest else "")


def peak_to_mean(raw: np.ndarray) -> float | None:
    """Peak-to-mean ratio of a raw (non-negative) attention map: 1.0 when flat, the number of
    patches when all attention is on one patch. None for an empty or all-zero map."""
    a = np.nan_to_num(np.asarray(raw, dtype=np.float64))
    mean = float(a.mean()) if a.size else 0.0
    if a.size == 0 or mean <= 0:
        return None
    return float(a.max()) / mean


def heatmap_contrast(bundle: Bundle, analysis: RuntimeAnalysis, phrase: str) -> tuple[np.ndarray, float | None]:
    """The runtime's heatmap of ``phrase`` (H, W) in [0, 1] (min-max stretched by the runtime)
    and the peak-to-mean ratio of its raw patch attention (:meth:`Bundle.patch_heatmap`, which
    sums to 1), which says how much contrast the stretch had to work with."""
    raw = bundle.patch_heatmap(analysis, phrase)
    return np.asarray(bundle.heatmap_from_patches(analysis, raw), dtype=np.float32), peak_to_mean(raw)


def contrast_text(ratio: float | None) -> str:
    """How the display describes a relative (min-max stretched) heatmap's contrast."""
    if ratio is None:
        return "peak-to-mean ratio not recorded"
    text = f"peak {ratio:.2f} times the mean"
    if ratio < LOW_CONTRAST_PEAK_TO_MEAN:
        text += " (low contrast: nearly flat map, the stretch exaggerates it)"
    return text


def _hits(raw) -> list[Hit]:
    """Hits from the runtime's ``ReportHit`` (or our own ``Hit``) objects, or from the dicts
    stored in an analysis's extras."""
    out = []
    for h in raw or []:
        if isinstance(h, Hit):
            out.append(h)
        elif isinstance(h, dict):
            out.append(Hit(str(h.get("id", "")), str(h.get("text", "")), float(h.get("score", 0.0))))
        else:  # core_model.runtime.retrieval.ReportHit(id, text, score)
            out.append(Hit(str(h.id), str(h.text), float(h.score)))
    return out


# -- the cache ------------------------------------------------------------------------------


def cached_analysis(
    library, uid: str, bundle_id: str, bundle_version: str, *, bundle_hash: str | None = None, load_arrays: bool = True
) -> AnalysisResult | None:
    """The latest stored analysis of ``uid`` by this bundle, or None.

    With ``bundle_hash`` (the loaded bundle's content hash: what the app always passes) only a
    row stored with that hash matches, so results of another bundle with the same id and
    version, and rows stored before the library recorded hashes, are never taken for this
    bundle's. Without it: the latest row with this id and version (what was stored; for reports)."""
    from sqlalchemy import select

    from app.library.models import Analysis
    from app.library.queries import get_instance

    with library.session() as s:
        inst = get_instance(s, uid)
        if inst is None:
            raise UserError(f"no instance {uid} in the library")
        match = [
            Analysis.instance_pk == inst.id,
            Analysis.bundle_id == bundle_id,
            Analysis.bundle_version == bundle_version,
        ]
        if bundle_hash is not None:
            match.append(Analysis.bundle_hash == bundle_hash)
        row = s.execute(
            select(Analysis).where(*match).order_by(Analysis.created_at.desc(), Analysis.id.desc()).limit(1)
        ).scalar_one_or_none()
    if row is None:
        return None
    return _from_row(library, uid, row, load_arrays=load_arrays)


def latest_any(library, uid: str) -> AnalysisResult | None:
    """The latest stored analysis of ``uid`` by any bundle (what the CSV shows without a model)."""
    from app.library.queries import get_instance, latest_analysis

    with library.session() as s:
        inst = get_instance(s, uid)
        if inst is None:
            return None
        row = latest_analysis(s, inst)
    return None if row is None else _from_row(library, uid, row, load_arrays=False)


def _from_row(library, uid: str, row, *, load_arrays: bool) -> AnalysisResult | None:
    from app.library.queries import (
        analysis_domain,
        analysis_extras,
        analysis_heatmap,
        analysis_mask,
        analysis_probabilities,
    )
    from app.logic.overlay import to_unit

    extras = analysis_extras(row)
    mask = heat = None
    if load_arrays:
        try:
            m = analysis_mask(library, row)
            mask = to_unit(m) if m is not None else None
            heat = analysis_heatmap(library, row)
        except (OSError, ValueError) as exc:  # files removed by hand: recompute
            log.warning("analysis %d of %s has unreadable files (%s); it will be recomputed", row.id, uid, exc)
            return None
    emb = extras.get("embedding")
    ratio = extras.get("heatmap_peak_to_mean")
    return AnalysisResult(
        uid=uid,
        bundle_id=row.bundle_id,
        bundle_version=row.bundle_version,
        probabilities=analysis_probabilities(row),
        thresholds=extras.get("thresholds", {}),
        classes=extras.get("classes", []),
        mask=mask,
        mask_threshold=float(extras.get("mask_threshold", 0.5)),
        mask_area_fraction=extras.get("mask_area_fraction"),
        mask_label=extras.get("mask_label"),
        heatmap=heat,
        heatmap_phrase=extras.get("heatmap_phrase"),
        similar=_hits(extras["similar"]) if "similar" in extras else None,
        embedding=np.asarray(emb, dtype=np.float32) if emb is not None else None,
        analysis_id=row.id,
        created_at=row.created_at,
        from_cache=True,
        bundle_hash=row.bundle_hash,
        domain=domain_from_dict(analysis_domain(row)),
        heatmap_peak_to_mean=float(ratio) if isinstance(ratio, (int, float)) else None,
        heatmap_withheld=extras.get("heatmap_withheld") if isinstance(extras.get("heatmap_withheld"), str) else None,
    )


# -- running the model ----------------------------------------------------------------------


def instance_file(library, uid: str) -> Path:
    return _instance_source(library, uid)[0]


def _instance_source(library, uid: str) -> tuple[Path, str, str]:
    """The instance's file, view position and modality (as the library recorded them)."""
    from app.library.queries import get_instance

    with library.session() as s:
        inst = get_instance(s, uid)
        if inst is None:
            raise UserError(f"no instance {uid} in the library")
        path = library.resolve(inst.file_path, inst.storage)
        view, modality = (inst.view_position or "").strip(), (inst.modality or "").strip()
    if not path.exists():
        raise UserError(f"the file of this image is missing: {path}")
    return path, view, modality


def _analyze(bundle: Bundle, path: Path, view: str, modality: str) -> RuntimeAnalysis:
    """The runtime's analysis, with the library's view position and modality as hints."""
    return bundle.analyze(str(path), view=view or None, modality=modality or None)


def _finite(d: dict) -> dict[str, float]:
    return {str(k): float(v) for k, v in d.items() if v is not None and math.isfinite(float(v))}


def run_model(
    library,
    bundle: Bundle,
    uid: str,
    *,
    heatmap: bool = True,
    similar_k: int = SIMILAR_K,
    store: bool = True,
    cancelled: CancelFn | None = None,
) -> AnalysisResult:
    """Analyse one instance with ``bundle`` (no cache lookup) and store the result. A cancel
    between the model's steps raises :class:`AnalysisCancelled` and stores nothing (a cached
    analysis is always complete)."""

    def check() -> None:
        if cancelled is not None and cancelled():
            raise AnalysisCancelled()

    path, view, modality = _instance_source(library, uid)
    started = time.perf_counter()
    check()
    a = _analyze(bundle, path, view, modality)
    check()
    probabilities = _finite(dict(a.probabilities))
    thresholds = _finite(dict(bundle.thresholds))
    mask = None if a.mask is None else np.asarray(a.mask, dtype=np.float32)
    phrase = heat = ratio = withheld = None
    if heatmap:
        finding = default_heatmap_finding(probabilities, thresholds)
        verdict = bundle.grounding(finding) if finding else None
        if verdict is not None and verdict.validated:
            phrase = verdict.prompt or finding_phrase(finding)  # the phrase the card validated
            heat, ratio = heatmap_contrast(bundle, a, phrase)
            check()
        elif verdict is not None:
            withheld = verdict.message()
    similar = None
    if similar_k:
        try:
            similar = _hits(bundle.similar_reports(a, k=similar_k))
        except UserError as exc:  # e.g. a bundle without a report bank
            log.info("no similar reports for %s: %s", uid, exc)
            similar = []
    result = AnalysisResult(
        uid=uid,
        bundle_id=str(bundle.id),
        bundle_version=str(bundle.version),
        probabilities=probabilities,
        thresholds=thresholds,
        classes=list(bundle.classes or probabilities),
        mask=mask,
        mask_threshold=float(a.mask_threshold or 0.5),
        mask_area_fraction=None if a.mask_area_fraction is None else float(a.mask_area_fraction),
        mask_label=bundle.mask_label,
        heatmap=heat,
        heatmap_phrase=phrase,
        similar=similar,
        embedding=None if a.embedding is None else np.asarray(a.embedding, dtype=np.float32),
        bundle_hash=bundle.content_hash,
        domain=a.domain,
        heatmap_peak_to_mean=ratio,
        heatmap_withheld=withheld,
        runtime=a,
    )
    if store and not getattr(library, "read_only", False):  # a read-only library: shown, not stored
        store_result(library, result)
    result.elapsed_s = time.perf_counter() - started
    return result


def store_result(library, result: AnalysisResult) -> int:
    from app.library.queries import add_analysis

    extras = dict(
        thresholds=result.thresholds,
        classes=result.classes,
        mask_threshold=result.mask_threshold,
        mask_area_fraction=result.mask_area_fraction,
        mask_label=result.mask_label,
        heatmap_phrase=result.heatmap_phrase,
        heatmap_peak_to_mean=result.heatmap_peak_to_mean,
        heatmap_withheld=result.heatmap_withheld,
        similar=None if result.similar is None else [dict(id=h.id, text=h.text, score=h.score) for h in result.similar],
        embedding=None if result.embedding is None else [float(x) for x in result.embedding],
    )
    if extras["similar"] is None:
        del extras["similar"]
    analysis_id = add_analysis(
        library,
        result.uid,
        bundle_id=result.bundle_id,
        bundle_version=result.bundle_version,
        probabilities=result.probabilities,
        mask=result.mask,
        heatmap=result.heatmap,
        bundle_hash=result.bundle_hash,
        domain=result.domain.to_dict(),
        extras=extras,
    )
    result.analysis_id = analysis_id
    return analysis_id


class _KeyedLocks:
    """One lock per key while someone holds or waits for it (the table does not grow)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple, list] = {}  # key -> [lock, holders and waiters]

    @contextmanager
    def hold(self, key: tuple):
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]


_IN_FLIGHT = _KeyedLocks()


def analyze_instance(
    library, bundle: Bundle, uid: str, *, force: bool = False, heatmap: bool = True, cancelled: CancelFn | None = None
) -> AnalysisResult:
    """The cached analysis by this bundle (same content hash) when there is one (unless
    ``force``), else a new one.

    One image is analysed by one bundle at a time in this process: the app analyses the shown
    image and "analyze all" in different threads, and a second request for the same image waits
    for the first and then reuses what it stored (instead of running the model twice and storing
    two analyses)."""
    key = (str(library.db_path), uid, bundle.content_hash)
    with _IN_FLIGHT.hold(key):
        if not force:
            cached = cached_analysis(library, uid, str(bundle.id), str(bundle.version), bundle_hash=bundle.content_hash)
            if cached is not None:
                # bundle facts are the bundle's own (the extras may not be recorded)
                cached.thresholds = cached.thresholds or _finite(dict(bundle.thresholds))
                cached.classes = cached.classes or list(bundle.classes)
                cached.mask_label = cached.mask_label or bundle.mask_label
                return cached
        return run_model(library, bundle, uid, heatmap=heatmap, cancelled=cancelled)


def phrase_heatmap(
    library, bundle: Bundle, result: AnalysisResult | None, uid: str, phrase: str
) -> tuple[np.ndarray, float | None]:
    """Where the model finds ``phrase`` in the image: (H, W) float32 in [0, 1] (min-max
    stretched) and the raw map's peak-to-mean ratio (:func:`heatmap_contrast`)."""
    phrase = " ".join((phrase or "").split())
    if not phrase:
        raise UserError("type a phrase first (e.g. 'left lower lobe consolidation')")
    if result is not None and result.runtime is not None:
        a = result.runtime
    else:
        path, view, modality = _instance_source(library, uid)
        a = _analyze(bundle, path, view, modality)
        if result is not None:
            result.runtime = a  # the next phrase reuses the image's features
    return heatmap_contrast(bundle, a, phrase)


def similar_reports(library, bundle, result: AnalysisResult | None, uid: str, k: int = SIMILAR_K) -> list[Hit]:
    if result is not None and result.similar is not None and len(result.similar) >= k:
        return result.similar[:k]
    source = result.runtime if result is not None and result.runtime is not None else str(instance_file(library, uid))
    return _hits(bundle.similar_reports(source, k=k))


# -- batches --------------------------------------------------------------------------------


@dataclass
class BatchSummary:
    total: int = 0
    analysed: int = 0
    cached: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (uid, message)
    cancelled: bool = False
    elapsed_s: float = 0.0
    results: list[AnalysisResult] = field(default_factory=list)


def analyze_many(
    library,
    bundle,
    uids: Iterable[str],
    *,
    force: bool = False,
    heatmap: bool = True,
    progress: ProgressFn | None = None,
    cancelled: CancelFn | None = None,
    keep_results: bool = False,
    on_result: Callable[[AnalysisResult], None] | None = None,
    progress_interval: float = 0.1,
) -> BatchSummary:
    """Analyse instances one by one (cache first); a failing image is recorded and skipped.
    ``progress(done, total, text)`` at most every ``progress_interval`` s plus at the end;
    ``cancelled()`` is checked between images."""
    uids = list(dict.fromkeys(uids))
    summary = BatchSummary(total=len(uids))
    started = last = time.monotonic()
    if progress:
        progress(0, len(uids), "")
    for i, uid in enumerate(uids):
        if cancelled and cancelled():
            summary.cancelled = True
            break
        try:
            result = analyze_instance(library, bundle, uid, force=force, heatmap=heatmap, cancelled=cancelled)
        except AnalysisCancelled:
            summary.cancelled = True
            break
        except UserError as exc:
            summary.failed.append((uid, str(exc)))
        except Exception as exc:  # an unexpected failure on one image must not stop the batch
            log.debug("analysis of %s failed", uid, exc_info=True)
            summary.failed.append(
                (uid, f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            )
        else:
            if result.from_cache:
                summary.cached += 1
            else:
                summary.analysed += 1
            result.runtime = None  # do not keep every image's features alive
            if keep_results:
                summary.results.append(result)
            if on_result:
                on_result(result)
        now = time.monotonic()
        if progress and (now - last >= progress_interval or i + 1 == len(uids)):
            progress(i + 1, len(uids), uid)
            last = now
    summary.elapsed_s = time.monotonic() - started
    return summary


def all_instance_uids(library) -> list[str]:
    from sqlalchemy import select

    from app.library.models import Instance

    with library.session() as s:
        return list(
            s.execute(
                select(Instance.sop_instance_uid).order_by(Instance.study_date.desc(), Instance.id.desc())
            ).scalars()
        )


def unanalysed_uids(library, bundle_id: str, bundle_version: str, *, bundle_hash: str | None = None) -> list[str]:
    """Instances without an analysis by this bundle (id and version, and the content hash when
    given: see :func:`cached_analysis`)."""
    from sqlalchemy import and_, exists, select

    from app.library.models import Analysis, Instance

    match = [
        Analysis.instance_pk == Instance.id,
        Analysis.bundle_id == bundle_id,
        Analysis.bundle_version == bundle_version,
    ]
    if bundle_hash is not None:
        match.append(Analysis.bundle_hash == bundle_hash)
    with library.session() as s:
        done = exists().where(and_(*match))
        return list(
            s.execute(
                select(Instance.sop_instance_uid).where(~done).order_by(Instance.study_date.desc(), Instance.id.desc())
            ).scalars()
        )
