"""``adaptor-review analyze --out-dicom DIR --out-json DIR`` as a user runs it (app.main.main), on
a real SQLite library of demo studies plus a PNG import, with the real demo bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.main import main
from tests.dicom_results.conftest import DEMO, PNEUMOTHORAX

BUNDLE = DEMO / "bundle"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def library_db(tmp_path, capsys) -> Path:
    from PIL import Image

    from core_model.imaging.preprocess import load_display

    files = tmp_path / "files"
    files.mkdir()
    for name in (PNEUMOTHORAX.name, "phantom-00080.dcm", "phantom-00078.dcm"):
        shutil.copy(DEMO / "studies" / name, files / name)
    Image.fromarray(load_display(PNEUMOTHORAX)).save(files / "plain.png")
    db = tmp_path / "lib" / "library.db"
    code, _, err = run_cli(capsys, "import", files, "--db", db, "--json")
    assert code == 0, err
    return db


def seg_pixels(path: Path) -> np.ndarray:
    import highdicom as hd

    seg = hd.seg.segread(path)
    uid = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    return seg.get_pixels_by_source_instance([uid], segment_numbers=[1])[0, :, :, 0].astype(bool)


def test_analyze_writes_dicom_and_json_results_and_reuses_stored_analyses(tmp_path, library_db, capsys):
    from core_model.runtime import load_bundle

    dcm, js = tmp_path / "dicom", tmp_path / "json"
    code, out, err = run_cli(
        capsys, "analyze", "--all", "--bundle", BUNDLE, "--db", library_db, "--out-dicom", dcm, "--out-json", js
    )
    assert code == 0, err
    assert "Research use only" in out and "4 analysed" in out
    assert "DICOM SEG and SR need a DICOM source image" in out  # the PNG import
    index = json.loads((dcm / "index.json").read_text())
    assert index["synthetic_model"] is True and index["notice"].startswith("Research use only")
    assert len(index["images"]) == 4 and index["failed"] == []
    by_uid = {e["sop_instance_uid"]: e for e in index["images"]}
    bundle = load_bundle(BUNDLE)
    import pydicom

    dicom_entries = [e for e in index["images"] if e["dicom"]]
    assert len(dicom_entries) == 3
    objects = sum(len(e["dicom"]) for e in dicom_entries)
    assert f"Results of 4 images written ({objects} DICOM objects)" in out
    for e in dicom_entries:
        folder = dcm / e["folder"]
        assert {"seg", "sr"} <= set(e["dicom"]) and (js / e["folder"] / "results.json").exists()
        evidence = pydicom.dcmread(folder / "sr.dcm").CurrentRequestedProcedureEvidenceSequence
        refs = {
            i.ReferencedSOPInstanceUID
            for s in evidence
            for r in s.ReferencedSeriesSequence
            for i in r.ReferencedSOPSequence
        }
        assert e["sop_instance_uid"] in refs and e["uids"]["seg"] in refs
        # the SEG equals the runtime's own mask of the library's file at the bundle's threshold
        record = json.loads((js / e["folder"] / "results.json").read_text())
        original = DEMO / "studies"
        match = [
            p
            for p in original.glob("*.dcm")
            if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID == e["sop_instance_uid"]
        ]
        (path,) = match
        a = bundle.analyze(str(path))
        assert np.array_equal(seg_pixels(folder / "seg.dcm"), a.mask >= a.mask_threshold)
        assert record["mask"]["area_fraction"] == pytest.approx(a.mask_area_fraction)
        assert record["probabilities"] == pytest.approx(a.probabilities, abs=1e-6)
    (png_entry,) = [e for e in index["images"] if not e["dicom"]]
    assert set(png_entry["files"]) == {"mask_png", "mask_nifti", "json"}
    assert not (dcm / png_entry["folder"]).exists()
    assert [n["sop_instance_uid"] for n in index["notes"]] == [png_entry["sop_instance_uid"]]
    first = {e["folder"]: seg_pixels(dcm / e["folder"] / "seg.dcm") for e in dicom_entries}
    uids = {e["folder"]: e["uids"] for e in dicom_entries}

    # again: the stored analyses (8-bit masks) are reused and give the same objects, pixel for pixel
    code, out, err = run_cli(
        capsys, "analyze", "--all", "--bundle", BUNDLE, "--db", library_db, "--out-dicom", dcm, "--json"
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["cached"] == 4 and summary["analysed"] == 0 and summary["csv"] is None
    assert summary["results"]["images"] == 3 and summary["results"]["failed"] == []  # the PNG: a note
    (note,) = summary["results"]["notes"]
    assert note["uid"] == png_entry["sop_instance_uid"] and "need a DICOM source image" in note["note"]
    again = json.loads((dcm / "index.json").read_text())
    assert len(again["images"]) == 3
    for e in again["images"]:
        if e["dicom"]:
            assert np.array_equal(seg_pixels(dcm / e["folder"] / "seg.dcm"), first[e["folder"]])
            assert e["uids"] == uids[e["folder"]]  # the same SOP Instance UIDs: replaced, not duplicated
    assert sorted(p.name for p in dcm.iterdir()) == sorted([*first, "index.json"])
    assert len(by_uid) == 4  # every image listed once


def test_analyze_output_options_are_checked(tmp_path, library_db, capsys):
    code, _, err = run_cli(capsys, "analyze", "--all", "--bundle", BUNDLE, "--db", library_db)
    assert code == 2 and "give at least one output: --csv FILE, --out-dicom DIR or --out-json DIR" in err
    assert err.count("\n") == 1
    code, _, err = run_cli(
        capsys, "analyze", "--all", "--bundle", BUNDLE, "--db", library_db, "--out-json", tmp_path / "j", "--fractional"
    )
    assert code == 2 and "--fractional applies to --out-dicom" in err
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(
        capsys, "analyze", "--all", "--bundle", BUNDLE, "--db", library_db, "--out-dicom", tmp_path / "afile"
    )
    assert code == 2 and "exists and is not a folder" in err
    # --csv alone still works as before, and together with the new outputs
    csv = tmp_path / "p.csv"
    code, out, err = run_cli(
        capsys, "analyze", "--all", "--bundle", BUNDLE, "--db", library_db, "--csv", csv, "--out-json", tmp_path / "j"
    )
    assert code == 0, err
    assert csv.exists() and f"Wrote {csv}" in out and (tmp_path / "j" / "index.json").exists()


def test_the_shown_phrase_heatmap_goes_out_as_the_secondary_capture(tmp_path, library_db, bundle):
    """What File -> Export results passes for the image on screen: its phrase heatmap replaces the
    default one (app.logic.results_export, Qt-free, on the real library)."""
    import pydicom

    from app.library import open_library
    from app.logic.analysis import all_instance_uids, instance_file
    from app.logic.results_export import export_results, summary_text

    library = open_library(library_db, create=False)
    try:
        uids = [u for u in all_instance_uids(library) if instance_file(library, u).suffix == ".dcm"]
        uid = uids[0]
        a = bundle.analyze(str(instance_file(library, uid)))
        heat = bundle.heatmap(a, "left lower lobe consolidation")
        seen = []
        summary = export_results(
            library,
            bundle,
            uids,
            dicom_dir=tmp_path / "d",
            heatmaps={uid: (heat, "left lower lobe consolidation")},
            on_written=seen.append,
        )
    finally:
        library.close()
    assert len(summary.written) == len(uids) == len(seen) and not summary.failed
    (entry,) = [e for e in summary.written if e["sop_instance_uid"] == uid]
    sc = pydicom.dcmread(tmp_path / "d" / entry["folder"] / "heatmap.dcm")
    assert sc.SeriesDescription == "HEATMAP 'left lower lobe consolidation' (RUO, SYNTHETIC DEMO)"
    assert "left lower lobe consolidation" in sc.ImageComments
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == uid
    assert f"results of {len(uids)} of {len(uids)} images written" in summary_text(summary)
