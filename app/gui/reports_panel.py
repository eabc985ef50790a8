"""The reports panel: the study's own report and the most similar reports of the bundle's report
bank with their scores. Reports read as text (wrapped); each sentence is a link, and clicking it
asks for that sentence's heatmap. The sentence whose heatmap is shown is highlighted."""

from __future__ import annotations

import html

from PySide6.QtCore import QUrl, Signal
from PySide6.QtWidgets import QLabel, QTextBrowser, QVBoxLayout, QWidget

from app.logic.report_text import split_sentences

CSS = """
a { color: #1f4e86; text-decoration: none; }
a.current { background-color: #ffe08a; color: #000; }
.heading { font-style: italic; color: #707070; }
.note { font-style: italic; color: #707070; }
.score { font-weight: bold; }
h3 { margin-top: 10px; margin-bottom: 4px; }
"""


class ReportsPanel(QWidget):
    sentence_clicked = Signal(str, str)  # phrase, where it comes from

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAccessibleName("Reports panel")
        self.hint = QLabel("Click a sentence to see where the model finds it in the image.")
        self.hint.setWordWrap(True)
        self.text = QTextBrowser()
        self.text.setAccessibleName("Reports")
        self.text.setOpenLinks(False)
        self.text.setOpenExternalLinks(False)
        self.text.document().setDefaultStyleSheet(CSS)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.hint)
        layout.addWidget(self.text, 1)
        self.text.anchorClicked.connect(self._clicked)
        self.own: list[str] = []
        self.hits = None
        self.note = "No model loaded"
        self.current: str | None = None
        self.links: list[tuple[str, str]] = []  # (phrase, source) by link number
        self.blinded = False  # a blinded reader study: the model's similar reports are not shown
        self._render()

    def set_blinded(self, on: bool) -> None:
        if bool(on) != self.blinded:
            self.blinded = bool(on)
            self._render()

    # -- content --------------------------------------------------------------------------------
    def set_own(self, texts: list[str]) -> None:
        self.own = list(texts)
        self.current = None
        self._render()

    def set_similar(self, hits, note: str | None = None) -> None:
        """``hits``: [Hit(id, text, score)] best first, or None / [] with a ``note``."""
        self.hits = list(hits) if hits else None
        self.note = note or "No similar reports"
        self._render()

    def set_current(self, phrase: str | None) -> None:
        """Highlight the sentence whose heatmap is shown."""
        if phrase != self.current:
            self.current = phrase
            self._render()

    def _sentences_html(self, text: str, source: str) -> str:
        parts = []
        for sentence in split_sentences(text):
            if sentence.heading:
                lead = "<br>" if parts else ""
                parts.append(f'{lead}<span class="heading">{html.escape(sentence.text)}</span><br>')
                continue
            n = len(self.links)
            self.links.append((sentence.phrase, source))
            cls = ' class="current"' if sentence.phrase == self.current else ""
            parts.append(
                f'<a href="s:{n}"{cls} title="Show where the model finds this">{html.escape(sentence.text)}</a> '
            )
        return "".join(parts)

    def _render(self) -> None:
        self.links = []
        out = ["<h3>This study's report</h3>"]
        if not self.own:
            out.append('<p class="note">No report in the library for this image.</p>')
        for i, text in enumerate(self.own):
            source = "this study's report" if len(self.own) == 1 else f"report {i + 1}"
            out.append(f"<p>{self._sentences_html(text, source)}</p>")
        out.append("<h3>Similar reports (model's report bank)</h3>")
        if self.blinded:
            out.append('<p class="note">Hidden until you label this case (blinded reader study).</p>')
        elif not self.hits:
            out.append(f'<p class="note">{html.escape(self.note)}</p>')
        else:
            for rank, hit in enumerate(self.hits, 1):
                out.append(
                    f'<p><span class="score">#{rank} &nbsp;score {hit.score:.3f}</span> '
                    f'<span class="note">({html.escape(str(hit.id))})</span><br>'
                    f"{self._sentences_html(hit.text, f'similar report #{rank}')}</p>"
                )
        scroll = self.text.verticalScrollBar().value()
        self.text.setHtml("".join(out))
        self.text.verticalScrollBar().setValue(scroll)

    # -- clicks -----------------------------------------------------------------------------------
    def sentences(self) -> list[tuple[str, str]]:
        """(phrase, source) of every clickable sentence, in order."""
        return list(self.links)

    def link_position(self, n: int):
        """Where link ``n`` is drawn, in viewport coordinates (tests, keyboard help)."""
        doc = self.text.document()
        block = doc.begin()
        while block.isValid():
            it = block.begin()
            while not it.atEnd():
                frag = it.fragment()
                if frag.isValid() and frag.charFormat().anchorHref() == f"s:{n}":
                    cursor = self.text.textCursor()
                    cursor.setPosition(frag.position() + min(2, frag.length() - 1))
                    return self.text.cursorRect(cursor).center()
                it += 1
            block = block.next()
        return None

    def _clicked(self, url: QUrl) -> None:
        target = url.toString()
        if not target.startswith("s:"):
            return
        try:
            phrase, source = self.links[int(target[2:])]
        except (ValueError, IndexError):
            return
        self.sentence_clicked.emit(phrase, source)
