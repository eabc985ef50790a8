"""Which package decodes which DICOM transfer syntax, and a guard for importing GDCM.

Import this module before pydicom (``core_model.imaging.dicom`` and ``dicom_write`` do): the
``python-gdcm`` wrapper runs ``import dl`` when it loads, and a folder named ``dl`` in the
current directory (found through ``sys.path[0] == ''`` under ``python -c`` / ``python -m``)
makes that import succeed with an empty namespace package, after which ``import gdcm`` raises
``AttributeError``. pydicom imports its gdcm plugin while pydicom itself is imported, so that
would break ``import pydicom`` altogether. We load gdcm once with ``dl`` hidden, which is what
happens anyway on Python 3 (there is no ``dl`` module), so behaviour is otherwise unchanged.

The table below is the single source for the user-facing "install X" messages and for
``docs/DECODERS.md`` (a test checks that the document names every package listed here).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any


def ensure_gdcm_importable() -> bool:
    """Import ``gdcm`` with the ``dl`` / ``DLFCN`` names hidden; True when gdcm is usable.

    When gdcm cannot be imported at all, ``sys.modules['gdcm']`` is left unset so pydicom
    reports the plugin as unavailable (its own ``ImportError`` path)."""
    if "gdcm" in sys.modules:
        return sys.modules["gdcm"] is not None
    saved: dict[str, Any] = {name: sys.modules.get(name, _MISSING) for name in ("dl", "DLFCN")}
    try:
        for name in saved:
            sys.modules[name] = None  # type: ignore[assignment]  # makes `import dl` raise ImportError
        try:
            import gdcm  # noqa: F401
        except Exception:  # not installed, or a broken build: pydicom will name the package
            sys.modules.pop("gdcm", None)
            sys.modules["gdcm"] = None  # type: ignore[assignment]  # pydicom sees ImportError
            return False
        return True
    finally:
        for name, value in saved.items():
            if value is _MISSING:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value


_MISSING = object()


@dataclass(frozen=True)
class DecoderInfo:
    """How the app decodes one transfer syntax."""

    uid: str
    name: str
    packages: tuple[str, ...]  # pip packages that provide a decoder, preferred first
    builtin: bool = False  # decoded by pydicom + numpy (or the standard library) alone


# Transfer syntaxes a chest X-ray library meets in practice. The first package is the one the
# app's install ships for it; pylibjpeg-libjpeg (GPL-3.0) is deliberately never suggested.
DECODERS: tuple[DecoderInfo, ...] = (
    DecoderInfo("1.2.840.10008.1.2", "Implicit VR Little Endian", ("pydicom",), builtin=True),
    DecoderInfo("1.2.840.10008.1.2.1", "Explicit VR Little Endian", ("pydicom",), builtin=True),
    DecoderInfo("1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian", ("pydicom",), builtin=True),
    DecoderInfo("1.2.840.10008.1.2.2", "Explicit VR Big Endian", ("pydicom",), builtin=True),
    DecoderInfo("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)", ("pillow", "python-gdcm")),
    DecoderInfo("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 and 4)", ("python-gdcm", "pillow")),
    DecoderInfo("1.2.840.10008.1.2.4.57", "JPEG Lossless (Process 14)", ("python-gdcm",)),
    DecoderInfo("1.2.840.10008.1.2.4.70", "JPEG Lossless SV1 (Process 14, Selection Value 1)", ("python-gdcm",)),
    DecoderInfo("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless", ("pyjpegls", "python-gdcm")),
    DecoderInfo("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless", ("pyjpegls", "python-gdcm")),
    DecoderInfo("1.2.840.10008.1.2.4.90", "JPEG 2000 Lossless", ("pylibjpeg-openjpeg", "python-gdcm")),
    DecoderInfo("1.2.840.10008.1.2.4.91", "JPEG 2000", ("pylibjpeg-openjpeg", "python-gdcm")),
    DecoderInfo("1.2.840.10008.1.2.4.201", "HTJ2K Lossless", ("pylibjpeg-openjpeg",)),
    DecoderInfo("1.2.840.10008.1.2.4.202", "HTJ2K Lossless RPCL", ("pylibjpeg-openjpeg",)),
    DecoderInfo("1.2.840.10008.1.2.4.203", "HTJ2K", ("pylibjpeg-openjpeg",)),
    DecoderInfo("1.2.840.10008.1.2.5", "RLE Lossless", ("pylibjpeg-rle", "pydicom"), builtin=True),
)

_BY_UID = {d.uid: d for d in DECODERS}

# pydicom plugin label -> pip package, for syntaxes not in the table above.
PLUGIN_PACKAGES = {
    "gdcm": "python-gdcm",
    "pylibjpeg": "pylibjpeg-openjpeg",
    "pyjpegls": "pyjpegls",
    "pillow": "pillow",
    "pydicom": "pydicom",
}


def decoder_info(uid: str) -> DecoderInfo | None:
    return _BY_UID.get(str(uid))


def missing_decoder_message(uid: str) -> str | None:
    """None when pixel data in ``uid`` can be decoded here; else a one-line message naming the
    package to install. Cheap (no pixel data involved), cached by pydicom per syntax."""
    from pydicom.uid import UID

    uid = UID(str(uid))
    if not uid.is_compressed and uid != "1.2.840.10008.1.2.1.99":
        return None
    info = decoder_info(uid)
    label = f"{info.name if info else uid.name} ({uid})"
    try:
        from pydicom.pixels import get_decoder

        decoder = get_decoder(uid)
    except Exception:
        return f"no decoder exists for transfer syntax {label}"
    if decoder.is_available:
        return None
    if info is not None:
        wanted = _install_hint(info.packages[0])
        if len(info.packages) > 1:
            wanted += f" (or {_install_hint(info.packages[1])})"
    else:
        wanted = ", ".join(sorted({PLUGIN_PACKAGES.get(n.split(" ")[0], n) for n in decoder.missing_dependencies}))
    return (
        f"transfer syntax {label} needs a decoder that is not installed: install {wanted or 'a pydicom pixel plugin'}"
    )


def _install_hint(package: str) -> str:
    # pydicom's pylibjpeg plugin needs the pylibjpeg front end as well as the codec package.
    if package.startswith("pylibjpeg-") and package != "pylibjpeg-rle":
        return f"{package} with pylibjpeg"
    return package
