"""The importer against hostile input, on real SQLite libraries and files written here: names on
disk never come from the files (a UID with ``../`` or one spelling another instance's managed
path writes nothing outside the data folder and overwrites nothing), zip archives are read
under budgets checked while streaming (and nothing is left behind on a refusal), encrypted
entries and repeated entry names get their own answer."""

from __future__ import annotations

import hashlib
import os
import struct
import warnings
import zipfile
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from app.library.importer import ArchiveBudget, Importer, import_paths
from app.library.models import Instance
from app.library.storage import managed_relpath
from tests.imaging.builders import gradient, write


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def all_files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha(p) for p in root.rglob("*") if p.is_file()}


def rows(lib) -> dict[str, Instance]:
    with lib.session() as s:
        return {i.sop_instance_uid: i for i in s.execute(select(Instance)).scalars()}


def dicom_with_uid(path: Path, sop_uid: str, value: int = 0) -> Path:
    """A valid image whose SOP Instance UID (header and file meta) is ``sop_uid``, written
    without pydicom's UID validation (a hostile writer does not validate either)."""
    src = write(path.with_suffix(".src"), gradient(24, 32) + value)
    ds = pydicom.dcmread(src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.save_as(path)
    src.unlink()
    return path


def surroundings(tmp_path: Path, lib) -> dict[str, str]:
    """Every file under tmp_path outside the library's data folder (and its database files)."""
    data, db = lib.data_dir.resolve(), Path(lib.db_path).resolve()
    return {
        k: v
        for k, v in all_files(tmp_path).items()
        if not (tmp_path / k).resolve().is_relative_to(data)
        and not ((tmp_path / k).resolve().parent == db.parent and (tmp_path / k).name.startswith(db.name))
    }


# --- names on disk ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uid",
    ["../../../../escaped", "1.2.3/../../../../../escaped", "/tmp/escaped-abs", "..\\..\\escaped", "1.2.3\x00../x"],
)
def test_uid_with_path_characters_writes_nothing_outside_the_data_folder(lib, tmp_path, uid):
    src = dicom_with_uid(tmp_path / "in" / "evil.dcm", uid)
    before = surroundings(tmp_path, lib)
    summary = import_paths(lib, [src], mode="copy")
    assert surroundings(tmp_path, lib) == before  # not a byte written outside the data folder
    assert not Path("/tmp/escaped-abs.dcm").exists()
    assert summary.imported == 1, summary.rejected
    (inst,) = rows(lib).values()
    stored = lib.resolve(inst.file_path, inst.storage)
    assert stored.resolve().is_relative_to(lib.managed_dir.resolve())
    assert ".." not in inst.file_path and "escaped" not in inst.file_path
    assert sha(stored) == sha(src)


def _spelling_of(lib, inst: Instance) -> str:
    """A UID that, used as a file name under managed/<bucket>/, lands on ``inst``'s file."""
    parts = Path(inst.file_path).parts  # managed, bucket, name
    return f"../{parts[1]}/{Path(parts[2]).stem}"


def test_uid_spelling_another_instances_managed_path_overwrites_nothing(lib, tmp_path):
    first = dicom_with_uid(tmp_path / "a.dcm", "1.2.826.0.1.3680043.2.1125.1", value=0)
    import_paths(lib, [first])
    (victim,) = rows(lib).values()
    victim_file = lib.resolve(victim.file_path, victim.storage)
    victim_sha = sha(victim_file)
    attacker = dicom_with_uid(tmp_path / "b.dcm", _spelling_of(lib, victim), value=7)
    summary = import_paths(lib, [attacker])
    assert summary.imported == 1
    assert sha(victim_file) == victim_sha == sha(first)  # pixels and header intact
    both = rows(lib)
    assert len(both) == 2
    other = next(i for u, i in both.items() if u != victim.sop_instance_uid)
    assert other.file_path != victim.file_path
    assert sha(lib.resolve(other.file_path, other.storage)) == sha(attacker)


def test_a_different_file_already_at_the_managed_name_is_never_replaced(lib, tmp_path):
    uid = "1.2.826.0.1.3680043.2.1125.77"
    occupant = lib.data_dir / managed_relpath(uid)
    occupant.parent.mkdir(parents=True, exist_ok=True)
    occupant.write_bytes(b"someone else's file")
    src = dicom_with_uid(tmp_path / "x.dcm", uid)
    assert import_paths(lib, [src]).imported == 1
    assert occupant.read_bytes() == b"someone else's file"
    inst = rows(lib)[uid]
    assert inst.file_path != managed_relpath(uid) and sha(lib.resolve(inst.file_path, inst.storage)) == sha(src)


def test_hostile_uids_inside_a_zip_write_nothing_outside_and_overwrite_nothing(lib, tmp_path):
    first = dicom_with_uid(tmp_path / "a.dcm", "1.2.826.0.1.3680043.2.1125.5", value=0)
    import_paths(lib, [first])
    (victim,) = rows(lib).values()
    victim_file = lib.resolve(victim.file_path, victim.storage)
    victim_sha = sha(victim_file)
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(dicom_with_uid(tmp_path / "m1.dcm", "../../../../../zip-escaped", value=3), "a/one.dcm")
        zf.write(dicom_with_uid(tmp_path / "m2.dcm", _spelling_of(lib, victim), value=9), "a/two.dcm")
    before = surroundings(tmp_path, lib)
    summary = import_paths(lib, [archive])
    assert summary.imported == 2, summary.rejected
    assert surroundings(tmp_path, lib) == before
    assert sha(victim_file) == victim_sha
    paths = {i.file_path for i in rows(lib).values()}
    assert len(paths) == 3 and all(p.startswith("managed/") and ".." not in p for p in paths)
    assert not list(lib.staging_dir.rglob("*"))


# --- archives under budget ----------------------------------------------------------------------


def _used_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_zip_bomb_is_refused_from_its_directory_and_nothing_is_left(lib, tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("bomb.dcm", "w", force_zip64=True) as member:
            block = b"\0" * (1 << 20)
            for _ in range(300):  # 300 MiB of zeros: about 300 KiB compressed
                member.write(block)
        zf.write(write(tmp_path / "good.dcm", gradient()), "good.dcm")
    assert archive.stat().st_size < 2 << 20
    summary = import_paths(lib, [archive])
    assert summary.imported == 1
    (rej,) = summary.rejected
    assert rej.reason == "archive_budget" and "zip bomb" in rej.message and "bomb.dcm" in rej.message
    assert _used_bytes(lib.data_dir) < 1 << 20 and not list(lib.staging_dir.rglob("*"))


def _lie_about_size(archive: Path, name: str, claimed: int) -> None:
    """Rewrite the uncompressed size of ``name`` in the local header and the central directory."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(name)
    local = info.header_offset
    struct.pack_into("<I", data, local + 22, claimed)
    central = data.rfind(b"PK\x01\x02")
    while central >= 0:
        (nlen,) = struct.unpack_from("<H", data, central + 28)
        if bytes(data[central + 46 : central + 46 + nlen]).decode() == name:
            struct.pack_into("<I", data, central + 24, claimed)
            break
        central = data.rfind(b"PK\x01\x02", 0, central)
    archive.write_bytes(bytes(data))


def test_a_member_that_lies_about_its_size_is_stopped_while_streaming(lib, tmp_path):
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("liar.dcm", b"\0" * (200 << 20))  # 200 MiB inflated, ~200 KiB stored
    _lie_about_size(archive, "liar.dcm", 2 << 20)  # claims 2 MiB: under every budget on paper
    summary = import_paths(lib, [archive])
    (rej,) = summary.rejected
    assert summary.imported == 0 and rej.reason in ("bad_archive", "archive_budget"), rej
    assert _used_bytes(lib.data_dir) < 1 << 20 and not list(lib.staging_dir.rglob("*"))


def test_ratio_and_total_budgets_are_checked_while_streaming(lib, tmp_path):
    archive = tmp_path / "many.zip"
    members = []
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(6):
            path = write(tmp_path / f"m{i}.dcm", gradient(64, 64) + i)
            zf.write(path, f"m{i}.dcm")
            members.append(path.stat().st_size)
    budget = ArchiveBudget(total_bytes=sum(members[:3]) + 10)  # room for three members
    summary = Importer(lib, archive_budget=budget, fsync=False).run([archive])
    assert summary.imported == 3
    assert [r.reason for r in summary.rejected] == ["archive_budget"] * 3
    first, *rest = summary.rejected  # the member that crossed the budget, stopped mid-stream
    assert "stopped after" in first.message and "removed" in first.message
    assert all("not extracted" in r.message for r in rest)
    assert not list(lib.staging_dir.rglob("*"))
    tight = ArchiveBudget(ratio=1.0, ratio_free_bytes=0)  # these DICOMs compress, so all are over 1:1
    again = Importer(lib, archive_budget=tight, fsync=False).run([archive])
    assert [r.reason for r in again.rejected] == ["archive_budget"] * 6
    assert all("compression ratio over 1" in r.message for r in again.rejected)


def _encrypt_flag(archive: Path) -> None:
    """Set the 'encrypted' bit (general purpose flag bit 0) of every entry, as a
    password-protected zip has it."""
    data = bytearray(archive.read_bytes())
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(sig)
        while at >= 0:
            (flags,) = struct.unpack_from("<H", data, at + offset)
            struct.pack_into("<H", data, at + offset, flags | 0x1)
            at = data.find(sig, at + 4)
    archive.write_bytes(bytes(data))


def test_encrypted_member_is_named_as_encrypted(lib, tmp_path):
    archive = tmp_path / "secret.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(write(tmp_path / "x.dcm", gradient()), "x.dcm")
    _encrypt_flag(archive)
    summary = import_paths(lib, [archive])
    (rej,) = summary.rejected
    assert rej.reason == "encrypted" and "encrypted" in rej.message and "unexpected" not in rej.message


def test_two_different_dicoms_under_one_member_name_are_both_imported(lib, tmp_path):
    a, b = write(tmp_path / "a.dcm", gradient()), write(tmp_path / "b.dcm", gradient() + 5)
    archive = tmp_path / "twice.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(a, "study/image.dcm")
            zf.write(b, "study/image.dcm")
    summary = import_paths(lib, [archive])
    assert summary.imported == 2 and summary.duplicates == 0 and summary.rejected == []
    stored = {sha(lib.resolve(i.file_path, i.storage)) for i in rows(lib).values()}
    assert stored == {sha(a), sha(b)}
    assert len({i.original_path for i in rows(lib).values()}) == 2  # each entry says which it was


def test_same_image_twice_under_one_name_is_one_import_and_one_duplicate(lib, tmp_path):
    a = write(tmp_path / "a.dcm", gradient())
    archive = tmp_path / "same.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(a, "image.dcm")
            zf.write(a, "image.dcm")
    summary = import_paths(lib, [archive])
    assert summary.imported == 1 and summary.duplicates == 1


def test_zlib_error_in_a_member_is_bad_archive_and_cleaned_up(lib, tmp_path):
    archive = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.dcm", os.urandom(1 << 16) + b"\0" * (1 << 18))
    data = bytearray(archive.read_bytes())
    data[100:140] = b"\xff" * 40  # inside the deflate stream
    archive.write_bytes(bytes(data))
    summary = import_paths(lib, [archive])
    (rej,) = summary.rejected
    assert rej.reason in ("bad_archive", "not_dicom"), rej
    assert not list(lib.staging_dir.rglob("*"))


def test_thumbnail_of_a_hostile_uid_stays_inside_the_data_folder(lib, tmp_path):
    from app.logic.thumbnails import make_thumbnail, thumbnail_path

    src = dicom_with_uid(tmp_path / "in" / "evil.dcm", "../../../../thumb-escaped")
    import_paths(lib, [src])
    (inst,) = rows(lib).values()
    before = surroundings(tmp_path, lib)
    make_thumbnail(lib, inst.sop_instance_uid, inst.file_path, inst.storage)
    assert surroundings(tmp_path, lib) == before
    path = thumbnail_path(lib, inst.sop_instance_uid)
    assert path.is_file() and path.resolve().is_relative_to(lib.data_dir.resolve())


_CHILD = """
import sys
from app.library import open_library
from app.library.importer import Importer
lib = open_library(sys.argv[1])
Importer(lib, mode="copy", batch_size=3, fsync=False).run([sys.argv[2]])
lib.close()
"""


@pytest.mark.timeout(300)
def test_concurrent_imports_of_different_files_with_the_same_uids_overwrite_nothing(tmp_path):
    """Two processes import different images that share their SOP Instance UIDs: whichever row
    wins, its managed copy is the file that row names as its original, never the other one."""
    import subprocess
    import sys

    from app.library import open_library

    uids = [f"1.2.826.0.1.3680043.2.1125.9.{i}" for i in range(30)]
    for side, value in (("left", 0), ("right", 9)):
        for i, u in enumerate(uids):
            dicom_with_uid(tmp_path / side / f"{i:02d}.dcm", u, value=value)
    db = tmp_path / "db" / "shared.db"
    open_library(db).close()
    root = Path(__file__).resolve().parents[2]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(db), str(tmp_path / side)], cwd=root, stderr=subprocess.PIPE, text=True
        )
        for side in ("left", "right")
    ]
    for child in children:
        _, err = child.communicate(timeout=240)
        assert child.returncode == 0, err
    lib = open_library(db)
    try:
        found = rows(lib)
        assert sorted(found) == sorted(uids)
        for inst in found.values():
            assert sha(lib.resolve(inst.file_path, inst.storage)) == sha(inst.original_path)
    finally:
        lib.close()


def test_many_small_highly_compressed_members_cannot_add_up_to_a_bomb(lib, tmp_path):
    """Each member is under the per-member allowance (16 MiB may have any ratio), but together
    they would inflate a ~1 MiB archive to 640 MiB: extraction stops at the archive's budget."""
    archive = tmp_path / "many_small.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(40):
            zf.writestr(f"z{i:02d}.dcm", b"\0" * (16 << 20))
    summary = import_paths(lib, [archive])
    assert summary.imported == 0 and len(summary.rejected) == 40
    budget = [r for r in summary.rejected if r.reason == "archive_budget"]
    assert budget and all("zip bomb" in r.message for r in budget)
    # the first members were extracted (and refused as not DICOM), then the archive budget held:
    # at most 200 x the archive's size went through the staging folder, and nothing is left
    allowed = max(64 << 20, 200 * archive.stat().st_size)
    assert sum(r.reason == "not_dicom" for r in summary.rejected) * (16 << 20) <= allowed
    assert not list(lib.staging_dir.rglob("*")) and not list(lib.managed_dir.rglob("*.dcm"))
