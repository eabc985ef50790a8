"""Open-I / Indiana reports: the real archive, image matching, and hostile archives."""

import io
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from core_model.data.openi import iter_openi_reports, read_openi, section_counts
from core_model.errors import DataError
from tests.real_data import REAL_DIR

REAL = REAL_DIR / "NLMCXR_reports.tgz"
needs_real = pytest.mark.skipif(not REAL.is_file(), reason="real Open-I archive not available")

XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR{n}"/><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="INDICATION">XXXX-year-old with cough</AbstractText>
<AbstractText Label="FINDINGS">{findings}</AbstractText>
<AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract></Article></MedlineCitation>
<MeSH>{mesh}</MeSH>
{images}
</eCitation>"""


def _xml(n, findings="Lungs are clear.", impression="Normal chest x-XXXX.", mesh=("normal",), images=2):
    imgs = "".join(
        f'<parentImage id="CXR{n}_1_IM-000{n}-{k}001"><figureId>F{k}</figureId></parentImage>'
        for k in range(1, images + 1)
    )
    return XML.format(
        n=n, findings=findings, impression=impression, images=imgs, mesh="".join(f"<major>{m}</major>" for m in mesh)
    ).encode()


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, tarfile.TarInfo):
                tar.addfile(data)
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@needs_real
def test_real_archive_parses_every_report():
    counts = section_counts(REAL)
    assert counts["reports"] == 3955 and counts["bad_xml"] == 0
    assert counts["findings"] == 3425 and counts["impression"] == 3921
    assert counts["text"] == 3927  # reports with FINDINGS or IMPRESSION
    res = read_openi(REAL, reports_only=True)
    assert len(res.records) == 3927 and res.skip_counts() == {"empty_report": 28}
    first = {r.id: r for r in res.records}["CXR1"]
    assert first.report.startswith("Normal chest x-ray. The cardiac silhouette")
    assert first.finding == "normal" and first.labels["normal"] == 1.0 and first.image_path == ""
    assert not any("XXXX" in r.report for r in res.records)
    assert sum(r.finding == "normal" for r in res.records) > 1000
    # without an image folder every image row is skipped as missing_image, with the count shown
    with_images = read_openi(REAL)
    # 7,430 images of the 3,927 usable reports + 101 usable reports that list no image
    assert with_images.records == [] and with_images.skip_counts() == {"missing_image": 7430 + 101, "empty_report": 28}


def test_image_folder_matching_and_projection_filter(tmp_path):
    archive = _tar(
        tmp_path / "r.tgz",
        [
            ("ecgen-radiology/1.xml", _xml(1)),
            (
                "ecgen-radiology/2.xml",
                _xml(
                    2,
                    findings="Large right pneumothorax.",
                    impression="Pneumothorax.",
                    mesh=("Pneumothorax/right/large",),
                    images=1,
                ),
            ),
            ("ecgen-radiology/3.xml", _xml(3, images=0)),
            ("ecgen-radiology/4.xml", _xml(4, findings="", impression="")),
        ],
    )
    imgs = tmp_path / "images" / "sub"
    imgs.mkdir(parents=True)
    Image.new("L", (4, 4)).save(imgs / "CXR1_1_IM-0001-1001.png")
    Image.new("L", (4, 4)).save(imgs / "2_IM-0002-1001.dcm.png")  # Kaggle naming
    res = read_openi(archive, images=tmp_path / "images")
    by_id = {r.id: r for r in res.records}
    assert sorted(by_id) == ["CXR1_1_IM-0001-1001", "CXR2_1_IM-0002-1001"]
    r2 = by_id["CXR2_1_IM-0002-1001"]
    assert r2.report == "Pneumothorax. Large right pneumothorax." and r2.finding == "pneumothorax"
    assert r2.patient_id == r2.study_id == "CXR2" and Path(r2.image_path).is_file()
    assert {(s.id, s.reason) for s in res.skipped} == {
        ("CXR1_1_IM-0001-2001", "missing_image"),
        ("CXR3", "missing_image"),
        ("CXR4", "empty_report"),
    }
    proj = tmp_path / "indiana_projections.csv"
    proj.write_text("uid,filename,projection\n1,1_IM-0001-1001.dcm.png,Frontal\n2,2_IM-0002-1001.dcm.png,Lateral\n")
    res = read_openi(archive, images=tmp_path / "images", projections=proj)
    assert [r.id for r in res.records] == ["CXR1_1_IM-0001-1001"] and res.records[0].view == "FRONTAL"
    assert ("CXR2_1_IM-0002-1001", "not_frontal") in {(s.id, s.reason) for s in res.skipped}


def test_hostile_or_broken_members_are_skipped_not_extracted(tmp_path):
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><eCitation>&b;</eCitation>'
    link = tarfile.TarInfo("ecgen-radiology/5.xml")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = _tar(
        tmp_path / "r.tgz",
        [
            ("ecgen-radiology/1.xml", _xml(1)),
            ("ecgen-radiology/2.xml", bomb),
            ("ecgen-radiology/3.xml", b"<eCitation><unclosed></eCitation>"),
            ("../../escape.xml", _xml(9)),
            ("ecgen-radiology/5.xml", link),
            ("README.txt", b"not xml"),
        ],
    )
    items = list(iter_openi_reports(archive))
    reasons = sorted(getattr(i, "reason", "report") for i in items)
    assert reasons == ["bad_xml", "bad_xml", "bad_xml", "report", "report"]
    assert not (tmp_path.parent / "escape.xml").exists() and not list(tmp_path.glob("ecgen*"))
    res = read_openi(archive, reports_only=True)
    assert sorted(r.id for r in res.records) == ["CXR1", "CXR9"]


def test_unreadable_archive_is_a_data_error(tmp_path):
    (tmp_path / "bad.tgz").write_bytes(b"this is not a tar file")
    with pytest.raises(DataError, match="not a readable tar"):
        read_openi(tmp_path / "bad.tgz", reports_only=True)
    with pytest.raises(DataError, match="not found"):
        read_openi(tmp_path / "absent.tgz")
    good = _tar(tmp_path / "g.tgz", [("ecgen-radiology/1.xml", _xml(1))])
    data = good.read_bytes()
    (tmp_path / "trunc.tgz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError):
        read_openi(tmp_path / "trunc.tgz", reports_only=True)
