"""A bundle is a closed, checked set: every file listed and hashed, nothing else read, the config
consistent with the graphs, and a smoke inference before it counts as loaded (issues 11 and 12).

Every test tampers with a copy of the real demo bundle (assets/demo/bundle), re-computing the
manifest's hashes where the tamper would otherwise be caught by them, and expects a specific
one-line BundleError (never a traceback from onnxruntime, json or numpy). Zip tests check that a
refused archive leaves nothing in the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.logic.bundles import BundleOpenError, open_bundle
from core_model.runtime import BundleError, BundleFormatError, BundleIntegrityError, UnsafeArchiveError, load_bundle
from core_model.runtime.format import BUNDLE_FORMAT, GRAPH_IO, REQUIRED_FILES
from core_model.runtime.verify import ZipLimits, extract_zip

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "assets" / "demo" / "bundle"

pytestmark = pytest.mark.timeout(300)


# ---- helpers -----------------------------------------------------------------------------------
@pytest.fixture()
def bundle_copy(tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(DEMO, dst)
    return dst


def rehash(folder: Path, *, add: list[str] = ()) -> None:
    """Recompute the manifest's SHA-256 of every listed file (plus ``add``), as a forger would."""
    m = json.loads((folder / "manifest.json").read_text())
    for rel in list(m["files"]) + list(add):
        m["files"][rel] = hashlib.sha256((folder / rel).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(m))


def edit_config(folder: Path, **changes) -> None:
    c = json.loads((folder / "config.json").read_text())
    c.update(changes)
    (folder / "config.json").write_text(json.dumps(c))
    rehash(folder)


def zip_folder(src: Path, dst: Path, extra=None, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(dst, "w", compression=compression) as z:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(src).as_posix())
        if extra:
            extra(z)
    return dst


def cache_is_empty(cache: Path) -> bool:
    return not cache.exists() or not any(cache.iterdir())


def refused(path, exc_type=BundleError, match: str = "", **kwargs) -> BundleError:
    with pytest.raises(exc_type, match=match) as info:
        load_bundle(path, **kwargs)
    assert "\n" not in str(info.value), str(info.value)  # one line for the user
    return info.value


# ---- the demo bundle, intact -------------------------------------------------------------------
def test_the_demo_bundle_loads_after_its_smoke_inference(tmp_path):
    b = load_bundle(DEMO, threads=1, cache_root=tmp_path / "cache")
    assert b.classes == ["normal", "pneumonia", "covid19"]
    assert b.smoke_ms > 0  # the graphs ran once on the built-in test image before load_bundle returned
    a = b.analyze(np.full((64, 80), 128, np.uint8))
    assert set(a.probabilities) == set(b.classes)
    assert cache_is_empty(tmp_path / "cache")  # a folder is never copied into the cache


def test_the_demo_bundle_loads_from_a_zip_with_the_default_budgets(tmp_path):
    z = zip_folder(DEMO, tmp_path / "demo.zip")
    b = load_bundle(z, cache_root=tmp_path / "cache")
    assert b.classes == ["normal", "pneumonia", "covid19"]
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one folder, keyed by the archive's hash
    again = load_bundle(z, cache_root=tmp_path / "cache")
    assert again.folder == b.folder and again.content_hash == b.content_hash


def test_the_format_is_defined_once():
    # the exporter writes what the runtime reads (in a subprocess: the exporter imports torch)
    code = (
        "from core_model.export import bundle as e; from core_model.runtime import format as f\n"
        "assert e.BUNDLE_FORMAT is f.BUNDLE_FORMAT and e.BUNDLE_VERSION is f.BUNDLE_VERSION\n"
        "assert e.GRAPH_IO is f.GRAPH_IO\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((DEMO / "manifest.json").read_text())
    assert manifest["format"] == BUNDLE_FORMAT and set(REQUIRED_FILES) <= set(manifest["files"])


# ---- closed set --------------------------------------------------------------------------------
def test_an_unlisted_graph_file_is_refused_by_name(bundle_copy):
    shutil.copy(bundle_copy / "heatmap.onnx", bundle_copy / "extra.onnx")
    err = refused(bundle_copy, BundleIntegrityError, "extra.onnx is not listed in manifest.json")
    assert "remove it or re-export" in str(err)


def test_several_unlisted_files_are_all_named(bundle_copy):
    (bundle_copy / "tokenizer" / "vocab.txt").write_text("x")
    (bundle_copy / ".hidden").write_text("x")
    refused(bundle_copy, BundleIntegrityError, r"\.hidden, tokenizer/vocab.txt are not listed in manifest.json")


def test_a_link_inside_the_bundle_is_refused(bundle_copy, tmp_path):
    (tmp_path / "elsewhere.txt").write_text("secret")
    os.symlink(tmp_path / "elsewhere.txt", bundle_copy / "tokenizer" / "vocab.txt")
    refused(bundle_copy, BundleError, "tokenizer/vocab.txt is a link")


def test_a_config_graph_outside_the_bundle_is_refused(bundle_copy):
    shutil.copy(bundle_copy / "image.onnx", bundle_copy.parent / "outside.onnx")
    for where in ("../outside.onnx", str(bundle_copy.parent / "outside.onnx")):
        edit_config(bundle_copy, graphs={"image": where, "text": "text.onnx", "heatmap": "heatmap.onnx"})
        refused(bundle_copy, BundleFormatError, "points the image graph outside the bundle")


def test_a_config_graph_the_manifest_does_not_list_is_refused(bundle_copy):
    edit_config(bundle_copy, graphs={"image": "image.onnx", "text": "text.onnx", "heatmap": "MODEL_CARD.md.onnx"})
    refused(
        bundle_copy,
        BundleFormatError,
        "names 'MODEL_CARD.md.onnx' as the heatmap graph, but manifest.json does not list it",
    )


def test_a_manifest_entry_outside_the_bundle_is_refused(bundle_copy):
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["files"]["../escape.txt"] = "0" * 64
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    refused(bundle_copy, UnsafeArchiveError, "outside the bundle")


# ---- config against the graphs -----------------------------------------------------------------
def test_fewer_classes_than_the_graph_outputs_are_refused(bundle_copy):
    edit_config(bundle_copy, classes=["normal", "pneumonia"], thresholds={"normal": 0.5, "pneumonia": 0.5})
    refused(
        bundle_copy,
        BundleFormatError,
        r"declares 2 classes \(normal, pneumonia\) but the image graph outputs "
        r"3 probabilities",
    )


def test_more_classes_than_the_graph_outputs_are_refused(bundle_copy):
    edit_config(bundle_copy, classes=["normal", "pneumonia", "covid19", "effusion"])
    refused(bundle_copy, BundleFormatError, "declares 4 classes .* but the image graph outputs 3 probabilities")


def test_a_threshold_for_an_unknown_class_is_refused(bundle_copy):
    edit_config(bundle_copy, thresholds={"normal": 0.5, "edema": 0.5})
    refused(bundle_copy, BundleFormatError, "threshold for 'edema', which is not one of its classes")


def test_text_graph_swapped_for_the_heatmap_graph_is_refused(bundle_copy):
    shutil.copy(bundle_copy / "heatmap.onnx", bundle_copy / "text.onnx")
    rehash(bundle_copy)
    refused(
        bundle_copy,
        BundleFormatError,
        "the text graph \\(text.onnx\\) takes inputs token_embeddings, "
        "word_weights, patch_tokens, but a text graph takes input_ids, "
        "attention_mask",
    )


def test_heatmap_graph_swapped_for_the_text_graph_is_refused(bundle_copy):
    shutil.copy(bundle_copy / "text.onnx", bundle_copy / "heatmap.onnx")
    rehash(bundle_copy)
    refused(bundle_copy, BundleFormatError, "the heatmap graph \\(heatmap.onnx\\) takes inputs input_ids")


def test_an_embedding_width_that_disagrees_is_refused(bundle_copy):
    edit_config(bundle_copy, embedding_dim=64)
    refused(bundle_copy, BundleFormatError, "embedding widths disagree .*config.json embedding_dim: 64")


def test_a_patch_grid_that_disagrees_is_refused(bundle_copy):
    edit_config(bundle_copy, patch_grid=[4, 4])
    refused(bundle_copy, BundleFormatError, "patch counts disagree")


def test_an_input_size_that_disagrees_is_refused(bundle_copy):
    c = json.loads((bundle_copy / "config.json").read_text())
    edit_config(bundle_copy, preprocess={**c["preprocess"], "size": 256})
    refused(bundle_copy, BundleFormatError, "3x256x256 images")


def test_a_nonsense_config_value_is_refused(bundle_copy):
    c = json.loads((bundle_copy / "config.json").read_text())
    edit_config(bundle_copy, preprocess={**c["preprocess"], "size": "224"})
    refused(bundle_copy, BundleFormatError, "preprocess.size must be a whole number")
    edit_config(bundle_copy, preprocess=c["preprocess"], classes="normal")
    refused(bundle_copy, BundleFormatError, "'classes' must be a list")


# ---- graphs that cannot run --------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.001, 0.5, 0.999])
def test_a_truncated_image_graph_is_refused(bundle_copy, keep):
    onnx = bundle_copy / "image.onnx"
    data = onnx.read_bytes()
    onnx.write_bytes(data[: int(len(data) * keep)])
    rehash(bundle_copy)  # the hash matches: only loading it can tell
    err = refused(bundle_copy, BundleFormatError, r"the image graph \(image.onnx\) cannot be loaded: it is damaged")
    assert str(bundle_copy / "image.onnx") not in str(err)


def test_a_graph_that_gives_nan_is_refused(bundle_copy):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    model = onnx.load(str(bundle_copy / "image.onnx"))
    big = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(big).copy()
    arr[...] = np.nan
    big.CopyFrom(numpy_helper.from_array(arr, big.name))
    onnx.save(model, str(bundle_copy / "image.onnx"))
    rehash(bundle_copy)
    refused(bundle_copy, BundleFormatError, "non-finite .* on the built-in test image")


# ---- JSON with limits --------------------------------------------------------------------------
def test_a_deeply_nested_manifest_is_refused_without_recursion_error(bundle_copy):
    (bundle_copy / "manifest.json").write_text('{"files": ' + "[" * 200_000 + "]" * 200_000 + "}")
    refused(bundle_copy, BundleFormatError, "manifest.json is nested 200001 levels deep")


def test_a_deeply_nested_config_and_report_line_are_refused(bundle_copy):
    good = (bundle_copy / "config.json").read_text()
    (bundle_copy / "config.json").write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    rehash(bundle_copy)
    refused(bundle_copy, BundleFormatError, "config.json is nested")
    (bundle_copy / "config.json").write_text(good)
    with open(bundle_copy / "reports" / "reports.jsonl", "a") as f:
        f.write('{"id": "x", "text": ' + "[" * 50_000 + "]" * 50_000 + "}\n")
    rehash(bundle_copy)
    refused(bundle_copy, BundleFormatError, "reports.jsonl line 1601 is nested")


def test_a_report_line_that_is_not_a_record_is_refused(bundle_copy):
    with open(bundle_copy / "reports" / "reports.jsonl", "a") as f:
        f.write('["x", "y"]\n')
    rehash(bundle_copy)
    refused(bundle_copy, BundleFormatError, "reports.jsonl line 1601 is not a report record")


def test_an_oversized_json_file_is_refused(bundle_copy):
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["padding"] = " " * (9 << 20)
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    refused(bundle_copy, BundleFormatError, "manifest.json is larger than 8 MiB")
    shutil.copy(DEMO / "manifest.json", bundle_copy / "manifest.json")
    card = json.loads((bundle_copy / "model_card.json").read_text())
    card["padding"] = "x" * (9 << 20)
    (bundle_copy / "model_card.json").write_text(json.dumps(card))
    rehash(bundle_copy)
    refused(bundle_copy, BundleFormatError, "model_card.json is larger than 8 MiB")


# ---- zip budgets and cleanup -------------------------------------------------------------------
def _forge_sizes(zpath: Path, member: str, size: int) -> None:
    """Rewrite ``member``'s declared uncompressed size in both its local header and the central
    directory (a forged archive: the stream is much larger than declared)."""
    data = bytearray(zpath.read_bytes())
    name = member.encode()
    pos = 0
    while True:
        local = data.find(b"PK\x03\x04", pos)
        if local < 0:
            break
        n = struct.unpack_from("<H", data, local + 26)[0]
        if bytes(data[local + 30 : local + 30 + n]) == name:
            struct.pack_into("<I", data, local + 22, size)
        pos = local + 4
    pos = 0
    while True:
        central = data.find(b"PK\x01\x02", pos)
        if central < 0:
            break
        n = struct.unpack_from("<H", data, central + 28)[0]
        if bytes(data[central + 46 : central + 46 + n]) == name:
            struct.pack_into("<I", data, central + 24, size)
        pos = central + 4
    zpath.write_bytes(bytes(data))


def test_a_zip_whose_declared_sizes_lie_is_refused_and_cleaned_up(bundle_copy, tmp_path):
    (bundle_copy / "reports" / "padding.bin").write_bytes(os.urandom(3 << 20))
    rehash(bundle_copy, add=["reports/padding.bin"])
    z = zip_folder(bundle_copy, tmp_path / "forged.zip")
    _forge_sizes(z, "reports/padding.bin", 1000)  # declares 1000 bytes, streams 3 MiB
    assert zipfile.ZipFile(z).getinfo("reports/padding.bin").file_size == 1000
    cache = tmp_path / "cache"
    refused(z, UnsafeArchiveError, "padding.bin", cache_root=cache)
    assert cache_is_empty(cache)


def test_a_zip_with_a_huge_compression_ratio_is_refused_and_cleaned_up(bundle_copy, tmp_path):
    (bundle_copy / "reports" / "zeros.bin").write_bytes(bytes(64 << 20))  # 64 MiB of zeros: ratio ~1000:1
    rehash(bundle_copy, add=["reports/zeros.bin"])
    z = zip_folder(bundle_copy, tmp_path / "bomb.zip")
    cache = tmp_path / "cache"
    refused(z, UnsafeArchiveError, "compression ratio over 100:1", cache_root=cache)
    assert cache_is_empty(cache)


def test_a_zip_over_the_budgets_is_refused(tmp_path):
    z = zip_folder(DEMO, tmp_path / "demo.zip")
    cache = tmp_path / "cache"
    with pytest.raises(UnsafeArchiveError, match=r"unpacks to \d+ bytes \(at most 10000000\)"):
        extract_zip(z, cache, limits=ZipLimits(total_bytes=10_000_000, member_bytes=1 << 30))
    assert cache_is_empty(cache)
    with pytest.raises(UnsafeArchiveError, match="'text.onnx' is implausibly large"):
        extract_zip(z, cache, limits=ZipLimits(member_bytes=20_000_000))
    assert cache_is_empty(cache)


def test_a_zip_whose_stream_is_damaged_is_refused_and_cleaned_up(tmp_path):
    z = zip_folder(DEMO, tmp_path / "demo.zip")
    data = bytearray(z.read_bytes())
    info = zipfile.ZipFile(z).getinfo("text.onnx")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.compress_size // 2 : start + info.compress_size // 2 + 64] = os.urandom(64)
    z.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    refused(z, UnsafeArchiveError, "damaged and cannot be unpacked", cache_root=cache)
    assert cache_is_empty(cache)


def test_a_zip_refused_after_unpacking_leaves_nothing_in_the_cache(bundle_copy, tmp_path):
    onnx = bundle_copy / "image.onnx"
    onnx.write_bytes(onnx.read_bytes()[:100_000])
    rehash(bundle_copy)
    cache = tmp_path / "cache"
    refused(
        zip_folder(bundle_copy, tmp_path / "truncated.zip"), BundleFormatError, "cannot be loaded", cache_root=cache
    )
    assert cache_is_empty(cache)
    shutil.copy(DEMO / "image.onnx", onnx)
    (bundle_copy / "extra.onnx").write_bytes(b"x")
    refused(
        zip_folder(bundle_copy, tmp_path / "extra.zip"),
        BundleIntegrityError,
        "extra.onnx is not listed",
        cache_root=cache,
    )
    assert cache_is_empty(cache)


def test_a_zip_with_a_name_twice_is_refused(tmp_path):
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile itself warns while writing it
        z = zip_folder(DEMO, tmp_path / "twice.zip", lambda zf: zf.writestr("config.json", "{}"))
    cache = tmp_path / "cache"
    refused(z, UnsafeArchiveError, "holds 'config.json' twice", cache_root=cache)
    assert cache_is_empty(cache)


# ---- the user sees one line ------------------------------------------------------------------
def test_the_app_load_path_gives_one_line(bundle_copy):
    shutil.copy(bundle_copy / "heatmap.onnx", bundle_copy / "text.onnx")
    rehash(bundle_copy)
    with pytest.raises(BundleOpenError) as info:
        open_bundle(bundle_copy, threads=1)
    text = str(info.value)
    assert "\n" not in text and "bundle" in text and "text graph" in text


def test_predict_with_a_bad_bundle_prints_one_line_and_exits_2(bundle_copy):
    (bundle_copy / "manifest.json").write_text('{"files": ' + "[" * 100_000 + "]" * 100_000 + "}")
    proc = subprocess.run(
        [sys.executable, "-m", "app.main", "predict", str(DEMO.parent / "nothing.png"), "--bundle", str(bundle_copy)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "manifest.json is nested" in lines[0]


def test_graph_io_names_are_those_the_exporter_writes():
    import onnxruntime as ort

    for name, (inputs, outputs) in GRAPH_IO.items():
        s = ort.InferenceSession(str(DEMO / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in s.get_inputs()] == list(inputs)
        assert [o.name for o in s.get_outputs()][: len(outputs)] == list(outputs)


def test_a_half_unpacked_folder_left_by_a_killed_process_is_removed(tmp_path):
    cache = tmp_path / "cache"
    stale, fresh = cache / ".unpack-killed", cache / ".unpack-running"
    for d in (stale, fresh):
        d.mkdir(parents=True)
        (d / "text.onnx").write_bytes(b"x" * 1000)
    old = stale.stat().st_mtime - 2 * 24 * 3600
    os.utime(stale, (old, old))
    b = load_bundle(zip_folder(DEMO, tmp_path / "demo.zip"), cache_root=cache)
    assert not stale.exists() and fresh.exists()  # another process may still be writing the recent one
    assert b.classes == ["normal", "pneumonia", "covid19"]


# ---- the depth scanner -------------------------------------------------------------------------
def _depth(v) -> int:
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    return 0


def test_the_depth_scan_matches_the_parsed_depth():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from core_model.runtime.verify import json_depth

    scalars = st.none() | st.booleans() | st.integers() | st.text(alphabet='ab[]{}"\\\n :,é', max_size=8)
    values = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='k[{"\\}]', max_size=4), inner, max_size=3)
        ),
        max_leaves=20,
    )

    @settings(max_examples=300, deadline=None)
    @given(values)
    def check(v):
        assert json_depth(json.dumps(v).encode()) == _depth(v)
        assert json_depth(json.dumps(v, ensure_ascii=False).encode()) == _depth(v)

    check()


def _forge_compressed_size(zpath: Path, member: str, size: int) -> None:
    """Rewrite ``member``'s declared compressed size (local header and central directory)."""
    data = bytearray(zpath.read_bytes())
    name = member.encode()
    for sig, name_len_at, name_at, field_at in ((b"PK\x03\x04", 26, 30, 18), (b"PK\x01\x02", 28, 46, 20)):
        pos = 0
        while (at := data.find(sig, pos)) >= 0:
            n = struct.unpack_from("<H", data, at + name_len_at)[0]
            if bytes(data[at + name_at : at + name_at + n]) == name:
                struct.pack_into("<I", data, at + field_at, size)
            pos = at + 4
    zpath.write_bytes(bytes(data))


def test_a_bomb_whose_declared_compressed_size_lies_is_caught_while_streaming(bundle_copy, tmp_path):
    (bundle_copy / "reports" / "zeros.bin").write_bytes(bytes(64 << 20))
    rehash(bundle_copy, add=["reports/zeros.bin"])
    z = zip_folder(bundle_copy, tmp_path / "bomb.zip")
    _forge_compressed_size(z, "reports/zeros.bin", 64 << 20)  # declares no compression at all
    info = zipfile.ZipFile(z).getinfo("reports/zeros.bin")
    assert info.compress_size == info.file_size  # the declared sizes alone pass every budget
    cache = tmp_path / "cache"
    refused(z, UnsafeArchiveError, "zeros.bin' unpacks at a compression ratio over 100:1", cache_root=cache)
    assert cache_is_empty(cache)


def test_a_broken_domain_section_refuses_the_load_not_the_first_analysis(bundle_copy):
    c = json.loads((bundle_copy / "config.json").read_text())
    if not isinstance(c.get("domain"), dict):
        pytest.skip("this demo bundle records no training domain")
    edit_config(bundle_copy, domain={**c["domain"], "views": -1})
    refused(bundle_copy, BundleFormatError, "domain")
