"""The importer's bulk insert (issue 15): rows written through the driver's executemany are the
rows SQLAlchemy's ``insert`` writes, defaults included. Real SQLite files."""

from __future__ import annotations

from sqlalchemy import insert, select

from app.library import open_library
from app.library.importer import _insert_rows
from app.library.models import Instance, Patient, Series, Study


def _library(path):
    lib = open_library(path)
    with lib.write_connection() as conn:
        conn.execute(
            insert(Patient),
            [
                dict(
                    id=1,
                    patient_key="k",
                    patient_id="P1",
                    issuer="",
                    name="A^B",
                    name_search="a b",
                    birth_date="",
                    sex="",
                )
            ],
        )
        conn.execute(
            insert(Study),
            [
                dict(
                    id=1,
                    study_uid="1.2",
                    patient_pk=1,
                    study_date="",
                    study_time="",
                    description="",
                    accession_number="",
                )
            ],
        )
        conn.execute(
            insert(Series), [dict(id=1, series_uid="1.2.3", study_pk=1, modality="DX", description="", body_part="")]
        )
    return lib


def _rows(lib) -> list[tuple]:
    with lib.session() as s:
        columns = [c.key for c in Instance.__table__.columns]
        return [tuple(getattr(i, c) for c in columns) for i in s.scalars(select(Instance).order_by(Instance.id))]


def test_bulk_rows_are_the_rows_sqlalchemy_writes(tmp_path):
    rows = [
        dict(
            sop_instance_uid=f"1.2.3.{i}",
            series_pk=1,
            patient_pk=1,
            file_path=f"/data/{i}.dcm",
            storage="linked",
            rows=64 + i,
            columns=32,
            pixel_spacing_row=0.2 if i % 2 else None,
            view_position="PA",
            imported_at="2026-12-01T18:00:00Z",
        )
        for i in range(5)
    ]
    ours, reference = _library(tmp_path / "a" / "library.db"), _library(tmp_path / "b" / "library.db")
    with ours.write_connection() as conn:
        _insert_rows(conn, Instance, [dict(r) for r in rows])
    with reference.write_connection() as conn:
        conn.execute(insert(Instance), [dict(r) for r in rows])
    got, want = _rows(ours), _rows(reference)
    assert got == want and len(got) == 5
    assert got[0][[c.key for c in Instance.__table__.columns].index("source_format")] == "dicom"  # a default
    # the same keys in another order (a PNG's row beside a DICOM's): the same rows
    mixed = [dict(rows[0], sop_instance_uid="9.1"), dict(reversed(list(dict(rows[1], sop_instance_uid="9.2").items())))]
    with ours.write_connection() as conn:
        _insert_rows(conn, Instance, mixed)
    with reference.write_connection() as conn:
        conn.execute(insert(Instance), mixed)
    assert _rows(ours) == _rows(reference)
    ours.close()
    reference.close()
