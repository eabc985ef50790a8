"""Torch-free image I/O: DICOM decoding and display rendering, PNG/JPEG loading and the one
preprocessing function that turns any of them into the model input (used by training and the app).
"""

from core_model.imaging.errors import ImageReadError
from core_model.imaging.preprocess import PreprocessSpec, load_display, prepare_input

__all__ = ["ImageReadError", "PreprocessSpec", "load_display", "prepare_input"]
