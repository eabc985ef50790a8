"""Writing one image's results: the public builders and writers of :mod:`core_model.dicom_results`."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from core_model.dicom_results.common import (
    NEEDS_DICOM,
    NotDicomSourceError,
    ResultFacts,
    ResultsError,
    Source,
    check_grid,
    load_source,
)

SourceLike = Dataset | str | os.PathLike | Source


def _source(source: SourceLike) -> Source:
    return source if isinstance(source, Source) else load_source(source)


def _dicom_source(source: SourceLike) -> Source:
    src = _source(source)
    if not src.is_dicom:
        raise NotDicomSourceError(NEEDS_DICOM.format(kind=src.kind.upper()).split(";")[0])
    return src


def build_seg(source: SourceLike, analysis, bundle, *, fractional: bool = False) -> Dataset:
    """The DICOM SEG of ``analysis``'s mask (:mod:`core_model.dicom_results.seg`)."""
    from core_model.dicom_results.seg import make_seg

    src = _dicom_source(source)
    return make_seg(src, ResultFacts.of(analysis, bundle), fractional=fractional)


def build_sr(source: SourceLike, analysis, bundle, *, seg: Dataset | None = None) -> Dataset:
    """The TID 1500 SR of ``analysis`` (:mod:`core_model.dicom_results.sr`), referencing ``seg``."""
    from core_model.dicom_results.sr import make_sr

    src = _dicom_source(source)
    return make_sr(src, ResultFacts.of(analysis, bundle), seg=seg)


def build_heatmap_sc(source: SourceLike, analysis, bundle, heatmap: np.ndarray, phrase: str, **kw) -> Dataset:
    """The Secondary Capture of ``heatmap`` for ``phrase`` (:mod:`core_model.dicom_results.heatmap`)."""
    from core_model.dicom_results.heatmap import make_heatmap_sc

    src = _dicom_source(source)
    return make_heatmap_sc(src, ResultFacts.of(analysis, bundle), heatmap, phrase, **kw)


@dataclass
class WrittenResults:
    """What :func:`write_results` wrote for one image."""

    key: str  # the per-image folder name's key (hex, ours)
    dicom_folder: Path | None = None
    plain_folder: Path | None = None
    dicom: dict[str, Path] = field(default_factory=dict)  # "seg" / "sr" / "heatmap" -> file
    plain: dict[str, Path] = field(default_factory=dict)  # "mask_png" / "mask_nifti" / "json" -> file
    uids: dict[str, str] = field(default_factory=dict)  # "seg" / "sr" / "heatmap" -> SOP Instance UID
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return list(self.dicom.values()) + list(self.plain.values())


DICOM_FILES = ("seg.dcm", "sr.dcm", "heatmap.dcm")
PLAIN_FILES = ("mask.png", "mask.nii.gz", "results.json")


def folder_name(key: str) -> str:
    return f"img-{key}"


def write_results(
    source: SourceLike,
    analysis,
    bundle,
    *,
    dicom_dir: str | os.PathLike | None = None,
    plain_dir: str | os.PathLike | None = None,
    fractional: bool = False,
    heatmap: np.ndarray | None = None,
    heatmap_phrase: str | None = None,
    lut: np.ndarray | None = None,
) -> WrittenResults:
    """Write one image's results into ``<dir>/img-<key>/`` (``key``: 20 hex digits of the SHA-256
    of the source's SOP Instance UID, or of a PNG / JPEG file's bytes; never a DICOM value
    itself): into ``dicom_dir`` ``seg.dcm`` (when the bundle segments), ``sr.dcm`` and, with
    ``heatmap`` and ``heatmap_phrase``, ``heatmap.dcm``; into ``plain_dir`` ``mask.png``,
    ``mask.nii.gz`` and ``results.json``. The same folder when both are the same. Each folder is
    built aside and moved into place whole (:func:`core_model.fileio.publish_dir`), replacing an
    earlier export of the same image (files of the kind not written now are kept): never a
    half-written folder. A PNG / JPEG source gets the
    plain files only, with a note saying why (and ``dicom_dir`` alone raises
    :class:`NotDicomSourceError`)."""
    from core_model.dicom_results.heatmap import make_heatmap_sc
    from core_model.dicom_results.plain import results_dict, write_plain
    from core_model.dicom_results.seg import make_seg
    from core_model.dicom_results.sr import make_sr
    from core_model.fileio import atomic_write_json, jsonable, publish_dir
    from core_model.imaging.dicom_write import save_atomic

    if dicom_dir is None and plain_dir is None:
        raise ResultsError("give a folder for the DICOM results, the plain results or both")
    src = _source(source)
    facts = ResultFacts.of(analysis, bundle)
    check_grid(facts, src)
    out = WrittenResults(key=src.key)
    want_dicom = dicom_dir is not None
    if want_dicom and not src.is_dicom:
        if plain_dir is None:
            raise NotDicomSourceError(NEEDS_DICOM.format(kind=src.kind.upper()).split(";")[0])
        out.notes.append(NEEDS_DICOM.format(kind=src.kind.upper()))
        want_dicom = False
    datasets: dict[str, Dataset] = {}
    if want_dicom:  # build everything before anything is written
        try:
            seg = make_seg(src, facts, fractional=fractional) if facts.mask is not None else None
            if seg is not None:
                datasets["seg"] = seg
            datasets["sr"] = make_sr(src, facts, seg=seg)
            if heatmap is not None and heatmap_phrase:
                datasets["heatmap"] = make_heatmap_sc(src, facts, heatmap, heatmap_phrase, lut=lut)
        except KeyError as exc:  # highdicom's tables know no such IOD (or a build trimmed them)
            sop = src.dataset.get("SOPClassUID") if src.dataset is not None else None
            name = getattr(sop, "name", "") or str(sop)
            raise ResultsError(f"cannot write DICOM results for a {name} source image ({exc})") from exc
        out.uids = {k: str(ds.SOPInstanceUID) for k, ds in datasets.items()}
    targets: dict[Path, list[str]] = {}
    if want_dicom:
        targets.setdefault(Path(dicom_dir).resolve(), []).append("dicom")  # type: ignore[arg-type]
    if plain_dir is not None:
        targets.setdefault(Path(plain_dir).resolve(), []).append("plain")
    names = dict(zip(("seg", "sr", "heatmap"), DICOM_FILES))
    for base, kinds in targets.items():
        base.mkdir(parents=True, exist_ok=True)
        staged = base / f".{folder_name(src.key)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
        staged.mkdir()
        final = base / folder_name(src.key)
        try:
            dicom_files: dict[str, Path] = {}
            if "dicom" in kinds:
                for k, ds in datasets.items():
                    save_atomic(ds, staged / names[k])
                    dicom_files[k] = final / names[k]
            if "plain" in kinds:
                plain = {k: final / p.name for k, p in write_plain(staged, src, facts).items()}
                listed = {k: p.name for k, p in {**dicom_files, **plain}.items()}
                dicom_info = {
                    k: dict(sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID))
                    for k, ds in datasets.items()
                }
                for k, info in dicom_info.items():
                    if k in dicom_files:
                        info["file"] = dicom_files[k].name
                record = results_dict(
                    src,
                    facts,
                    files={**listed, "json": "results.json"},
                    dicom=dicom_info,
                    heatmap_phrase=heatmap_phrase if heatmap is not None else None,
                    notes=out.notes,
                )
                atomic_write_json(staged / "results.json", jsonable(record))
                plain["json"] = final / "results.json"
                out.plain, out.plain_folder = plain, final
            keep = PLAIN_FILES if "plain" not in kinds else DICOM_FILES if "dicom" not in kinds else ()
            for name in keep:  # the other kind, written earlier into the same folder, stays
                if (final / name).is_file():
                    shutil.copy2(final / name, staged / name)
            publish_dir(staged, final)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        if "dicom" in kinds:
            out.dicom, out.dicom_folder = dicom_files, final
    return out


def write_dicom_results(
    source: SourceLike,
    analysis,
    bundle,
    out_dir: str | os.PathLike,
    *,
    fractional: bool = False,
    heatmap: np.ndarray | None = None,
    heatmap_phrase: str | None = None,
) -> list[Path]:
    """SEG + SR (+ heatmap Secondary Capture) of one DICOM image in ``out_dir/img-<key>/``; the
    files written, SEG first. A PNG / JPEG source raises :class:`NotDicomSourceError`."""
    written = write_results(
        source,
        analysis,
        bundle,
        dicom_dir=out_dir,
        fractional=fractional,
        heatmap=heatmap,
        heatmap_phrase=heatmap_phrase,
    )
    return list(written.dicom.values())
