"""DICOMweb retrieve speed: studies/s from a local Orthanc into the library, ours vs a plain
sequential WADO-RS loop, measured in the same run on the same studies. Research use only.

    .venv/bin/python benchmarks/pacs_retrieve.py [--studies 200] [--size 512] [--workers 4]

Needs the Debian packages orthanc + orthanc-dicomweb (tests/pacs/orthanc.py starts Orthanc on
127.0.0.1 with a free port and a temporary folder, and stops it at the end).

  ours      app.pacs.retrieve_studies into a fresh library: WADO-RS requests pipelined over a
            bounded thread pool (``--workers`` in flight), each study streamed to files and
            checked, complete studies imported (copy mode, synced) while the transfers go on
  baseline  a plain sequential loop over the studies with dicomweb-client's
            ``retrieve_study`` (stored transfer syntax, identity encoding like ours), each
            instance written to a file, then the same importer on those files, into a fresh
            library

Both end with every study in a library (studies/s = studies / seconds until then).

Both read the same Orthanc in the same run (baseline first, then ours: Orthanc's caches are
warm for both, since the upload read every study once). Phantom studies: one ``--size``
square 12-bit DX image each (uncompressed), like a downsampled chest radiograph.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core_model.imaging.dicom_write import DicomSpec, write_dicom  # noqa: E402


def make_studies(folder: Path, n: int, size: int) -> list[Path]:
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    base = 2600 - 1500 * (np.exp(-(((xx - 0.3) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2)))
    files = []
    for i in range(n):
        pixels = np.clip(base + rng.normal(0, 40, base.shape), 0, 4095).astype(np.uint16)
        spec = DicomSpec(
            patient_name=f"BENCH^PHANTOM{i:04d}",
            patient_id=f"BENCH-{i:04d}",
            study_uid=generate_uid(),
            study_date="20240101",
            accession_number=f"B{i:06d}",
        )
        files.append(write_dicom(folder / f"study{i:04d}.dcm", pixels, spec))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)

    from benchmarks._targets import print_target
    from tests.pacs.orthanc import OrthancServer, missing_reason

    reason = missing_reason()
    if reason:
        print(f"pacs_retrieve: skipped: {reason}")
        return 0
    from dicomweb_client.api import DICOMwebClient

    from app.library import open_library
    from app.library.importer import Importer
    from app.pacs import PacsClient, ServerRecord, StudyQuery, retrieve_studies

    tmp = Path(tempfile.mkdtemp(prefix="pacs-bench-"))
    try:
        files = make_studies(tmp / "src", args.studies, args.size)
        with OrthancServer(tmp / "orthanc") as orthanc:
            started = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(orthanc.upload, files))
            print(
                f"uploaded {len(files)} studies ({files[0].stat().st_size / 1e6:.2f} MB each) in {time.monotonic() - started:.1f} s"
            )
            pacs = PacsClient(ServerRecord("bench", orthanc.dicomweb_url))
            uids = [h.study_uid for h in pacs.search_studies(StudyQuery(patient_name="BENCH", limit=args.studies + 10))]
            assert len(uids) == args.studies, f"QIDO-RS found {len(uids)} of {args.studies} studies"

            # baseline: one plain sequential WADO-RS loop, then the same import
            out = tmp / "baseline"
            out.mkdir()
            plain = DICOMwebClient(orthanc.dicomweb_url)
            plain._session.headers["Accept-Encoding"] = "identity"  # as ours (gzip: see below)
            started = time.monotonic()
            written = []
            for uid in uids:
                for ds in plain.retrieve_study(uid, media_types=(("application/dicom", "*"),)):
                    written.append(out / f"{len(written):06d}.dcm")
                    ds.save_as(written[-1])
            loop_s = time.monotonic() - started
            base_library = open_library(tmp / "baseline.db")
            Importer(base_library, mode="copy").run(written)
            base_library.close()
            base_s = time.monotonic() - started
            baseline = len(uids) / base_s
            print(
                f"baseline  sequential dicomweb-client loop: {len(written)} instances in {loop_s:.2f} s "
                f"({len(uids) / loop_s:.1f} studies/s), then one import: {base_s:.2f} s, {baseline:.1f} studies/s"
            )

            # ours: pipelined, checked, imported while the transfers go on
            library = open_library(tmp / "library.db")
            marks: dict[str, float] = {}
            started = time.monotonic()
            summary = retrieve_studies(
                library,
                pacs,
                uids,
                workers=args.workers,
                progress=lambda p: marks.setdefault("transfers", time.monotonic()) if p.done == p.total else None,
            )
            ours_s = time.monotonic() - started
            library.close()
            assert len(summary.retrieved) == args.studies and summary.imported == args.studies, summary.line()
            ours = len(uids) / ours_s
            transfers = marks.get("transfers", started + ours_s) - started
            print(
                f"ours      {args.workers} requests in flight, import alongside: transfers done after "
                f"{transfers:.2f} s ({len(uids) / transfers:.1f} studies/s), all imported after {ours_s:.2f} s, "
                f"{ours:.1f} studies/s ({len(summary.import_runs)} import runs)"
            )

            # for information: the same plain loop with requests' default gzip, which Orthanc honours
            gz = DICOMwebClient(orthanc.dicomweb_url)
            started = time.monotonic()
            sample = uids[: max(1, len(uids) // 4)]
            for uid in sample:
                gz.retrieve_study(uid, media_types=(("application/dicom", "*"),))
            print(
                f"info      the plain loop with gzip (requests' default): {len(sample) / (time.monotonic() - started):.1f} "
                "studies/s (transfers only): app.pacs asks for identity encoding"
            )
        ratio = ours / baseline
        print_target(
            "pacs_retrieve",
            ours,
            "studies/s",
            baseline=baseline,
            ratio=ratio,
            goal=">=1.0",
            met=ratio >= 1.0,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
