"""Session fixtures shared by the suites.

``tiny_bundle``: a real model bundle exported by ``adaptor-train export`` from a small phantom
pipeline (phantoms -> precompute -> pretrain -> finetune-cls -> finetune-seg -> export), built
in a subprocess so the test process itself never imports torch through it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def build_tiny_pipeline(root: Path, n: int = 160) -> Path:
    """Write the configs of a tiny phantom pipeline under ``root`` and run the bundle recipe."""
    root.mkdir(parents=True, exist_ok=True)
    data = f"{{kind: phantoms, path: {root / 'phantoms'}, n: {n}, seed: 3, dicom: some}}"
    (root / "pretrain.yaml").write_text(
        textwrap.dedent(f"""\
        data: {data}
        encoders: {{image: tiny-vit, text: tiny-bert}}
        cache: {{patch_pool: 2, batch_size: 16, workers: 0}}
        adaptor: {{dim: 64, heads: 4, ffn_dim: 128, cross_heads: 4}}
        loss: {{local_candidates: 4}}
        train: {{epochs: 3, batch_size: 32, lr: 2.0e-3}}
        """)
    )
    common = f"pretrained: {root / 'pretrain'}\npretrain_config: {root / 'pretrain.yaml'}\n"
    (root / "cls.yaml").write_text(
        common
        + textwrap.dedent(f"""\
        data: {{kind: phantoms, path: {root / "phantoms"}, n: {n}, seed: 3, dicom: some,
               classes: [normal, pneumonia, covid19], task: multilabel}}
        train: {{epochs: 4, batch_size: 32}}
        eval: {{bootstrap: 50}}
        cache: {{workers: 0}}
        """)
    )
    (root / "seg.yaml").write_text(
        common
        + textwrap.dedent(f"""\
        data: {{kind: phantoms, path: {root / "phantoms"}, n: {n}, seed: 3, dicom: some, mask_label: pneumothorax}}
        head: {{kind: light}}
        cache: {{patch_pool: 2, workers: 0}}
        train: {{epochs: 2, batch_size: 16}}
        eval: {{examples: 4}}
        """)
    )
    (root / "bundle.yaml").write_text(
        textwrap.dedent(f"""\
        classification: {{config: {root / "cls.yaml"}, out: {root / "cls"}}}
        segmentation: {{config: {root / "seg.yaml"}, out: {root / "seg"}}}
        """)
    )
    bundle = root / "bundle"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "training_cli.main",
            "export",
            "--config",
            str(root / "bundle.yaml"),
            "--out",
            str(bundle),
            "--no-progress",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building the tiny bundle failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return bundle


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """Folder with phantoms/, pretrain/, cls/, seg/ and bundle/ of a tiny real pipeline."""
    root = tmp_path_factory.mktemp("pipeline")
    build_tiny_pipeline(root)
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tiny_pipeline) -> Path:
    return tiny_pipeline / "bundle"
