"""WebDataset tar shards (OpenCLIP convention) read by ``data.kind: webdataset``: real tars
written here, hostile and damaged ones included."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core_model.data.readers import read_dataset
from core_model.data.webdataset import parse_member_ref, prepare_member, read_member
from core_model.errors import DataError
from core_model.imaging.preprocess import PreprocessSpec, prepare_input


def _png(seed: int, size=(40, 56)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _jpg(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (48, 48), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, first: int, n: int, *, meta: bool = False) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(first, first + n):
            key = f"{i:06d}"
            _add(tar, f"{key}.jpg" if i % 2 else f"{key}.png", _jpg(i) if i % 2 else _png(i))
            _add(tar, f"{key}.txt", f"Report {i}: lungs are clear.\n".encode())
            if meta:
                _add(
                    tar,
                    f"{key}.json",
                    json.dumps({"split": "val" if i % 3 == 0 else "train", "patient_id": f"p{i}"}).encode(),
                )


@pytest.fixture()
def shards(tmp_path):
    for k in range(3):
        write_shard(tmp_path / f"data-{k:06d}.tar", 4 * k, 4, meta=k == 1)
    return tmp_path


def test_brace_pattern_folder_and_file_give_the_samples_in_order(shards):
    by_pattern = read_dataset({"kind": "webdataset", "path": str(shards / "data-{000000..000002}.tar")})
    by_folder = read_dataset({"kind": "webdataset", "path": str(shards)})
    assert [r.id for r in by_pattern.records] == [r.id for r in by_folder.records]
    assert [r.id for r in by_pattern.records][:5] == [
        "data-000000/000000",
        "data-000000/000001",
        "data-000000/000002",
        "data-000000/000003",
        "data-000001/000004",
    ]
    assert len(by_pattern.records) == 12 and not by_pattern.skipped
    r5 = by_pattern.records[5]
    assert r5.report == "Report 5: lungs are clear." and r5.split == "train" and r5.patient_id == "p5"
    assert by_pattern.records[6].split == "val" and by_pattern.records[0].split is None
    one = read_dataset({"kind": "webdataset", "path": str(shards / "data-000002.tar")})
    assert [r.id for r in one.records] == [r.id for r in by_pattern.records[8:]]
    with pytest.raises(DataError, match=r"1 of the 4 webdataset shards are missing \(first: .*data-000003.tar\)"):
        read_dataset({"kind": "webdataset", "path": str(shards / "data-{000000..000003}.tar")})


def test_member_images_go_through_the_one_preprocessing_function(shards, tmp_path):
    records = read_dataset({"kind": "webdataset", "path": str(shards)}).records
    spec = PreprocessSpec(size=32)
    for r, data in ((records[0], _png(0)), (records[1], _jpg(1))):
        tar, _, size, name = parse_member_ref(r.image_path)
        assert Path(tar).name == "data-000000.tar" and size == len(data)
        assert read_member(r.image_path) == data
        plain = tmp_path / Path(name).name
        plain.write_bytes(data)
        assert np.array_equal(prepare_member(r.image_path, spec), prepare_input(plain, spec))


def test_samples_without_image_or_report_are_skipped_with_reasons(tmp_path):
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        _add(tar, "a.png", _png(0))
        _add(tar, "a.txt", b"Clear lungs.")
        _add(tar, "b.txt", b"No image here.")
        _add(tar, "c.png", _png(1))
        _add(tar, "d.png", _png(2))
        _add(tar, "d.txt", b"   ")
        _add(tar, "e.png", _png(3))
        _add(tar, "e.txt", b"\xff\xfe not utf-8")
        _add(tar, "f.png", _png(4))
        _add(tar, "f.txt", b"x" * ((1 << 20) + 1))
    result = read_dataset({"kind": "webdataset", "path": str(tmp_path / "s.tar")})
    assert [r.id for r in result.records] == ["s/a"]
    assert {s.id: s.reason for s in result.skipped} == {
        "s/b": "missing_image",
        "s/c": "empty_report",
        "s/d": "empty_report",
        "s/e": "bad_report",
        "s/f": "bad_report",
    }


def _hostile(path: Path, kind: str) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, "000000.png", _png(0))
        _add(tar, "000000.txt", b"Clear.")
        info = tarfile.TarInfo("000001.png")
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "000000.png"
        elif kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        elif kind == "fifo":
            info.type = tarfile.FIFOTYPE
        elif kind == "absolute":
            info.name = "/tmp/000001.png"
        elif kind == "dotdot":
            info.name = "../../000001.png"
        data = _png(1) if kind in ("absolute", "dotdot") else b""
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data) if data else None)


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("symlink", "is a symbolic link"),
        ("hardlink", "is a hard link"),
        ("device", "is a device, FIFO or special member"),
        ("fifo", "is a device, FIFO or special member"),
        ("absolute", "has an absolute path or '..'"),
        ("dotdot", "has an absolute path or '..'"),
    ],
)
def test_hostile_members_are_refused_naming_the_shard(tmp_path, kind, needle):
    _hostile(tmp_path / "evil-000000.tar", kind)
    with pytest.raises(DataError, match=rf"^evil-000000.tar: member '.*000001.png' {needle}"):
        read_dataset({"kind": "webdataset", "path": str(tmp_path)})


def test_damaged_truncated_compressed_and_foreign_files_name_the_shard(tmp_path):
    write_shard(tmp_path / "good.tar", 0, 4)
    raw = (tmp_path / "good.tar").read_bytes()
    cases = {
        "truncated.tar": (raw[: len(raw) // 2], "is truncated|damaged"),
        "garbage.tar": (raw[:3072] + bytes(range(256)) * 2 + raw[3584:], "damaged"),  # over a header
        "random.tar": (np.random.default_rng(0).bytes(4096), "not a readable tar archive|not a tar archive"),
        "empty.tar": (b"", "not a readable tar archive|not a tar archive"),
    }
    import gzip

    cases["packed.tar"] = (gzip.compress(raw), "is a compressed archive")
    for name, (data, needle) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=rf"^{name} .*({needle})|^{name}: .*({needle})"):
            read_dataset({"kind": "webdataset", "path": str(tmp_path / name)})


def test_a_shard_changed_after_listing_is_an_unreadable_image_not_a_crash(shards):
    from core_model.imaging.errors import ImageReadError

    records = read_dataset({"kind": "webdataset", "path": str(shards)}).records
    (shards / "data-000002.tar").write_bytes(b"")
    with pytest.raises(ImageReadError, match="data-000002.tar:000008.png: the shard is shorter"):
        read_member(records[8].image_path)
