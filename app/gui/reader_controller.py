"""The reader study: worklist, labels, blinding and the worklist keys.

:class:`ReaderStudyController` drives the reader panel (:mod:`app.gui.reader_panel`): the
worklist is the browser's filtered images (in its order, or shuffled with a seed), and a case
counts as reviewed once the reviewer has labelled it or approved / flagged it. Labels are saved
in a worker (:func:`app.logic.jobs.save_labels_job`), one committed row per label, with the time
spent on the case (:class:`app.logic.reader_study.CaseTimer`), the model and the AI
probability of each finding. In blinded mode the AI panel, the overlays, the similar reports and
the browser's finding column are hidden until the case is labelled, then revealed. Keys (see
Help -> Keyboard shortcuts): N / Shift+N next / previous unreviewed, A approve and next,
Shift+X flag and next (with the comment), Ctrl+Return save labels.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal

from app.logic import jobs
from app.logic.reader_study import CaseTimer, Worklist, describe_filter

log = logging.getLogger(__name__)

LABEL_LOCK_TIMEOUT_S = 5.0
FINDING_COLUMN = 6  # the browser's "Top finding" column: an AI result, hidden while blinded


class ReaderStudyController(QObject):
    labels_saved = Signal(str)  # uid
    worklist_changed = Signal()

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.library = window.library
        self.runner = window.runner
        self.settings = window.settings
        self.panel = window.reader
        self.worklist: Worklist | None = None
        self.timer = CaseTimer()
        self.labelled: set[str] = set()  # labelled by the current reviewer (blinding)
        self.shown: str | None = None
        self._save_task = None
        self.panel.reviewer.setText(window.reviews.reviewer)
        self.panel.blinded.setChecked(bool(self.settings.get("review/blinded")))
        self.panel.auto_advance.setChecked(bool(self.settings.get("review/auto_advance")))
        self.panel.save_requested.connect(self.save)
        self.panel.start_requested.connect(lambda: self.start_worklist(go_first=True))
        self.panel.blinded_toggled.connect(self._blinded_toggled)
        self.panel.reviewer_changed.connect(self._reviewer_changed)
        self.panel.auto_advance.toggled.connect(lambda on: self.settings.set("review/auto_advance", bool(on)))
        if window.read_only:
            self.panel.note.setText(f"This library is read-only ({window.read_only}): labels cannot be saved.")
        self._refresh_labelled()

    # -- settings ---------------------------------------------------------------------------------
    @property
    def reviewer(self) -> str:
        return self.window.reviews.reviewer

    @property
    def blinded_mode(self) -> bool:
        return self.panel.blinded.isChecked()

    def _reviewer_changed(self, name: str) -> None:
        self.settings.set("review/reviewer", name)
        self._refresh_labelled()
        if self.worklist is not None:
            self.start_worklist()
        self.show(self.shown)

    def _blinded_toggled(self, on: bool) -> None:
        self.settings.set("review/blinded", bool(on))
        self.apply_blinding()

    def _refresh_labelled(self) -> None:
        from app.library.queries import labelled_uids

        with self.library.session() as s:
            self.labelled = labelled_uids(s, self.reviewer)

    # -- the worklist -----------------------------------------------------------------------------
    def start_worklist(self, go_first: bool = False) -> Worklist:
        """The browser's filtered images (all pages), in its order or shuffled by the seed;
        ``go_first``: then show its first unreviewed case."""
        from sqlalchemy import select

        from app.library.models import Instance
        from app.library.queries import search_instances

        model = self.window.browser.model
        with self.library.session() as s:
            uids = [
                r.sop_instance_uid
                for r in search_instances(
                    s, sort=model.sort_key, descending=model.descending, limit=None, with_total=False, **model.filters
                ).rows
            ]
            reviewed = set(s.execute(select(Instance.sop_instance_uid).where(Instance.review_status.is_not(None))))
        self._refresh_labelled()
        done = self.labelled | {u for (u,) in reviewed}
        seed = self.panel.seed.value() if self.panel.shuffle.isChecked() else None
        self.worklist = Worklist.build(uids, done, seed=seed, filter_text=describe_filter(model.filters))
        self._show_progress()
        self.worklist_changed.emit()
        if go_first:
            self.go(self.worklist.next_unreviewed(None))
        return self.worklist

    def _show_progress(self) -> None:
        if self.worklist is None:
            return
        order = f", random order (seed {self.worklist.seed})" if self.worklist.seed is not None else ""
        self.panel.progress.setText(f"<b>{self.worklist.progress_text()}</b>{order}")

    def go(self, uid: str | None) -> bool:
        if uid is None:
            self.window.status_message(
                "Every case of the worklist is reviewed" if self.worklist is not None else "No worklist"
            )
            return False
        return self.window.browser.select_uid(uid)

    def next_unreviewed(self, step: int = 1) -> bool:
        if self.worklist is None:
            self.start_worklist()
        assert self.worklist is not None
        return self.go(self.worklist.next_unreviewed(self.window.current_uid, step))

    def approve_and_next(self) -> None:
        self._review_and_next("approved")

    def flag_and_next(self) -> None:
        comment = self.panel.comment.toPlainText().strip() or self.window.review.comment.toPlainText().strip()
        if not comment:
            self.panel.note.setText("Say why you flag it: write a comment, then flag again.")
            self.panel.comment.setFocus()
            return
        self._review_and_next("flagged", comment)

    def _review_and_next(self, status: str, comment: str = "") -> None:
        uid = self.window.visible_uid()
        if uid is None or not self.window.reviews.save(status, comment, uid):
            return
        self.panel.comment.setPlainText("")
        self._mark_done(uid)
        self.next_unreviewed(1)

    def _mark_done(self, uid: str) -> None:
        if self.worklist is None:
            self.start_worklist()
        assert self.worklist is not None
        self.worklist.mark_done(uid)
        self._show_progress()

    # -- the shown case ---------------------------------------------------------------------------
    def show(self, uid: str | None) -> None:
        """The case shown: its findings, saved labels, time, blinding."""
        self.shown = uid
        self.timer.show(uid)
        bundle = self.window.bundle
        findings = list(bundle.classes) if bundle is not None else []
        visible = self.window.visible_uid() if uid is not None else None
        if visible is None:
            hidden = self.window.current_hidden_reason()
            self.panel.case.setText(hidden or "No image selected")
            self.panel.set_findings(findings)
            self.panel.set_history([])
            self.panel.set_enabled(False)
            self.apply_blinding()
            return
        from app.library.queries import reader_labels_for

        with self.library.session() as s:
            labels = reader_labels_for(s, uid, self.reviewer)
            history = [(lab.finding, lab.verdict, lab.confidence, lab.comment, lab.created_at) for lab in labels]
            free = list(dict.fromkeys(lab.finding for lab in labels if lab.free))
        self.panel.set_findings(findings, free)
        latest: dict[str, tuple[str, int | None]] = {}
        for finding, verdict, confidence, _c, _w in history:
            latest.setdefault(finding, (verdict, confidence))
        for finding, (verdict, confidence) in latest.items():
            row = self.panel.row(finding)
            if row is not None:
                row.set_verdict(verdict, confidence)
        self.panel.comment.setPlainText("")
        self.panel.set_history(history)
        self.panel.set_enabled(not self.window.read_only)
        where = ""
        if self.worklist is not None and uid in self.worklist:
            where = f"case {self.worklist.uids.index(uid) + 1} of {len(self.worklist)}"
        state = "labelled" if uid in self.labelled else "not labelled yet"
        self.panel.case.setText(
            f"{where + ': ' if where else ''}{state}" + ("" if findings else " (no model loaded: free findings only)")
        )
        self.apply_blinding()

    def case_blinded(self) -> bool:
        """The shown case's AI results are hidden (blinded mode, not labelled yet)."""
        return self.blinded_mode and (self.shown is None or self.shown not in self.labelled)

    def apply_blinding(self) -> None:
        w = self.window
        blind = self.case_blinded()
        w.ai_stack.setCurrentIndex(1 if blind else 0)
        for pane in w.hanging.panes:  # the other panes never show overlays while blinded
            pane.set_blinded(blind if pane is w.viewer else self.blinded_mode)
        w.reports.set_blinded(blind)
        w.browser.table.setColumnHidden(FINDING_COLUMN, self.blinded_mode)

    # -- saving -----------------------------------------------------------------------------------
    def save(self) -> None:
        w = self.window
        uid = w.visible_uid()
        if uid is None:
            self.panel.note.setText(w.current_hidden_reason() or "No image selected")
            return
        if w.read_only:
            w.show_error("Labels not saved", f"This library is read-only ({w.read_only}): labels cannot be saved.")
            return
        labels = self.panel.labels()
        if not labels:
            self.panel.note.setText("Choose agree, disagree or uncertain for at least one finding.")
            return
        bundle = w.bundle
        result = w.current_result
        probabilities = dict(result.probabilities) if result is not None and result.uid == uid else {}
        facts = dict(
            reviewer=self.reviewer,
            model_id=str(bundle.id) if bundle is not None else "",
            model_version=str(bundle.version) if bundle is not None else "",
            model_hash=bundle.content_hash if bundle is not None else None,
            probabilities=probabilities,
            ai_shown=not self.case_blinded(),
            filter_json=self.worklist.filter_text
            if self.worklist is not None
            else describe_filter(w.browser.model.filters),
            time_spent_s=self.timer.take(uid),
        )
        self.panel.note.setText("Saving the labels…")
        self.panel.save.setEnabled(False)
        self._save_task = self.runner.start(
            "Save labels",
            jobs.save_labels_job,
            self.library,
            bundle,
            uid,
            labels,
            facts,
            LABEL_LOCK_TIMEOUT_S,
            on_result=self._saved,
            on_failed=self._not_saved,
        )

    def _not_saved(self, msg: str) -> None:
        self.panel.save.setEnabled(True)
        self.panel.note.setText(f"Not saved: {msg}. Your entries are kept: save again.")
        self.window.show_error("Labels not saved", msg)

    def _saved(self, payload) -> None:
        uid, n = payload
        self.panel.save.setEnabled(True)
        self.labelled.add(uid)
        self._mark_done(uid)
        self.window.status_message(f"Saved {n} label(s)")
        self.panel.note.setText(f"Saved {n} label(s).")
        self.labels_saved.emit(uid)
        if uid != self.window.current_uid:
            return
        revealed = self.blinded_mode
        self.show(uid)  # reveals the AI results in blinded mode
        if revealed:
            self.panel.note.setText(f"Saved {n} label(s). AI results revealed.")
        elif self.panel.auto_advance.isChecked():
            self.next_unreviewed(1)
