"""Opening a model bundle for the app and the headless commands, with one clear message when it
cannot be used (the library stays usable without a model).

The runtime (:mod:`core_model.runtime`, numpy + onnxruntime + tokenizers) is imported only
here and only when a bundle is opened, so starting the app does not pay for onnxruntime.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from core_model.errors import UserError

log = logging.getLogger(__name__)


class BundleOpenError(UserError):
    """The bundle cannot be used; the message says why (one line)."""


def gui_threads() -> int:
    """Inference threads for the desktop app: one core fewer than the machine has, so the GUI
    thread always finds a free core (on 2 cores this also made a batch 2x faster than letting
    onnxruntime spin a thread per core beside the app's own threads). $CXR_ADAPTOR_THREADS
    overrides it."""
    env = os.environ.get("CXR_ADAPTOR_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 2) - 1)


def open_bundle(path: str | os.PathLike, threads: int | None = None):
    """Load a bundle folder or .zip with :func:`core_model.runtime.load_bundle` (``threads``:
    onnxruntime threads per session; None = the runtime's default, every core).

    Raises :class:`BundleOpenError` (a UserError) with a message for the user: the path is
    missing, the runtime is not installed, or the runtime's own ``BundleError`` text (format
    version, checksum, missing file, ...)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BundleOpenError(f"no model bundle at {path}")
    try:
        from core_model.runtime import load_bundle
    except ImportError as exc:  # the runtime or one of its packages (onnxruntime, tokenizers)
        missing = getattr(exc, "name", None) or str(exc)
        raise BundleOpenError(
            f"{path.name}: the model runtime cannot be loaded in this installation ({missing} missing)"
        ) from exc
    try:
        return load_bundle(path, threads=0 if threads is None else int(threads))
    except UserError as exc:
        text = str(exc)
        raise BundleOpenError(text if path.name in text else f"{path.name}: {text}") from exc
    except MemoryError as exc:
        raise BundleOpenError(f"{path.name}: not enough memory to load the model") from exc
    except Exception as exc:  # a broken file the runtime did not classify
        log.debug("loading bundle %s failed", path, exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise BundleOpenError(
            f"{path.name}: not a usable model bundle ({type(exc).__name__}" + (f": {first}" if first else "") + ")"
        ) from exc


def describe(bundle) -> str:
    """One line: id, version, classes, segmentation head."""
    classes = ", ".join(bundle.classes or [])
    mask = bundle.mask_label
    text = f"{bundle.id} {bundle.version}"
    if classes:
        text += f" - classes: {classes}"
    if mask:
        text += f"; segmentation: {mask}"
    return text
