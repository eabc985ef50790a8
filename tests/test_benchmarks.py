"""Benchmarks end with target lines in one format a script can read (issue 15). A real --quick run
of a benchmark (tiny input; no timing is asserted, only that every target line parses), and the
format itself round-trips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._targets import format_target, parse

ROOT = Path(__file__).resolve().parents[1]


def test_a_target_line_round_trips():
    line = format_target("index_top10_1m", 0.731, "ms", baseline=81.5, goal="<= 2 ms", met=True)
    assert line == "target index_top10_1m: ours 0.731 ms, baseline 81.5 ms, ratio 0.00897, goal <= 2 ms: met"
    (t,) = parse("some table\n" + line + "\nmore")
    assert (t.name, t.ours, t.unit, t.baseline, t.goal, t.met) == ("index_top10_1m", 0.731, "ms", 81.5, "<= 2 ms", True)
    (t,) = parse(format_target("cold_start", 1234567.0, "s", goal="< 1 s", met=False))
    assert t.baseline is None and t.ratio is None and t.ours == pytest.approx(1234567, rel=1e-2) and not t.met


@pytest.mark.timeout(300)
def test_the_import_benchmark_quick_run_prints_parseable_targets(tmp_path):
    proc = subprocess.run(
        [sys.executable, "benchmarks/library_import.py", "--quick", "--workdir", str(tmp_path / "w")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("target ")]
    targets = parse(proc.stdout)
    assert len(targets) == len(lines) == 3  # every target line parses
    names = {t.name for t in targets}
    assert names == {"import_vs_bare_all_cores_300", "import_vs_naive_300", "search_5000_slowest_median"}
    assert all(t.ours > 0 and t.baseline and t.baseline > 0 for t in targets)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_analysis_benchmark_quick_run_prints_parseable_targets():
    # builds a ViT-S/14 bundle (torch export) and analyses small and real-sized DICOMs written
    # by the repo's writer: every issue-15 analysis target is printed, in the one format
    proc = subprocess.run(
        [sys.executable, "benchmarks/runtime_latency.py", "--only", "analysis", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("target ")]
    targets = parse(proc.stdout)
    assert len(targets) == len(lines) == 6
    assert {t.name for t in targets} == {
        "analyze_small_uncompressed_vs_forward",
        "analyze_small_jpeg_lossless_vs_forward",
        "analyze_real_size_uncompressed_vs_forward",
        "analyze_real_size_jpeg_lossless_vs_forward",
        "analyze_vs_torch_eager",
        "heatmap_after_analysis",
    }
    assert all(t.ours > 0 for t in targets) and "bare image-graph forward" in proc.stdout
