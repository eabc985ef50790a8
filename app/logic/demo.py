"""Where the demo studies and the demo model live (``adaptor-review --demo``; built by
``adaptor-train demo``, committed under ``assets/demo/``). Qt-free."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core_model.errors import UserError

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "demo"


@dataclass(frozen=True)
class DemoAssets:
    studies: Path  # a folder of DICOM studies (with their reports) to import
    bundle: Path  # the demo model bundle (folder or .zip)


def demo_assets(root: str | os.PathLike | None = None) -> DemoAssets:
    """The demo studies and bundle, or a UserError saying what is missing. ``root`` defaults to
    ``$CXR_ADAPTOR_DEMO`` or ``assets/demo`` (PyInstaller builds set the variable)."""
    root = Path(root or os.environ.get("CXR_ADAPTOR_DEMO") or ASSETS)
    studies = root / "studies"
    bundles = [p for p in (root / "bundle", root / "bundle.zip") if p.exists()]
    if not studies.is_dir() or not bundles:
        raise UserError(
            f"the demo assets are not there ({root} needs studies/ and bundle/ or bundle.zip); "
            "build them with 'adaptor-train demo' (see the README)"
        )
    return DemoAssets(studies, bundles[0])
