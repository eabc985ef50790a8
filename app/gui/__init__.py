"""The desktop review app (PySide6 + pyqtgraph): thin widgets over the Qt-free logic in
:mod:`app.logic` and the study library. Imported only when the GUI starts."""
