"""PyInstaller runtime hook of build_installer.spec: the build leaves out PySide6.QtOpenGL (9 MB).

pyqtgraph imports QtOpenGL when it is imported but uses it only in its OpenGL drawing paths
(``useOpenGL``, the GL widgets), which the app never turns on. A stand-in module answers that
import; touching any of its names says plainly that this build has no QtOpenGL.
"""

import sys
import types


class _NoQtOpenGL(types.ModuleType):
    def __getattr__(self, name: str):
        raise AttributeError(f"PySide6.QtOpenGL.{name}: QtOpenGL is not part of this build (OpenGL drawing is off)")


sys.modules.setdefault("PySide6.QtOpenGL", _NoQtOpenGL("PySide6.QtOpenGL"))
