"""File -> Connect to PACS...: search a DICOMweb server and retrieve studies into the library.

A thin dialog over :mod:`app.pacs` (Qt-free): the server (URL, authentication, the password or
token kept for this session, or in the platform keyring when one is available and the box is
ticked; never in the library or the settings), the QIDO-RS search fields, the result table, and
Retrieve, which runs :func:`app.pacs.jobs.retrieve_job` in the runner's background lane with
progress and cancel. Errors arrive as one line in the status label. Research use only.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.gui.workers import TaskRunner
from app.pacs import PacsClient, ServerRecord, StudyQuery, servers
from app.pacs import jobs as pacs_jobs
from core_model.errors import UserError

COLUMNS = ["Date", "Modalities", "Patient ID", "Patient name", "Accession", "Images", "Description", "Study UID"]
NOTICE = "Research use only: studies retrieved here are for research, not for diagnosis."


class PacsDialog(QDialog):
    def __init__(self, library, runner: TaskRunner | None = None, parent: QWidget | None = None, on_imported=None):
        super().__init__(parent)
        self.setWindowTitle("Connect to PACS (DICOMweb)")
        self.setAccessibleName("Connect to PACS")
        self.library = library
        self.runner = runner or TaskRunner(self)
        self.on_imported = on_imported
        self.hits: list = []
        self._search_task = None
        self._retrieve_task = None
        self.last_summary = None
        self.last_error = ""

        # -- server
        server_box = QGroupBox("Server")
        form = QFormLayout(server_box)
        self.url = QLineEdit()
        self.url.setPlaceholderText("http://host:8042/dicom-web")
        self.auth = QComboBox()
        self.auth.addItems(["No authentication", "User and password (basic)", "Bearer token"])
        self.user = QLineEdit()
        self.secret = QLineEdit()
        self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.secret.setPlaceholderText("asked once per session; never saved in the library")
        self.remember = QCheckBox("Keep in the platform keyring")
        if not servers.keyring_available():
            self.remember.setEnabled(False)
            self.remember.setToolTip("No keyring is available here: the secret is kept for this session only")
        form.addRow("DICOMweb URL", self.url)
        form.addRow("Authentication", self.auth)
        form.addRow("User", self.user)
        form.addRow("Password / token", self.secret)
        form.addRow("", self.remember)
        self.auth.currentIndexChanged.connect(self._auth_changed)

        # -- search
        search_box = QGroupBox("Search studies")
        grid = QGridLayout(search_box)
        self.patient_name = QLineEdit()
        self.patient_name.setPlaceholderText("prefix, e.g. SMITH^J")
        self.patient_id = QLineEdit()
        self.date_from = QLineEdit()
        self.date_from.setPlaceholderText("YYYY-MM-DD")
        self.date_to = QLineEdit()
        self.date_to.setPlaceholderText("YYYY-MM-DD")
        self.accession = QLineEdit()
        self.cr = QCheckBox("CR")
        self.dx = QCheckBox("DX")
        self.cr.setChecked(True)
        self.dx.setChecked(True)
        mods = QHBoxLayout()
        mods.addWidget(self.cr)
        mods.addWidget(self.dx)
        mods.addStretch(1)
        self.search_button = QPushButton("Search")
        self.search_button.setDefault(True)
        self.search_button.clicked.connect(self.search)
        grid.addWidget(QLabel("Patient name"), 0, 0)
        grid.addWidget(self.patient_name, 0, 1)
        grid.addWidget(QLabel("Patient ID"), 0, 2)
        grid.addWidget(self.patient_id, 0, 3)
        grid.addWidget(QLabel("Study date from"), 1, 0)
        grid.addWidget(self.date_from, 1, 1)
        grid.addWidget(QLabel("to"), 1, 2)
        grid.addWidget(self.date_to, 1, 3)
        grid.addWidget(QLabel("Accession"), 2, 0)
        grid.addWidget(self.accession, 2, 1)
        grid.addWidget(QLabel("Modality"), 2, 2)
        grid.addLayout(mods, 2, 3)
        grid.addWidget(self.search_button, 3, 3, alignment=Qt.AlignmentFlag.AlignRight)

        # -- results
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._selection_changed)

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel(NOTICE)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.retrieve_button = QPushButton("Retrieve selected")
        self.retrieve_button.setEnabled(False)
        self.retrieve_button.clicked.connect(self.retrieve)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.progress, 1)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(0)
        buttons.addWidget(self.retrieve_button)
        buttons.addWidget(close)

        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(server_box, 1)
        top.addWidget(search_box, 1)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.resize(1100, 620)
        self._load_last_server()
        self._auth_changed()

    # -- server -----------------------------------------------------------------------------
    def _auth_kind(self) -> str:
        return ("none", "basic", "bearer")[self.auth.currentIndex()]

    def _auth_changed(self, *_args) -> None:
        kind = self._auth_kind()
        self.user.setEnabled(kind == "basic")
        self.secret.setEnabled(kind != "none")
        self.remember.setVisible(kind != "none")

    def _load_last_server(self) -> None:
        try:
            saved = servers.load_servers()
        except UserError:
            saved = []
        if saved:
            last = saved[-1]
            self.url.setText(last.url)
            self.auth.setCurrentIndex(("none", "basic", "bearer").index(last.auth))
            self.user.setText(last.username)

    def record(self) -> ServerRecord:
        url = self.url.text().strip()
        return ServerRecord(
            url, url, self._auth_kind(), self.user.text().strip() if self._auth_kind() == "basic" else ""
        )

    def client(self) -> PacsClient:
        record = self.record()
        secret = None
        if record.needs_secret:
            typed = self.secret.text()
            if typed:
                servers.remember_secret(record, typed, persist=self.remember.isChecked())
            secret = typed or servers.get_secret(record)
        return PacsClient(record, secret)

    # -- search -----------------------------------------------------------------------------
    def query(self) -> StudyQuery:
        modalities = tuple(m for m, box in (("CR", self.cr), ("DX", self.dx)) if box.isChecked())
        return StudyQuery(
            patient_name=self.patient_name.text(),
            patient_id=self.patient_id.text(),
            date_from=self.date_from.text(),
            date_to=self.date_to.text(),
            modalities=modalities,
            accession=self.accession.text(),
        )

    def search(self) -> None:
        try:
            client, query = self.client(), self.query()
            query.filters()  # bad dates are refused here, before any request
        except UserError as exc:
            self._error(str(exc))
            return
        self.runner.cancel(self._search_task)
        self.search_button.setEnabled(False)
        self._set_status("Searching…")
        record = client.server
        self._search_task = self.runner.start(
            "PACS search",
            pacs_jobs.search_job,
            client,
            query,
            lane="interactive",
            on_result=lambda hits: self._search_done(hits, record),
            on_failed=self._error,
            on_finished=lambda: self.search_button.setEnabled(True),
        )

    def _search_done(self, hits, record: ServerRecord) -> None:
        self.hits = list(hits)
        self.table.setRowCount(len(self.hits))
        for row, h in enumerate(self.hits):
            values = [
                _date(h.study_date),
                "/".join(h.modalities),
                h.patient_id,
                h.patient_name.replace("^", " "),
                h.accession,
                "" if h.instances is None else str(h.instances),
                h.description,
                h.study_uid,
            ]
            for col, value in enumerate(values):
                self.table.setItem(row, col, QTableWidgetItem(value))
        self._set_status(f"{len(self.hits)} {'study' if len(self.hits) == 1 else 'studies'} found. {NOTICE}")
        try:  # the server (never its secret) is remembered for the next time
            servers.save_server(record)
        except (UserError, OSError):
            pass

    # -- retrieve ---------------------------------------------------------------------------
    def selected_uids(self) -> list[str]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.hits[r].study_uid for r in rows if r < len(self.hits)]

    def _selection_changed(self) -> None:
        self.retrieve_button.setEnabled(bool(self.selected_uids()) and self._retrieve_task is None)

    def retrieve(self) -> None:
        uids = self.selected_uids()
        if not uids or self._retrieve_task is not None:
            return
        try:
            client = self.client()
        except UserError as exc:
            self._error(str(exc))
            return
        self.retrieve_button.setEnabled(False)
        self.cancel_button.setVisible(True)
        self.progress.setVisible(True)
        self.progress.setRange(0, len(uids))
        self.progress.setValue(0)
        self._set_status(f"Retrieving {len(uids)} {'study' if len(uids) == 1 else 'studies'}…")
        self._retrieve_task = self.runner.start(
            "PACS retrieve",
            pacs_jobs.retrieve_job,
            self.library,
            client,
            uids,
            lane="background",
            on_progress=self._progress,
            on_result=self._retrieve_done,
            on_failed=self._error,
            on_finished=self._retrieve_finished,
        )

    def _progress(self, done: int, total: int, text: str) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        self.progress.setFormat(text)

    def cancel(self) -> None:
        if self._retrieve_task is not None:
            self.runner.cancel(self._retrieve_task)
            self._set_status("Cancelling: studies retrieved completely are kept, the others are not imported…")

    def _retrieve_done(self, summary) -> None:
        self.last_summary = summary
        lines = [f"{summary.line()}. {NOTICE}"]
        lines += [f"{o.study_uid}: {o.error}" for o in summary.failed[:5]]
        if len(summary.failed) > 5:
            lines.append(f"… and {len(summary.failed) - 5} more failed")
        self._set_status("\n".join(lines))
        if self.on_imported is not None:
            self.on_imported(summary)

    def _retrieve_finished(self) -> None:
        self._retrieve_task = None
        self.cancel_button.setVisible(False)
        self.progress.setVisible(False)
        self._selection_changed()

    # -- status -----------------------------------------------------------------------------
    def _set_status(self, text: str) -> None:
        self.status.setStyleSheet("")
        self.status.setText(text)

    def _error(self, text: str) -> None:
        self.last_error = text
        self.status.setStyleSheet("color: #b00020;")
        self.status.setText(text)


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def open_pacs_dialog(window) -> PacsDialog:
    """Show the window's PACS dialog (one per window, kept while it lives)."""
    dialog = getattr(window, "_pacs_dialog", None)
    if dialog is None:

        def imported(_summary) -> None:
            if hasattr(window, "library_ctl"):
                window.library_ctl.refresh_browser(force=True)

        dialog = PacsDialog(window.library, getattr(window, "runner", None), window, on_imported=imported)
        window._pacs_dialog = dialog
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    return dialog
