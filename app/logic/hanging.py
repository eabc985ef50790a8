"""Hanging protocols and pane annotations (Qt-free).

:func:`hang` chooses the images of a layout around the selected one: a chest hanging puts the
selected image first and its companion view of the same study beside it (the lateral of a
frontal, the frontal of a lateral); "compare with prior" puts the same patient's most recent
earlier study beside it instead (the same view where there is one); the 2 x 2 layout shows the
current study's two views above the prior's two. :func:`orientation_letters` gives the edge
letters from PatientOrientation (or, failing it, from the view position, with the usual chest
display assumed), :func:`corner_texts` the four corner annotations and :func:`scale_bar` a
round length for a scale bar with the plane its pixel spacing refers to.
"""

from __future__ import annotations

from dataclasses import dataclass

LAYOUTS = {"1x1": (1, 1), "1x2": (1, 2), "2x2": (2, 2)}
FRONTAL = ("PA", "AP", "")
LATERAL = ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD")
OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}


def is_lateral(view: str | None) -> bool:
    return (view or "").upper() in LATERAL


@dataclass(frozen=True)
class Slot:
    """One pane of a hanging: the image (None: nothing to show) and what the pane is for."""

    uid: str | None
    role: str  # "selected", "lateral", "frontal", "prior", "prior lateral", "prior frontal"
    missing: str = ""  # why it is empty


def _study_images(session, study_pk: int) -> list[tuple[str, str, int | None, int]]:
    from sqlalchemy import select

    from app.library.models import Instance, Series

    return [
        (uid, view or "", number, iid)
        for uid, view, number, iid in session.execute(
            select(Instance.sop_instance_uid, Instance.view_position, Instance.instance_number, Instance.id)
            .join(Series, Series.id == Instance.series_pk)
            .where(Series.study_pk == study_pk)
            .order_by(Series.series_number, Instance.instance_number, Instance.id)
        )
    ]


def _companion(images, uid: str, view: str) -> str | None:
    """The other view of the same study: a lateral for a frontal, a frontal for a lateral."""
    want_lateral = not is_lateral(view)
    for other, v, _n, _i in images:
        if other != uid and is_lateral(v) == want_lateral:
            return other
    return None


def _same_view(images, view: str) -> str | None:
    lateral = is_lateral(view)
    exact = [u for u, v, _n, _i in images if v.upper() == view.upper()]
    if exact:
        return exact[0]
    kind = [u for u, v, _n, _i in images if is_lateral(v) == lateral]
    return kind[0] if kind else (images[0][0] if images else None)


def prior_study(session, study_pk: int) -> int | None:
    """The same patient's most recent study before this one (by study date, then import order)."""
    from sqlalchemy import and_, or_, select

    from app.library.models import Study

    study = session.get(Study, study_pk)
    if study is None or not study.study_date:
        return None
    return session.execute(
        select(Study.id)
        .where(
            Study.patient_pk == study.patient_pk,
            Study.id != study.id,
            Study.study_date != "",
            or_(
                Study.study_date < study.study_date,
                and_(Study.study_date == study.study_date, Study.id < study.id),
            ),
        )
        .order_by(Study.study_date.desc(), Study.id.desc())
        .limit(1)
    ).scalar()


def hang(library, uid: str, layout: str = "1x1", compare_prior: bool = False) -> list[Slot]:
    """The panes of ``layout`` (1x1, 1x2, 2x2) around ``uid``, which is always the first."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout is one of {', '.join(LAYOUTS)}, not {layout!r}")
    rows, cols = LAYOUTS[layout]
    n = rows * cols
    first = Slot(uid, "selected")
    if n == 1:
        return [first]
    from sqlalchemy import select

    from app.library.models import Instance, Series

    with library.session() as s:
        found = s.execute(
            select(Instance.view_position, Series.study_pk)
            .join(Series, Series.id == Instance.series_pk)
            .where(Instance.sop_instance_uid == uid)
        ).first()
        if found is None:
            return [first] + [Slot(None, "", "not in the library")] * (n - 1)
        view, study_pk = found[0] or "", found[1]
        images = _study_images(s, study_pk)
        prior_pk = prior_study(s, study_pk) if (compare_prior or n == 4) else None
        prior_images = _study_images(s, prior_pk) if prior_pk is not None else []
    lateral = is_lateral(view)
    companion_role = "frontal" if lateral else "lateral"
    companion = _companion(images, uid, view)
    companion_slot = Slot(companion, companion_role, "" if companion else f"no {companion_role} view in this study")
    no_prior = "no earlier study of this patient"
    prior_same = _same_view(prior_images, view) if prior_images else None
    prior_slot = Slot(prior_same, "prior", "" if prior_same else no_prior)
    if n == 2:
        return [first, prior_slot if compare_prior else companion_slot]
    prior_other = _companion(prior_images, prior_same, view) if prior_same else None
    prior_other_slot = Slot(
        prior_other,
        f"prior {companion_role}",
        "" if prior_other else (no_prior if not prior_images else f"no {companion_role} view in the prior study"),
    )
    return [first, companion_slot, prior_slot, prior_other_slot]


# -- annotations --------------------------------------------------------------------------------


def orientation_letters(patient_orientation, view_position: str | None) -> tuple[dict[str, str], str] | None:
    """``({"left": .., "right": .., "top": .., "bottom": ..}, source)``: the patient directions at
    the image's edges. PatientOrientation (0020,0020) gives the row (towards the right edge) and
    column (towards the bottom) directions; without it a chest PA / AP is taken as displayed the
    usual way (patient's left on the viewer's right, head up) and a left / right lateral as
    facing the viewer's left / right. None: not known."""
    parts: list[str] = []
    if patient_orientation:
        parts = [
            str(p).strip().upper()
            for p in (
                list(patient_orientation)
                if not isinstance(patient_orientation, str)
                else patient_orientation.split("\\")
            )
        ]
    source = "PatientOrientation"
    if len(parts) != 2 or not all(parts) or not all(c in OPPOSITE for p in parts for c in p):
        view = (view_position or "").upper()
        guess = {"PA": ("L", "F"), "AP": ("L", "F"), "LL": ("P", "F"), "RL": ("A", "F")}.get(view)
        if guess is None:
            return None
        parts, source = list(guess), f"ViewPosition {view} (usual display assumed)"
    row, col = parts

    def opposite(text: str) -> str:
        return "".join(OPPOSITE[c] for c in text)

    return {"right": row, "left": opposite(row), "bottom": col, "top": opposite(col)}, source


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value or "") == 8 else (value or "")


def corner_texts(header, *, title: str, window: str, zoom: float, index: tuple[int, int] | None) -> dict[str, str]:
    """The four corner annotations of a pane: patient (top left), study date / view / modality
    (top right), window and zoom (bottom left), image index (bottom right). ``header``: the
    file's dataset without pixels (None for PNG/JPEG)."""
    get = (lambda k: str(getattr(header, k, "") or "")) if header is not None else (lambda k: "")
    name = get("PatientName").replace("^", " ").strip()
    pid = get("PatientID")
    top_left = "\n".join(x for x in (name, pid) if x) or title
    top_right = "\n".join(
        x for x in (_date(get("StudyDate")), " ".join(x for x in (get("ViewPosition"), get("Modality")) if x)) if x
    )
    bottom_left = f"{window}\nzoom {zoom:.2f}x" if window else f"zoom {zoom:.2f}x"
    bottom_right = f"image {index[0]} of {index[1]}" if index else ""
    return {"top_left": top_left, "top_right": top_right, "bottom_left": bottom_left, "bottom_right": bottom_right}


NICE_MM = (1, 2, 5, 10, 20, 50, 100, 200, 500)


def scale_bar(mm_per_pixel: float, screen_px_per_image_px: float, kind: str, target_px: float = 100.0):
    """``(length in mm, length in screen pixels, label)`` for a bar about ``target_px`` long;
    None without a spacing. ImagerPixelSpacing is at the detector: the label says so."""
    if not mm_per_pixel or mm_per_pixel <= 0 or screen_px_per_image_px <= 0:
        return None
    mm_per_screen_px = mm_per_pixel / screen_px_per_image_px
    want = target_px * mm_per_screen_px
    length = min(NICE_MM, key=lambda v: abs(v - want))
    plane = "detector plane" if kind == "ImagerPixelSpacing" else "patient plane"
    unit = f"{length / 10:g} cm" if length >= 10 else f"{length:g} mm"
    return length, length / mm_per_screen_px, f"{unit} ({plane})"
