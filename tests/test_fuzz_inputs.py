"""Fuzzing the three ways an untrusted file enters the app: ``import`` (the importer, header
checks and ``--verify`` decode), ``render`` (what the viewer shows) and the runtime's
``analyze`` on the demo bundle (what ``predict`` does).

Hypothesis flips bytes in, and truncates, a real DICOM and DICOMs written here (native 12-bit
with rescale and windows, MONOCHROME1, RLE, JPEG baseline, JPEG 2000) and a real PNG. Only two
outcomes are allowed for every mutant: accepted, or refused with a :class:`UserError` /
:class:`ImageReadError` that carries a specific reason (never ``internal_error``, never another
exception, never a traceback). Derandomized, no example database: the same few hundred
examples run every time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import uid

from app.library import open_library
from app.library.importer import REASONS, Importer
from app.logic.image import display_file
from core_model.errors import UserError
from core_model.imaging.errors import ImageReadError
from tests.imaging.builders import REAL_DCM, REAL_PNG, gradient, write

ROOT = Path(__file__).resolve().parents[1]
DEMO_BUNDLE = ROOT / "assets" / "demo" / "bundle"

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class _Seeds(dict):
    def __repr__(self) -> str:  # keep hypothesis' report of a failing example readable
        return f"<{len(self)} seed files>"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("seeds")
    px12 = gradient(48, 40, bits=12)
    out = {
        "native12": write(
            d / "n.dcm", px12, rescale_slope=2.0, rescale_intercept=-1024.0, windows=[(1000.0, 2000.0), (0.0, 400.0)]
        ),
        "mono1": write(d / "m1.dcm", px12, photometric="MONOCHROME1"),
        "rle": write(d / "r.dcm", px12, uid.RLELossless),
        "jpeg": write(d / "j.dcm", gradient(48, 40, bits=8), uid.JPEGBaseline8Bit, bits_stored=8),
        "j2k": write(d / "k.dcm", px12, uid.JPEG2000Lossless),
    }
    data = _Seeds({k: Path(v).read_bytes() for k, v in out.items()})
    if REAL_DCM.exists():
        data["real"] = REAL_DCM.read_bytes()
    return data


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    library = open_library(tmp_path_factory.mktemp("fuzzlib") / "library.db")
    yield library
    library.close()


@pytest.fixture(scope="module")
def bundle():
    from core_model.runtime import load_bundle

    return load_bundle(DEMO_BUNDLE)


def mutate(data: bytes, flips: list[tuple[float, int]], cut: float | None, header_bias: bool) -> bytes:
    buf = bytearray(data)
    # most of a DICOM's bytes are pixels; half the examples aim at the header (first 2 KiB)
    span = min(len(buf), 2048) if header_bias else len(buf)
    for where, value in flips:
        buf[int(where * (span - 1))] = value
    if cut is not None:
        buf = buf[: int(cut * len(buf))]
    return bytes(buf)


mutations = st.tuples(
    st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=0, max_size=8),
    st.one_of(st.none(), st.floats(0, 1)),
    st.booleans(),
)


def specific(exc: BaseException) -> None:
    """A refusal a user can act on: a UserError with a one-line message that is not the
    importer's 'unexpected ... please report' text."""
    assert isinstance(exc, UserError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert text and "\n" not in text and "unexpected" not in text and "Traceback" not in text, text
    if isinstance(exc, ImageReadError):
        assert exc.reason in REASONS or exc.reason == "bad_preset", exc.reason


def check_all_three(path: Path, lib, bundle) -> None:
    summary = Importer(lib, mode="copy", verify=True, fsync=False).run([path])
    for rej in summary.rejected:
        assert rej.reason in REASONS and rej.reason != "internal_error", (rej.reason, rej.message)
        assert rej.message and "\n" not in rej.message
    assert summary.imported + summary.duplicates + len(summary.rejected) == 1
    try:
        shown = display_file(path)
        assert shown.pixels.dtype == np.uint8 and shown.pixels.ndim == 2 and shown.pixels.size > 0
    except Exception as exc:
        specific(exc)
    try:
        a = bundle.analyze(path)
        assert all(np.isfinite(v) for v in a.probabilities.values())
    except Exception as exc:
        specific(exc)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", ["native12", "mono1", "rle", "jpeg", "j2k", "real"])
@FUZZ
@given(m=mutations)
def test_mutated_dicoms_are_accepted_or_refused_with_a_reason(seed, m, seeds, lib, bundle, tmp_path_factory):
    if seed not in seeds:
        pytest.skip("real sample DICOM not available")
    path = tmp_path_factory.mktemp("m") / "mutant.dcm"
    path.write_bytes(mutate(seeds[seed], *m))
    check_all_three(path, lib, bundle)


@pytest.mark.timeout(300)
@settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(m=mutations)
def test_mutated_pngs_are_accepted_or_refused_with_a_reason(m, lib, bundle, tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "mutant.png"
    path.write_bytes(mutate(REAL_PNG.read_bytes(), *m))
    check_all_three(path, lib, bundle)
