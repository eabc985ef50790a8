"""CXR Adaptor core: frozen encoders, the Adaptor, heads, data, metrics and the torch-free runtime.

Research use only; not a medical device and not for diagnosis.

Importing this package imports nothing heavy. ``core_model.imaging`` and ``core_model.runtime``
are torch-free (numpy, pydicom, Pillow, onnxruntime, tokenizers) and are what the desktop app
uses; everything else may import torch.
"""

__version__ = "0.1.0"
